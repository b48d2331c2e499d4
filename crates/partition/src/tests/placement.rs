//! Placement on the in-memory network (`placement.rs`): with two replicas per group on three
//! members, a member relays requests for the group it does not host; a host whose CORRUPT
//! alarm is raised (`Engine::quarantine`) sends relays elsewhere, and the relaying member
//! passes it over from then on.

use super::*;

/// Groups at g and p; group 1 (`[g, p)`) on members 2 and 3, group 2 on 1 and 3.
fn placed() -> Net {
    Net::with(|c| {
        c.range_directory = true;
        c.partition_replicas = 2;
    })
}

fn value_of(r: Result<Response, EngineError>) -> String {
    match r.map(|r| r.body) {
        Ok(ResponseBody::Range(r)) => r
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default(),
        other => panic!("not a read's answer: {other:?}"),
    }
}

#[test]
fn a_member_relays_its_missing_group_and_a_quarantined_host_is_passed_over() {
    let mut net = placed();
    net.rounds(100);
    assert!(
        !net.nodes[0].groups.contains_key(&1),
        "member 1 hosts no group 1"
    );
    assert_eq!(net.nodes[0].hosts(1), [2, 3]);
    net.put(0, "h", "v1");
    let read = |net: &mut Net| value_of(net.call(0, Op::Range(RangeRequest::key("h"))));
    assert_eq!(read(&mut net), "v1", "relayed to a host");

    // Member 2 raises its alarm; member 1's next relay goes to it first (its hint), is sent
    // elsewhere, and is served by member 3.
    net.nodes[1].quarantine(true);
    net.nodes[0].relay.hint.insert(1, 2);
    assert_eq!(read(&mut net), "v1", "served by the other host");
    assert_eq!(net.nodes[0].relay.hint.get(&1), Some(&3), "the hint moved");
    assert!(
        net.nodes[0].relay.shunned.contains_key(&2),
        "member 2 shunned"
    );
    // Writes too, and the shunned host is not chosen again though it may be named leader.
    net.put(0, "h", "v2");
    assert_eq!(read(&mut net), "v2");
    assert!(
        net.nodes[1].relay.taken.is_empty(),
        "nothing taken at member 2"
    );

    // Disarmed, it serves relays again.
    net.nodes[1].quarantine(false);
    net.nodes[0].relay.shunned.clear();
    net.nodes[0].relay.hint.insert(1, 2);
    assert_eq!(read(&mut net), "v2");
    assert_eq!(
        net.nodes[0]
            .relay
            .hint
            .get(&1)
            .copied()
            .map(|h| h == 2 || h == 3),
        Some(true)
    );
}
