//! The simulated network between replicas: per-directed-link latency with jitter (reordering
//! falls out of it), loss, duplication, and partitions as an up/down matrix per directed link.
//!
//! Partitions compose: every active partition fault contributes a set of cut directed links and
//! a link is up only if no active fault cuts it, so overlapping faults heal independently.

use std::collections::BTreeMap;
use synod_core::{NodeId, SplitMix64};

/// Lowest base one-way latency of a link.
pub const LINK_LATENCY_MIN_US: u64 = 500;
/// Highest base one-way latency of a link.
pub const LINK_LATENCY_BASE_MAX_US: u64 = 2_000;
/// Most extra delay a single message gets on top of its link's base latency.
pub const LINK_JITTER_MAX_US: u64 = 3_000;

pub struct Network {
    members: Vec<NodeId>,
    /// Base latency per directed link, drawn once per run.
    base_latency_us: Vec<Vec<u64>>,
    /// Active cuts by the fault that made them.
    cuts: BTreeMap<u64, Vec<(NodeId, NodeId)>>,
    /// `up[from][to]`, recomputed from `cuts`.
    up: Vec<Vec<bool>>,
    /// Extra loss/duplication from active bursts, by the fault that made them.
    loss_bursts_permille: BTreeMap<u64, u64>,
    dup_bursts_permille: BTreeMap<u64, u64>,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
}

impl Network {
    pub fn new(members: &[NodeId], rng: &mut SplitMix64) -> Self {
        let n = members.len();
        let base_latency_us = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| rng.range(LINK_LATENCY_MIN_US, LINK_LATENCY_BASE_MAX_US))
                    .collect()
            })
            .collect();
        Network {
            members: members.to_vec(),
            base_latency_us,
            cuts: BTreeMap::new(),
            up: vec![vec![true; n]; n],
            loss_bursts_permille: BTreeMap::new(),
            dup_bursts_permille: BTreeMap::new(),
            messages_sent: 0,
            messages_dropped: 0,
            messages_duplicated: 0,
        }
    }

    fn idx(&self, node: NodeId) -> usize {
        self.members
            .iter()
            .position(|m| *m == node)
            .unwrap_or_else(|| panic!("node {node} is not a member"))
    }

    pub fn is_up(&self, from: NodeId, to: NodeId) -> bool {
        self.up[self.idx(from)][self.idx(to)]
    }

    pub fn cut(&mut self, fault_id: u64, links: Vec<(NodeId, NodeId)>) {
        self.cuts.insert(fault_id, links);
        self.recompute();
    }

    pub fn heal(&mut self, fault_id: u64) {
        self.cuts.remove(&fault_id);
        self.loss_bursts_permille.remove(&fault_id);
        self.dup_bursts_permille.remove(&fault_id);
        self.recompute();
    }

    pub fn heal_all(&mut self) {
        self.cuts.clear();
        self.loss_bursts_permille.clear();
        self.dup_bursts_permille.clear();
        self.recompute();
    }

    pub fn loss_burst(&mut self, fault_id: u64, permille: u64) {
        self.loss_bursts_permille.insert(fault_id, permille);
    }

    pub fn dup_burst(&mut self, fault_id: u64, permille: u64) {
        self.dup_bursts_permille.insert(fault_id, permille);
    }

    fn recompute(&mut self) {
        let n = self.members.len();
        self.up = vec![vec![true; n]; n];
        let links: Vec<(NodeId, NodeId)> = self.cuts.values().flatten().copied().collect();
        for (a, b) in links {
            let (i, j) = (self.idx(a), self.idx(b));
            self.up[i][j] = false;
        }
    }

    /// Decides the fate of one message: the delivery delays of its copies (empty = lost).
    pub fn send(&mut self, from: NodeId, to: NodeId, rng: &mut SplitMix64) -> Vec<u64> {
        self.messages_sent += 1;
        let loss: u64 = self.loss_bursts_permille.values().sum::<u64>().min(1000);
        if !self.is_up(from, to) || rng.chance_permille(loss) {
            self.messages_dropped += 1;
            return Vec::new();
        }
        let base = self.base_latency_us[self.idx(from)][self.idx(to)];
        let mut delays = vec![base + rng.below(LINK_JITTER_MAX_US + 1)];
        let dup: u64 = self.dup_bursts_permille.values().sum::<u64>().min(1000);
        if rng.chance_permille(dup) {
            self.messages_duplicated += 1;
            delays.push(base + rng.below(LINK_JITTER_MAX_US + 1));
        }
        delays
    }

    /// Is `node` connected (both ways) to a majority of members, itself included — the
    /// OmniPaxos paper's quorum-connected.
    pub fn quorum_connected(&self, node: NodeId) -> bool {
        let connected = self
            .members
            .iter()
            .filter(|m| **m == node || (self.is_up(node, **m) && self.is_up(**m, node)))
            .count();
        connected > self.members.len() / 2
    }
}
