//! Leader transfer between the API and the engine thread (etcd's MoveLeader): a request goes
//! to the engine thread over a small channel of its own, the engine starts the hand-off
//! ([`synod_core::Engine::transfer_leadership`]), and the engine thread answers once its status
//! names the target as leader — or, after the bound, with etcd's "leader transfer took too
//! long" (the engine gave up by then and leads on).
//!
//! The wait lives on the engine thread, not in the API, because only it sees every status
//! the engine goes through and knows the tick length the bound is counted in.

use std::time::{Duration, Instant};
use synod_core::{
    ERR_LEADER_TRANSFER_TIMEOUT, Engine, EngineStatus, LeaderTransferError, NodeId,
    leader_transfer_ticks,
};
use tokio::sync::oneshot;

/// Transfers waiting for their target to lead, at most; more are refused as busy (an operator
/// moves a leader once, not hundreds of times at once).
pub const WAITING_TRANSFERS_MAX: usize = 16;

/// Extra wall time the node waits beyond the engine's own bound, so that the engine (which
/// counts ticks, and ticks can run late under load) gives up first.
const SLACK: Duration = Duration::from_millis(500);

/// Why a leader transfer failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveLeaderError {
    /// Refused before anything changed (not the leader, bad target, leaderless engine…).
    Refused(LeaderTransferError),
    /// Started, but the target did not lead within the bound (etcd's
    /// `ErrTimeoutLeaderTransfer`); the old leader leads on.
    TimedOut,
    /// The node stopped, or too many transfers are waiting.
    Unavailable(String),
}

impl std::fmt::Display for MoveLeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveLeaderError::Refused(e) => write!(f, "{e}"),
            MoveLeaderError::TimedOut => f.write_str(ERR_LEADER_TRANSFER_TIMEOUT),
            MoveLeaderError::Unavailable(s) => write!(f, "unavailable: {s}"),
        }
    }
}

impl std::error::Error for MoveLeaderError {}

/// A request from the API to the engine thread.
#[derive(Debug)]
pub struct TransferRequest {
    /// The target; `None`: the most up-to-date other voter (a graceful shutdown).
    pub to: Option<NodeId>,
    /// Answered with the member that leads after the hand-off.
    pub reply: oneshot::Sender<Result<NodeId, MoveLeaderError>>,
}

/// Where a transfer's outcome goes: the member that leads after it, or why not.
type Reply = oneshot::Sender<Result<NodeId, MoveLeaderError>>;

/// The engine thread's side: transfers started and waiting for their target to lead.
#[derive(Debug)]
pub(crate) struct Transfers {
    waiting: Vec<(NodeId, Instant, Reply)>,
    /// How long a started transfer may take (the engine's bound in wall time, plus slack).
    bound: Duration,
}

impl Transfers {
    pub(crate) fn new(tick: Duration, engine: &synod_core::EngineConfig) -> Self {
        let ticks = u32::try_from(leader_transfer_ticks(engine)).unwrap_or(u32::MAX);
        Transfers {
            waiting: Vec::new(),
            bound: tick.saturating_mul(ticks) + SLACK,
        }
    }

    /// Starts a transfer in `engine`; answers at once when refused or already done.
    pub(crate) fn start<E: Engine>(&mut self, engine: &mut E, req: TransferRequest) {
        if self.waiting.len() >= WAITING_TRANSFERS_MAX {
            let busy = MoveLeaderError::Unavailable("too many leader transfers waiting".into());
            let _ = req.reply.send(Err(busy));
            return;
        }
        match engine.transfer_leadership(req.to) {
            Err(e) => {
                let _ = req.reply.send(Err(MoveLeaderError::Refused(e)));
            }
            Ok(to) => {
                tracing::info!(target_member = to, "leader transfer started");
                self.waiting
                    .push((to, Instant::now() + self.bound, req.reply));
            }
        }
    }

    /// After every batch: answers the transfers whose target leads, and those out of time.
    pub(crate) fn check(&mut self, status: &EngineStatus) {
        if self.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(to, deadline, _)| status.leader == Some(*to) || now >= *deadline);
        self.waiting = waiting;
        for (to, _, reply) in done {
            let r = if status.leader == Some(to) {
                tracing::info!(
                    target_member = to,
                    term = status.term,
                    "leader transfer done"
                );
                Ok(to)
            } else {
                tracing::warn!(target_member = to, "leader transfer took too long; gave up");
                Err(MoveLeaderError::TimedOut)
            };
            let _ = reply.send(r);
        }
    }
}
