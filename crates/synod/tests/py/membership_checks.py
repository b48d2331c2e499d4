"""python-etcd3 against Synod's Cluster service (run by crates/synod/tests/membership.rs).

`python membership_checks.py --endpoint HOST:PORT --peer-url http://HOST:PORT`: `members` lists
the three bootstrap members with their peer and client URLs, `add_member` adds a member at the
free peer URL (listed, unstarted: no name, no client URLs), `update_member` moves its peer URL,
a second add at a taken URL is refused, and `remove_member` takes it out again. Each check
prints `PASS <name>`; a failure raises (exit status 1).
"""

import argparse
import time

import etcd3
import etcd3.exceptions

CALL_SECONDS_MAX = 10
# Adding a voter starts a new epoch: for a moment the members know no leader and answer
# UNAVAILABLE ("no leader", refused before anything is proposed). Calls are retried that long.
RETRY_SECONDS_MAX = 30


def retried(call):
    deadline = time.monotonic() + RETRY_SECONDS_MAX
    while True:
        try:
            return call()
        except etcd3.exceptions.ConnectionFailedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def listed(c):
    return sorted(c.members, key=lambda m: m.id)


def check_members(c):
    ms = listed(c)
    assert [m.id for m in ms] == [1, 2, 3], [m.id for m in ms]
    for m in ms:
        assert m.name == f"n{m.id}", m.name
        assert len(m.peer_urls) == 1 and m.peer_urls[0].startswith("http://"), m.peer_urls
        assert len(m.client_urls) == 1 and m.client_urls[0].startswith("http://"), m.client_urls


def check_add_member(c, peer_url):
    new = c.add_member([peer_url])
    assert new.id == 4, new.id
    assert list(new.peer_urls) == [peer_url], new.peer_urls
    ms = listed(c)
    added = [m for m in ms if m.id == 4]
    assert len(added) == 1, ms
    assert added[0].name == "" and list(added[0].client_urls) == [], added[0]
    try:
        retried(lambda: c.add_member([peer_url]))
    except etcd3.exceptions.PreconditionFailedError:
        pass  # FAILED_PRECONDITION: etcd's "Peer URLs already exists"
    else:
        raise AssertionError("a second add at the same peer URL was accepted")
    return new.id


def check_update_member(c, member_id, peer_url):
    host, port = peer_url.rsplit(":", 1)
    moved = f"{host}:{int(port) + 1}"
    retried(lambda: c.update_member(member_id, [moved]))
    m = [m for m in listed(c) if m.id == member_id][0]
    assert list(m.peer_urls) == [moved], m.peer_urls


def check_remove_member(c, member_id):
    retried(lambda: c.remove_member(member_id))
    assert [m.id for m in listed(c)] == [1, 2, 3]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--peer-url", required=True)
    a = p.parse_args()
    host, port = a.endpoint.rsplit(":", 1)
    c = etcd3.client(host=host, port=int(port), timeout=CALL_SECONDS_MAX)
    check_members(c)
    print("PASS members", flush=True)
    new = check_add_member(c, a.peer_url)
    print("PASS add_member", flush=True)
    check_update_member(c, new, a.peer_url)
    print("PASS update_member", flush=True)
    check_remove_member(c, new)
    print("PASS remove_member", flush=True)


if __name__ == "__main__":
    main()
