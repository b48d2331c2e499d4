//! The range directory at the end of a partitioned run (`--groups N --directory`): once the
//! faults are healed and the clients stopped, every member's copy of the directory must come
//! to record exactly the layout its groups applied, and all members must record the same
//! ranges (docs/partitioning.md, "The range directory"). A copy that does not within
//! [`CATCH_UP`] fails the run, as a watch or lock violation does: the simulator's convergence
//! check for the directory, on real processes with real faults.

use crate::cluster::Cluster;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

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
}

impl DirectoryCheck {
    pub fn render(&self) -> String {
        match self.converged {
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
        }
    }
}

/// One member's copy: the recorded ranges and the layout its groups applied.
#[derive(PartialEq)]
struct Copy {
    recorded: Vec<(String, u64)>,
    layout: Vec<(String, u64)>,
}

fn pairs(v: &Value) -> Vec<(String, u64)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let start = r["start"].as_str().unwrap_or_default().to_string();
            (start, r["group"].as_u64().unwrap_or(u64::MAX))
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
    Ok(Copy {
        recorded: pairs(&status["directory"]["ranges"]),
        layout: pairs(&status["groups"]),
    })
}

/// Polls every member of `cluster` until their copies converge or [`CATCH_UP`] passes.
pub async fn check(http: &reqwest::Client, cluster: &Cluster) -> DirectoryCheck {
    let t0 = Instant::now();
    loop {
        let mut copies = Vec::new();
        let mut detail = Vec::new();
        for m in cluster.members.iter().filter(|m| !m.retired) {
            match copy_of(http, &m.http_addr).await {
                Ok(c) if c.recorded == c.layout => copies.push(c),
                Ok(c) => detail.push(format!(
                    "{}: records {:?}, its groups applied {:?}",
                    m.name, c.recorded, c.layout
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
                    .map(|c| c.recorded.clone())
                    .unwrap_or_default(),
                waited_ms: t0.elapsed().as_millis() as u64,
                detail,
            };
        }
        tokio::time::sleep(POLL).await;
    }
}
