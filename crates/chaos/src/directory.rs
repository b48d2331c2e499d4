//! The range directory at the end of a partitioned run (`--groups N --directory`): once the
//! faults are healed and the clients stopped, every member's copy of the directory must come
//! to record exactly the layout its groups applied (each range's first key, group and voters), and all members must record the same
//! ranges (docs/partitioning.md, "The range directory"). A copy that does not within
//! [`CATCH_UP`] fails the run, as a watch or lock violation does: the simulator's convergence
//! check for the directory, on real processes with real faults. With groups placed (`--replicas
//! R`), every placed group must also be whole — `R` voters, no learner — and no move
//! (`--moves`) left recorded unfinished.
//!
//! And during the run, [`watch_order`] reads every member's copy a few times a second: no key's
//! owner may go back to an older range generation (the records' guards;
//! [`synod_core::directory_order`], the simulator's check too).

use crate::cluster::Cluster;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use synod_core::DirectoryEntry;
use synod_core::directory_order::owner_went_back;

/// How long the directory gets after the run to match the layout. Each group's leader
/// records its range every 10 ticks and again an election timeout after an answer, so a
/// healed cluster needs a few election timeouts, not more.
pub const CATCH_UP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// What the end-of-run check found.
#[derive(Clone, Debug, Serialize)]
pub struct DirectoryCheck {
    /// Every member's copy records its layout, and all members record the same ranges.
    pub converged: bool,
    /// Members whose copy was compared.
    pub members: usize,
    /// The recorded ranges' first keys and groups, as the members agreed on them (converged)
    /// or as the first member reported them (not).
    pub ranges: Vec<(String, u64)>,
    /// From the start of the check until it converged (or gave up).
    pub waited_ms: u64,
    /// Why it did not converge: each member's copy against its layout.
    pub detail: Vec<String>,
    /// What the watch during the run found.
    pub order: OrderReport,
}

/// The directory's order during the run ([`watch_order`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct OrderReport {
    /// Copies compared with the same member's copy at an earlier meta index.
    pub compared: u64,
    /// Keys whose owner went back, with the member and the meta indexes (the first few).
    pub violations: Vec<String>,
}

/// Violations kept in a report.
const VIOLATIONS_KEPT: usize = 10;
/// How often the watch reads every member's copy.
const ORDER_POLL: Duration = Duration::from_millis(250);

impl DirectoryCheck {
    /// Converged at the end, and no key's owner went back during the run.
    pub fn passed(&self) -> bool {
        self.converged && self.order.violations.is_empty()
    }

    pub fn render(&self) -> String {
        let order = match self.order.violations.is_empty() {
            true => format!(
                "directory order: no key's owner went back ({} copies compared during the run)\n",
                self.order.compared
            ),
            false => format!(
                "directory order: FAILED\n{}",
                self.order
                    .violations
                    .iter()
                    .map(|v| format!("  {v}\n"))
                    .collect::<String>()
            ),
        };
        let end = match self.converged {
            true => format!(
                "directory: every member's copy ({}) records the {} ranges of the layout, {} ms after the run\n",
                self.members,
                self.ranges.len(),
                self.waited_ms
            ),
            false => format!(
                "directory: FAILED, no agreement with the layout after {} ms:\n{}",
                self.waited_ms,
                self.detail
                    .iter()
                    .map(|d| format!("  {d}\n"))
                    .collect::<String>()
            ),
        };
        format!("{order}{end}")
    }
}

/// One range as a copy records it or a member's groups applied it: first key, group, voters.
type Range = (String, u64, Vec<u64>);

/// One member's copy: the recorded ranges and the layout its groups applied.
#[derive(PartialEq)]
struct Copy {
    recorded: Vec<Range>,
    layout: Vec<Range>,
    /// Groups live on some members only: the member's layout is some of the ranges.
    placed: bool,
    /// Placement: recorded learners (a move under way), and moves recorded unfinished.
    learners: usize,
    moves: usize,
}

impl Copy {
    /// Whether the copy records the member's groups as they applied them (all of them and no
    /// other, unless groups are placed: then each of the member's among them, every group after
    /// the first on `replicas` voters without learners, and no move unfinished).
    fn records_layout(&self, replicas: usize) -> bool {
        if !self.placed {
            return self.recorded == self.layout;
        }
        let whole = (self.recorded.iter().skip(1))
            .filter(|(_, g, _)| *g != u64::MAX)
            .all(|(_, _, voters)| voters.len() == replicas);
        let mut recorded = self.recorded.iter();
        self.layout.iter().all(|l| recorded.any(|r| r == l))
            && whole
            && self.learners == 0
            && self.moves == 0
    }
}

/// The ranges of `/v1/status`'s `v`, their voters read from field `voters`.
fn ranges(v: &Value, voters: &str) -> Vec<Range> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let start = r["start"].as_str().unwrap_or_default().to_string();
            let ids = r[voters].as_array().into_iter().flatten();
            let ids = ids.filter_map(Value::as_u64).collect();
            (start, r["group"].as_u64().unwrap_or(u64::MAX), ids)
        })
        .collect()
}

async fn copy_of(http: &reqwest::Client, http_addr: &str) -> Result<Copy, String> {
    let url = format!("http://{http_addr}/v1/status");
    let status: Value = match http.get(&url).send().await {
        Ok(r) => r
            .json()
            .await
            .map_err(|e| format!("unreadable status: {e}"))?,
        Err(e) => return Err(format!("no status: {e}")),
    };
    if status["directory"].is_null() {
        return Err("keeps no directory".into());
    }
    let d = &status["directory"];
    let count = |v: &Value| v.as_array().map_or(0, Vec::len);
    let ranges_of = d["ranges"].as_array().into_iter().flatten();
    Ok(Copy {
        recorded: ranges(&d["ranges"], "members"),
        layout: ranges(&status["groups"], "voters"),
        placed: d["placed"] == true,
        learners: ranges_of.map(|r| count(&r["learners"])).sum(),
        moves: count(&d["moves"]),
    })
}

/// The watch of the directory's order, running until [`OrderWatch::finish`].
pub struct OrderWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<OrderReport>,
}

impl OrderWatch {
    pub async fn finish(self) -> OrderReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// One member's copy as `/v1/status` shows it: the meta index it was read at and its entries.
async fn entries_of(http: &reqwest::Client, http_addr: &str) -> Option<(u64, Vec<DirectoryEntry>)> {
    let url = format!("http://{http_addr}/v1/status");
    let status: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
    let d = &status["directory"];
    let entries = d["ranges"]
        .as_array()?
        .iter()
        .map(|r| DirectoryEntry {
            start: r["start"].as_str().unwrap_or_default().as_bytes().to_vec(),
            group: r["group"].as_u64().unwrap_or(DirectoryEntry::NOBODY),
            generation: r["generation"].as_u64().unwrap_or(0),
            config_version: r["config_version"].as_u64().unwrap_or(0),
            members: r["members"]
                .as_array()
                .map(|ms| ms.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
            learners: r["learners"]
                .as_array()
                .map(|ls| ls.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
        })
        .collect();
    Some((d["copied_at"].as_u64()?, entries))
}

/// Reads the copies of the members at `members` (name, HTTP address: the members at the start,
/// so a member added by a membership change is not watched) until finished; each one
/// at a later meta index than the member's last is compared with it (a member that restarted
/// shows an earlier one again, compared from there on; an unreachable one is skipped).
pub fn watch_order(http: reqwest::Client, members: Vec<(String, String)>) -> OrderWatch {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut report = OrderReport::default();
        let mut seen: BTreeMap<String, (u64, Vec<DirectoryEntry>)> = BTreeMap::new();
        while !stopped.load(Ordering::Relaxed) {
            for (name, addr) in &members {
                let Some((at, entries)) = entries_of(&http, addr).await else {
                    continue;
                };
                if let Some((before_at, before)) = seen.get(name)
                    && *before_at < at
                {
                    report.compared += 1;
                    let back = owner_went_back(before, &entries);
                    if let Some(m) = back.filter(|_| report.violations.len() < VIOLATIONS_KEPT) {
                        report
                            .violations
                            .push(format!("{name}, meta index {before_at} → {at}: {m}"));
                    }
                }
                seen.insert(name.clone(), (at, entries));
            }
            tokio::time::sleep(ORDER_POLL).await;
        }
        report
    });
    OrderWatch { stop, task }
}

/// Polls every member of `cluster` until their copies converge or [`CATCH_UP`] passes
/// (`replicas`: each placed group's, 0 unplaced).
pub async fn check(
    http: &reqwest::Client,
    cluster: &Cluster,
    replicas: usize,
    order: OrderReport,
) -> DirectoryCheck {
    let t0 = Instant::now();
    loop {
        let mut copies = Vec::new();
        let mut detail = Vec::new();
        for m in cluster.members.iter().filter(|m| !m.retired) {
            match copy_of(http, &m.http_addr).await {
                Ok(c) if c.records_layout(replicas) => copies.push(c),
                Ok(c) => detail.push(format!(
                    "{}: records {:?} ({} learners, {} moves unfinished), its groups applied {:?}",
                    m.name, c.recorded, c.learners, c.moves, c.layout
                )),
                Err(e) => detail.push(format!("{}: {e}", m.name)),
            }
        }
        let agree = copies.windows(2).all(|w| w[0].recorded == w[1].recorded);
        if !agree {
            detail.push("members' copies differ".into());
        }
        let converged = detail.is_empty() && !copies.is_empty();
        if converged || t0.elapsed() >= CATCH_UP {
            return DirectoryCheck {
                converged,
                members: copies.len(),
                ranges: copies
                    .first()
                    .map(|c| c.recorded.iter().map(|(s, g, _)| (s.clone(), *g)).collect())
                    .unwrap_or_default(),
                waited_ms: t0.elapsed().as_millis() as u64,
                detail,
                order,
            };
        }
        tokio::time::sleep(POLL).await;
    }
}
