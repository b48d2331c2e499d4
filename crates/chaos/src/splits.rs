//! Range splits and merges during a partitioned run (`--groups N`, `--splits M`, `--merges K`):
//! at evenly spaced moments of the fault window, the operator asks a member to split the range
//! holding one of the workload's keys at that key (`POST /v1/ranges/split`, what `synodctl
//! range split` sends), then to merge the first K of those ranges back into the range below
//! (`POST /v1/ranges/merge`), while the clients and the faults go on. The history's verdict
//! covers the keys as they move between groups; the records say which changes took effect,
//! when and through whom.

use serde::Serialize;
use std::time::{Duration, Instant};
use synod_core::SplitMix64;

/// One request's bound, and attempts per split (a member may be down or cut off).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const ATTEMPTS_MAX: usize = 12;
const ATTEMPT_PAUSE: Duration = Duration::from_millis(250);

/// What became of one planned split or merge.
#[derive(Clone, Debug, Serialize)]
pub struct SplitRecord {
    /// "split" or "merge".
    pub op: &'static str,
    pub key: String,
    /// Since the workload started.
    pub asked_ms: u64,
    /// Set once a member answered that the split took effect.
    pub done_ms: Option<u64>,
    /// The member (index) that answered last, and its answer.
    pub member: usize,
    pub answer: String,
}

/// Keys to split at: `count` of the workload's keys that no range begins at yet, drawn by the
/// seed.
pub fn plan(keys: usize, initial_splits: &[String], count: usize, seed: u64) -> Vec<String> {
    let mut free: Vec<String> = (0..keys)
        .map(|k| format!("k{k}"))
        .filter(|k| !initial_splits.contains(k))
        .collect();
    let mut rng = SplitMix64::new(seed ^ 0x5b11_7000);
    let mut out = Vec::new();
    while out.len() < count && !free.is_empty() {
        let i = rng.below(free.len() as u64) as usize;
        out.push(free.swap_remove(i));
    }
    out
}

/// The layout changes of a run: a split at each planned key, then a merge at each of the
/// first `merges` of them (the range the split made joins the one below again).
pub fn changes(split_keys: Vec<String>, merges: usize) -> Vec<(&'static str, String)> {
    let merged: Vec<(&'static str, String)> = split_keys
        .iter()
        .take(merges)
        .map(|k| ("merge", k.clone()))
        .collect();
    split_keys
        .into_iter()
        .map(|k| ("split", k))
        .chain(merged)
        .collect()
}

/// Runs the planned changes at `times_ms` after `base`, through the members at `http_addrs`
/// in turn, and returns what became of each.
pub async fn run(
    http_addrs: Vec<String>,
    changes: Vec<(&'static str, String)>,
    times_ms: Vec<u64>,
    base: Instant,
) -> Vec<SplitRecord> {
    let http = reqwest::Client::new();
    let mut records = Vec::new();
    for (n, ((op, key), at_ms)) in changes.into_iter().zip(times_ms).enumerate() {
        tokio::time::sleep_until((base + Duration::from_millis(at_ms)).into()).await;
        let mut rec = SplitRecord {
            op,
            key: key.clone(),
            asked_ms: elapsed_ms(base),
            done_ms: None,
            member: 0,
            answer: String::new(),
        };
        for attempt in 0..ATTEMPTS_MAX {
            let member = (n + attempt) % http_addrs.len().max(1);
            let url = format!("http://{}/v1/ranges/{op}", http_addrs[member]);
            let sent = http
                .post(url)
                .json(&serde_json::json!({ "key": key }))
                .timeout(ATTEMPT_TIMEOUT)
                .send()
                .await;
            rec.member = member;
            match sent {
                Ok(r) if r.status().is_success() => {
                    rec.done_ms = Some(elapsed_ms(base));
                    rec.answer = r.text().await.unwrap_or_default();
                    break;
                }
                Ok(r) => {
                    rec.answer = format!("{}: {}", r.status(), r.text().await.unwrap_or_default())
                }
                Err(e) => rec.answer = e.to_string(),
            }
            // A split refused because the key begins a range, or a merge because it begins
            // none, after an attempt that timed out: that attempt took effect after all.
            let done_before = if op == "split" {
                "does not cut"
            } else {
                "does not begin a range"
            };
            if attempt > 0 && rec.answer.contains(done_before) {
                rec.done_ms = Some(elapsed_ms(base));
                break;
            }
            tokio::time::sleep(ATTEMPT_PAUSE).await;
        }
        records.push(rec);
    }
    records
}

fn elapsed_ms(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The report's lines about splits and merges.
pub fn report(records: &[SplitRecord]) -> String {
    let done = records.iter().filter(|r| r.done_ms.is_some()).count();
    let what = match records.iter().all(|r| r.op == "move") {
        true => "range moves (one answered otherwise is left to its group's leader)",
        false => "range splits and merges",
    };
    let mut out = format!("{what}: {done} of {} took effect\n", records.len());
    for r in records {
        match r.done_ms {
            Some(ms) => out.push_str(&format!(
                "  {} at {} asked at {:.1} s, done at {:.1} s (member index {})\n",
                r.op,
                r.key,
                r.asked_ms as f64 / 1000.0,
                ms as f64 / 1000.0,
                r.member
            )),
            None => out.push_str(&format!(
                "  {} at {} asked at {:.1} s: not done ({})\n",
                r.op,
                r.key,
                r.asked_ms as f64 / 1000.0,
                r.answer.trim()
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_draws_distinct_free_keys_by_seed() {
        let initial = vec!["k2".to_string()];
        let p = plan(5, &initial, 3, 7);
        assert_eq!(p.len(), 3);
        assert!(!p.contains(&"k2".to_string()));
        let mut d = p.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 3);
        assert_eq!(p, plan(5, &initial, 3, 7));
        assert_eq!(
            plan(3, &initial, 9, 7).len(),
            2,
            "only as many as free keys"
        );
    }

    #[test]
    fn merges_follow_the_splits_they_undo() {
        let c = changes(vec!["k1".into(), "k4".into()], 1);
        assert_eq!(
            c,
            [
                ("split", "k1".to_string()),
                ("split", "k4".to_string()),
                ("merge", "k1".to_string())
            ]
        );
        assert_eq!(
            changes(vec!["k1".into()], 5).len(),
            2,
            "one merge per split"
        );
    }
}
