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
//! Why raise only on the minority side: the alarm makes a member refuse service, and with
//! three members and one diverged, the two healthy ones each see one mismatch. Raising on every
//! member that sees a mismatch would take the whole cluster down for one bad disk; raising
//! where a majority disagrees takes down exactly the member whose state nobody else has.
//! (etcd raises a cluster-wide alarm instead; Synod's alarms are member-local.) A round that
//! cannot reach enough peers, or finds R compacted meanwhile, decides nothing.

use std::time::Duration;
use synod_core::EngineError;
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
    let me = handle.info().member_id;
    let voters = status.engine.configuration.voters();
    let peers: Vec<(u64, String)> = status
        .engine
        .configuration
        .members
        .iter()
        .filter(|p| p.id != me && !p.learner && !p.peer_addr.is_empty())
        .map(|p| (p.id, p.peer_addr.clone()))
        .collect();
    let mut reached = Vec::new();
    let mut revision = status.engine.revision;
    for (id, addr) in peers {
        let Some(rev) = peer_revision(handle, id, &addr).await else {
            continue;
        };
        revision = revision.min(rev);
        reached.push((id, addr));
    }
    if revision == 0 || reached.is_empty() {
        return m.corrupt();
    }
    let Some(mine) = own_hash(handle, revision).await else {
        return m.corrupt();
    };
    let mut answers = Vec::new();
    for (id, addr) in &reached {
        if let Some((hash, compact_revision)) = peer_hash(handle, *id, addr, revision).await {
            answers.push(PeerHash {
                id: *id,
                hash,
                compact_revision,
            });
        }
    }
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
    let majority = voters.len() / 2 + 1;
    if differing.is_empty() {
        return m.corrupt();
    }
    if agreeing < majority && comparable.len() + 1 >= majority {
        if m.raise_corrupt() {
            tracing::error!(
                revision,
                hash = format!("{:08x}", mine.hash),
                peers = %differing.join(" "),
                "CORRUPT alarm raised: this member's key-value history disagrees with a \
                 majority of the voters at a revision all of them applied; it refuses reads \
                 and writes until an operator disarms the alarm (see docs/backup.md)"
            );
        }
    } else {
        tracing::error!(
            revision,
            hash = format!("{:08x}", mine.hash),
            peers = %differing.join(" "),
            "HashKV mismatch: these peers' key-value history differs from this member's (and \
             from the majority's); they raise their own CORRUPT alarm"
        );
    }
    m.corrupt()
}

/// This member's HashKV at `revision`, asked again while some group here has not reached it.
async fn own_hash(handle: &NodeHandle, revision: u64) -> Option<synod_core::kv::KvHash> {
    for _ in 0..FUTURE_RETRIES {
        match handle.hash_kv(revision).await {
            Ok(h) => return Some(h),
            Err(ApiError::Engine(EngineError::FutureRevision { .. })) => {
                tokio::time::sleep(FUTURE_RETRY_PAUSE).await;
            }
            Err(_) => return None,
        }
    }
    None
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

/// Member `id`'s HashKV at `revision` and its compact revision, asked again while it has not
/// reached the revision; `None` if it does not answer.
async fn peer_hash(handle: &NodeHandle, id: u64, addr: &str, revision: u64) -> Option<(u32, u64)> {
    let question = PeerQuestion::HashKv { revision };
    for _ in 0..FUTURE_RETRIES {
        match handle.ask_peer(id, addr, question.clone()).await {
            Ok(PeerAnswer::HashKv {
                hash,
                compact_revision,
            }) => return Some((hash, compact_revision)),
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
