//! The fault schedule of a chaos run, drawn from the seed: which faults, on which member, when.
//!
//! Faults run one at a time with a quiet gap between them, so each fault's downtime can be
//! attributed to it and no schedule takes out a majority for long (several faults at once are a
//! job for the simulator, which can explore them exhaustively and deterministically).
//! Roles — "the leader", "the hub" — are resolved when a fault starts, from the members'
//! `/v1/status`, because only then is it known who leads.

use serde::Serialize;
use synod_core::{NodeId, SplitMix64};

/// The fault families `--faults` can enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultKinds {
    pub crash: bool,
    pub pause: bool,
    pub partition: bool,
    pub partial: bool,
    /// Membership changes (`reconfig.rs`): not in `all`, which keeps the member set fixed.
    pub reconfig: bool,
}

impl FaultKinds {
    pub const ALL: FaultKinds = FaultKinds {
        crash: true,
        pause: true,
        partition: true,
        partial: true,
        reconfig: false,
    };

    /// `all`, `none`, or a comma-separated list of `crash`, `pause`, `partition`, `partial`,
    /// `reconfig` (`all,reconfig` is everything).
    pub fn parse(s: &str) -> Result<FaultKinds, String> {
        let mut k = FaultKinds {
            crash: false,
            pause: false,
            partition: false,
            partial: false,
            reconfig: false,
        };
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "all" => {
                    k = FaultKinds {
                        reconfig: k.reconfig,
                        ..FaultKinds::ALL
                    }
                }
                "none" => {}
                "crash" => k.crash = true,
                "pause" => k.pause = true,
                "partition" => k.partition = true,
                "partial" => k.partial = true,
                "reconfig" => k.reconfig = true,
                other => {
                    return Err(format!(
                        "unknown fault kind {other:?}; use crash, pause, partition, partial, reconfig, all or none"
                    ));
                }
            }
        }
        Ok(k)
    }

    fn enabled(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.crash, "crash"),
            (self.pause, "pause"),
            (self.partition, "partition"),
            (self.partial, "partial"),
            (self.reconfig, "reconfig"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }

    pub fn names(&self) -> String {
        let v = self.enabled();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    }
}

/// Who a node-level fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Whoever leads when the fault starts (a random member on a leaderless engine).
    Leader,
    /// A member that is not the leader.
    Follower,
    /// The member in slot `n - 1` when the fault starts (member `n` unless a membership change
    /// put a newcomer there).
    Node(NodeId),
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL, restart from disk at the end.
    Crash { target: Target },
    /// SIGSTOP, SIGCONT at the end.
    Pause { target: Target },
    /// Cut every link to and from the target, both directions.
    Isolate { target: Target },
    /// `from → to` down, `to → from` up.
    OneWay { from: Target, to: Target },
    /// OmniPaxos paper §2: only a hub (not the leader) stays connected to everyone.
    QuorumLoss,
    /// The hub is isolated for the first third ("lag"), then the leader is cut off and the
    /// hub — now behind — is the only quorum-connected member.
    ConstrainedElection,
    /// The link leader ↔ one follower is down; the third member reaches both.
    Chained,
    /// Remove the target, wipe it, add a newcomer at its addresses (promoted at the end).
    Replace { target: Target },
    /// SIGKILL the target, wipe its data directory, restart it with the same flags: it must
    /// rejoin by itself as a new member (`synod server`'s automatic rejoin).
    Wipe { target: Target },
    /// Grow by two members, shrink back at the end.
    Resize,
}

impl Fault {
    /// The family, as used on the chart and in the per-kind downtime summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::Pause { .. } => "pause",
            Fault::Isolate { .. } | Fault::OneWay { .. } => "partition",
            Fault::QuorumLoss | Fault::ConstrainedElection | Fault::Chained => "partial",
            Fault::Replace { .. } | Fault::Resize | Fault::Wipe { .. } => "reconfig",
        }
    }

    /// The specific shape, finer than [`Fault::kind`].
    pub fn shape(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::Pause { .. } => "pause",
            Fault::Isolate { .. } => "isolate",
            Fault::OneWay { .. } => "one-way",
            Fault::QuorumLoss => "quorum-loss",
            Fault::ConstrainedElection => "constrained-election",
            Fault::Chained => "chained",
            Fault::Replace { .. } => "replace",
            Fault::Resize => "resize",
            Fault::Wipe { .. } => "wipe",
        }
    }
}

/// A fault with its time window, in ms since the run's start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduledFault {
    pub id: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
}

/// Shortest and longest fault.
const FAULT_MS_MIN: u64 = 2_000;
const FAULT_MS_MAX: u64 = 5_000;
/// Quiet time between faults, so the cluster recovers and each fault's downtime is its own.
const GAP_MS_MIN: u64 = 1_500;
const GAP_MS_MAX: u64 = 3_000;
/// A membership change's window: long enough for a newcomer to catch up before its promotion.
const RECONFIG_MS_MIN: u64 = 4_000;
const RECONFIG_MS_MAX: u64 = 7_000;

/// Draws faults in `[from_ms, until_ms)`; every fault ends by `until_ms`.
pub fn random_schedule(
    seed: u64,
    kinds: FaultKinds,
    nodes: usize,
    from_ms: u64,
    until_ms: u64,
) -> Vec<ScheduledFault> {
    let mut rng = SplitMix64::new(seed ^ 0x5EED_F417);
    let enabled = kinds.enabled();
    let mut out = Vec::new();
    if enabled.is_empty() || nodes == 0 {
        return out;
    }
    let random_node = |rng: &mut SplitMix64| Target::Node(rng.range(1, nodes as u64));
    // Half the node faults hit the leader: that is where availability is lost.
    let node_target = |rng: &mut SplitMix64| match rng.below(4) {
        0 | 1 => Target::Leader,
        2 => Target::Follower,
        _ => random_node(rng),
    };
    let mut t = from_ms;
    loop {
        let kind = *rng.pick(&enabled);
        let len = if kind == "reconfig" {
            rng.range(RECONFIG_MS_MIN, RECONFIG_MS_MAX)
        } else {
            rng.range(FAULT_MS_MIN, FAULT_MS_MAX)
        };
        if t + len > until_ms {
            break;
        }
        let fault = match kind {
            "crash" => Fault::Crash {
                target: node_target(&mut rng),
            },
            "pause" => Fault::Pause {
                target: node_target(&mut rng),
            },
            "partition" => {
                if nodes < 2 || rng.below(2) == 0 {
                    Fault::Isolate {
                        target: node_target(&mut rng),
                    }
                } else if rng.below(2) == 0 {
                    Fault::OneWay {
                        from: Target::Leader,
                        to: Target::Follower,
                    }
                } else {
                    Fault::OneWay {
                        from: Target::Follower,
                        to: Target::Leader,
                    }
                }
            }
            "reconfig" => match rng.below(4) {
                0 => Fault::Resize,
                1 => Fault::Wipe {
                    target: node_target(&mut rng),
                },
                2 => Fault::Replace {
                    target: Target::Leader,
                },
                _ => Fault::Replace {
                    target: Target::Follower,
                },
            },
            _ => match rng.below(3) {
                0 => Fault::QuorumLoss,
                1 => Fault::ConstrainedElection,
                _ => Fault::Chained,
            },
        };
        out.push(ScheduledFault {
            id: out.len() + 1,
            start_ms: t,
            end_ms: t + len,
            fault,
        });
        t += len + rng.range(GAP_MS_MIN, GAP_MS_MAX);
    }
    out
}

/// The directed links a partition-type fault cuts, given the resolved roles. `lag` is the
/// constrained election's first phase.
pub fn links_among(nodes: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    let mut v = Vec::new();
    for &a in nodes {
        for &b in nodes {
            if a != b {
                v.push((a, b));
            }
        }
    }
    v
}

/// Every link to and from `n`.
pub fn links_of(n: NodeId, members: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    let mut v = Vec::new();
    for &m in members {
        if m != n {
            v.push((n, m));
            v.push((m, n));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_reproducible_sequential_and_within_the_window() {
        let a = random_schedule(42, FaultKinds::ALL, 3, 3_000, 40_000);
        assert_eq!(a, random_schedule(42, FaultKinds::ALL, 3, 3_000, 40_000));
        assert_ne!(a, random_schedule(43, FaultKinds::ALL, 3, 3_000, 40_000));
        assert!(a.len() >= 4, "{a:?}");
        for w in a.windows(2) {
            assert!(w[0].end_ms + GAP_MS_MIN <= w[1].start_ms);
        }
        assert!(a.iter().all(|f| f.start_ms >= 3_000 && f.end_ms <= 40_000));
    }

    #[test]
    fn only_enabled_kinds_are_drawn() {
        let k = FaultKinds::parse("pause,partial").unwrap();
        let s = random_schedule(1, k, 3, 0, 200_000);
        assert!(
            s.iter()
                .all(|f| f.fault.kind() == "pause" || f.fault.kind() == "partial")
        );
        assert!(FaultKinds::parse("crash,bogus").is_err());
        assert!(random_schedule(1, FaultKinds::parse("none").unwrap(), 3, 0, 100_000).is_empty());
    }

    #[test]
    fn reconfig_is_opt_in_and_drawn_with_its_longer_window() {
        assert!(!FaultKinds::parse("all").unwrap().reconfig);
        for s in ["all,reconfig", "reconfig,all"] {
            let k = FaultKinds::parse(s).unwrap();
            assert!(k.reconfig && k.crash && k.partial, "{s}");
        }
        let s = random_schedule(7, FaultKinds::parse("reconfig").unwrap(), 3, 0, 200_000);
        assert!(s.len() > 5);
        assert!(s.iter().any(|f| f.fault == Fault::Resize));
        assert!(s.iter().any(|f| matches!(f.fault, Fault::Replace { .. })));
        assert!(s.iter().any(|f| matches!(f.fault, Fault::Wipe { .. })));
        for f in &s {
            assert_eq!(f.fault.kind(), "reconfig");
            assert!((RECONFIG_MS_MIN..=RECONFIG_MS_MAX).contains(&(f.end_ms - f.start_ms)));
        }
    }

    #[test]
    fn link_helpers() {
        assert_eq!(links_among(&[1, 2]), vec![(1, 2), (2, 1)]);
        assert_eq!(
            links_of(2, &[1, 2, 3]),
            vec![(2, 1), (1, 2), (2, 3), (3, 2)]
        );
    }
}
