"""python-etcd3 (kragniz's etcd v3 client, nobody here wrote it) against a partitioned Synod
cluster whose groups split at "c", "m" and "t" (keys, ranges, transactions, leases, watches of one
group and of every group, a list then a watch over every group, Hash, snapshot, defragment and
compaction).

Run by crates/synod/tests/partition.rs as `python partition_checks.py --endpoints A,B,C`. Each
check prints `PASS <name>`; a failed check raises (traceback, exit status 1).
"""

import argparse
import tempfile
import time

import etcd3
import etcd3.etcdrpc as etcdrpc
import grpc

import lease_checks
from etcd3_checks import COMPACTED, FUTURE, expect_out_of_range, range_at

CALL_SECONDS_MAX = 10


def connect(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=CALL_SECONDS_MAX)


def single_keys(clients):
    # One key per group, written through one member and read through the next.
    for i, key in enumerate(["bee", "dog", "owl", "yak"]):
        clients[i % 3].put(key, "v-" + key)
    for i, key in enumerate(["bee", "dog", "owl", "yak"]):
        value, meta = clients[(i + 1) % 3].get(key)
        assert value == ("v-" + key).encode(), (key, value)
        assert meta.key == key.encode()
    assert clients[0].delete("owl")
    assert clients[1].get("owl")[0] is None


def range_across_groups(clients):
    for key in ["ant", "cat", "emu", "sow", "tit", "zebu"]:
        clients[1].put(key, key.upper())
    keys = [m.key.decode() for _, m in clients[2].get_all()]
    assert keys == sorted(keys), keys
    assert {"ant", "bee", "cat", "dog", "emu", "sow", "tit", "yak", "zebu"} <= set(keys), keys
    # A range from "b" to "u" spans groups 0..3 and comes back in key order.
    got = [m.key.decode() for _, m in clients[0].get_range("b", "u")]
    assert got == ["bee", "cat", "dog", "emu", "sow", "tit"], got
    desc = [m.key.decode() for _, m in clients[0].get_range("b", "u", sort_order="descend")]
    assert desc == list(reversed(got)), desc


def txn_in_one_group(clients):
    c = clients[0]
    c.put("mole", "1")
    ok, _ = c.transaction(
        compare=[c.transactions.value("mole") == "1"],
        success=[c.transactions.put("mole", "2"), c.transactions.put("newt", "x")],
        failure=[],
    )
    assert ok
    assert c.get("mole")[0] == b"2" and c.get("newt")[0] == b"x"


def txn_across_groups_refused(clients):
    c = clients[2]
    try:
        c.transaction(
            compare=[c.transactions.value("mole") == "2"],
            success=[c.transactions.put("ant", "changed")],
            failure=[],
        )
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "span groups 0, 1, 2" in e.details(), e.details()
    else:
        raise AssertionError("a transaction across groups was accepted")
    assert c.get("ant")[0] == b"ANT"


LEASE_KEYS = ["bat", "elk", "pig", "wolf"]  # one in each group


def leases_across_groups(clients):
    # One lease, its keys in all four groups, written through every member.
    lease = clients[0].lease(30)
    for i, key in enumerate(LEASE_KEYS):
        clients[i % 3].put(key, "held", lease=lease)
    assert sorted(k.decode() for k in lease.keys) == LEASE_KEYS, lease.keys
    assert 0 < lease.remaining_ttl <= 30 and lease.granted_ttl == 30
    (renewed,) = lease.refresh()
    assert renewed.TTL == 30, renewed
    assert clients[2].get("wolf")[1].lease_id == lease.id
    lease.revoke()
    for key in LEASE_KEYS:
        assert clients[1].get(key)[0] is None, key
    assert clients[0].get_lease_info(lease.id).TTL == -1


def short_lease_kept_alive_then_expired(clients):
    # A 1-second lease kept alive through another member for three seconds holds its keys
    # in two groups; left alone, both go.
    lease = clients[1].lease(1)
    clients[0].put("cow", "x", lease=lease)
    clients[2].put("yeti", "x", lease=lease)
    until = time.monotonic() + 3
    while time.monotonic() < until:
        # A generator: the keep-alive goes out as its answer is read.
        (renewed,) = list(clients[2].refresh_lease(lease.id))
        assert renewed.TTL == 1, renewed
        time.sleep(0.25)
    assert clients[0].get("cow")[0] == b"x" and clients[0].get("yeti")[0] == b"x"
    deadline = time.monotonic() + 15
    while clients[1].get("cow")[0] is not None or clients[1].get("yeti")[0] is not None:
        assert time.monotonic() < deadline, "the lease's keys outlived it"
        time.sleep(0.1)
    assert clients[0].get_lease_info(lease.id).TTL == -1


def watch_in_one_group(clients):
    # Keys of group 2 ([m, t)): a watch from the next revision sees a put and a delete made
    # through other members, in order.
    events, cancel = clients[0].watch_prefix("owl/")
    clients[1].put("owl/1", "a")
    clients[2].delete("owl/1")
    got = []
    for ev in events:
        got.append((type(ev).__name__, ev.key.decode()))
        if len(got) == 2:
            break
    cancel()
    assert got == [("PutEvent", "owl/1"), ("DeleteEvent", "owl/1")], got


def events_until(events, keys, n):
    # (revision, key) of every event until n of them were of `keys`.
    seen = []
    for ev in events:
        seen.append((ev.mod_revision, ev.key.decode()))
        if len([e for e in seen if e[1] in keys]) == n:
            break
    return seen


def watch_across_groups(clients):
    # Keys of every group ("a" to "z"): each revision once every group closed it, so the
    # events of four groups come in revision order, and a watch resumed from a revision
    # replays exactly the events at it and after.
    events, cancel = clients[0].watch("a", range_end="z")
    revisions = {}
    for i, key in enumerate(["yew/1", "bat/1", "elk/1", "pig/1", "bat/2", "yew/2"]):
        revisions[key] = clients[i % 3].put(key, "v").header.revision
    # A watch "from now" starts at the next revision of its lowest group, so it may also
    # show other checks' last events (their keys lie in the range): ours are checked.
    seen = events_until(events, revisions, len(revisions))
    cancel()
    assert [r for r, _ in seen] == sorted(r for r, _ in seen), seen
    got = [e for e in seen if e[1] in revisions]
    assert sorted(got) == sorted((r, k) for k, r in revisions.items()), (got, revisions)
    # The replay holds other checks' events too (their keys lie in the range): ours among
    # them, all at the start revision or later, in order.
    middle = got[len(got) // 2][0]
    events, cancel = clients[1].watch("a", range_end="z", start_revision=middle)
    want = [e for e in got if e[0] >= middle]
    replay = events_until(events, revisions, len(want))
    cancel()
    assert [r for r, _ in replay] == sorted(r for r, _ in replay), replay
    assert replay[0][0] >= middle, (replay, middle)
    assert [e for e in replay if e[1] in revisions] == want, (replay, want)


def scan(client, revision=0):
    # Every key from "a" to "z" (four groups) at `revision` (0: now): the header's revision
    # and (key, value, mod_revision) of each.
    req = etcdrpc.RangeRequest(key=b"a", range_end=b"z", revision=revision)
    got = client.kvstub.Range(req, CALL_SECONDS_MAX)
    return got.header.revision, [(kv.key, kv.value, kv.mod_revision) for kv in got.kvs]


def list_then_watch_across_groups(clients):
    # The informer pattern over four groups: list, then watch from the list's revision + 1.
    # The list is every group at that one revision, so the watch shows every later write and
    # nothing the list held; read again at that revision on another member, it is the same.
    for i, key in enumerate(["ape/l", "elk/l", "pug/l", "yak/l"]):
        clients[i % 3].put(key, "0")
    at, listed = scan(clients[1])
    assert all(m <= at for _, _, m in listed), (at, listed)
    events, cancel = clients[0].watch("a", range_end="z", start_revision=at + 1)
    written = {}
    for i, key in enumerate(["yak/l", "ape/l", "pug/l", "elk/l"]):
        written[key] = clients[i % 3].put(key, "1").header.revision
    assert min(written.values()) > at, (written, at)
    seen = events_until(events, written, len(written))
    cancel()
    assert all(r > at for r, _ in seen), (seen, at)
    assert sorted(e for e in seen if e[1] in written) == sorted((r, k) for k, r in written.items())
    assert scan(clients[2], at)[1] == listed, "the same cut, read at its revision"
    expect_out_of_range(lambda: scan(clients[0], max(written.values()) + 1000), FUTURE)


def maintenance_of_every_group(clients):
    # Hash: each member combines its groups' hashes; equal once every member applied the writes.
    for key in ["ant", "dog", "owl", "yak"]:
        clients[0].put(key, "hashed")
    deadline = time.monotonic() + 20
    while True:
        hashes = [c.hash() for c in clients]
        if len(set(hashes)) == 1:
            break
        assert time.monotonic() < deadline, hashes
        time.sleep(0.1)
    # Snapshot: one file holding every group, its header naming the partitioned engine.
    with tempfile.TemporaryFile() as f:
        clients[2].snapshot(f)
        f.seek(0)
        head = f.read(13)
        assert head[:8] == b"SYNODBAK", head
        engine = f.read(head[12])
        assert engine.endswith(b"-partitioned"), engine
    for c in clients:
        c.defragment()


def compaction_of_every_group(clients):
    # Compact(R) compacts each group that reached R to R and leaves the others alone; the
    # groups close each other's revisions, so a quiet group reaches R soon after a busy one.
    # Group 3 ([t, ..)) is written until it is well past group 0's last write ([.., c)).
    low = clients[0].put("ant/c", "kept").header.revision
    high = [clients[1].put("yak/c", str(i)).header.revision for i in range(3)]
    while high[-1] < low + 4:
        high.append(clients[1].put("yak/c", str(len(high))).header.revision)
    target = high[-2]
    deadline = time.monotonic() + 10
    while range_at(clients[0], "ant/c", 0).header.revision < high[-1]:
        assert time.monotonic() < deadline, "group 0 never closed the revisions of group 3"
        time.sleep(0.05)
    clients[2].compact(target)
    expect_out_of_range(lambda: range_at(clients[0], "yak/c", high[-3]), COMPACTED)
    kept = range_at(clients[0], "yak/c", target).kvs
    assert [kv.value.decode() for kv in kept] == [str(len(high) - 2)], kept
    # Group 0 had closed the revision too: compacted alike, its last write still readable.
    expect_out_of_range(lambda: range_at(clients[1], "ant/c", low), COMPACTED)
    assert [kv.value for kv in range_at(clients[1], "ant/c", target).kvs] == [b"kept"]
    expect_out_of_range(lambda: clients[0].compact(high[-1] + 1000), FUTURE)
    expect_out_of_range(lambda: clients[1].compact(target), COMPACTED)


def contended_lock(clients):
    # The lock key /locks/NAME lives in the first group; the waiter's watch is that group's.
    lease_checks.check_contended_lock(clients[0], clients[2], name="door-in-group-0")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", required=True)
    args = ap.parse_args()
    clients = [connect(e) for e in args.endpoints.split(",")]
    for check in [
        single_keys,
        range_across_groups,
        txn_in_one_group,
        txn_across_groups_refused,
        leases_across_groups,
        short_lease_kept_alive_then_expired,
        watch_in_one_group,
        watch_across_groups,
        list_then_watch_across_groups,
        maintenance_of_every_group,
        compaction_of_every_group,
        contended_lock,
    ]:
        check(clients)
        print("PASS", check.__name__, flush=True)


if __name__ == "__main__":
    main()
