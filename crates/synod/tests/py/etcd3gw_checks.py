"""etcd3gw (OpenStack's client for etcd's /v3 JSON gateway, nobody here wrote it) against a
running Synod cluster's HTTP ports.

Run by crates/synod/tests/gateway.rs as `python etcd3gw_checks.py --endpoints A,B,C` (HTTP
addresses) with the pinned client from requirements.txt. The client finds its URL prefix from
`GET /version` itself (no api_path given), as it does against etcd. Watches go to the first
endpoint, writes to the others, so each watch also proves a member streams writes it did not
receive itself.

Each check prints `PASS <name>`; a check the server cannot do yet prints `SKIP <name>: <why>`
(only the lease check may, and only while the Lease service answers UNIMPLEMENTED). A failed
check raises: traceback, exit status 1. A watchdog ends a run that waits too long (every
thread's stack printed, exit status 1), so a lost watch event fails instead of hanging.
"""

import argparse
import faulthandler
import queue
import sys
import threading

import etcd3gw
from etcd3gw import exceptions

# Longest the whole run may take before the watchdog ends it.
RUN_SECONDS_MAX = 120
# Longest one expected watch event may take to arrive.
EVENT_SECONDS_MAX = 20
# Seconds one HTTP call may take.
CALL_SECONDS_MAX = 10


def connect(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3gw.client(host=host, port=int(port), timeout=CALL_SECONDS_MAX)


def check(name, ok, detail=""):
    if not ok:
        raise AssertionError(f"{name}: {detail}")


def kv_basics(reader, writer):
    check("discovered /v3/", reader.api_path == "/v3/", reader.api_path)
    writer.put("/gw/a", "1")
    writer.put("/gw/b", b"\x00\xffbinary")
    check("get", reader.get("/gw/a") == [b"1"], reader.get("/gw/a"))
    check("binary", reader.get("/gw/b") == [b"\x00\xffbinary"], reader.get("/gw/b"))
    check("missing", reader.get("/gw/none") == [], reader.get("/gw/none"))
    value, meta = reader.get("/gw/a", metadata=True)[0]
    check("metadata", value == b"1" and meta["key"] == b"/gw/a", meta)
    check("version string", meta["version"] == "1", meta)
    writer.put("/gw/c", "3")
    prefix = reader.get_prefix("/gw/", sort_order="descend", sort_target="key")
    keys = [m["key"] for _, m in prefix]
    check("get_prefix sorted", keys == [b"/gw/c", b"/gw/b", b"/gw/a"], keys)
    check("create refuses an existing key", writer.create("/gw/a", "x") is False)
    check("create", writer.create("/gw/new", "n") is True)
    check("replace wrong value", writer.replace("/gw/a", "nope", "2") is False)
    check("replace", writer.replace("/gw/a", "1", "2") is True)
    check("replaced", reader.get("/gw/a") == [b"2"], reader.get("/gw/a"))
    check("delete", writer.delete("/gw/c") is True)
    check("delete missing", writer.delete("/gw/c") is False)
    check("deleted", reader.get("/gw/c") == [], reader.get("/gw/c"))
    check("delete_prefix", writer.delete_prefix("/gw/") is True)
    check("prefix gone", reader.get_prefix("/gw/") == [], reader.get_prefix("/gw/"))
    status = reader.status()
    check("status", "version" in status and "header" in status, status)
    members = reader.members()
    check("members", len(members) == 3 and all("ID" in m for m in members), members)
    print("PASS kv_basics", flush=True)


def drain(events, out):
    """Moves watch events from etcd3gw's blocking iterator into a queue (a thread)."""
    for event in events:
        out.put(event)


def next_event(q, what):
    try:
        return q.get(timeout=EVENT_SECONDS_MAX)
    except queue.Empty:
        raise AssertionError(f"no watch event for {what} within {EVENT_SECONDS_MAX} s")


def watch_prefix_iterator(watcher, writers):
    events, cancel = watcher.watch_prefix("/gw/w/")
    q = queue.Queue()
    threading.Thread(target=drain, args=(events, q), daemon=True).start()
    writers[0].put("/gw/w/x", "1")
    writers[1].put("/gw/other", "ignored")
    writers[1].put("/gw/w/y", "2")
    writers[0].delete("/gw/w/x")
    seen = [next_event(q, f"event {i}") for i in range(3)]
    got = [(e.get("type", "PUT"), e["kv"]["key"], e["kv"].get("value")) for e in seen]
    want = [("PUT", b"/gw/w/x", b"1"), ("PUT", b"/gw/w/y", b"2"), ("DELETE", b"/gw/w/x", None)]
    check("watch_prefix events", got == want, got)
    cancel()
    print("PASS watch_prefix_iterator", flush=True)


def watch_key_and_once(watcher, writers):
    events, cancel = watcher.watch("/gw/k")
    q = queue.Queue()
    threading.Thread(target=drain, args=(events, q), daemon=True).start()
    writers[0].put("/gw/k-not", "no")
    writers[1].put("/gw/k", "v")
    e = next_event(q, "/gw/k")
    check("watch key", e["kv"]["key"] == b"/gw/k" and e["kv"]["value"] == b"v", e)
    cancel()
    # watch_once from a past revision returns at once with the first event there.
    _, meta = watcher.get("/gw/k", metadata=True)[0]
    first = watcher.watch_once("/gw/k", timeout=EVENT_SECONDS_MAX,
                               start_revision=int(meta["mod_revision"]))
    check("watch_once", first["kv"]["value"] == b"v", first)
    print("PASS watch_key_and_once", flush=True)


def lease(reader, writer):
    try:
        granted = writer.lease(ttl=30)
    except exceptions.Etcd3Exception as e:
        text = e.detail_text or ""
        if "Lease.LeaseGrant is not supported" in text:
            print(f"SKIP lease: the Lease service answers UNIMPLEMENTED: {text}", flush=True)
            return
        raise
    writer.put("/gw/leased", "v", lease=granted)
    ttl = granted.ttl()
    check("lease ttl", 0 < ttl <= 30, ttl)
    check("lease keys", granted.keys() == [b"/gw/leased"], granted.keys())
    check("lease refresh", 0 < granted.refresh() <= 30)
    check("lease revoke", granted.revoke() is True)
    check("revoked key gone", reader.get("/gw/leased") == [], reader.get("/gw/leased"))
    print("PASS lease", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True)
    args = parser.parse_args()
    faulthandler.dump_traceback_later(RUN_SECONDS_MAX, exit=True)
    endpoints = args.endpoints.split(",")
    clients = [connect(e) for e in endpoints]
    reader, writers = clients[0], clients[1:] or clients
    kv_basics(reader, writers[0])
    watch_prefix_iterator(reader, writers)
    watch_key_and_once(reader, writers)
    lease(reader, writers[0])
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    sys.exit(main())
