//! The simulated watch layer: watchers open on every node of a run with `watchers > 0`, fed the
//! way a node's watch fan-out must feed them, and the evidence the watch checker judges.
//!
//! * **Feed.** Each node's watchers get only that node's own `take_watch_events()`, taken after
//!   each of its ready batches — what it applied. The engine contract says revisions only jump
//!   after a snapshot install, so a batch that carries a checkpoint record catches every watcher
//!   up through `watch_history` instead; a jump in any other batch, or a revision handed out
//!   twice, is reported at once (the engine broke its contract) and fed as it came (the watchers'
//!   checks see the consequence too).
//! * **Start.** A watcher starts "from now" (the revision after its node's) or at a past
//!   revision, replayed through `watch_history` in pages; one whose start is compacted is
//!   cancelled with the compaction revision (recorded, not a violation), and a new one opens.
//! * **Resume.** A crash disconnects the node's watchers; after a client's reconnect delay each
//!   resumes on a random live node from its last delivered revision + 1, as an etcd client does.
//!   A node behind that revision makes it wait (etcd's future-revision watch).
//! * **Reference.** Every revision a node takes or serves from its history — including on the
//!   batch a crash cuts short, and everything it recovered at boot — goes into the checker's
//!   [`Reference`], which requires equal events for equal revision numbers.
//!
//! Memory is bounded: the reference holds one shared pointer per revision, a run opens at most
//! [`WATCHERS_OPENED_FACTOR`] times the configured watchers, and deliveries are recorded up to
//! [`WATCH_EVENTS_RECORDED_MAX`] events (past it the watcher checks are skipped, and say so).

use super::{Engine, Ev, OpenOp, Sim, fail};
use crate::watch_ops::{self, Observed};
use std::sync::Arc;
use synod_checker::watch::{
    self, Reference, WatchInput, WatchReport, WatchSpec, WatchStep, WatcherLog,
};
use synod_core::kv::{Response, RevisionEvents};
use synod_core::{DurableRecord, EngineError, NodeId, Ready, SplitMix64};

/// Revisions one `watch_history` call returns at most; a catch-up pages through.
pub const HISTORY_PAGE_REVISIONS: usize = 64;
/// Watchers a run opens at most (replacements of cancelled ones included), per configured one.
pub const WATCHERS_OPENED_FACTOR: usize = 4;
/// Watch events recorded per run at most.
pub const WATCH_EVENTS_RECORDED_MAX: u64 = 2_000_000;
/// A disconnected watcher's client waits this long before it resumes elsewhere.
pub const RESUME_DELAY_MIN_US: u64 = 20_000;
pub const RESUME_DELAY_MAX_US: u64 = 300_000;
/// With no live node to open or resume on, try again after this.
pub const NO_NODE_RETRY_US: u64 = 100_000;
/// A watcher that starts in the past starts at most this many revisions back.
pub const PAST_START_LAG_MAX: u64 = 30;

/// Something the watch layer asks the event loop to do later.
#[derive(Clone, Copy, Debug)]
pub(super) enum WatchTask {
    /// Open a new watcher, on `prefer` if it is up, else on a random live node.
    Open { prefer: Option<NodeId> },
    /// Resume watcher `w` (disconnected by a crash) on a random live node.
    Resume(usize),
}

/// One node's feed: whether its engine has switched event collection on since it booted, and
/// the last revision its watchers were fed.
#[derive(Clone, Copy, Debug, Default)]
struct Feed {
    on: bool,
    fed: u64,
}

struct SimWatcher {
    log: WatcherLog,
    /// `None` while disconnected (or cancelled).
    node: Option<NodeId>,
    /// The lowest revision it still accepts (etcd's minimum revision of a watcher).
    next: u64,
    last_delivered: Option<u64>,
    cancelled: bool,
}

/// The watch layer of a whole run: per-node feeds, the watchers, and the evidence.
pub(super) struct WatchHub {
    pub(super) enabled: bool,
    /// Draws for watchers and the watch workload: a stream of its own, so runs without
    /// watchers draw exactly what they drew before watchers existed.
    pub(super) rng: SplitMix64,
    feeds: Vec<Feed>,
    watchers: Vec<SimWatcher>,
    reference: Reference,
    pub(super) observed: Observed,
    /// The highest revision any reply reported: where compactions and past reads aim.
    pub(super) known_revision: u64,
    opened_max: usize,
    events_recorded: u64,
    truncated: bool,
    /// Watch-workload operations that completed.
    pub(super) ops_ok: u64,
    tasks: Vec<(u64, WatchTask)>,
    notes: Vec<String>,
}

impl WatchHub {
    pub(super) fn new(seed: u64, nodes: usize, watchers_per_node: usize) -> Self {
        WatchHub {
            enabled: watchers_per_node > 0,
            rng: SplitMix64::fork(seed, 8),
            feeds: vec![Feed::default(); nodes],
            watchers: Vec::new(),
            reference: Reference::default(),
            observed: Observed::default(),
            known_revision: 0,
            opened_max: watchers_per_node * nodes * WATCHERS_OPENED_FACTOR,
            events_recorded: 0,
            truncated: false,
            ops_ok: 0,
            tasks: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn live(&self, i: usize) -> bool {
        self.feeds[i].on
    }

    fn observe(&mut self, node: NodeId, revs: &[Arc<RevisionEvents>], failures: &mut Vec<String>) {
        for rev in revs {
            if let Err(e) = self.reference.observe(node, rev) {
                fail(failures, format!("watch agreement: {e}"));
            }
        }
    }

    /// Records every revision `engine` holds in its history, from `from` on.
    fn observe_history<E: Engine>(
        &mut self,
        node: NodeId,
        engine: &E,
        from: u64,
        failures: &mut Vec<String>,
    ) {
        let status = engine.status();
        let mut next = from.max(status.compact_revision).max(1);
        while next <= status.revision {
            match engine.watch_history(next, HISTORY_PAGE_REVISIONS) {
                Ok(page) if !page.is_empty() => {
                    self.observe(node, &page, failures);
                    next = page.last().map_or(next, |r| r.revision + 1).max(next + 1);
                }
                _ => break,
            }
        }
    }

    /// Sends `rev` to watcher `w` if it still accepts it.
    fn deliver(&mut self, w: usize, node: NodeId, rev: &RevisionEvents) {
        let sw = &mut self.watchers[w];
        if rev.revision < sw.next {
            return;
        }
        sw.next = rev.revision + 1;
        sw.log.passed = sw.log.passed.max(rev.revision);
        let events = sw.log.spec.select(rev);
        if events.is_empty() {
            return;
        }
        if self.events_recorded >= WATCH_EVENTS_RECORDED_MAX {
            self.truncated = true;
            return;
        }
        self.events_recorded += events.len() as u64;
        sw.last_delivered = Some(rev.revision);
        sw.log.steps.push(WatchStep::Deliver {
            node,
            revision: rev.revision,
            events,
        });
    }

    /// Replays `engine`'s history to watcher `w` up to the engine's revision; cancels it if
    /// what it needs is compacted.
    fn catch_up<E: Engine>(
        &mut self,
        w: usize,
        node: NodeId,
        engine: &E,
        failures: &mut Vec<String>,
    ) {
        let revision = engine.status().revision;
        while !self.watchers[w].cancelled && self.watchers[w].next <= revision {
            let from = self.watchers[w].next;
            match engine.watch_history(from, HISTORY_PAGE_REVISIONS) {
                Ok(page) => {
                    self.observe(node, &page, failures);
                    for rev in &page {
                        self.deliver(w, node, rev);
                    }
                    if self.watchers[w].next == from {
                        break; // Nothing new: never loop on a history that does not advance.
                    }
                }
                Err(EngineError::Compacted { compact_revision }) => {
                    self.cancel(w, node, from, compact_revision);
                }
                Err(e) => {
                    fail(
                        failures,
                        format!("watch: n{node} watch_history({from}) failed: {e}"),
                    );
                    break;
                }
            }
        }
    }

    fn cancel(&mut self, w: usize, node: NodeId, from: u64, compact_revision: u64) {
        let sw = &mut self.watchers[w];
        sw.cancelled = true;
        sw.node = None;
        sw.log.steps.push(WatchStep::Cancel {
            node,
            from,
            compact_revision,
        });
        self.notes.push(format!(
            "watch: w{w} cancelled at n{node}: from {from} is compacted (at {compact_revision})"
        ));
        self.tasks.push((0, WatchTask::Open { prefer: None }));
    }

    /// A new watcher on `node` (live), from now or from a past revision.
    fn open<E: Engine>(&mut self, node: NodeId, engine: &E, keys: u64, failures: &mut Vec<String>) {
        let fed = self.feeds[(node - 1) as usize].fed;
        let (key, range_end) = watch_ops::random_range(&mut self.rng, keys);
        let filter = self.rng.below(6);
        let spec = WatchSpec {
            key,
            range_end,
            no_put: filter == 0,
            no_delete: filter == 1,
            prev_kv: self.rng.below(2) == 0,
        };
        let start = if self.rng.below(3) == 0 {
            fed.saturating_sub(self.rng.below(PAST_START_LAG_MAX))
                .max(1)
        } else {
            fed + 1
        };
        let w = self.watchers.len();
        self.watchers.push(SimWatcher {
            log: WatcherLog {
                id: w as u64,
                spec,
                start,
                steps: vec![WatchStep::Attach {
                    node,
                    from: start,
                    resume: false,
                }],
                passed: start - 1,
            },
            node: Some(node),
            next: start,
            last_delivered: None,
            cancelled: false,
        });
        self.catch_up(w, node, engine, failures);
    }

    /// Watcher `w` reconnects at `node` from the revision after the last one delivered.
    fn resume<E: Engine>(
        &mut self,
        w: usize,
        node: NodeId,
        engine: &E,
        failures: &mut Vec<String>,
    ) {
        let sw = &mut self.watchers[w];
        let from = sw.last_delivered.map_or(sw.log.start, |r| r + 1);
        sw.node = Some(node);
        sw.next = from;
        sw.log.steps.push(WatchStep::Attach {
            node,
            from,
            resume: true,
        });
        self.notes
            .push(format!("watch: w{w} resumes at n{node} from {from}"));
        self.catch_up(w, node, engine, failures);
    }

    /// The node's process died: its watchers are disconnected and will resume elsewhere.
    pub(super) fn disconnect(&mut self, node: NodeId) {
        // Nodes beyond the original members (reconfiguration runs) have no watch feed.
        if let Some(feed) = self.feeds.get_mut((node - 1) as usize) {
            *feed = Feed::default();
        }
        for w in 0..self.watchers.len() {
            if self.watchers[w].node == Some(node) {
                self.watchers[w].node = None;
                let delay = self.rng.range(RESUME_DELAY_MIN_US, RESUME_DELAY_MAX_US);
                self.tasks.push((delay, WatchTask::Resume(w)));
            }
        }
    }

    /// The first batch after `node` booted: collection is on from here, and everything it
    /// recovered goes into the reference.
    fn boot<E: Engine>(&mut self, node: NodeId, engine: &E, failures: &mut Vec<String>) {
        let revision = engine.status().revision;
        self.feeds[(node - 1) as usize] = Feed {
            on: true,
            fed: revision,
        };
        self.observe_history(node, engine, 1, failures);
    }

    /// One ready batch of `node`: `fresh` is what it took after the batch, `checkpointed`
    /// whether the batch carried a checkpoint record (a snapshot install may have made the
    /// revisions jump).
    pub(super) fn batch<E: Engine>(
        &mut self,
        node: NodeId,
        engine: &E,
        fresh: Vec<Arc<RevisionEvents>>,
        checkpointed: bool,
        failures: &mut Vec<String>,
    ) {
        let i = (node - 1) as usize;
        self.observe(node, &fresh, failures);
        if !self.feeds[i].on {
            self.boot(node, engine, failures);
            // No watcher is on a node that just booted; what it took counts as fed.
            let last = fresh.last().map_or(0, |r| r.revision);
            self.feeds[i].fed = self.feeds[i].fed.max(last);
            return;
        }
        let on_node: Vec<usize> = (0..self.watchers.len())
            .filter(|&w| self.watchers[w].node == Some(node))
            .collect();
        let fed = self.feeds[i].fed;
        let revision = engine.status().revision;
        let jumped = fresh
            .first()
            .map_or(revision > fed, |r| r.revision > fed + 1);
        if checkpointed && jumped {
            // A snapshot install replaced the state: catch up from the new history.
            self.observe_history(node, engine, fed + 1, failures);
            for &w in &on_node {
                self.catch_up(w, node, engine, failures);
            }
            self.feeds[i].fed = fed.max(revision);
            return;
        }
        for rev in &fresh {
            let fed = self.feeds[i].fed;
            if rev.revision > fed + 1 {
                fail(
                    failures,
                    format!(
                        "watch feed: n{node} handed its watchers revision {} after {fed}, with no snapshot install: revisions {}..={} never reached them",
                        rev.revision,
                        fed + 1,
                        rev.revision - 1
                    ),
                );
            } else if rev.revision <= fed {
                fail(
                    failures,
                    format!(
                        "watch feed: n{node} handed its watchers revision {} again (after {fed})",
                        rev.revision
                    ),
                );
            }
            for &w in &on_node {
                self.deliver(w, node, rev);
            }
            self.feeds[i].fed = fed.max(rev.revision);
        }
        let fed = self.feeds[i].fed;
        if revision > fed {
            fail(
                failures,
                format!(
                    "watch feed: n{node} is at revision {revision} but handed its watchers only up to {fed}, with no snapshot install"
                ),
            );
            self.feeds[i].fed = revision;
        }
    }

    /// The checker's verdict over everything recorded.
    fn check(&mut self) -> WatchReport {
        let input = WatchInput {
            reference: std::mem::take(&mut self.reference),
            watchers: if self.truncated {
                Vec::new()
            } else {
                self.watchers.iter().map(|w| w.log.clone()).collect()
            },
            reads: std::mem::take(&mut self.observed.reads),
            writes: std::mem::take(&mut self.observed.writes),
            compares: std::mem::take(&mut self.observed.compares),
        };
        watch::check(&input)
    }
}

/// What `engine`'s batch `ready` applied, taken at once so that a crash before the batch
/// completes cannot lose it from the reference (watchers get it only once the batch completed),
/// and whether the batch carries a checkpoint record. Nothing is taken when no watcher runs.
pub(super) fn take_applied<E: Engine>(
    engine: &mut E,
    ready: &Ready<E::Message, E::Record>,
    watch_on: bool,
) -> (Vec<Arc<RevisionEvents>>, bool) {
    if !watch_on {
        return (Vec::new(), false);
    }
    let checkpointed = ready.records().iter().any(DurableRecord::is_checkpoint);
    (engine.take_watch_events(), checkpointed)
}

impl<E: Engine> Sim<E> {
    /// Schedules the first watchers: `watchers` per node, a third at the start and the rest
    /// spread over the fault window.
    pub(super) fn watch_start(&mut self) {
        if !self.watch.enabled {
            return;
        }
        for j in 0..self.cfg.watchers * self.members.len() {
            let prefer = self.members[j % self.members.len()];
            let t = if self.watch.rng.below(3) == 0 {
                0
            } else {
                self.watch.rng.below(self.cfg.fault_window_us.max(1))
            };
            self.at(
                t,
                Ev::Watch(WatchTask::Open {
                    prefer: Some(prefer),
                }),
            );
        }
    }

    /// A live node to open or resume a watcher on: `prefer` if it is up, else a random one.
    fn watch_node(&mut self, prefer: Option<NodeId>) -> Option<NodeId> {
        let live: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|&n| {
                let i = self.idx(n);
                self.nodes[i].engine.is_some() && self.watch.live(i)
            })
            .collect();
        match prefer {
            Some(p) if live.contains(&p) => Some(p),
            _ if live.is_empty() => None,
            _ => Some(*self.watch.rng.pick(&live)),
        }
    }

    pub(super) fn watch_task(&mut self, task: WatchTask) {
        let keys = self.cfg.keys;
        let node = match task {
            WatchTask::Open { .. } if self.watch.watchers.len() >= self.watch.opened_max => return,
            WatchTask::Resume(w)
                if self.watch.watchers[w].cancelled || self.watch.watchers[w].node.is_some() =>
            {
                return;
            }
            WatchTask::Open { prefer } => self.watch_node(prefer),
            WatchTask::Resume(_) => self.watch_node(None),
        };
        let Some(node) = node else {
            self.at(self.now_us + NO_NODE_RETRY_US, Ev::Watch(task));
            return;
        };
        let i = self.idx(node);
        if let Some(engine) = self.nodes[i].engine.as_ref() {
            match task {
                WatchTask::Open { .. } => self.watch.open(node, engine, keys, &mut self.failures),
                WatchTask::Resume(w) => self.watch.resume(w, node, engine, &mut self.failures),
            }
        }
        self.watch_flush();
    }

    /// After `node`'s batch was persisted and sent: feed its watchers.
    pub(super) fn watch_batch(
        &mut self,
        node: NodeId,
        fresh: Vec<Arc<RevisionEvents>>,
        checkpointed: bool,
    ) {
        let i = self.idx(node);
        if let Some(engine) = self.nodes[i].engine.as_ref() {
            self.watch
                .batch(node, engine, fresh, checkpointed, &mut self.failures);
        }
        self.watch_flush();
    }

    /// A successful reply to `open` from `node`: what it claims, for the watch checker.
    pub(super) fn watch_reply(&mut self, node: NodeId, open: &OpenOp, response: &Response) {
        self.watch.known_revision = self.watch.known_revision.max(response.revision);
        self.watch.observed.note(node, &open.request.op, response);
        self.watch.ops_ok += u64::from(open.watch_extra);
    }

    /// A batch that never completed (crash in the early window): its revisions were applied,
    /// so they join the reference, but no watcher gets them.
    pub(super) fn watch_observe_only(&mut self, node: NodeId, fresh: &[Arc<RevisionEvents>]) {
        self.watch.observe(node, fresh, &mut self.failures);
    }

    /// Schedules what the watch layer asked for and traces its notes.
    pub(super) fn watch_flush(&mut self) {
        for (delay, task) in std::mem::take(&mut self.watch.tasks) {
            self.at(self.now_us + delay, Ev::Watch(task));
        }
        for n in std::mem::take(&mut self.watch.notes) {
            self.note(None, crate::trace::TraceKind::Note(n));
        }
    }

    /// End of run: the watch checker's verdict, its violations added to the failures.
    pub(super) fn watch_finish(&mut self) -> Option<WatchReport> {
        if !self.watch.enabled {
            return None;
        }
        let report = self.watch.check();
        for v in &report.violations {
            fail(&mut self.failures, format!("watch: {v}"));
        }
        if report.violations_total > report.violations.len() {
            fail(
                &mut self.failures,
                format!(
                    "watch: and {} more violations",
                    report.violations_total - report.violations.len()
                ),
            );
        }
        if self.watch.truncated {
            fail(
                &mut self.failures,
                format!(
                    "watch: over {WATCH_EVENTS_RECORDED_MAX} events recorded; watcher checks skipped (raise the bound or shorten the run)"
                ),
            );
        }
        Some(report)
    }
}
