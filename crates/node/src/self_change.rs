//! A member's change of its own membership, asked over the peer port
//! ([`crate::transport::PeerQuestion::Member`]) and proposed by the answering member on the
//! asker's behalf: a wiped member removing its old id and adding itself back, a learner
//! promoting itself, a joined member publishing its client addresses. Over the client APIs
//! these want the root role once auth is on, which a member acting for itself does not have;
//! here the change is checked to name the asker and nobody else (against confusion: what the
//! asker says of itself is believed, as the peer port believes every member), then proposed as
//! the member (`auth::as_member`) and decided like any membership change.

use crate::auth::as_member;
use crate::handle::NodeHandle;
use crate::members::check_host_port;
use crate::transport::PeerAnswer;
use crate::transport::ask::SelfChange;
use synod_core::NodeId;
use synod_core::membership::{Configuration, Member, MemberChange};

/// A rejoin is a removal then an add; one more look finds it done.
const STEPS_MAX: usize = 3;
/// How often an add in progress looks for the new member in the configuration followed.
const ADD_LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// How long an add is proposed again while it times out (its new member may be starting).
const ADD_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What to do next for a self change, given the configuration this member applied.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing left: the asker's id and the configuration's version.
    Done {
        id: NodeId,
        version: u64,
    },
    Propose(MemberChange),
}

/// Answers `change` asked by member `from`: proposes what is left of it, step by step, and
/// names the asker's id once the configuration holds the change.
pub async fn answer(handle: &NodeHandle, from: NodeId, change: SelfChange) -> PeerAnswer {
    let mut conf = handle.status().engine.configuration.clone();
    // CASPaxos has no learners: a member joins it as an acceptor.
    let learners = handle.info().engine != "caspaxos";
    for _ in 0..STEPS_MAX {
        match plan(&conf, from, &change, learners) {
            Err(why) => return PeerAnswer::Unavailable(why),
            Ok(Plan::Done { id, version }) => return PeerAnswer::Member { id, version },
            Ok(Plan::Propose(c)) => match propose(handle, c).await {
                Ok(after) => conf = after,
                Err(e) => return PeerAnswer::Unavailable(e),
            },
        }
    }
    PeerAnswer::Unavailable(format!(
        "member {from}'s change is not done after {STEPS_MAX} steps"
    ))
}

/// Proposes `change` as this member and returns the configuration after it. An add is
/// answered as soon as the new member is in the configuration this member follows, while the
/// change goes on in the background: on CASPaxos an add completes only once the new member runs
/// and acknowledges it, and the new member starts only once it knows its id — this answer.
async fn propose(handle: &NodeHandle, change: MemberChange) -> Result<Configuration, String> {
    let MemberChange::Add(added) = &change else {
        return as_member(handle.change_members(change))
            .await
            .map_err(|e| e.to_string());
    };
    let at = added.peer_addr.clone();
    let h = handle.clone();
    let mut decided = tokio::spawn(as_member(add_until_decided(h, change)));
    loop {
        tokio::select! {
            done = &mut decided => {
                return match done {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("the add stopped: {e}")),
                };
            }
            _ = tokio::time::sleep(ADD_LOOK_EVERY) => {
                let now = handle.status().engine.configuration.clone();
                if now.members.iter().any(|m| m.peer_addr == at) {
                    // The task goes on (a dropped JoinHandle does not abort it).
                    return Ok(now);
                }
            }
        }
    }
}

/// Proposes `add` until it is decided or refused, for at most [`ADD_RETRY_FOR`]. A CASPaxos
/// coordinator gives up when its request times out and leaves the change at the step it
/// reached, which only the same change asked again resumes (caspaxos `coordinator.rs`); a
/// new member that starts a little late must not leave the cluster there.
async fn add_until_decided(
    handle: NodeHandle,
    add: MemberChange,
) -> Result<Configuration, crate::handle::ApiError> {
    use crate::handle::ApiError;
    use synod_core::EngineError;
    let until = tokio::time::Instant::now() + ADD_RETRY_FOR;
    loop {
        match handle.change_members(add.clone()).await {
            Err(
                ApiError::Unavailable(_)
                | ApiError::NoLeader
                | ApiError::Engine(EngineError::Timeout | EngineError::Busy),
            ) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(ADD_LOOK_EVERY * 10).await;
            }
            r => return r,
        }
    }
}

/// What is left of `change` asked by `from`, given the configuration `conf` this member follows:
/// nothing (done), a change to propose, or why it may not be made.
fn plan(
    conf: &Configuration,
    from: NodeId,
    change: &SelfChange,
    learners: bool,
) -> Result<Plan, String> {
    if conf.members.is_empty() {
        return Err("this member has applied no configuration yet".into());
    }
    let done = |id| {
        Ok(Plan::Done {
            id,
            version: conf.version,
        })
    };
    let member = conf.members.iter().find(|m| m.id == from);
    match change {
        SelfChange::Rejoin {
            name,
            peer_addr,
            http_addr,
            grpc_addr,
        } => {
            check_host_port(peer_addr)
                .map_err(|why| format!("peer address {peer_addr:?}: {why}"))?;
            check_client_addresses(http_addr, grpc_addr)?;
            if let Some(m) = member {
                if &m.peer_addr != peer_addr {
                    return Err(format!(
                        "member {from} is at {}, not at {peer_addr}: it may not rejoin from there",
                        m.peer_addr
                    ));
                }
                return Ok(Plan::Propose(MemberChange::Remove(from)));
            }
            if from >= conf.next_id {
                return Err(format!("member {from} was never a member of this cluster"));
            }
            match conf.members.iter().find(|m| &m.peer_addr == peer_addr) {
                Some(m) if m.id > from => done(m.id),
                Some(m) => Err(format!(
                    "{peer_addr} belongs to member {}, older than {from}",
                    m.id
                )),
                None => Ok(Plan::Propose(MemberChange::Add(Member {
                    id: 0,
                    name: name.clone(),
                    peer_addr: peer_addr.clone(),
                    http_addr: http_addr.clone(),
                    grpc_addr: grpc_addr.clone(),
                    // Votes only once caught up (promoted), where the engine has learners.
                    learner: learners,
                }))),
            }
        }
        SelfChange::Promote => match member {
            None => Err(format!("member {from} is not a member")),
            Some(m) if !m.learner => done(from),
            Some(_) => Ok(Plan::Propose(MemberChange::Promote(from))),
        },
        SelfChange::Publish {
            name,
            http_addr,
            grpc_addr,
        } => {
            check_client_addresses(http_addr, grpc_addr)?;
            // An empty field keeps the member's value (`Configuration::apply`), so only the
            // given ones are compared — else an update that changes nothing would be made again.
            let same = |given: &String, held: &String| given.is_empty() || given == held;
            match member {
                None => Err(format!("member {from} is not a member")),
                Some(m)
                    if same(name, &m.name)
                        && same(http_addr, &m.http_addr)
                        && same(grpc_addr, &m.grpc_addr) =>
                {
                    done(from)
                }
                Some(_) => Ok(Plan::Propose(MemberChange::Update(Member {
                    id: from,
                    name: name.clone(),
                    peer_addr: String::new(),
                    http_addr: http_addr.clone(),
                    grpc_addr: grpc_addr.clone(),
                    learner: false,
                }))),
            }
        }
    }
}

/// Client addresses: host:port, or empty (not known).
fn check_client_addresses(http: &str, grpc: &str) -> Result<(), String> {
    for (field, addr) in [("http_addr", http), ("grpc_addr", grpc)] {
        if !addr.is_empty() {
            check_host_port(addr).map_err(|why| format!("{field} {addr:?}: {why}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, learner: bool) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            peer_addr: format!("127.0.0.1:70{id}0"),
            http_addr: format!("127.0.0.1:70{id}1"),
            grpc_addr: String::new(),
            learner,
        }
    }

    fn conf(members: Vec<Member>) -> Configuration {
        Configuration {
            version: 7,
            epoch: 3,
            members,
            next_id: 5,
        }
    }

    fn rejoin_of(m: &Member) -> SelfChange {
        SelfChange::Rejoin {
            name: m.name.clone(),
            peer_addr: m.peer_addr.clone(),
            http_addr: m.http_addr.clone(),
            grpc_addr: m.grpc_addr.clone(),
        }
    }

    /// A rejoin removes the old id, then adds a learner at the same addresses, then is done
    /// with the new id; it never touches another member, nor an id the cluster never issued.
    #[test]
    fn a_rejoin_removes_the_old_id_then_adds_a_new_member_at_its_addresses() {
        let (m1, m2, m3) = (member(1, false), member(2, false), member(3, false));
        let ask = rejoin_of(&m3);
        let all = conf(vec![m1.clone(), m2.clone(), m3.clone()]);
        assert_eq!(
            plan(&all, 3, &ask, true),
            Ok(Plan::Propose(MemberChange::Remove(3)))
        );
        let removed = conf(vec![m1.clone(), m2.clone()]);
        let Ok(Plan::Propose(MemberChange::Add(added))) = plan(&removed, 3, &ask, true) else {
            panic!("an add after the removal");
        };
        assert!(added.learner && added.peer_addr == m3.peer_addr && added.id == 0);
        let back = conf(vec![m1.clone(), m2.clone(), Member { id: 5, ..added }]);
        assert_eq!(
            plan(&back, 3, &ask, true),
            Ok(Plan::Done { id: 5, version: 7 })
        );
        // Member 2 may not rejoin from member 3's address, nor may an id never issued.
        assert!(plan(&all, 2, &ask, true).is_err_and(|e| e.contains("may not rejoin")));
        assert!(plan(&removed, 9, &ask, true).is_err_and(|e| e.contains("never a member")));
        let bad = SelfChange::Rejoin {
            name: String::new(),
            peer_addr: "nowhere".into(),
            http_addr: String::new(),
            grpc_addr: String::new(),
        };
        assert!(plan(&all, 3, &bad, true).is_err_and(|e| e.contains("peer address")));
        // Where the engine has no learners (CASPaxos), the member comes back as a voter.
        let Ok(Plan::Propose(MemberChange::Add(voter))) = plan(&removed, 3, &ask, false) else {
            panic!("an add on CASPaxos");
        };
        assert!(!voter.learner);
        assert!(plan(&conf(vec![]), 3, &ask, true).is_err());
    }

    #[test]
    fn promote_and_publish_change_only_the_asker() {
        let c = conf(vec![member(1, false), member(4, true)]);
        assert_eq!(
            plan(&c, 4, &SelfChange::Promote, true),
            Ok(Plan::Propose(MemberChange::Promote(4)))
        );
        assert_eq!(
            plan(&c, 1, &SelfChange::Promote, true),
            Ok(Plan::Done { id: 1, version: 7 })
        );
        assert!(plan(&c, 2, &SelfChange::Promote, true).is_err());
        let same = SelfChange::Publish {
            name: "n1".into(),
            http_addr: "127.0.0.1:7011".into(),
            grpc_addr: String::new(),
        };
        assert_eq!(
            plan(&c, 1, &same, true),
            Ok(Plan::Done { id: 1, version: 7 })
        );
        // An empty field keeps the member's value: nothing to publish again.
        let unnamed = SelfChange::Publish {
            name: String::new(),
            http_addr: "127.0.0.1:7011".into(),
            grpc_addr: String::new(),
        };
        assert_eq!(
            plan(&c, 1, &unnamed, true),
            Ok(Plan::Done { id: 1, version: 7 })
        );
        let moved = SelfChange::Publish {
            name: "n1".into(),
            http_addr: "127.0.0.1:9999".into(),
            grpc_addr: "127.0.0.1:9998".into(),
        };
        let Ok(Plan::Propose(MemberChange::Update(u))) = plan(&c, 1, &moved, true) else {
            panic!("an update");
        };
        assert!(u.id == 1 && u.http_addr == "127.0.0.1:9999" && u.peer_addr.is_empty());
        assert!(plan(&c, 2, &moved, true).is_err());
    }
}
