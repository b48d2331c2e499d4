//! The chaos watchers: watch streams (`GET /v1/watch`, docs/http-api.md) kept open on every
//! member through crashes, pauses and partitions, recorded for the watch checker
//! (`synod_checker::watch`).
//!
//! Every member hosts one **whole-keyspace** watcher with `prev_kv` from revision 1: it is
//! sent every revision whole, so its deliveries are the checker's [`Reference`] (one
//! observation per member and revision, which is also the check that members agree on what
//! each revision holds). Every member also hosts one or two narrower watchers (a key, a range
//! or a prefix, sometimes with a `noput` / `nodelete` filter) watching "from now". A
//! partitioned cluster has no whole-keyspace stream: there every member watches each key, and
//! each key is its own reference (`keyed.rs`).
//!
//! Watchers reach members as the clients do: straight at their HTTP address (the fault proxy
//! sits on peer links only), so a partitioned member's streams lag with its applied state. A
//! stream that breaks (member killed, shutting down) or stalls (no line, not even progress,
//! for [`STALL_MS`]: a paused member) is resumed from the last delivered revision + 1 on the
//! next member that answers, as an etcd client would. A `410 compacted` answer or a
//! `canceled` line with a compaction revision ends the watcher (a [`WatchStep::Cancel`]).
//!
//! Memory: one line buffer per stream ([`LINE_BYTES_MAX`]) and at most
//! [`DELIVERIES_PER_WATCHER_MAX`] recorded deliveries per watcher (a watcher that reaches it
//! stops, and the report says so).

pub mod keyed;

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_checker::watch::{
    AckedWrite, Reference, WatchInput, WatchReport, WatchSpec, WatchStep, WatcherLog, check,
};
use synod_core::kv::{EventKind, Key, KeyValue, RevisionEvents, WatchEvent};
use synod_core::{NodeId, SplitMix64};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Progress lines asked of every stream, so a quiet stream still says it is alive.
pub const PROGRESS_NOTIFY_MS: u64 = 500;
/// A stream that sends nothing for this long (several progress intervals) is given up.
pub const STALL_MS: u64 = 3_000;
/// Connecting to a member gives up after this.
const CONNECT_TIMEOUT_MS: u64 = 300;
/// Pause after every member was tried without success.
const RETRY_BACKOFF_MS: u64 = 200;
/// A line longer than this is not believed (the stream is treated as broken).
pub const LINE_BYTES_MAX: usize = 4 << 20;
/// Deliveries recorded per watcher at most; one that reaches it stops watching.
pub const DELIVERIES_PER_WATCHER_MAX: usize = 200_000;
/// Problems (agreement, protocol) kept verbatim; the rest are counted.
const PROBLEMS_KEPT_MAX: usize = 20;

/// A member a watcher can attach to.
#[derive(Clone, Debug)]
pub struct Target {
    pub id: NodeId,
    pub http_addr: String,
}

/// One watcher to run: what it watches, as a checker spec and as a query string.
#[derive(Clone, Debug)]
pub struct Planned {
    pub spec: WatchSpec,
    pub query: String,
    /// Feeds the reference: the whole keyspace with `prev_kv` from revision 1, or on a
    /// partitioned cluster one key with `prev_kv` from now (`keyed.rs`).
    pub whole: bool,
    /// Opens from revision 1 rather than from now.
    pub from_start: bool,
    /// Index of the member it first attaches to.
    pub home: usize,
}

/// Per member: a whole-keyspace watcher, a single-key one and, on some members, a filtered
/// range or prefix watcher. Drawn from the seed.
pub fn plan(members: usize, keys: usize, seed: u64) -> Vec<Planned> {
    let mut rng = SplitMix64::new(seed ^ 0x57A7_C4E5);
    let keys = keys.max(1) as u64;
    let mut out = Vec::new();
    for home in 0..members {
        out.push(Planned {
            spec: spec(vec![0], vec![0], "", true),
            query: "prefix=&prev_kv=true".into(),
            whole: true,
            from_start: true,
            home,
        });
        let k = format!("k{}", rng.below(keys));
        let prev = rng.below(2) == 0;
        out.push(Planned {
            spec: spec(k.clone().into_bytes(), Vec::new(), "", prev),
            query: format!("key={k}&prev_kv={prev}"),
            whole: false,
            from_start: false,
            home,
        });
        if rng.below(3) == 0 {
            continue;
        }
        let filters = ["", "noput", "nodelete"][rng.below(3) as usize];
        let (a, b) = (rng.below(keys), rng.below(keys));
        let (lo, hi) = (a.min(b), a.max(b) + 1);
        let (key, end, query) = if rng.below(2) == 0 {
            (b"k".to_vec(), b"l".to_vec(), "prefix=k".to_string())
        } else {
            let (lo, hi) = (format!("k{lo}"), format!("k{hi}"));
            let q = format!("key={lo}&end={hi}");
            (lo.into_bytes(), hi.into_bytes(), q)
        };
        out.push(Planned {
            spec: spec(key, end, filters, false),
            query: format!("{query}&filters={filters}"),
            whole: false,
            from_start: false,
            home,
        });
    }
    out
}

fn spec(key: Vec<u8>, range_end: Vec<u8>, filters: &str, prev_kv: bool) -> WatchSpec {
    WatchSpec {
        key,
        range_end,
        no_put: filters == "noput",
        no_delete: filters == "nodelete",
        prev_kv,
    }
}

/// What the watchers recorded, shared between their tasks.
#[derive(Default)]
struct State {
    reference: Reference,
    /// Partitioned: one reference per key, fed by that key's watchers (`keyed.rs`).
    keyed: Option<BTreeMap<Key, Reference>>,
    /// Indexed like the plan; `None` until the watcher's first stream opened.
    logs: Vec<Option<WatcherLog>>,
    /// Reference disagreements and malformed streams: violations of their own.
    problems: Vec<String>,
    problems_total: usize,
    broken: u64,
    stalled: u64,
    capped: usize,
}

impl State {
    fn problem(&mut self, p: String) {
        self.problems_total += 1;
        if self.problems.len() < PROBLEMS_KEPT_MAX {
            self.problems.push(p);
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// The reference's highest revision, for [`Watchers::wait_for`].
    last: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running watchers of a chaos run.
pub struct Watchers {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the watchers recorded, for the checker and the report.
pub struct WatchRun {
    pub reference: Reference,
    pub keyed: Option<BTreeMap<Key, Reference>>,
    pub logs: Vec<WatcherLog>,
    pub problems: Vec<String>,
    pub problems_total: usize,
    pub broken: u64,
    pub stalled: u64,
    pub capped: usize,
    pub whole: usize,
}

impl Watchers {
    /// Starts every planned watcher at its home member; `keyed`: a partitioned cluster's
    /// per-key watchers ([`keyed::plan`]), each key its own reference.
    pub fn start(targets: Vec<Target>, planned: Vec<Planned>, keyed: bool) -> Watchers {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                logs: vec![None; planned.len()],
                keyed: keyed.then(BTreeMap::new),
                ..State::default()
            }),
            last: watch::channel(0).0,
            stop: watch::channel(false).0,
        });
        let targets = Arc::new(targets);
        let tasks = planned
            .into_iter()
            .enumerate()
            .map(|(i, p)| tokio::spawn(run_watcher(i, p, targets.clone(), shared.clone())))
            .collect();
        Watchers { shared, tasks }
    }

    /// Waits until the reference holds `revision`; false if `within` passed first.
    pub async fn wait_for(&self, revision: u64, within: Duration) -> bool {
        let mut rx = self.shared.last.subscribe();
        tokio::time::timeout(within, rx.wait_for(|&l| l >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Keyed: waits until each key's reference holds the last acknowledged write of that key;
    /// false if `within` passed first.
    pub async fn wait_for_keys(&self, writes: &[AckedWrite], within: Duration) -> bool {
        let mut last: BTreeMap<Key, u64> = BTreeMap::new();
        for w in writes {
            for (k, _) in &w.changes {
                let l = last.entry(k.clone()).or_default();
                *l = (*l).max(w.revision);
            }
        }
        let caught_up = || {
            let st = self.shared.lock();
            let refs = st.keyed.as_ref();
            last.iter().all(|(k, r)| {
                refs.and_then(|m| m.get(k))
                    .is_some_and(|reference| reference.last() >= *r)
            })
        };
        let mut rx = self.shared.last.subscribe();
        tokio::time::timeout(within, rx.wait_for(|_| caught_up()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops every watcher (each ends at its next line or timeout) and hands over the logs.
    pub async fn finish(self) -> WatchRun {
        self.shared.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut st = self.shared.lock();
        let st = std::mem::take(&mut *st);
        let whole = st.logs.iter().flatten().filter(|l| is_whole(l)).count();
        let (keyed, reference) = (&st.keyed, &st.reference);
        let last = |l: &WatcherLog| match keyed {
            // A watch over several keys feeds their references itself: nothing is beyond.
            Some(_) if keyed::is_span(&l.spec) => u64::MAX,
            Some(refs) => refs.get(&l.spec.key).map_or(0, Reference::last),
            None => reference.last(),
        };
        let logs = st
            .logs
            .into_iter()
            .flatten()
            .map(|l| {
                let last = last(&l);
                within_reference(l, last)
            })
            .collect();
        WatchRun {
            logs,
            keyed: st.keyed,
            reference: st.reference,
            problems: st.problems,
            problems_total: st.problems_total,
            broken: st.broken,
            stalled: st.stalled,
            capped: st.capped,
            whole,
        }
    }
}

/// A watcher's log up to the reference's last revision: when the run stops, a narrow watcher
/// may already have been sent a revision no whole-keyspace watcher has received yet, which the
/// checker could not tell from a revision no member applied. Everything from its first
/// delivery beyond the reference on is left out.
fn within_reference(mut log: WatcherLog, last: u64) -> WatcherLog {
    let beyond = log
        .steps
        .iter()
        .position(|s| matches!(s, WatchStep::Deliver { revision, .. } if *revision > last));
    if let Some(i) = beyond {
        log.steps.truncate(i);
    }
    log.passed = log.passed.min(last);
    log
}

fn is_whole(l: &WatcherLog) -> bool {
    l.spec.key == [0] && l.spec.range_end == [0] && l.spec.prev_kv
}

/// How one stream ended.
enum End {
    /// Broken or stalled: resume elsewhere.
    Lost,
    /// Cancelled for compaction, capped, or the run is over: the watcher is done.
    Done,
}

/// One watcher: attach, pump its stream, resume on the next member when it is lost.
async fn run_watcher(idx: usize, plan: Planned, targets: Arc<Vec<Target>>, shared: Arc<Shared>) {
    let Ok(http) = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .build()
    else {
        return;
    };
    let mut stop = shared.stop.subscribe();
    let mut member = plan.home;
    let mut tried = 0;
    while !*stop.borrow() {
        let t = &targets[member];
        // The first revision to ask for: after the last delivered, else the watcher's start;
        // 0 (= from now) for a narrow watcher that never opened.
        let from = {
            let st = shared.lock();
            match &st.logs[idx] {
                Some(log) => next_from(log),
                None if plan.from_start => 1,
                None => 0,
            }
        };
        let stream = Stream {
            idx,
            node: t.id,
            whole: plan.whole,
            shared: &shared,
        };
        let url = format!(
            "http://{}/v1/watch?{}&start_revision={from}&progress_notify_ms={PROGRESS_NOTIFY_MS}",
            t.http_addr, plan.query
        );
        let opened = tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(STALL_MS), http.get(&url).send()) => r,
            _ = stop.changed() => return,
        };
        match opened {
            Ok(Ok(resp)) if resp.status().is_success() => {
                tried = 0;
                match stream.pump(resp, &plan, &mut stop).await {
                    End::Done => return,
                    End::Lost => {}
                }
            }
            Ok(Ok(resp)) if resp.status().as_u16() == 410 => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                stream.cancel(&plan, from, compact_revision_of(&body));
                return;
            }
            // Refused, busy, timed out: try the next member.
            _ => tried += 1,
        }
        member = (member + 1) % targets.len();
        if tried >= targets.len() {
            tried = 0;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

fn next_from(log: &WatcherLog) -> u64 {
    let last = log.steps.iter().rev().find_map(|s| match s {
        WatchStep::Deliver { revision, .. } => Some(*revision),
        _ => None,
    });
    last.map_or(log.start, |l| l + 1)
}

/// The compaction revision named by a 410 `compacted` answer ("… (compacted up to revision
/// N)"); 0 if it names none (the checker then reports the cancellation).
fn compact_revision_of(body: &Value) -> u64 {
    let msg = body
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    msg.rsplit("revision ")
        .next()
        .map(|t| t.trim_end_matches(')'))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// One open stream of one watcher.
struct Stream<'a> {
    idx: usize,
    node: NodeId,
    whole: bool,
    shared: &'a Shared,
}

impl Stream<'_> {
    /// Reads lines until the stream ends, breaks or stalls.
    async fn pump(
        &self,
        mut resp: reqwest::Response,
        plan: &Planned,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let mut buf: Vec<u8> = Vec::new();
        let mut created = false;
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(Duration::from_millis(STALL_MS), resp.chunk()) => c,
                _ = stop.changed() => return End::Done,
            };
            let bytes = match chunk {
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    self.shared.lock().broken += 1;
                    return End::Lost;
                }
                Err(_) => {
                    self.shared.lock().stalled += 1;
                    return End::Lost;
                }
            };
            buf.extend_from_slice(&bytes);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Some(end) = self.line(&line, plan, &mut created) {
                    return end;
                }
            }
            if buf.len() > LINE_BYTES_MAX {
                self.shared.lock().broken += 1;
                return End::Lost;
            }
        }
    }

    /// Handles one line; `Some` ends the stream.
    fn line(&self, line: &[u8], plan: &Planned, created: &mut bool) -> Option<End> {
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Some(self.malformed(format!("not JSON ({e})"))),
        };
        let mut st = self.shared.lock();
        if let Some(s) = v.get("start_revision").and_then(Value::as_u64)
            && v.get("created").is_some()
        {
            *created = true;
            let log = st.logs[self.idx].get_or_insert_with(|| WatcherLog {
                id: self.idx as u64 + 1,
                spec: plan.spec.clone(),
                start: s,
                steps: Vec::new(),
                passed: s.saturating_sub(1),
            });
            let resume = !log.steps.is_empty();
            // What the member says it sends from, not what was asked: a member that ignored
            // the request is then caught by the checker's resume check.
            log.steps.push(WatchStep::Attach {
                node: self.node,
                from: s,
                resume,
            });
            return None;
        }
        if !*created {
            drop(st);
            return Some(self.malformed("the first line is not `created`".into()));
        }
        if v.get("canceled").is_some() && v.get("compact_revision").is_none_or(Value::is_null) {
            st.broken += 1;
            return Some(End::Lost); // shutting down: resume elsewhere
        }
        let Some(log) = st.logs[self.idx].as_mut() else {
            return Some(End::Lost);
        };
        if let Some(p) = v.get("progress_revision").and_then(Value::as_u64) {
            log.passed = log.passed.max(p);
            return None;
        }
        if v.get("canceled").is_some() {
            let c = v
                .get("compact_revision")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let from = next_from(log);
            log.steps.push(WatchStep::Cancel {
                node: self.node,
                from,
                compact_revision: c,
            });
            return Some(End::Done);
        }
        let (Some(revision), Some(events)) = (
            v.get("revision").and_then(Value::as_u64),
            v.get("events")
                .and_then(Value::as_array)
                .and_then(|e| e.iter().map(event_of).collect::<Option<Vec<WatchEvent>>>()),
        ) else {
            drop(st);
            return Some(self.malformed(format!("unknown line {v}")));
        };
        self.deliver(&mut st, revision, events)
    }

    fn deliver(&self, st: &mut State, revision: u64, events: Vec<WatchEvent>) -> Option<End> {
        let node = self.node;
        let keyed = st.keyed.is_some();
        let Some(log) = st.logs[self.idx].as_mut() else {
            return Some(End::Lost);
        };
        log.passed = log.passed.max(revision);
        let rev = self.whole.then(|| {
            Arc::new(RevisionEvents {
                revision,
                events: events.clone(),
            })
        });
        log.steps.push(WatchStep::Deliver {
            node,
            revision,
            events,
        });
        let capped = log.steps.len() >= DELIVERIES_PER_WATCHER_MAX;
        let span = (keyed && keyed::is_span(&log.spec)).then(|| match log.steps.last() {
            Some(WatchStep::Deliver { events, .. }) => events.clone(),
            _ => Vec::new(),
        });
        // Only a keyed reference needs the key (once the log's borrow ends).
        let key = (keyed && rev.is_some()).then(|| log.spec.key.clone());
        if let Some(rev) = rev {
            let seen = match (st.keyed.as_mut(), key) {
                (Some(refs), Some(key)) => refs.entry(key).or_default().observe(node, &rev),
                _ => st.reference.observe(node, &rev),
            };
            if let Err(e) = seen {
                st.problem(e);
            }
            if keyed {
                // A key's reference grew: `wait_for_keys` looks again.
                self.shared.last.send_modify(|l| *l = l.wrapping_add(1));
            } else {
                let last = st.reference.last();
                self.shared.last.send_if_modified(|l| {
                    let grew = last > *l;
                    *l = last.max(*l);
                    grew
                });
            }
        }
        if let Some(events) = span {
            keyed::observe_span(st, node, revision, events);
            self.shared.last.send_modify(|l| *l = l.wrapping_add(1));
        }
        if capped {
            st.capped += 1;
            return Some(End::Done);
        }
        None
    }

    fn cancel(&self, plan: &Planned, from: u64, compact_revision: u64) {
        let mut st = self.shared.lock();
        let log = st.logs[self.idx].get_or_insert_with(|| WatcherLog {
            id: self.idx as u64 + 1,
            spec: plan.spec.clone(),
            start: from,
            steps: Vec::new(),
            passed: from.saturating_sub(1),
        });
        log.steps.push(WatchStep::Cancel {
            node: self.node,
            from,
            compact_revision,
        });
    }

    fn malformed(&self, what: String) -> End {
        let mut st = self.shared.lock();
        st.problem(format!(
            "watcher {} at n{}: malformed stream: {what}",
            self.idx + 1,
            self.node
        ));
        End::Lost
    }
}

/// A watch event line's event (`{"type", "kv", "prev_kv"}`).
fn event_of(v: &Value) -> Option<WatchEvent> {
    let kind = match v.get("type")?.as_str()? {
        "put" => EventKind::Put,
        "delete" => EventKind::Delete,
        _ => return None,
    };
    let prev_kv = match v.get("prev_kv") {
        None | Some(Value::Null) => None,
        Some(p) => Some(kv_of(p)?),
    };
    Some(WatchEvent {
        kind,
        kv: kv_of(v.get("kv")?)?,
        prev_kv,
    })
}

fn kv_of(v: &Value) -> Option<KeyValue> {
    Some(KeyValue {
        key: v.get("key")?.as_str()?.as_bytes().to_vec(),
        value: v.get("value")?.as_str()?.as_bytes().to_vec(),
        version: v.get("version")?.as_u64()?,
        create_revision: v.get("create_revision")?.as_u64()?,
        mod_revision: v.get("mod_revision")?.as_u64()?,
        ..Default::default()
    })
}

/// The watch verdict of a run: its text for the report, whether it passed, and the numbers
/// for summary.json. Acknowledged writes beyond the reference are left unchecked only when a
/// whole-keyspace watcher stopped at its cap (otherwise such a write is a violation: it names
/// a revision no member applied).
pub fn verdict(run: WatchRun, mut writes: Vec<AckedWrite>) -> (bool, String, Value) {
    if run.keyed.is_some() {
        return keyed::verdict(run, writes);
    }
    let before = writes.len();
    if run.capped > 0 {
        let last = run.reference.last();
        writes.retain(|w| w.revision <= last);
    }
    let unchecked = before - writes.len();
    let input = WatchInput {
        reference: run.reference.clone(),
        watchers: run.logs.clone(),
        writes,
        ..WatchInput::default()
    };
    let report = check(&input);
    outcome(&run, &report, unchecked)
}

/// The verdict, the report's text and `summary.json`'s numbers of a checked run.
fn outcome(run: &WatchRun, report: &WatchReport, unchecked: usize) -> (bool, String, Value) {
    let passed = report.passed() && run.problems_total == 0;
    let text = render(run, report, unchecked);
    let numbers = serde_json::json!({
        "passed": passed, "watchers": report.watchers, "whole_keyspace": run.whole,
        "per_key": run.keyed.is_some(),
        "revisions": report.revisions, "deliveries": report.deliveries, "resumes": report.resumes,
        "broken": run.broken, "stalled": run.stalled, "cancels": report.cancels,
        "writes_checked": report.writes, "violations": report.violations_total + run.problems_total,
    });
    (passed, text, numbers)
}

/// The watch part of the report: counts, verdict and violations.
fn render(run: &WatchRun, report: &WatchReport, unchecked_writes: usize) -> String {
    let what = match run.keyed {
        Some(_) => "per key, each key its own reference".to_string(),
        None => format!("{} whole-keyspace", run.whole),
    };
    let mut s = format!(
        "watch: {} watchers ({what}) over {} revisions: {} deliveries, {} resumes \
         ({} broken, {} stalled streams), {} cancels; {} acknowledged writes checked",
        report.watchers,
        report.revisions,
        report.deliveries,
        report.resumes,
        run.broken,
        run.stalled,
        report.cancels,
        report.writes,
    );
    if unchecked_writes > 0 {
        let why = match run.keyed {
            Some(_) => "every watcher of their key had ended",
            None => "beyond the capped watchers",
        };
        s += &format!(", {unchecked_writes} not ({why})");
    }
    if run.capped > 0 {
        s += &format!(
            "; {} watchers stopped at {DELIVERIES_PER_WATCHER_MAX} deliveries",
            run.capped
        );
    }
    let total = report.violations_total + run.problems_total;
    if total == 0 {
        s += "\nwatch verdict: PASSED\n";
        return s;
    }
    s += &format!("\nwatch verdict: FAILED ({total} violations)\n");
    for v in run.problems.iter().chain(&report.violations) {
        s += &format!("  {v}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plan_puts_a_whole_keyspace_watcher_on_every_member() {
        let p = plan(3, 5, 7);
        for home in 0..3 {
            let mine: Vec<&Planned> = p.iter().filter(|w| w.home == home).collect();
            assert!((2..=3).contains(&mine.len()));
            assert_eq!(mine.iter().filter(|w| w.whole).count(), 1);
        }
        assert!(p.iter().all(|w| w.whole == (w.spec.key == [0])));
    }

    #[test]
    fn logs_are_cut_at_the_reference() {
        let deliver = |revision| WatchStep::Deliver {
            node: 1,
            revision,
            events: Vec::new(),
        };
        let log = WatcherLog {
            id: 1,
            spec: spec(b"k1".to_vec(), Vec::new(), "", false),
            start: 3,
            steps: vec![
                WatchStep::Attach {
                    node: 1,
                    from: 3,
                    resume: false,
                },
                deliver(4),
                deliver(9),
                WatchStep::Attach {
                    node: 2,
                    from: 10,
                    resume: true,
                },
            ],
            passed: 12,
        };
        let cut = within_reference(log, 8);
        assert_eq!(cut.steps.len(), 2);
        assert_eq!(cut.passed, 8);
        assert_eq!(next_from(&cut), 5);
    }

    #[test]
    fn lines_parse_into_events_and_compaction() {
        let e = event_of(&json!({"type": "delete",
            "kv": {"key": "k1", "value": "", "version": 0, "create_revision": 0, "mod_revision": 9},
            "prev_kv": {"key": "k1", "value": "a", "version": 2, "create_revision": 3, "mod_revision": 5}}))
        .expect("an event");
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.kv.mod_revision, 9);
        assert_eq!(e.prev_kv.map(|p| p.value), Some(b"a".to_vec()));
        assert!(event_of(&json!({"type": "put", "kv": {"key": "k"}})).is_none());
        let gone = json!({"error": {"code": "compacted", "message":
            "etcdserver: mvcc: required revision has been compacted (compacted up to revision 37)"}});
        assert_eq!(compact_revision_of(&gone), 37);
        assert_eq!(compact_revision_of(&json!({})), 0);
    }
}
