//! Fault schedules: which faults a run may inject ([`FaultSet`]), the faults themselves
//! ([`Fault`]), random schedules drawn from the seed, and the OmniPaxos paper's three
//! partial-connectivity scenarios as fixed schedules ([`Scenario`]).
//!
//! The partial-connectivity topologies follow Ng, Haridi, Carbone, "OmniPaxos: Breaking the
//! Barriers of Partial Connectivity" (EuroSys'23), §2 / Fig. 1:
//! * **quorum-loss** — every server except one hub loses its links to every other non-hub
//!   server; the hub keeps all its links, so it is the only quorum-connected server and the
//!   old leader (not the hub) is no longer quorum-connected.
//! * **constrained election** — the leader is cut off entirely, and the only quorum-connected
//!   server (the hub) is one whose log is *behind* (it was isolated just before), while the
//!   servers with the most up-to-date log are not quorum-connected. Raft-style "most
//!   up-to-date log wins" elections cannot elect anyone; OmniPaxos's BLE elects the hub and the
//!   prepare phase synchronises its log.
//! * **chained** — A–B–C: the link between the leader and one follower fails, the third server
//!   still reaches both (Raft livelocks here as both ends keep deposing each other).
//!
//! Roles (leader, hub) are resolved when the fault starts, from the replicas' status, because
//! which server leads is only known then.

use synod_core::{NodeId, SplitMix64};

/// Which kinds of fault a random schedule may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FaultSet {
    /// Crash a node (volatile state lost) and restart it from its disk.
    pub crash: bool,
    /// Full splits: one side cannot reach the other in either direction (incl. isolating one
    /// node).
    pub partition: bool,
    /// One-way links: `a → b` down while `b → a` stays up.
    pub one_way: bool,
    /// The paper's partial-connectivity topologies (quorum-loss, constrained, chained).
    pub partial: bool,
    /// Message loss bursts.
    pub loss: bool,
    /// Message duplication bursts.
    pub duplicate: bool,
    /// Whole-cluster power loss (every node crashes at once, unsynced records may be lost).
    pub power_loss: bool,
    /// Crashes are machine crashes: unsynced records may be lost and the last one torn.
    pub torn_writes: bool,
    /// Storage faults (not in `all`; ask with `all,storage`): damaged records, snapshots and
    /// metadata, read errors, misdirected writes (a node finds its storage damaged at its next
    /// start), write errors / a full disk (the node stalls until it can persist), fsync
    /// failures (the node halts and restarts). Damage hits at most f members per run — the
    /// fault atlas — so every record keeps a majority of intact copies.
    pub storage: bool,
    /// Membership changes (not in `all`; ask with `all,reconfig`): an operator adds learners,
    /// promotes them, adds voters and removes members — the leader among them — while the
    /// other faults and the clients run (see `sim/reconfig.rs`).
    pub reconfig: bool,
    /// Leader transfers (not in `all`; ask with `all,transfer`): an operator asks the leader
    /// to hand leadership to a random other voter at random moments (see `sim/transfer.rs`).
    pub transfer: bool,
}

impl FaultSet {
    pub const NONE: FaultSet = FaultSet {
        crash: false,
        partition: false,
        one_way: false,
        partial: false,
        loss: false,
        duplicate: false,
        power_loss: false,
        torn_writes: false,
        storage: false,
        reconfig: false,
        transfer: false,
    };
    pub const ALL: FaultSet = FaultSet {
        crash: true,
        partition: true,
        one_way: true,
        partial: true,
        loss: true,
        duplicate: true,
        power_loss: true,
        torn_writes: true,
        storage: false,
        reconfig: false,
        transfer: false,
    };

    const NAMES: [&'static str; 11] = [
        "crash",
        "partition",
        "one-way",
        "partial",
        "loss",
        "duplicate",
        "power-loss",
        "torn-writes",
        "storage",
        "reconfig",
        "transfer",
    ];

    fn flag(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "crash" => &mut self.crash,
            "partition" => &mut self.partition,
            "one-way" => &mut self.one_way,
            "partial" => &mut self.partial,
            "loss" => &mut self.loss,
            "duplicate" => &mut self.duplicate,
            "power-loss" => &mut self.power_loss,
            "torn-writes" => &mut self.torn_writes,
            "storage" => &mut self.storage,
            "reconfig" => &mut self.reconfig,
            "transfer" => &mut self.transfer,
            _ => return None,
        })
    }

    /// `all`, `none`, or a comma-separated list of fault names (`all` among them adds every
    /// fault of `all`, e.g. `all,storage`).
    pub fn parse(s: &str) -> Result<FaultSet, String> {
        if s == "none" || s.is_empty() {
            return Ok(FaultSet::NONE);
        }
        let mut set = FaultSet::NONE;
        for name in s.split(',').map(str::trim) {
            if name == "all" {
                let (storage, reconfig, transfer) = (set.storage, set.reconfig, set.transfer);
                set = FaultSet {
                    storage,
                    reconfig,
                    transfer,
                    ..FaultSet::ALL
                };
                continue;
            }
            match set.flag(name) {
                Some(f) => *f = true,
                None => {
                    return Err(format!(
                        "unknown fault {name:?}; expected all, none or a list of: {}",
                        FaultSet::NAMES.join(", ")
                    ));
                }
            }
        }
        Ok(set)
    }

    pub fn names(&self) -> String {
        if self.transfer {
            let rest = FaultSet {
                transfer: false,
                ..*self
            };
            return match rest.names().as_str() {
                "none" => "transfer".into(),
                names => format!("{names},transfer"),
            };
        }
        let extras = |storage, reconfig| FaultSet {
            storage,
            reconfig,
            ..FaultSet::ALL
        };
        for (storage, reconfig, name) in [
            (false, false, "all"),
            (true, false, "all,storage"),
            (false, true, "all,reconfig"),
            (true, true, "all,storage,reconfig"),
        ] {
            if *self == extras(storage, reconfig) {
                return name.into();
            }
        }
        let mut copy = *self;
        let on: Vec<&str> = FaultSet::NAMES
            .into_iter()
            .filter(|n| copy.flag(n).is_some_and(|f| *f))
            .collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }
}

/// One fault. Node-less variants resolve their roles when they start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Crash {
        node: NodeId,
    },
    PowerLoss,
    /// `side` cannot talk to the rest in either direction.
    Split {
        side: Vec<NodeId>,
    },
    /// Cut every link of one node; `None` = a node that is not the leader.
    Isolate {
        node: Option<NodeId>,
    },
    OneWay {
        from: NodeId,
        to: NodeId,
    },
    QuorumLoss,
    ConstrainedElection,
    Chained,
    Loss {
        permille: u64,
    },
    Duplicate {
        permille: u64,
    },
    /// The node crashes and finds its storage damaged when it starts again.
    Damage {
        node: NodeId,
        damage: Damage,
    },
    /// Writes fail (EIO, a full disk): the node holds its batch, persists nothing and sends
    /// nothing until the fault ends — to its peers it is a stalled member.
    WriteStall {
        node: NodeId,
    },
    /// An fsync fails: the node halts (its unsynced writes may be gone) and restarts at the end.
    FsyncFailure {
        node: NodeId,
    },
}

/// What a `Fault::Damage` did to the node's storage; every kind is detected at the next start
/// (checksums, read errors), and all lead to the same recovery: repair from peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Bit flips in a committed record in the middle of the log.
    BitFlip,
    /// The newest snapshot (the first stored record when there is one) is damaged.
    Snapshot,
    /// A latent sector error: reading a record fails with EIO.
    ReadError,
    /// A write landed in the wrong place: the record it overwrote is damaged and its own
    /// place holds stale bytes.
    MisdirectedWrite,
    /// The data directory's metadata (identity) is damaged: nothing can be trusted.
    Metadata,
}

impl Damage {
    pub const ALL: [Damage; 5] = [
        Damage::BitFlip,
        Damage::Snapshot,
        Damage::ReadError,
        Damage::MisdirectedWrite,
        Damage::Metadata,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Damage::BitFlip => "bit flip in a committed record",
            Damage::Snapshot => "damaged snapshot",
            Damage::ReadError => "read error (EIO)",
            Damage::MisdirectedWrite => "misdirected write",
            Damage::Metadata => "damaged metadata",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Crash { node } => write!(f, "crash n{node}"),
            Fault::PowerLoss => write!(f, "power loss (all nodes)"),
            Fault::Split { side } => write!(f, "split {side:?} | rest"),
            Fault::Isolate { node: Some(n) } => write!(f, "isolate n{n}"),
            Fault::Isolate { node: None } => write!(f, "isolate a follower"),
            Fault::OneWay { from, to } => write!(f, "one-way link n{from} -> n{to} down"),
            Fault::QuorumLoss => write!(f, "quorum-loss"),
            Fault::ConstrainedElection => write!(f, "constrained election"),
            Fault::Chained => write!(f, "chained"),
            Fault::Loss { permille } => write!(f, "loss {permille}‰"),
            Fault::Duplicate { permille } => write!(f, "duplication {permille}‰"),
            Fault::Damage { node, damage } => write!(f, "storage of n{node}: {}", damage.name()),
            Fault::WriteStall { node } => write!(f, "write errors on n{node} (stalls)"),
            Fault::FsyncFailure { node } => write!(f, "fsync failure on n{node} (halts)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    pub id: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub fault: Fault,
}

impl std::fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} {:>8.1} ms .. {:>8.1} ms  {}",
            self.id,
            self.start_us as f64 / 1000.0,
            self.end_us as f64 / 1000.0,
            self.fault
        )
    }
}

/// Most faults in one random schedule over the default window.
pub const SCHEDULE_FAULTS_MAX: u64 = 6;
/// The default fault window; a longer window gets [`SCHEDULE_FAULTS_MAX`] per this much time.
pub const SCHEDULE_WINDOW_US: u64 = 6_000_000;
/// Shortest and longest fault.
pub const FAULT_DURATION_MIN_US: u64 = 200_000;
pub const FAULT_DURATION_MAX_US: u64 = 2_500_000;

/// Draws a random schedule over `[0, window_us)` from the enabled kinds. Every fault ends by
/// `window_us`, where the simulator heals everything anyway.
pub fn random_schedule(
    rng: &mut SplitMix64,
    members: &[NodeId],
    set: FaultSet,
    window_us: u64,
) -> Vec<ScheduledFault> {
    random_schedule_prone(rng, members, set, window_us, (members.len() - 1) / 2)
}

/// [`random_schedule`] with at most `prone_max` members whose storage is ever damaged: fewer
/// than f of 2f + 1 when groups live on fewer members than the cluster's (placement: f of a
/// group's hosts, which a group loses its state beyond).
pub fn random_schedule_prone(
    rng: &mut SplitMix64,
    members: &[NodeId],
    set: FaultSet,
    window_us: u64,
    prone_max: usize,
) -> Vec<ScheduledFault> {
    let mut kinds: Vec<u8> = Vec::new();
    let mut add = |on: bool, k: u8, weight: usize| {
        if on {
            kinds.extend(std::iter::repeat_n(k, weight));
        }
    };
    add(set.crash, 0, 3);
    add(set.partition, 1, 3);
    add(set.one_way, 2, 2);
    add(set.partial, 3, 3);
    add(set.loss, 4, 2);
    add(set.duplicate, 5, 2);
    add(set.power_loss, 6, 1);
    add(set.storage, 7, 4);
    add(set.storage, 8, 1);
    add(set.storage, 9, 1);
    // The fault atlas: only these members' storage is ever damaged (at most f of 2f + 1).
    let prone: Vec<NodeId> = if set.storage {
        let mut shuffled = members.to_vec();
        rng.shuffle(&mut shuffled);
        shuffled.truncate(prone_max.min((members.len() - 1) / 2));
        shuffled
    } else {
        Vec::new()
    };
    if kinds.is_empty() || window_us < 2 * FAULT_DURATION_MIN_US {
        return Vec::new();
    }
    let count = rng.range(1, schedule_faults_max(window_us));
    let mut out = Vec::new();
    for id in 1..=count {
        let start_us = rng.range(FAULT_DURATION_MIN_US / 2, window_us - FAULT_DURATION_MIN_US);
        let end_us =
            (start_us + rng.range(FAULT_DURATION_MIN_US, FAULT_DURATION_MAX_US)).min(window_us);
        let fault = match *rng.pick(&kinds) {
            0 => Fault::Crash {
                node: *rng.pick(members),
            },
            1 => {
                let mut shuffled = members.to_vec();
                rng.shuffle(&mut shuffled);
                // The smaller side: a minority, so the rest keeps a quorum.
                let side_len = rng.range(1, ((members.len() as u64 - 1) / 2).max(1)) as usize;
                if side_len == 1 && rng.chance_permille(300) {
                    Fault::Isolate { node: None }
                } else {
                    shuffled.truncate(side_len.min(members.len() - 1));
                    shuffled.sort_unstable();
                    Fault::Split { side: shuffled }
                }
            }
            2 => {
                let from = *rng.pick(members);
                let others: Vec<NodeId> = members.iter().copied().filter(|m| *m != from).collect();
                Fault::OneWay {
                    from,
                    to: *rng.pick(&others),
                }
            }
            3 => match rng.below(3) {
                0 => Fault::QuorumLoss,
                1 => Fault::ConstrainedElection,
                _ => Fault::Chained,
            },
            4 => Fault::Loss {
                permille: rng.range(50, 400),
            },
            5 => Fault::Duplicate {
                permille: rng.range(50, 300),
            },
            7 if prone.is_empty() => Fault::WriteStall {
                node: *rng.pick(members),
            },
            7 => Fault::Damage {
                node: *rng.pick(&prone),
                damage: *rng.pick(&Damage::ALL),
            },
            8 => Fault::WriteStall {
                node: *rng.pick(members),
            },
            9 => Fault::FsyncFailure {
                node: *rng.pick(members),
            },
            _ => Fault::PowerLoss,
        };
        out.push(ScheduledFault {
            id,
            start_us,
            end_us,
            fault,
        });
    }
    out.sort_by_key(|f| (f.start_us, f.id));
    out
}

/// Most faults in a schedule over `window_us`: as dense as in the default window, so that a
/// long seed is not a short seed followed by a minute of calm. Windows up to the default's get
/// exactly [`SCHEDULE_FAULTS_MAX`], which keeps every existing seed's schedule unchanged.
pub fn schedule_faults_max(window_us: u64) -> u64 {
    SCHEDULE_FAULTS_MAX * (window_us / SCHEDULE_WINDOW_US).max(1)
}

/// The paper's partial-connectivity scenarios, as fixed schedules for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    QuorumLoss,
    ConstrainedElection,
    Chained,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [
        Scenario::QuorumLoss,
        Scenario::ConstrainedElection,
        Scenario::Chained,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::QuorumLoss => "quorum-loss",
            Scenario::ConstrainedElection => "constrained election",
            Scenario::Chained => "chained",
        }
    }

    /// What the paper reports for OmniPaxos in this scenario. The abstract states "guaranteed
    /// recovery in at most four election timeouts under extreme partial network partitions";
    /// we did not find per-scenario figures we could quote exactly, so this says what the
    /// paper states.
    pub fn paper_omnipaxos(self) -> &'static str {
        "recovers (<= 4 ETs)"
    }

    /// What the paper reports for Raft, for context.
    pub fn paper_raft(self) -> &'static str {
        match self {
            Scenario::QuorumLoss => "deadlocks",
            Scenario::ConstrainedElection => "deadlocks",
            Scenario::Chained => "livelocks",
        }
    }

    /// The fixed schedule: the topology from `start_us` to `heal_us`; constrained election is
    /// preceded by a lag phase in which the future hub is isolated while writes go on, so its
    /// log is behind when the leader is cut off.
    pub fn schedule(self, start_us: u64, heal_us: u64, lag_us: u64) -> Vec<ScheduledFault> {
        let topology = match self {
            Scenario::QuorumLoss => Fault::QuorumLoss,
            Scenario::ConstrainedElection => Fault::ConstrainedElection,
            Scenario::Chained => Fault::Chained,
        };
        let mut out = Vec::new();
        if self == Scenario::ConstrainedElection {
            out.push(ScheduledFault {
                id: 1,
                start_us: start_us.saturating_sub(lag_us),
                end_us: start_us,
                fault: Fault::Isolate { node: None },
            });
        }
        out.push(ScheduledFault {
            id: 2,
            start_us,
            end_us: heal_us,
            fault: topology,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_set_parses_and_names_round_trip() {
        assert_eq!(FaultSet::parse("all").unwrap(), FaultSet::ALL);
        let s = FaultSet::parse("crash,partial").unwrap();
        assert!(s.crash && s.partial && !s.loss);
        assert_eq!(FaultSet::parse(&s.names()).unwrap(), s);
        assert!(FaultSet::parse("crash,meteor").is_err());
        let st = FaultSet::parse("all,storage").unwrap();
        assert!(st.storage && st.crash && st.partial);
        assert_eq!(FaultSet::parse(&st.names()).unwrap(), st);
        const { assert!(!FaultSet::ALL.storage) };
    }

    #[test]
    fn storage_damage_hits_at_most_f_members_per_schedule() {
        for n in [3usize, 5] {
            let members: Vec<NodeId> = (1..=n as u64).collect();
            let set = FaultSet::parse("all,storage").unwrap();
            let mut damaged_any = false;
            for seed in 0..500 {
                let mut rng = SplitMix64::new(seed);
                let damaged: std::collections::BTreeSet<NodeId> =
                    random_schedule(&mut rng, &members, set, 6_000_000)
                        .into_iter()
                        .filter_map(|f| match f.fault {
                            Fault::Damage { node, .. } => Some(node),
                            _ => None,
                        })
                        .collect();
                assert!(damaged.len() <= (n - 1) / 2, "seed {seed}: {damaged:?}");
                damaged_any |= !damaged.is_empty();
            }
            assert!(damaged_any, "{n} nodes: no schedule damaged any storage");
        }
    }

    #[test]
    fn long_windows_get_proportionally_more_faults() {
        assert_eq!(schedule_faults_max(SCHEDULE_WINDOW_US), SCHEDULE_FAULTS_MAX);
        assert_eq!(schedule_faults_max(1_000_000), SCHEDULE_FAULTS_MAX);
        assert_eq!(schedule_faults_max(60_000_000), 10 * SCHEDULE_FAULTS_MAX);
        let most = (0..200)
            .map(|seed| {
                let mut rng = SplitMix64::new(seed);
                random_schedule(&mut rng, &[1, 2, 3], FaultSet::ALL, 60_000_000).len()
            })
            .max();
        assert!(most > Some(SCHEDULE_FAULTS_MAX as usize), "{most:?}");
    }

    #[test]
    fn schedules_stay_inside_the_window() {
        for seed in 0..200 {
            let mut rng = SplitMix64::new(seed);
            for f in random_schedule(&mut rng, &[1, 2, 3, 4, 5], FaultSet::ALL, 5_000_000) {
                assert!(f.start_us < f.end_us && f.end_us <= 5_000_000, "{f}");
                if let Fault::Split { side } = &f.fault {
                    assert!(!side.is_empty() && side.len() <= 2);
                }
                assert!(
                    !matches!(f.fault, Fault::Damage { .. }),
                    "storage is not in all"
                );
            }
        }
    }
}
