//! Viewstamped Replication Revisited (Liskov & Cowling, MIT-CSAIL-TR-2012-021) as a Synod
//! ordering protocol: a sans-IO, deterministic [`LogProtocol`]. The replica layer
//! (`synod-replica`) makes it an engine; nothing here knows what a key is.
//!
//! * [`messages`] — Prepare/PrepareOk/Commit (§4.1), StartViewChange/DoViewChange/StartView
//!   (§4.2), Recovery/RecoveryResponse (§4.3), GetState/NewState (§5.2), read confirmations.
//! * [`storage`] — view-number, last-normal view, log and commit-number, and their records.
//! * `normal` — §4.1 at the primary (batching, commit) and the backups.
//! * `view_change` — §4.2, with DoViewChange carrying only the log after the commit-number.
//! * `recovery` — §4.3.
//! * `state_transfer` — §5.2, and when a peer needs a snapshot instead.
//! * `reads` — leadership confirmation for the replica layer's read index.
//! * `connectivity` — whom a replica hears, and which view a stalled view change moves to.
//!
//! Names follow the paper: view-number ([`LogProtocol::term`]), op-number
//! ([`LogProtocol::log_len`]), commit-number ([`LogProtocol::decided_idx`]), status normal /
//! view-change / recovering, last-normal view. The primary of view v is `members[v % n]`;
//! f = (n − 1) / 2.
//!
//! ## Durability, and what it relaxes in §4.3
//! The paper's replicas are diskless: a restarted replica has forgotten everything, so it must
//! not answer anything until f + 1 others told it the current view, and at most f replicas may
//! fail at once. Synod writes the view-number, last-normal view and log before every message
//! that depends on them (records precede messages in one [`ProtocolOutput`]), and a replica
//! never goes back to an older view after a restart. So:
//! * **With its disk, any number of replicas may restart.** A restarted replica still runs
//!   recovery (status recovering) — it may have been the primary and sent Prepares *early*,
//!   before its own write, and lost those entries, so it must never lead its old view again —
//!   but its own durable state counts as one of the f + 1 responses, and if every response
//!   names an older view than its own it starts a view change instead of waiting forever.
//! * **A wiped disk** (no checkpoint, no records, `first_boot` false) runs the paper's
//!   recovery: f + 1 responses from others, one from the primary of the largest view among
//!   them, and that primary's *whole* log (the replica may have acknowledged entries up to the
//!   primary's op-number before it lost them). That is safe as long as at most f replicas lost
//!   their state at once: the f + 1 responders intersect every quorum the replica took part in
//!   before it lost its disk. It writes [`Record::Amnesic`] first and clears it only when
//!   recovery completes, so a crash in between is again a start without state (the simulator
//!   found the version without it: a half-recovered replica restarted as if it had its disk
//!   and voted a committed suffix away).
//! * A first boot writes `View(0)`, so a replica that restarts before writing anything else
//!   restarts with its (empty, promise-free) disk rather than as a wiped one.
//! * Replicas in view-change status, and recovering ones with their disk, also answer
//!   Recovery (marked not normal): when every replica restarted at once nobody is normal, and
//!   the durable ones must be able to see that and start a view change.
//!
//! ## Deviations from the paper (named)
//! * **Deferred truncation (§5.2).** The paper has a replica that learns of a newer view set
//!   its op-number to its commit-number before state transfer. Done durably, that shortens a
//!   log whose last-normal view is unchanged, and that log may be the only copy, in a later
//!   view-change quorum, of an operation committed in that view (n = 5: commit X in v with
//!   {A, C, D}; v + 1 adopts X but its StartView is lost; C and D learn of v + 1 and truncate;
//!   A and the v + 1 primary fail; {C, D, E} elect v + 2 without X). Here the replica
//!   remembers that its suffix after the commit-number is not trusted in the new view (it is
//!   "normal, unsynced": no PrepareOk, GetState from its commit-number) and the suffix is
//!   replaced only by the [`Record::Replace`] that installs the new view's log and raises the
//!   last-normal view in one write. Learning committed entries or a snapshot likewise never
//!   drops entries after them.
//! * **DoViewChange carries the log after the commit-number only** (the paper sends the whole
//!   log and discusses shortening it in §5.1); the new primary fetches committed entries it
//!   lacks with GetState (or a snapshot) before it sends StartView.
//! * **StartView, NewState and the recovery answer may start after the receiver's
//!   commit-number**, and must reach at least the log the primary started its view with
//!   ([`messages::StateChunk::synced`]): a log whose last-normal view is v must contain every
//!   operation committed before v, so a receiver never becomes normal with a shorter prefix.
//! * A DoViewChange for view v also counts as that sender's StartViewChange for v.
//! * Replicas answer the new primary's GetState during a view change with committed entries.
//! * **StartViewChange relays votes and says whether its sender is quorum-connected; a
//!   stalled view change skips to the next view whose primary is quorum-connected** (§4.2
//!   moves to v + 1). See "Liveness under partial connectivity" below.
//!
//! ## Persist before send, and early Prepares
//! Prepares leave *early* (before the primary's own append is durable): a backup accepts them
//! on the strength of the view's StartView, which left only after the primary's
//! [`Record::Replace`] was durable; the primary counts its own log toward a commit only when
//! it handles a later input (a PrepareOk), which the caller delivers after this batch's write.
//! If the primary crashes before its write, backups may hold entries it lost — which is why a
//! restarted replica recovers and never resumes leading the view it led.
//!
//! ## Linearizable reads
//! [`LogProtocol::start_read_round`] at a normal primary of view v returns its op-number as the
//! read index and asks the backups to confirm view v; each answers only while normal in v.
//! With f + 1 (itself included) the round is confirmed. Any view newer than v that committed a
//! write needs f + 1 replicas that left v before it committed; they intersect the confirmers,
//! and views never go back, so no write was committed in a newer view before the confirmation
//! — every acknowledged write is in this primary's log below the read index.
//!
//! ## Liveness under partial connectivity (deviation from §4.2)
//! In the paper a view change needs f StartViewChange messages at every DoViewChange sender
//! and f + 1 DoViewChange messages at the new primary, and a stalled view change moves to
//! v + 1. Under the OmniPaxos paper's quorum-loss and constrained-election topologies (n = 5:
//! one hub hears everyone, the others hear only the hub) no replica but the hub ever hears f
//! StartViewChange messages, so no DoViewChange quorum forms in any view, and views whose
//! primary is not the hub could not complete anyway: the cluster deadlocked for as long as
//! the topology held. Two changes, after OmniPaxos's Ballot Leader Election
//! (`connectivity`):
//! * **Relayed votes.** StartViewChange carries `joined`, every replica its sender knows
//!   moved to the view, and a receiver counts them toward its f. A replica that hears only the
//!   hub learns from it that f others joined.
//! * **Quorum-connected primaries.** A replica is quorum-connected when it heard from f others
//!   within an election timeout; StartViewChange says whether its sender is. A view change
//!   that times out moves to the smallest later view whose primary is quorum-connected as far
//!   as this replica knows (itself, or a peer whose recent StartViewChange said so), else to
//!   v + 1 as in the paper (the first timeout after normal status, when backups have not
//!   heard each other). The primary of view v is still `members[v % n]`: skipping views
//!   changes only *which* view-number is tried, never who leads a given view, so every
//!   replica agrees on the primary of every view.
//!
//! Why safety is unchanged: neither change touches what makes a view safe — the new primary
//! still needs f + 1 DoViewChange messages (its own included) and picks the log with the
//! largest last-normal view, then op-number; a replica sends DoViewChange only from
//! view-change status in that view, with the view-number durable first, so it accepts no
//! Prepare of an older view afterwards. The StartViewChange count only decides *when* a
//! replica sends its DoViewChange (it is a liveness gate: the DoViewChange itself is the
//! promise), and a relayed vote is as true as a direct one in a crash-fault model: the relayer
//! received that replica's StartViewChange (or DoViewChange) for this view. Skipping views is
//! what §4.2 already does one view at a time. Measured with `synod sim --report`, n = 5:
//! quorum-loss and constrained election recover in about 3 election timeouts (they
//! deadlocked before). A replica cut off from the others still raises its view once per
//! timeout (it knows no candidate, so it tries v + 1) and forces a view change when it
//! returns.
//!
//! Nothing here reads a clock, does I/O or spawns a thread; time is ticks, and the only
//! randomness (view-change timeout jitter) is drawn from `config.seed`.

mod connectivity;
pub mod messages;
mod normal;
mod reads;
mod recovery;
mod state_transfer;
pub mod storage;
#[cfg(test)]
mod tests;
mod transfer;
mod view_change;

pub use messages::{Message, StateChunk, VIEW_MAX, View};
pub use storage::{Checkpoint, Record};

use connectivity::Connectivity;
use normal::PrimaryState;
use reads::ReadRounds;
use recovery::RecoveryState;
use storage::DurableState;
use synod_core::{
    Command, EngineConfig, LeaderTransferError, LogProtocol, NodeId, ProtocolEvent, ProtocolOutput,
    SnapshotAcceptance, SplitMix64, TransferStatus,
};
use view_change::ViewChangeState;

type Out = ProtocolOutput<Message, Record>;

/// The primary holds at most this many batches of operations that are not committed yet:
/// bounds the log suffix a DoViewChange or StartView carries.
pub const UNCOMMITTED_BATCHES_MAX: u64 = 8;

/// §4 replica status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Normal,
    ViewChange,
    Recovering,
}

/// One VR replica.
#[derive(Debug)]
pub struct Vr {
    config: EngineConfig,
    /// Quorums are f + 1 replicas. VR Revisited assumes n = 2f + 1, f = (n − 1) / 2; an
    /// even member count (4 voters while a cluster grows from 3 to 5) needs f = n / 2, so
    /// that quorums are majorities and any two of them intersect — with f + 1 = 2 of 4, a
    /// view change by two replicas could miss what the other two committed.
    f: usize,
    store: DurableState,
    status: Status,
    /// `Some` exactly while this replica is the normal primary of its view.
    primary: Option<PrimaryState>,
    /// Votes and DoViewChange messages of the view change in progress (status view-change).
    vc: ViewChangeState,
    /// `Some` exactly while status is recovering.
    recovery: Option<RecoveryState>,
    reads: ReadRounds,
    /// Proposals waiting for the next `flush` (primary, or primary-to-be during its view
    /// change). At most `pending_requests_max * n`.
    proposals: Vec<Command>,
    rng: SplitMix64,
    now_ticks: u64,
    /// Ticks since the primary was last heard from (backup), or since the view change began.
    idle_ticks: u64,
    /// The jittered timeout `idle_ticks` is compared with.
    timeout_ticks: u64,
    /// Whom this replica heard recently and who said it is quorum-connected: where a stalled
    /// view change goes next.
    links: Connectivity,
    heartbeat_elapsed_ticks: u64,
    /// Primary: a heartbeat tick passed; the next flush sends to every backup.
    heartbeat_due: bool,
    /// A heartbeat passed: write the commit-number even if nothing else is being written.
    commit_record_due: bool,
    /// Rate limit for GetState: at most one per heartbeat.
    last_get_state_tick: Option<u64>,
    /// Outputs of the call in progress, moved into the caller's at its end.
    out: Out,
}

impl Vr {
    fn n(&self) -> usize {
        self.config.members.len()
    }

    /// §4: the primary of view v is the replica at index v mod n of the sorted members.
    fn primary_of(&self, view: View) -> NodeId {
        self.config.members[(view % self.n() as u64) as usize]
    }

    fn me(&self) -> NodeId {
        self.config.id
    }

    fn is_member_peer(&self, from: NodeId) -> bool {
        from != self.config.id && self.config.members.contains(&from)
    }

    /// Normal and the last-normal view is the current one: the log from the commit-number on
    /// is the current view's (as opposed to a replica waiting for state transfer).
    fn synced(&self) -> bool {
        self.status == Status::Normal && self.store.last_normal() == self.store.view()
    }

    fn send(&mut self, to: NodeId, m: Message) {
        self.out.messages.push((to, m));
    }

    fn send_all(&mut self, m: Message) {
        let peers: Vec<NodeId> = self.config.peers().collect();
        for p in peers {
            self.send(p, m.clone());
        }
    }

    /// A fresh view-change / primary timeout in [T, 2T) ticks, T = `election_timeout_ticks`,
    /// so that backups rarely start competing view changes at once.
    fn reset_timer(&mut self) {
        let t = self.config.election_timeout_ticks.max(1);
        self.idle_ticks = 0;
        self.timeout_ticks = t + self.rng.below(t);
    }

    fn batch_max(&self) -> u64 {
        self.config.batch_entries_max.max(1) as u64
    }

    /// Moves this call's outputs to the caller's, writing the commit-number if due.
    fn finish(&mut self, out: &mut Out) {
        if !self.out.records.is_empty() || self.commit_record_due {
            self.store.commit_record(&mut self.out.records);
            self.commit_record_due = false;
        }
        out.append(&mut self.out);
    }

    fn on_tick(&mut self, transfers: &dyn TransferStatus<View>) {
        self.now_ticks += 1;
        self.heartbeat_elapsed_ticks += 1;
        let heartbeat = self.heartbeat_elapsed_ticks >= self.config.heartbeat_ticks.max(1);
        if heartbeat {
            self.heartbeat_elapsed_ticks = 0;
            self.commit_record_due = true;
        }
        match self.status {
            Status::Recovering => {
                if heartbeat {
                    self.send_recovery();
                }
            }
            Status::ViewChange => {
                self.idle_ticks += 1;
                if self.idle_ticks >= self.timeout_ticks {
                    // §4.2: a view change that does not complete moves on to a later view —
                    // here the next one whose primary is quorum-connected, if known.
                    self.start_view_change(self.next_view(self.store.view()));
                } else if heartbeat {
                    self.view_change_heartbeat();
                }
            }
            Status::Normal if self.primary.is_some() => {
                if heartbeat {
                    self.heartbeat_due = true;
                    self.resend_read_confirms();
                    self.snapshot_lagging_backups(transfers);
                }
            }
            Status::Normal => {
                self.idle_ticks += 1;
                if self.idle_ticks >= self.timeout_ticks {
                    // §4.2: nothing from the primary for a timeout.
                    self.start_view_change(self.next_view(self.store.view()));
                } else if heartbeat && !self.synced() {
                    self.request_state();
                }
            }
        }
    }

    fn on_receive(&mut self, from: NodeId, m: Message, transfers: &dyn TransferStatus<View>) {
        if !self.is_member_peer(from) || m.view().is_some_and(|v| v > messages::VIEW_MAX) {
            return;
        }
        self.note_heard(from);
        match m {
            Message::Recovery { nonce, commit } => {
                self.handle_recovery(from, nonce, commit, transfers)
            }
            Message::RecoveryResponse {
                view,
                nonce,
                normal,
                chunk,
            } => self.handle_recovery_response(from, view, nonce, normal, chunk),
            _ if self.status == Status::Recovering => {
                // §4.3: a recovering replica takes no part until it has recovered.
            }
            Message::Prepare {
                view,
                start,
                entries,
                commit,
            } => self.handle_prepare(from, view, start, entries, commit),
            Message::PrepareOk { view, op_number } => self.handle_prepare_ok(from, view, op_number),
            Message::Commit { view, commit } => self.handle_commit(from, view, commit),
            Message::StartViewChange {
                view,
                connected,
                joined,
            } => {
                self.note_peer_connected(from, connected);
                self.handle_start_view_change(from, view, &joined)
            }
            Message::DoViewChange {
                view,
                last_normal,
                op_number,
                commit,
                entries,
            } => {
                let dvc = view_change::Dvc {
                    last_normal,
                    op_number,
                    commit,
                    entries,
                };
                self.handle_do_view_change(from, view, dvc)
            }
            Message::StartView {
                view,
                start,
                entries,
                commit,
            } => self.handle_start_view(from, view, start, entries, commit),
            Message::GetState { view, op_number } => {
                self.handle_get_state(from, view, op_number, transfers)
            }
            Message::NewState { view, chunk } => self.handle_new_state(from, view, chunk),
            Message::ReadConfirm { view, seq } => self.handle_read_confirm(from, view, seq),
            Message::ReadConfirmOk { view, seq } => self.handle_read_confirm_ok(from, view, seq),
        }
    }
}

impl LogProtocol for Vr {
    type Message = Message;
    type Record = Record;
    type Checkpoint = Checkpoint;
    type Term = View;
    const NAME: &'static str = "vr";

    fn recover(
        config: &EngineConfig,
        checkpoint: Option<&Checkpoint>,
        records: &[Record],
        out: &mut Out,
    ) -> Result<Self, String> {
        let store = DurableState::replay(checkpoint, records)?;
        // A new epoch's instance (its first boot, from `epoch_checkpoint`) starts like a new
        // cluster: normal in view 0 (§7: the new group starts in view 0).
        let epoch_start = config.first_boot
            && records.is_empty()
            && checkpoint.is_some_and(|c| c.view == 0 && c.suffix.is_empty() && !c.amnesic);
        // A wiped disk, or one that was wiped and has not finished recovering since.
        let durable =
            (checkpoint.is_some() || !records.is_empty()) && !store.amnesic() && !epoch_start;
        let n = config.members.len();
        if n == 0 || !config.members.contains(&config.id) {
            return Err(format!(
                "{} is not among members {:?}",
                config.id, config.members
            ));
        }
        let mut vr = Vr {
            f: n / 2,
            store,
            status: Status::Recovering,
            primary: None,
            vc: ViewChangeState::default(),
            recovery: None,
            reads: ReadRounds::default(),
            proposals: Vec::new(),
            rng: SplitMix64::fork(config.seed ^ config.boot_nonce, config.id),
            now_ticks: 0,
            idle_ticks: 0,
            timeout_ticks: 0,
            links: Connectivity::default(),
            heartbeat_elapsed_ticks: 0,
            heartbeat_due: false,
            commit_record_due: false,
            last_get_state_tick: None,
            out: Out::default(),
            config: config.clone(),
        };
        vr.reset_timer();
        vr.boot(durable);
        vr.finish(out);
        Ok(vr)
    }

    fn receive(
        &mut self,
        from: NodeId,
        message: Message,
        transfers: &dyn TransferStatus<View>,
        out: &mut Out,
    ) {
        self.on_receive(from, message, transfers);
        self.finish(out);
    }

    fn tick(&mut self, transfers: &dyn TransferStatus<View>, out: &mut Out) {
        self.on_tick(transfers);
        self.finish(out);
    }

    fn flush(&mut self, out: &mut Out) {
        self.primary_flush();
        self.finish(out);
    }

    fn propose(&mut self, command: Command) -> bool {
        let cap = self.config.pending_requests_max.saturating_mul(self.n());
        if self.is_leader() && self.proposals.len() < cap {
            self.proposals.push(command);
            return true;
        }
        // Over the bound (or not the primary) the command is dropped; its origin re-forwards.
        false
    }

    fn leader(&self) -> Option<NodeId> {
        match self.status {
            Status::Normal => Some(self.primary_of(self.store.view())),
            Status::ViewChange if self.primary_of(self.store.view()) == self.me() => {
                Some(self.me())
            }
            _ => None,
        }
    }

    fn is_leader(&self) -> bool {
        self.leader() == Some(self.me())
    }

    fn start_read_round(&mut self, round: u64, out: &mut Out) -> Option<u64> {
        let r = self.start_read(round);
        self.finish(out);
        r
    }

    fn log_len(&self) -> u64 {
        self.store.log_len()
    }

    fn decided_idx(&self) -> u64 {
        self.store.commit()
    }

    fn compacted_idx(&self) -> u64 {
        self.store.compacted_idx()
    }

    fn entry(&self, idx: u64) -> &Command {
        self.store.entry(idx)
    }

    fn epoch_checkpoint(base_idx: u64) -> Option<Checkpoint> {
        // A new epoch (§7): view 0 in the new group, op-number and commit-number at the
        // reconfiguration request.
        Some(Checkpoint {
            view: View::default(),
            last_normal: View::default(),
            compacted_idx: base_idx,
            commit: base_idx,
            suffix: Vec::new(),
            amnesic: false,
        })
    }

    fn compact(&mut self, idx: u64) -> Checkpoint {
        self.store.compact(idx)
    }

    fn snapshot_term(&self) -> View {
        self.store.view()
    }

    fn accept_snapshot(&self, from: NodeId, term: View) -> SnapshotAcceptance {
        self.snapshot_acceptance(from, term)
    }

    fn install_snapshot(&mut self, _term: View, idx: u64) -> Checkpoint {
        self.store.install_snapshot(idx)
    }

    fn snapshot_installed(&mut self, out: &mut Out) {
        self.after_snapshot_installed();
        self.finish(out);
    }

    fn snapshot_delivered(&mut self, to: NodeId, term: View, idx: u64, out: &mut Out) {
        self.on_snapshot_delivered(to, term, idx);
        self.finish(out);
    }

    fn transfer_leadership(
        &mut self,
        to: NodeId,
        out: &mut Out,
    ) -> Result<(), LeaderTransferError> {
        let r = self.start_transfer(to);
        self.finish(out);
        r
    }

    fn transfer_candidate(&self) -> Option<NodeId> {
        self.most_up_to_date_backup()
    }

    fn term(&self) -> u64 {
        self.store.view()
    }

    fn can_checkpoint(&self) -> bool {
        // A recovering replica's state is not yet one it may vouch for.
        self.status != Status::Recovering
    }

    fn role(&self) -> &'static str {
        match self.status {
            Status::Normal if self.primary.is_some() => "primary",
            Status::Normal => "backup",
            Status::ViewChange => "view-change",
            Status::Recovering => "recovering",
        }
    }
}

impl Vr {
    /// The status, for tests and diagnostics.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The last-normal view, for tests and diagnostics.
    pub fn last_normal_view(&self) -> View {
        self.store.last_normal()
    }

    fn push_event(&mut self, e: ProtocolEvent) {
        self.out.events.push(e);
    }
}
