"""python-etcd3's lease API against a running Synod cluster (run by crates/synod/tests/lease.rs).

`python lease_checks.py --endpoints A,B,C`: grants, attaches keys, refreshes, reads the time to
live, watches the keys while the lease is revoked (one DELETE per key, all in one revision),
lets a short lease expire, and contends for python-etcd3's `Lock` through two members. Each check prints `PASS <name>`; a failure raises (exit status 1).
"""

import argparse
import os
import queue
import sys
import threading
import time

import etcd3
import etcd3.events

CALL_SECONDS_MAX = 10
# Longest a lease that nobody keeps alive may outlive its TTL before the test fails.
EXPIRY_SLACK_SECONDS = 10


def client(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=CALL_SECONDS_MAX)


def check_grant_attach_refresh(c, other):
    lease = c.lease(30)
    assert lease.granted_ttl == 30, lease.granted_ttl
    c.put("/pl/a", "1", lease=lease)
    c.put("/pl/b", "2", lease=lease)
    lease.refresh()
    # The lease is read back through another member.
    seen = other.get_lease_info(lease.id)
    assert seen.grantedTTL == 30, seen
    assert 0 < seen.TTL <= 30, seen
    keys = sorted(lease.keys)
    assert keys == [b"/pl/a", b"/pl/b"], keys
    value, meta = other.get("/pl/a")
    assert value == b"1" and meta.lease_id == lease.id, (value, meta.lease_id)
    print("PASS grant_attach_refresh", flush=True)
    return lease


def check_revoke_deletes_in_one_revision(c, watcher, lease):
    events = queue.Queue()
    watch_id = watcher.add_watch_prefix_callback("/pl/", events.put)
    try:
        lease.revoke()
        got = []
        deadline = time.monotonic() + CALL_SECONDS_MAX
        while len(got) < 2:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(got)} delete events after the revoke"
            resp = events.get(timeout=left)
            assert not isinstance(resp, Exception), resp
            got.extend(resp.events)
        kinds = {type(e) for e in got}
        assert kinds == {etcd3.events.DeleteEvent}, got
        assert sorted(e.key for e in got) == [b"/pl/a", b"/pl/b"], got
        revisions = {e.mod_revision for e in got}
        assert len(revisions) == 1, f"revoke split over revisions {revisions}"
    finally:
        watcher.cancel_watch(watch_id)
    assert c.get("/pl/a")[0] is None
    assert c.get_lease_info(lease.id).TTL == -1
    print("PASS revoke_deletes_in_one_revision", flush=True)


def check_unrefreshed_lease_expires(c):
    lease = c.lease(2)
    c.put("/pl/short", "x", lease=lease)
    assert c.get("/pl/short")[0] == b"x"
    deadline = time.monotonic() + lease.granted_ttl + EXPIRY_SLACK_SECONDS
    while c.get("/pl/short")[0] is not None:
        assert time.monotonic() < deadline, "an unrefreshed 2 s lease outlived its TTL by 10 s"
        time.sleep(0.1)
    assert c.get_lease_info(lease.id).TTL == -1
    print("PASS unrefreshed_lease_expires", flush=True)


def check_contended_lock(c, other, name="py-door"):
    """python-etcd3's Lock (a lease, a transaction creating /locks/NAME, then a watch of that
    key while someone else holds it): a second client through another member cannot take it
    while the first holds it, waits, and takes it once the first releases."""
    first, second = c.lock(name, ttl=10), other.lock(name, ttl=10)
    assert first.acquire(timeout=CALL_SECONDS_MAX), "an uncontended lock"
    # Held: a short attempt waits on the key and gives up (tenacity's retry, watch_once).
    assert not second.acquire(timeout=1), "two holders"
    waiter = other.lock(name, ttl=10)
    got = queue.Queue()
    threading.Thread(target=lambda: got.put(waiter.acquire(timeout=CALL_SECONDS_MAX))).start()
    # Released only once the waiter watches the key (its client holds the watch the server
    # created): the Lock watches from "now", not from its failed transaction's revision, so a
    # release before the watch exists is a wake-up lost — on etcd as well.
    deadline = time.monotonic() + CALL_SECONDS_MAX
    while not other.watcher._callbacks:
        assert time.monotonic() < deadline, "the waiter never watched the lock"
        time.sleep(0.01)
    assert got.empty(), "the waiter took a held lock"
    first.release()
    assert got.get(timeout=CALL_SECONDS_MAX), "the waiter never got the released lock"
    assert c.get("/locks/" + name)[0] == waiter.uuid, "the holder's key is the waiter's"
    assert waiter.is_acquired() and not first.is_acquired()
    waiter.release()
    assert c.get("/locks/" + name)[0] is None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True)
    args = parser.parse_args()
    endpoints = args.endpoints.split(",")
    c = client(endpoints[0])
    other = client(endpoints[-1])
    lease = check_grant_attach_refresh(c, other)
    check_revoke_deletes_in_one_revision(c, other, lease)
    check_unrefreshed_lease_expires(c)
    check_contended_lock(c, other)
    print("PASS contended_lock", flush=True)
    return 0


if __name__ == "__main__":
    def hung():
        print("watchdog: lease checks hung", flush=True)
        os._exit(1)

    watchdog = threading.Timer(120, hung)
    watchdog.daemon = True
    sys.exit(main())
