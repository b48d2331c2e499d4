"""python-etcd3 against Synod's Maintenance service (run by crates/synod/tests/backup.rs).

`python maintenance_checks.py --endpoints H:P,H:P,H:P --backup FILE`: writes keys through the
first endpoint, then
* `status` — every member names the same leader, a term of at least 1 and a non-zero db size;
* `hash` — every member's Hash of its applied state is equal once all applied the writes;
* `snapshot` — a backup streamed to FILE (Synod's format: it starts with the magic SYNODBAK);
* `defragment` — succeeds on every member;
* `alarms` — no alarm is listed.
Each check prints `PASS <name>`; a failure raises (exit status 1).
"""

import argparse
import time

import etcd3

SETTLE_SECONDS_MAX = 20


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    p.add_argument("--backup", required=True)
    a = p.parse_args()
    clients = []
    for ep in a.endpoints.split(","):
        host, port = ep.rsplit(":", 1)
        clients.append(etcd3.client(host=host, port=int(port), timeout=10))
    for i in range(20):
        clients[0].put("py-%02d" % i, "v%d" % i)

    leaders = set()
    for c in clients:
        s = c.status()
        assert s.raft_term >= 1, s.raft_term
        assert s.db_size > 0, s.db_size
        leaders.add(s.leader.id)
    assert len(leaders) == 1, leaders
    print("PASS status")

    # Members apply the writes at their own pace: poll until the hashes agree.
    deadline = time.monotonic() + SETTLE_SECONDS_MAX
    while True:
        hashes = [c.hash() for c in clients]
        if len(set(hashes)) == 1:
            break
        assert time.monotonic() < deadline, hashes
        time.sleep(0.1)
    print("PASS hash")

    with open(a.backup, "wb") as f:
        clients[1].snapshot(f)
    with open(a.backup, "rb") as f:
        assert f.read(8) == b"SYNODBAK"
    print("PASS snapshot")

    for c in clients:
        c.defragment()
    print("PASS defragment")

    for c in clients:
        assert list(c.list_alarms()) == [], "alarms listed"
    print("PASS alarms")


if __name__ == "__main__":
    main()
