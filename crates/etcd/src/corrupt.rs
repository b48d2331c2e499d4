//! The periodic corruption check (etcd's `--experimental-corrupt-check-time`): every
//! `corrupt_check_ms` this member compares its HashKV with its peers' at a revision all of
//! them applied, and raises its CORRUPT alarm when it is the odd one out.
//!
//! One round:
//! 1. ask every other voter of the configuration this member applied for the revision it
//!    applied — over the peer port (`synod_node::transport::ask`), as etcd asks over its peer
//!    URLs: a member has no user for its peers' client APIs when auth is on, nor a client
//!    certificate when they demand one (until 2026-12-05 it asked there, and with auth or
//!    client TLS on the check compared nothing);
//! 2. take R = the lowest of those and this member's own revision — every answering member has
//!    applied R, so their histories up to R must be equal;
//! 3. hash this member's history up to R and ask each peer for its HashKV(R); a peer whose
//!    compact revision differs is not comparable this round (etcd skips it too);
//! 4. if a peer differs, log both hashes; if the members that agree with this one (itself
//!    included) are fewer than a majority of the voters, raise CORRUPT here.
//!
//! **Placement** (`[partition] replicas` below the members): no two members need host the same
//! groups, so whole-member hashes never match. The round then goes group by group: for each
//! group this member hosts, its other hosts are asked (over the peer port) for the revision
//! they applied in it, and the group's own history is hashed at the lowest and compared; the
//! majority is of the group's hosts. One group where this member is the odd one out raises
//! its alarm.
//!
//! Why raise only on the minority side: the alarm makes a member refuse service, and with
//! three members and one diverged, the two healthy ones each see one mismatch. Raising on every
//! member that sees a mismatch would take the whole cluster down for one bad disk; raising
//! where a majority disagrees takes down exactly the member whose state nobody else has.
//! (etcd raises a cluster-wide alarm instead; Synod's alarms are member-local.) A round that
//! cannot reach enough peers, or finds R compacted meanwhile, decides nothing.

use std::collections::BTreeMap;
use std::time::Duration;
use synod_core::{EngineError, EngineStatus};
use synod_node::backup::Maintenance;
use synod_node::transport::{PeerAnswer, PeerQuestion};
use synod_node::{ApiError, NodeHandle};
/// A HashKV at a revision "in the future" is asked again this many times, this far apart: a
/// partitioned member answers one only once every group of it reached (closed) the revision,
/// which the groups behind do within a close interval (a tick, 10 ms) of the others' writes.
const FUTURE_RETRIES: u32 = 5;
const FUTURE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs the check every `every` until the task is aborted. `every == 0` returns at once.
pub async fn run(handle: NodeHandle, every: Duration) {
    if every.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        check_once(&handle).await;
    }
}

/// A group a peer hosts: (group, applied revision, compact revision).
type GroupRevisions = (u64, u64, u64);

/// A peer's answer in one round.
struct PeerHash {
    id: u64,
    hash: u32,
    compact_revision: u64,
}

/// One round (see the module doc). Returns whether this member's alarm is raised after it.
pub async fn check_once(handle: &NodeHandle) -> bool {
    let Some(m) = handle.maintenance() else {
        return false;
    };
    let status = handle.status();
    if status.engine.directory.as_ref().is_some_and(|d| d.placed) {
        check_groups(handle, m, &status.engine).await;
    } else {
        check_member(handle, m, &status.engine).await;
    }
    m.corrupt()
}

/// The whole member's history against every other voter's.
async fn check_member(handle: &NodeHandle, m: &Maintenance, status: &EngineStatus) {
    let me = handle.info().member_id;
    let peers: Vec<(u64, String)> = status
        .configuration
        .members
        .iter()
        .filter(|p| p.id != me && !p.learner && !p.peer_addr.is_empty())
        .map(|p| (p.id, p.peer_addr.clone()))
        .collect();
    let mut reached = Vec::new();
    let mut revision = status.revision;
    for (id, addr) in peers {
        let Some(rev) = peer_revision(handle, id, &addr).await else {
            continue;
        };
        revision = revision.min(rev);
        reached.push((id, addr));
    }
    if revision == 0 || reached.is_empty() {
        return;
    }
    let Some(mine) = own_hash(handle, None, revision).await else {
        return;
    };
    let mut answers = Vec::new();
    for (id, addr) in &reached {
        let question = PeerQuestion::HashKv { revision };
        if let Some(a) = peer_hash(handle, *id, addr, question).await {
            answers.push(a);
        }
    }
    let voters = status.configuration.voters().len();
    judge(m, "", revision, &mine, &answers, voters);
}

/// Placement (groups on some members each): every group this member hosts against the same
/// group on its other hosts, at a revision of that group all of them applied — the member's
/// history as a whole matches nobody's, since no two members need host the same groups.
async fn check_groups(handle: &NodeHandle, m: &Maintenance, status: &EngineStatus) {
    let me = handle.info().member_id;
    let addrs: BTreeMap<u64, String> = status
        .configuration
        .members
        .iter()
        .filter(|p| p.id != me && !p.peer_addr.is_empty())
        .map(|p| (p.id, p.peer_addr.clone()))
        .collect();
    // Each peer sharing a group is asked once for the revisions of all its groups (once, even
    // when it does not answer: an unreachable peer costs one timeout a round, not one a group).
    let mut asked: BTreeMap<u64, Option<Vec<GroupRevisions>>> = BTreeMap::new();
    for g in &status.groups {
        for v in g.voters.iter().filter(|v| **v != me) {
            if asked.contains_key(v) {
                continue;
            }
            let Some(addr) = addrs.get(v) else { continue };
            asked.insert(*v, peer_groups(handle, *v, addr).await);
        }
    }
    let revisions: BTreeMap<u64, Vec<GroupRevisions>> = asked
        .into_iter()
        .filter_map(|(v, r)| Some((v, r?)))
        .collect();
    for g in &status.groups {
        let mut revision = g.revision;
        let mut reached = Vec::new();
        for v in g.voters.iter().filter(|v| **v != me) {
            let at = revisions
                .get(v)
                .and_then(|r| r.iter().find(|x| x.0 == g.group));
            if let (Some(&(_, r, _)), Some(addr)) = (at, addrs.get(v)) {
                revision = revision.min(r);
                reached.push((*v, addr));
            }
        }
        if revision == 0 || reached.is_empty() {
            continue;
        }
        let Some(mine) = own_hash(handle, Some(g.group), revision).await else {
            continue;
        };
        let mut answers = Vec::new();
        for (id, addr) in reached {
            let question = PeerQuestion::GroupHashKv {
                group: g.group,
                revision,
            };
            if let Some(a) = peer_hash(handle, id, addr, question).await {
                answers.push(a);
            }
        }
        let what = format!("group {}: ", g.group);
        judge(m, &what, revision, &mine, &answers, g.voters.len());
    }
}

/// Compares this member's hash with the peers' answers among `voters` voters: raises the
/// alarm here when this member is on the minority side, logs the odd ones out otherwise.
fn judge(
    m: &Maintenance,
    what: &str,
    revision: u64,
    mine: &synod_core::kv::KvHash,
    answers: &[PeerHash],
    voters: usize,
) {
    let comparable: Vec<&PeerHash> = answers
        .iter()
        .filter(|a| a.compact_revision == mine.compact_revision)
        .collect();
    let differing: Vec<String> = comparable
        .iter()
        .filter(|a| a.hash != mine.hash)
        .map(|a| format!("n{}={:08x}", a.id, a.hash))
        .collect();
    let agreeing = 1 + comparable.len() - differing.len();
    let majority = voters / 2 + 1;
    if differing.is_empty() {
        return;
    }
    if agreeing < majority && comparable.len() + 1 >= majority {
        if m.raise_corrupt() {
            tracing::error!(
                revision,
                hash = format!("{:08x}", mine.hash),
                peers = %differing.join(" "),
                "CORRUPT alarm raised: {what}this member's key-value history disagrees with a \
                 majority of the voters at a revision all of them applied; it refuses reads \
                 and writes until an operator disarms the alarm (see docs/backup.md)"
            );
        }
    } else {
        tracing::error!(
            revision,
            hash = format!("{:08x}", mine.hash),
            peers = %differing.join(" "),
            "HashKV mismatch: {what}these peers' key-value history differs from this member's \
             (and from the majority's); they raise their own CORRUPT alarm"
        );
    }
}

/// This member's HashKV at `revision` (of group `group`'s own history, if given), asked again
/// while some group here has not reached it.
async fn own_hash(
    handle: &NodeHandle,
    group: Option<u64>,
    revision: u64,
) -> Option<synod_core::kv::KvHash> {
    for _ in 0..FUTURE_RETRIES {
        let hash = match group {
            Some(g) => handle.group_hash_kv(g, revision).await,
            None => handle.hash_kv(revision).await,
        };
        match hash {
            Ok(h) => return Some(h),
            Err(ApiError::Engine(EngineError::FutureRevision { .. })) => {
                tokio::time::sleep(FUTURE_RETRY_PAUSE).await;
            }
            Err(_) => return None,
        }
    }
    None
}

/// The groups member `id` hosts: (group, applied revision, compact revision).
async fn peer_groups(handle: &NodeHandle, id: u64, addr: &str) -> Option<Vec<GroupRevisions>> {
    match handle.ask_peer(id, addr, PeerQuestion::Groups).await {
        Ok(PeerAnswer::Groups(g)) => Some(g),
        Ok(other) => {
            tracing::debug!(peer = id, answer = ?other, "corruption check: no groups");
            None
        }
        Err(e) => {
            tracing::debug!(peer = id, error = %e, "corruption check: peer unreachable");
            None
        }
    }
}

/// The revision member `id` (peer port `addr`) applied; `None` if it does not answer.
async fn peer_revision(handle: &NodeHandle, id: u64, addr: &str) -> Option<u64> {
    match handle.ask_peer(id, addr, PeerQuestion::Revision).await {
        Ok(PeerAnswer::Revision(r)) => Some(r),
        Ok(other) => {
            tracing::debug!(peer = id, answer = ?other, "corruption check: no revision");
            None
        }
        Err(e) => {
            tracing::debug!(peer = id, error = %e, "corruption check: peer unreachable");
            None
        }
    }
}

/// Member `id`'s answer to a HashKV `question` (its hash and compact revision), asked again
/// while it has not reached the revision; `None` if it does not answer.
async fn peer_hash(
    handle: &NodeHandle,
    id: u64,
    addr: &str,
    question: PeerQuestion,
) -> Option<PeerHash> {
    for _ in 0..FUTURE_RETRIES {
        match handle.ask_peer(id, addr, question.clone()).await {
            Ok(PeerAnswer::HashKv {
                hash,
                compact_revision,
                ..
            }) => {
                return Some(PeerHash {
                    id,
                    hash,
                    compact_revision,
                });
            }
            Ok(PeerAnswer::FutureRevision) => tokio::time::sleep(FUTURE_RETRY_PAUSE).await,
            Ok(other) => {
                tracing::debug!(peer = id, answer = ?other, "corruption check: no HashKV");
                return None;
            }
            Err(e) => {
                tracing::debug!(peer = id, error = %e, "corruption check: peer unreachable");
                return None;
            }
        }
    }
    None
}
