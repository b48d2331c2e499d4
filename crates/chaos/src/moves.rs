//! Range moves during a placed run (`--replicas R --moves N`): at evenly spaced moments of the
//! fault window, the operator asks a member to move the group of one of the workload's keys
//! from one of its hosts to a member outside it (`POST /v1/ranges/move`, what `synodctl range
//! move` sends), as that member's copy of the range directory says where the group lives,
//! while the clients and the faults go on.
//!
//! A move whose member is down or cut off (no answer) is asked at the next member; any answer
//! ends it — done, refused (a copy that lagged a move before, another move of the group under
//! way), or unavailable (its driver lost the lead, or the newcomer is down): the directory
//! records a move its leader checked, and whoever leads the group finishes it
//! (`synod_partition`'s `targets.rs`). The end-of-run directory check then requires every
//! placed group whole — `R` voters, no learner — and no move left recorded. The history's
//! verdict covers the keys as their groups move.

use crate::splits::SplitRecord;
use serde_json::Value;
use std::time::{Duration, Instant};
use synod_core::SplitMix64;

/// One request's bound (a move waits for its newcomer to catch up), and attempts per move.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
const ATTEMPTS_MAX: usize = 8;
const ATTEMPT_PAUSE: Duration = Duration::from_millis(250);
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the member at `http_addr` says the range holding `key` lives: its recorded voters.
async fn hosts_of(http: &reqwest::Client, http_addr: &str, key: &str) -> Option<Vec<u64>> {
    let url = format!("http://{http_addr}/v1/status");
    let sent = http.get(url).timeout(STATUS_TIMEOUT).send().await.ok()?;
    let status: Value = sent.json().await.ok()?;
    holder_voters(&status, key)
}

/// The recorded voters of the range holding `key` in a member's `/v1/status`: the last range
/// that begins at or before it (ranges come in key order); `None` where that range's owner is
/// not recorded yet (an entry that only ends the range before it).
fn holder_voters(status: &Value, key: &str) -> Option<Vec<u64>> {
    let ranges = status["directory"]["ranges"].as_array()?;
    let holder = (ranges.iter())
        .rfind(|r| r["start"].as_str().is_some_and(|s| s <= key))
        .filter(|r| !r["group"].is_null())?;
    let voters = holder["members"]
        .as_array()?
        .iter()
        .filter_map(Value::as_u64);
    Some(voters.collect())
}

/// Runs `count` moves at `times_ms` after `base` through the members at `http_addrs` (ids
/// `ids`, in the same order), each for a key drawn from `keys` by `seed`; returns what became
/// of each (`op` "move", its key naming the members).
pub async fn run(
    http_addrs: Vec<String>,
    ids: Vec<u64>,
    keys: Vec<String>,
    times_ms: Vec<u64>,
    base: Instant,
    seed: u64,
) -> Vec<SplitRecord> {
    let http = reqwest::Client::new();
    let mut rng = SplitMix64::new(seed ^ 0x30e5_0000);
    let mut records = Vec::new();
    let n = http_addrs.len().max(1);
    for (i, at_ms) in times_ms.into_iter().enumerate() {
        tokio::time::sleep_until((base + Duration::from_millis(at_ms)).into()).await;
        let Some(key) = keys
            .get(rng.below(keys.len().max(1) as u64) as usize)
            .cloned()
        else {
            break;
        };
        let mut rec = SplitRecord {
            op: "move",
            key: key.clone(),
            asked_ms: elapsed_ms(base),
            done_ms: None,
            member: 0,
            answer: String::new(),
        };
        let mut chosen = None;
        for attempt in 0..ATTEMPTS_MAX {
            let member = (i + attempt) % n;
            rec.member = member;
            let (from, to) = match chosen {
                Some(pair) => pair,
                None => {
                    let Some(hosts) = hosts_of(&http, &http_addrs[member], &key).await else {
                        rec.answer = "no status".into();
                        tokio::time::sleep(ATTEMPT_PAUSE).await;
                        continue;
                    };
                    let outside: Vec<u64> =
                        ids.iter().copied().filter(|m| !hosts.contains(m)).collect();
                    if hosts.is_empty() || outside.is_empty() {
                        rec.answer = format!("no move to make: hosts {hosts:?}");
                        break;
                    }
                    let from = hosts[rng.below(hosts.len() as u64) as usize];
                    let to = outside[rng.below(outside.len() as u64) as usize];
                    rec.key = format!("{key} from {from} to {to}");
                    *chosen.insert((from, to))
                }
            };
            // No answer (the member is down or cut off): the same move, at the next member.
            let url = format!("http://{}/v1/ranges/move", http_addrs[member]);
            let body = serde_json::json!({ "key": key, "from": from, "to": to });
            let sent = http
                .post(url)
                .json(&body)
                .timeout(ATTEMPT_TIMEOUT)
                .send()
                .await;
            match sent {
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    rec.answer = format!("{status}: {}", text.trim());
                    rec.done_ms = status.is_success().then(|| elapsed_ms(base));
                    break;
                }
                Err(e) => rec.answer = e.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_s_hosts_are_its_range_s_recorded_voters() {
        let status = serde_json::json!({"directory": {"ranges": [
            {"start": "", "group": 0, "members": [1, 2, 3, 4, 5]},
            {"start": "k2", "group": 1, "members": [2, 3, 4]},
            {"start": "k4", "group": null, "members": []},
            {"start": "k6", "group": 3, "members": [1, 4, 5]},
        ]}});
        assert_eq!(holder_voters(&status, "k1"), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(holder_voters(&status, "k2"), Some(vec![2, 3, 4]));
        // An entry that only ends the range before it: whose the keys after it are is not known.
        assert_eq!(holder_voters(&status, "k5"), None);
        assert_eq!(holder_voters(&status, "k7"), Some(vec![1, 4, 5]));
        assert_eq!(holder_voters(&serde_json::json!({}), "k1"), None);
    }
}
