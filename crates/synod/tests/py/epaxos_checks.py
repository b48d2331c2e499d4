"""python-etcd3 against a Synod cluster on the EPaxos engine (run by crates/synod/tests/epaxos.rs).

`python epaxos_checks.py --endpoints A,B,C`: every member takes writes (leaderless), a write at one
member is read at the others, concurrent writers on one key from every member end with the same
value and version everywhere, value-compare transactions and prefix reads work, and what EPaxos
cannot do (watch, leases) fails with a clear error. Each check prints `PASS <name>`; a failure
raises (exit status 1).
"""

import argparse
import sys
import threading

import etcd3

CALL_SECONDS_MAX = 10


def client(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=CALL_SECONDS_MAX)


def check_write_anywhere_read_everywhere(cs):
    for i, c in enumerate(cs):
        c.put(f"/ep/k{i}", f"v{i}")
    for c in cs:
        for i in range(len(cs)):
            value, meta = c.get(f"/ep/k{i}")
            assert value == f"v{i}".encode(), (i, value)
            assert meta.version == 1, meta.version


def check_concurrent_writers_agree(cs):
    # One hot key written from every member at once: the writes interfere, so every member
    # executes them in one order and ends with the same value and version.
    rounds = 30

    def writer(c, who):
        for r in range(rounds):
            c.put("/ep/hot", f"{who}-{r}")

    threads = [threading.Thread(target=writer, args=(c, i)) for i, c in enumerate(cs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = {(c.get("/ep/hot")[0], c.get("/ep/hot")[1].version) for c in cs}
    assert len(seen) == 1, seen
    (value, version), = seen
    assert version == rounds * len(cs), version
    assert value.decode().endswith(f"-{rounds - 1}"), value


def check_value_transactions(cs):
    a, b = cs[0], cs[1]
    a.put("/ep/txn", "old")
    ok, _ = b.transaction(
        compare=[b.transactions.value("/ep/txn") == "old"],
        success=[b.transactions.put("/ep/txn", "new"), b.transactions.put("/ep/txn2", "x")],
        failure=[b.transactions.put("/ep/txn", "lost")],
    )
    assert ok
    ok, _ = a.transaction(
        compare=[a.transactions.value("/ep/txn") == "old"],
        success=[a.transactions.put("/ep/txn", "lost")],
        failure=[],
    )
    assert not ok
    for c in cs:
        assert c.get("/ep/txn")[0] == b"new"
        assert c.get("/ep/txn2")[0] == b"x"
    # "the key does not exist" (create revision 0) is meaningful without store revisions.
    ok, _ = a.transaction(
        compare=[a.transactions.create("/ep/fresh") == 0],
        success=[a.transactions.put("/ep/fresh", "1")],
        failure=[],
    )
    assert ok


def check_prefix_reads(cs):
    for c in cs:
        keys = sorted(m.key for _, m in c.get_prefix("/ep/k"))
        assert keys == [f"/ep/k{i}".encode() for i in range(len(cs))], keys


def check_unsupported_is_refused(cs):
    c = cs[0]
    for what, call in [("lease", lambda: c.lease(30)), ("watch", lambda: c.watch_once("/ep/k0", timeout=5))]:
        try:
            call()
        except Exception as e:  # grpc errors surface as etcd3 exceptions or grpc.RpcError
            text = str(e) + repr(e)
            assert "epaxos" in text or "not supported" in text or "UNIMPLEMENTED" in text.upper(), (what, text)
        else:
            raise AssertionError(f"{what} should be refused on epaxos")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    args = p.parse_args()
    cs = [client(e) for e in args.endpoints.split(",")]
    for name, check in [
        ("write_anywhere_read_everywhere", check_write_anywhere_read_everywhere),
        ("concurrent_writers_agree", check_concurrent_writers_agree),
        ("value_transactions", check_value_transactions),
        ("prefix_reads", check_prefix_reads),
        ("unsupported_is_refused", check_unsupported_is_refused),
    ]:
        check(cs)
        print(f"PASS {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
