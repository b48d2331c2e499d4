"""python-etcd3 (kragniz's etcd v3 client, nobody here wrote it) against a running Synod cluster.

Run by crates/synod/tests/watch.rs as `python etcd3_checks.py --endpoints A,B,C` with the pinned
client from requirements.txt. The first endpoint is the member every watch and list goes to; the
others take the writes, so each watch also proves that a member streams writes it did not receive
itself (it serves watches from its own applied state).

Each check prints `PASS <name>`; the last line is `RESULT <json>`, what the Kubernetes-style
reflector saw, for the Rust test to assert on. A failed check raises: traceback, exit status 1.
A watchdog ends a check that waits too long (every thread's stack printed, exit status 1), so a
lost watch event fails the test instead of hanging it.
"""

import argparse
import faulthandler
import json
import queue
import random
import sys
import threading

import etcd3
import etcd3.etcdrpc as etcdrpc
import etcd3.events
import etcd3.exceptions
import grpc

COMPACTED = "etcdserver: mvcc: required revision has been compacted"
FUTURE = "etcdserver: mvcc: required revision is a future revision"
# Longest one check may take before the watchdog ends the run.
CHECK_SECONDS_MAX = 90
# Longest one expected watch response may take to arrive.
RESPONSE_SECONDS_MAX = 20
# Seconds a unary call may take (python-etcd3 also waits this long for a watch to be created).
CALL_SECONDS_MAX = 10


def prefix_end(prefix):
    """The range end that makes [prefix, end) every key starting with prefix."""
    return etcd3.utils.increment_last_byte(prefix.encode())


def connect(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=CALL_SECONDS_MAX)


class Writers:
    """Writes spread round-robin over some members; each returns the revision it made."""

    def __init__(self, clients):
        self.clients = clients
        self.turn = 0

    def next(self):
        self.turn += 1
        return self.clients[self.turn % len(self.clients)]

    def put(self, key, value):
        return self.next().put(key, value).header.revision

    def clear(self, prefix):
        """Removes what an earlier run against the same cluster left under `prefix`."""
        self.next().delete_prefix(prefix)

    def delete(self, key):
        """The revision of the delete, or None when there was nothing to delete."""
        resp = self.next().delete(key, return_response=True)
        return resp.header.revision if resp.deleted else None


def range_at(client, key, revision):
    req = etcdrpc.RangeRequest(key=key.encode(), revision=revision)
    return client.kvstub.Range(req, CALL_SECONDS_MAX)


def expect_out_of_range(call, message):
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE, (e.code(), e.details())
        assert e.details() == message, e.details()
        return
    raise AssertionError(f"expected OUT_OF_RANGE {message!r}, the call succeeded")


def take(q, what):
    try:
        return q.get(timeout=RESPONSE_SECONDS_MAX)
    except queue.Empty:
        raise AssertionError(f"no watch response within {RESPONSE_SECONDS_MAX}s: {what}") from None


def describe(ev, prefix):
    """An event as (kind, key without the prefix, value or None, prev value or None, mod_revision)."""
    kind = "put" if isinstance(ev, etcd3.events.PutEvent) else "delete"
    key = ev.key.decode()[len(prefix):]
    value = ev.value.decode() if kind == "put" else None
    has_prev = ev._event.HasField("prev_kv")
    prev = ev._event.prev_kv.value.decode() if has_prev else None
    return (kind, key, value, prev, ev.mod_revision)


def check_sorted_gets(w, reader):
    p = "/sort/"
    w.clear("/sort/")
    for key, value in [("c", "3"), ("a", "1"), ("b", "2"), ("c", "30")]:
        w.put(p + key, value)

    def keys(**kw):
        return [m.key.decode()[len(p):] for _, m in reader.get_prefix(p, **kw)]

    assert keys() == ["a", "b", "c"], keys()
    assert keys(sort_order="descend", sort_target="create") == ["b", "a", "c"]
    assert keys(sort_order="ascend", sort_target="mod") == ["a", "b", "c"]
    assert keys(sort_order="descend", sort_target="key") == ["c", "b", "a"]
    assert keys(sort_order="descend", sort_target="value") == ["c", "b", "a"]
    # python-etcd3 drops `limit`, so this one goes through its generated stub directly.
    req = etcdrpc.RangeRequest(
        key=p.encode(),
        range_end=prefix_end(p),
        limit=2,
        sort_order=etcdrpc.RangeRequest.DESCEND,
        sort_target=etcdrpc.RangeRequest.MOD,
    )
    resp = reader.kvstub.Range(req, CALL_SECONDS_MAX)
    got = [kv.key.decode()[len(p):] for kv in resp.kvs]
    assert (got, resp.count, resp.more) == (["c", "b"], 3, True), (got, resp)


def check_history_and_compact(w, reader):
    """Reads at past revisions, then Compact and etcd's errors around it. Returns
    (compact revision, a revision below it)."""
    k = "/hist/k"
    w.clear("/hist/")
    r1 = w.put(k, "one")
    r2 = w.put(k, "two")
    r3 = w.delete(k)
    r4 = w.put(k, "four")

    def value_at(rev):
        return [kv.value.decode() for kv in range_at(reader, k, rev).kvs]

    assert value_at(r1) == ["one"] and value_at(r2) == ["two"], (r1, r2)
    assert value_at(r3) == [] and value_at(r4) == ["four"], (r3, r4)
    reader.compact(r2)
    expect_out_of_range(lambda: range_at(reader, k, r1), COMPACTED)
    assert value_at(r2) == ["two"], "the compaction revision itself stays readable"
    expect_out_of_range(lambda: range_at(reader, k, r4 + 1000), FUTURE)
    expect_out_of_range(lambda: reader.compact(r1), COMPACTED)
    expect_out_of_range(lambda: reader.compact(r4 + 1000), FUTURE)
    return r2, r1


def check_watch_iterator(w, watcher):
    """watch_prefix from a past revision: history replayed, then live writes, then cancel."""
    p = "/it/"
    w.clear("/it/")
    r = [w.put(p + "a", "1"), w.put(p + "b", "2")]
    w.put("/itx", "outside the prefix")
    r += [w.put(p + "a", "3"), w.delete(p + "b")]
    events, cancel = watcher.watch_prefix(p, start_revision=r[0], prev_kv=True)
    r.append(w.put(p + "c", "5"))  # made after the watch was created: arrives live
    want = [
        ("put", "a", "1", None, r[0]),
        ("put", "b", "2", None, r[1]),
        ("put", "a", "3", "1", r[2]),
        ("delete", "b", None, "2", r[3]),
        ("put", "c", "5", None, r[4]),
    ]
    got = [describe(next(events), p) for _ in want]
    assert got == want, got
    cancel()
    assert next(events, "ended") == "ended", "the iterator ends once cancelled"


def check_watch_callbacks(w, watcher):
    """add_watch_prefix_callback and cancel_watch; after a cancel the stream goes on serving.
    (python-etcd3 0.12's `filters` cannot be set: it assigns to a repeated protobuf field.)"""
    p = "/cb/"
    w.clear("/cb/")
    q1 = queue.Queue()
    id1 = watcher.add_watch_prefix_callback(p, q1.put)
    r1 = w.put(p + "x", "1")
    got = [describe(e, p) for e in take(q1, "first callback").events]
    assert got == [("put", "x", "1", None, r1)], got
    watcher.cancel_watch(id1)
    q2 = queue.Queue()
    id2 = watcher.add_watch_prefix_callback(p, q2.put, start_revision=r1, prev_kv=True)
    r2 = w.delete(p + "x")
    got = [describe(e, p) for e in take(q2, "second watch, replay").events]
    got += [describe(e, p) for e in take(q2, "second watch, live").events] if len(got) < 2 else []
    want = [("put", "x", "1", None, r1), ("delete", "x", None, "1", r2)]
    assert got == want, got
    assert q1.empty(), "a cancelled watch gets nothing more"
    watcher.cancel_watch(id2)


def check_watch_compacted(watcher, compact_revision, below):
    q = queue.Queue()
    watcher.add_watch_prefix_callback("/hist/", q.put, start_revision=below)
    err = take(q, "compaction error")
    if not isinstance(err, etcd3.exceptions.RevisionCompactedError):
        got = [describe(e, "") for e in getattr(err, "events", [])]
        raise AssertionError(f"a watch from compacted revision {below} got {err!r}: {got}")
    assert err.compacted_revision == compact_revision, err.compacted_revision
    events, _ = watcher.watch_prefix("/hist/", start_revision=below)
    try:
        next(events)
        raise AssertionError("a watch from a compacted revision yielded an event")
    except etcd3.exceptions.RevisionCompactedError as e:
        assert e.compacted_revision == compact_revision, e.compacted_revision


class Reflector:
    """Kubernetes' reflector, reduced to its protocol: list a prefix at revision R, watch from
    R + 1 with prev_kv and progress notifications, apply every event to a local map (checking
    that its prev_kv is exactly what the map holds), and re-list when the watch says its start
    revision was compacted."""

    def __init__(self, client, prefix):
        self.client = client
        self.prefix = prefix
        self.items = {}
        # Everything up to this revision is in `items` (from a list, an event or a progress
        # notification).
        self.revision = 0
        self.queue = queue.Queue()
        self.watch_id = None
        self.counts = {"lists": 0, "events": 0, "progress": 0, "compacted": 0}

    def list(self):
        resp = self.client.get_prefix_response(self.prefix)
        self.items = {kv.key: kv_state(kv) for kv in resp.kvs}
        self.revision = resp.header.revision
        self.counts["lists"] += 1

    def watch(self):
        # A fresh queue per watch: nothing of a cancelled watch can reach the new one.
        self.queue = queue.Queue()
        self.watch_id = self.client.add_watch_prefix_callback(
            self.prefix,
            self.queue.put,
            start_revision=self.revision + 1,
            prev_kv=True,
            progress_notify=True,
        )

    def list_and_watch(self):
        self.list()
        self.watch()

    def disconnect(self):
        """What a broken connection leaves: no watch, and the last revision seen."""
        self.client.cancel_watch(self.watch_id)

    def step(self):
        item = take(self.queue, f"reflector at revision {self.revision}")
        if isinstance(item, etcd3.exceptions.RevisionCompactedError):
            self.counts["compacted"] += 1
            self.list_and_watch()
            return
        if isinstance(item, Exception):
            raise item
        if not item.events:
            assert item.header.revision >= self.revision, (item.header, self.revision)
            self.revision = item.header.revision
            self.counts["progress"] += 1
            return
        before = self.revision
        for ev in item.events:
            assert ev.mod_revision > before, (ev.mod_revision, before)
            assert ev.mod_revision >= self.revision, (ev.mod_revision, self.revision)
            self.apply(ev)
            self.revision = ev.mod_revision

    def apply(self, ev):
        raw = ev._event
        held = self.items.get(ev.key)
        prev = kv_state(raw.prev_kv) if raw.HasField("prev_kv") else None
        assert prev == held, f"{ev.key}: prev_kv {prev}, the map holds {held}"
        if isinstance(ev, etcd3.events.DeleteEvent):
            del self.items[ev.key]
        else:
            now = kv_state(raw.kv)
            if held is not None:
                assert now[1] == held[1] and now[3] == held[3] + 1, (now, held)
            self.items[ev.key] = now
        self.counts["events"] += 1

    def pump_until(self, revision):
        while self.revision < revision:
            self.step()

    def pump_until_progress(self, revision):
        """Until a progress notification says nothing up to `revision` is missing."""
        seen = self.counts["progress"]
        while self.counts["progress"] == seen or self.revision < revision:
            self.step()


def kv_state(kv):
    return (kv.value.decode(), kv.create_revision, kv.mod_revision, kv.version)


def random_writes(w, prefix, rng, count):
    """`count` puts and deletes over a few keys (and some outside the prefix); returns the
    highest revision made."""
    last = 0
    for i in range(count):
        key = f"{prefix}k{rng.randrange(8)}"
        roll = rng.random()
        if roll < 0.1:
            last = max(last, w.put(prefix.rstrip("/") + "x", f"outside {i}"))
        elif roll < 0.35:
            last = max(last, w.delete(key) or 0)
        else:
            last = max(last, w.put(key, f"v{i}"))
    return last


def check_list_watch_loop(w, watcher, lister):
    """The reflector through concurrent writes, a broken watch, a compaction, a re-list."""
    p = "/ref/"
    w.clear("/ref/")
    rng = random.Random(15)
    for i in range(8):
        w.put(f"{p}k{i}", "seed")
    ref = Reflector(watcher, p)
    # Writes racing the list and the watch's creation.
    racing = {}
    writer = threading.Thread(target=lambda: racing.update(last=random_writes(w, p, rng, 40)))
    writer.start()
    ref.list_and_watch()
    writer.join()
    ref.pump_until(racing["last"])
    ref.pump_until_progress(racing["last"])
    # The watch breaks; writes go on and history is compacted past where it broke, so
    # watching again from where it broke fails and the reflector re-lists.
    ref.disconnect()
    start = ref.revision + 1
    last = max(w.put(p + "k0", "after"), w.put(p + "k1", "after"), random_writes(w, p, rng, 30))
    assert start < last, (start, last)
    lister.compact(last)
    ref.watch()
    ref.pump_until(last)
    assert ref.counts["compacted"] == 1 and ref.counts["lists"] == 2, ref.counts
    # Live again: more writes, then the map must equal a fresh list from another member.
    third = random_writes(w, p, rng, 30)
    fresh = lister.get_prefix_response(p)
    ref.pump_until(third)
    ref.pump_until_progress(fresh.header.revision)
    want = {kv.key: kv_state(kv) for kv in fresh.kvs}
    assert ref.items == want, (ref.items, want)
    return ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", required=True, help="host:port,host:port,...")
    args = ap.parse_args()
    endpoints = args.endpoints.split(",")
    assert len(endpoints) >= 2, "one member to watch and at least one to write to"
    watcher = connect(endpoints[0])
    w = Writers([connect(e) for e in endpoints[1:]])
    lister = connect(endpoints[-1])

    def run(name, check):
        faulthandler.dump_traceback_later(CHECK_SECONDS_MAX, exit=True)
        out = check()
        faulthandler.cancel_dump_traceback_later()
        print("PASS", name, flush=True)
        return out

    run("sorted_gets", lambda: check_sorted_gets(w, watcher))
    compacted, below = run("history_and_compact", lambda: check_history_and_compact(w, watcher))
    run("watch_iterator", lambda: check_watch_iterator(w, watcher))
    run("watch_callbacks", lambda: check_watch_callbacks(w, watcher))
    run("watch_compacted", lambda: check_watch_compacted(watcher, compacted, below))
    ref = run("list_watch_loop", lambda: check_list_watch_loop(w, watcher, lister))
    result = dict(ref.counts)
    result["items"] = {k.decode(): v[0] for k, v in sorted(ref.items.items())}
    result["revision"] = ref.revision
    print("RESULT", json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
