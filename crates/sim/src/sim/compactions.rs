//! The compaction workload of partitioned runs (`RunConfig::compactions`): etcd's Compact
//! through the API, where revisions are per group, and the promise it makes.
//!
//! Now and then a register client compacts to a revision a little below the highest one a
//! reply reported for some key, or reads a key at a revision a little below the highest it
//! saw. Neither enters the linearizability history. The check: once a compaction to `R` was
//! acknowledged, a read of key `k` at a revision below `R` issued after that must fail as
//! compacted, if `k`'s group had reached `R` before the compaction was issued (a reply on `k`
//! said so). That group, and every group `k` went to since (a split's new group, a merge's
//! absorbing group), must have compacted: the fan-out has to reach every group of the layout
//! through splits and merges, and split and merged histories must keep the compaction.
//!
//! A past read that is answered is checked too: the key as it was at that revision must not
//! be newer than the revision, nor older than an acknowledged put of it at or below the
//! revision, and must hold the value of the acknowledged put that made it — a key's
//! revisions are its own through splits and merges (a new group goes on from its parent's
//! revision, a merged one from the larger), so this checks the history the keys carry.
//!
//! Scans read every register key at once — over several groups — at the latest revision
//! (linearizable or serializable) or at a past one. The reply must be one cut of every group
//! at one revision `H` (the reply's, or the one asked for): each key as the past-read check
//! wants it at `H`, judged at the end of the run against every put acknowledged by then — a
//! put acknowledged *after* the scan at a revision at or below `H` (a group that was behind
//! when the scan read it) is what a client that watches from `H + 1` would never see.
//!
//! Draws come from the workload's own generator, so runs without it draw what they drew.

use super::{Engine, Sim, fail};
use crate::client::key_name;
use std::collections::{BTreeMap, BTreeSet};
use synod_core::history::HistoryOp;
use synod_core::kv::{CompactRequest, KeyValue, Op, RangeRequest, Response, ResponseBody};
use synod_core::{ClientId, ClientRequest, Consistency, RequestId, SplitMix64};

/// Of the register clients' operations, this many percent are compaction workload.
pub const PERCENT: u64 = 6;
/// Compactions and past reads aim at most this many revisions below what a reply reported.
const LAG_MAX: u64 = 6;

/// A compaction-workload operation in flight.
#[derive(Clone, Debug)]
pub enum Extra {
    /// To `revision`; `reached`: the keys whose group had reached it when it was issued.
    Compact {
        revision: u64,
        reached: BTreeSet<String>,
    },
    /// Of `key` at `revision`, issued at `call_us`.
    PastRead {
        key: String,
        revision: u64,
        call_us: u64,
    },
    /// Of every register key, at `revision` (0: the latest).
    Scan { revision: u64 },
}

/// What the workload knows and has promised.
pub(super) struct Compactions {
    pub(super) enabled: bool,
    rng: SplitMix64,
    /// Per register key: the highest revision a reply on it reported (its group's).
    seen: BTreeMap<String, u64>,
    /// Acknowledged compactions: (revision, keys whose group had reached it, ack time).
    promises: Vec<(u64, BTreeSet<String>, u64)>,
    /// Per register key: its acknowledged puts, by revision (the value written).
    puts: BTreeMap<String, BTreeMap<u64, String>>,
    pub(super) past_reads_checked: u64,
    /// Answered scans: the revision each stands for, and the keys it returned.
    scans: Vec<(u64, Vec<KeyValue>)>,
    pub(super) acknowledged: u64,
    pub(super) past_reads_refused: u64,
}

impl Compactions {
    pub(super) fn new(seed: u64, enabled: bool) -> Self {
        Compactions {
            enabled,
            rng: SplitMix64::new(seed ^ 0xc0_3ac7_1035),
            seen: BTreeMap::new(),
            promises: Vec::new(),
            puts: BTreeMap::new(),
            past_reads_checked: 0,
            scans: Vec::new(),
            acknowledged: 0,
            past_reads_refused: 0,
        }
    }

    pub(super) fn scans_checked(&self) -> u64 {
        self.scans.len() as u64
    }

    /// Whether the next register operation is one of this workload's instead.
    pub(super) fn draws(&mut self) -> bool {
        self.enabled && self.rng.below(100) < PERCENT
    }

    /// A register operation on `key` was answered at `revision` (its group's); `put`: it
    /// was a put of that value, made in that revision.
    pub(super) fn saw(&mut self, key: &str, revision: u64, put: Option<&str>) {
        if self.enabled {
            let r = self.seen.entry(key.to_string()).or_default();
            *r = (*r).max(revision);
            if let Some(v) = put {
                let puts = self.puts.entry(key.to_string()).or_default();
                puts.insert(revision, v.to_string());
            }
        }
    }

    /// What is wrong with `got`, the answer to a read of `key` at `revision`, if anything.
    fn past_read_wrong(&self, key: &str, revision: u64, got: &ResponseBody) -> Option<String> {
        let ResponseBody::Range(r) = got else {
            return Some(format!("answered {got:?}"));
        };
        self.state_wrong(key, revision, r.kvs.first()?)
    }

    /// What is wrong with `kv` as key `key`'s state at `revision`, if anything.
    fn state_wrong(&self, key: &str, revision: u64, kv: &KeyValue) -> Option<String> {
        let puts = self.puts.get(key);
        let last_put = puts.and_then(|p| p.range(..=revision).next_back());
        if kv.mod_revision > revision {
            return Some(format!(
                "it returned the key as of revision {}",
                kv.mod_revision
            ));
        }
        if let Some((w, _)) = last_put.filter(|(w, _)| **w > kv.mod_revision) {
            return Some(format!(
                "it returned the key as of revision {}, but a put of it at revision {w} was \
                 acknowledged",
                kv.mod_revision
            ));
        }
        let written = puts.and_then(|p| p.get(&kv.mod_revision))?;
        (written.as_bytes() != kv.value.as_slice()).then(|| {
            format!(
                "it returned {:?} at revision {}, where the acknowledged put wrote {written:?}",
                String::from_utf8_lossy(&kv.value),
                kv.mod_revision
            )
        })
    }

    /// The next operation, if any key has been seen far enough yet.
    pub(super) fn next(
        &mut self,
        keys: u64,
        client: ClientId,
        seq: u64,
        now_us: u64,
    ) -> Option<(ClientRequest, HistoryOp, Extra)> {
        let key = key_name(self.rng.below(keys.max(1)));
        let top = *self.seen.get(&key)?;
        let lag = self.rng.below(LAG_MAX + 1);
        let mut consistency = Consistency::Linearizable;
        let kind = self.rng.below(3);
        let (op, extra) = if kind == 2 {
            // A scan: now, now as this member has it, or a little in the past.
            let revision = match self.rng.below(3) {
                0 => top.saturating_sub(lag).max(1),
                1 => {
                    consistency = Consistency::Sequential;
                    0
                }
                _ => 0,
            };
            let op = Op::Range(RangeRequest {
                revision,
                ..RangeRequest::prefix("k")
            });
            (op, Extra::Scan { revision })
        } else if kind == 0 {
            let revision = top.saturating_sub(lag).max(1);
            let reached = self
                .seen
                .iter()
                .filter(|(_, r)| **r >= revision)
                .map(|(k, _)| k.clone())
                .collect();
            let op = Op::Compact(CompactRequest {
                revision,
                physical: false,
            });
            (op, Extra::Compact { revision, reached })
        } else {
            let revision = top.checked_sub(1 + lag).filter(|r| *r >= 1)?;
            let op = Op::Range(RangeRequest {
                key: key.clone().into_bytes(),
                revision,
                ..RangeRequest::default()
            });
            let call_us = now_us;
            (
                op,
                Extra::PastRead {
                    key,
                    revision,
                    call_us,
                },
            )
        };
        let hist = crate::client::read_hist(client.0, "(compaction workload)".into(), now_us);
        let request = ClientRequest {
            id: RequestId { client, seq },
            first_unacked: seq,
            op,
            consistency,
        };
        Some((request, hist, extra))
    }
}

impl<E: Engine> Sim<E> {
    /// A compaction-workload operation was answered with success at `now`.
    pub(super) fn compaction_reply(&mut self, extra: Extra, response: &Response, now: u64) {
        let w = &mut self.compactions;
        match extra {
            Extra::Scan { revision } => {
                if let ResponseBody::Range(r) = &response.body {
                    let at = if revision == 0 {
                        response.revision
                    } else {
                        revision
                    };
                    w.scans.push((at, r.kvs.clone()));
                }
            }
            Extra::Compact { revision, reached } => {
                if response.body == ResponseBody::Compact {
                    w.acknowledged += 1;
                    w.promises.push((revision, reached, now));
                }
            }
            Extra::PastRead {
                key,
                revision,
                call_us,
            } => {
                w.past_reads_checked += 1;
                if let Some(why) = w.past_read_wrong(&key, revision, &response.body) {
                    fail(
                        &mut self.failures,
                        format!("past read: a read of {key} at revision {revision}: {why}"),
                    );
                    return;
                }
                let broken = w.promises.iter().find(|(r, reached, acked)| {
                    *acked < call_us && revision < *r && reached.contains(&key)
                });
                if let Some((r, _, acked)) = broken {
                    fail(
                        &mut self.failures,
                        format!(
                            "compaction: a read of {key} at revision {revision}, made after a \
                             compaction to {r} was acknowledged (at {acked} µs) in a group \
                             that had reached {r}, was answered: {:?}",
                            response.body
                        ),
                    );
                }
            }
        }
    }

    /// Every answered scan against every put acknowledged in the run: each key it returned
    /// as it was at the scan's revision.
    pub(super) fn check_scans(&mut self) {
        let w = &self.compactions;
        let wrong = w.scans.iter().find_map(|(at, kvs)| {
            kvs.iter().find_map(|kv| {
                let key = String::from_utf8_lossy(&kv.key);
                let why = w.state_wrong(&key, *at, kv)?;
                Some(format!(
                    "scan: a read of every key at revision {at}: {key}: {why}"
                ))
            })
        });
        if let Some(why) = wrong {
            fail(&mut self.failures, why);
        }
    }

    /// A compaction-workload operation failed definitely.
    pub(super) fn compaction_refused(&mut self, extra: &Extra) {
        if matches!(extra, Extra::PastRead { .. }) {
            self.compactions.past_reads_refused += 1;
        }
    }
}
