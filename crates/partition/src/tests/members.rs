//! Membership changes on the in-memory network: the answer to an operator's change, also to a
//! retry of one applied before, is given only once every group on the answering member
//! followed it — the operator stops a removed member on that answer.

use super::*;
use synod_core::membership::{ERR_MEMBER_NOT_FOUND, MemberChange};

/// Whether `reply`, an answer to a removal of member 3, was given while a group on the member
/// giving it still counts member 3: what an operator who stops member 3 on it would break.
fn answered_early(n: &Node, reply: &ClientReply) -> Option<String> {
    let membership = match &reply.result {
        Ok(r) => matches!(r.body, ResponseBody::Membership(_)),
        Err(e) => matches!(e, EngineError::Membership(_)),
    };
    let behind: Vec<GroupId> = (n.groups.iter())
        .filter(|(_, e)| e.status().configuration.contains(3))
        .map(|(g, _)| *g)
        .collect();
    (membership && !behind.is_empty()).then(|| {
        format!(
            "{:?} answered while groups {behind:?} count member 3",
            reply.id
        )
    })
}

/// Two operators remove member 3 at once (or one retries at another member): the first
/// removal applied makes the second "member not found", a change that is so already. Both
/// answers wait until every group on the answering member removed member 3 too (planted
/// `partition-member-retry-not-held`: the second is answered as its first group applies it,
/// before the other groups followed — since 2026-12-07 random schedules no longer reach it,
/// so this test is its catch).
#[test]
fn a_retried_removal_is_answered_once_every_group_followed() {
    assert_eq!(removed_twice(None), Vec::<String>::new());
    let planted = removed_twice(Some(PlantedBug::PartitionMemberRetryNotHeld));
    assert!(
        planted.iter().any(|f| f.contains("answered while groups")),
        "the planted bug is caught: {planted:?}"
    );
}

/// Both removals' answers checked as given; the checks that failed.
fn removed_twice(bug: Option<PlantedBug>) -> Vec<String> {
    let mut net = Net::with(|c| c.planted_bug = bug);
    net.rounds(100);
    net.put(0, "a", "before");
    net.audit = Some(answered_early);
    let remove = || Op::Membership(MemberChange::Remove(3));
    // Member 3 is cut off: the groups it leads follow only once they elected another leader,
    // long after the first group applied the removal — and the retry.
    net.down = Some(2);
    let first = net.submit(0, remove(), Consistency::Linearizable);
    net.rounds(2);
    let second = net.submit(1, remove(), Consistency::Linearizable);
    let answers = [net.wait(first), net.wait(second)];
    let removed = |r: &Result<Response, EngineError>| matches!(r.as_ref().map(|r| &r.body), Ok(ResponseBody::Membership(c)) if !c.contains(3));
    let done_already = |r: &Result<Response, EngineError>| matches!(r, Err(EngineError::Membership(m)) if m == ERR_MEMBER_NOT_FOUND);
    assert!(
        answers.iter().filter(|r| removed(r)).count() == 1
            && answers.iter().filter(|r| done_already(r)).count() == 1,
        "one removal, one that finds it done: {answers:?}"
    );
    for n in &net.nodes[..2] {
        for (g, e) in &n.groups {
            assert!(!e.status().configuration.contains(3), "group {g} followed");
        }
    }
    std::mem::take(&mut net.audit_failures)
}
