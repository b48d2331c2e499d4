//! The execution algorithm (§4.3.2): a committed instance executes once every instance it
//! reaches through its dependencies is committed; the dependency graph's strongly connected
//! components execute in reverse topological order (Tarjan's algorithm yields them in that
//! order), and the instances inside one component by `seq`, ties broken by instance id.
//!
//! A dependency `deps[k] = j` stands for every instance `k.i`, `i ≤ j`, not yet executed,
//! and an edge exists only to those that interfere (by the committed commands' footprints,
//! the same at every replica). Those instances must all be committed before the dependent
//! can execute, interfering or not, since interference is only known from the command.
//!
//! Bounded work, no busy-wait: a pass runs only after something committed; a search that
//! reaches an uncommitted instance marks every instance on its path as blocked on it, and
//! blocked instances are skipped until that instance commits; a pass stops starting new
//! searches past [`EXEC_VISITS_MAX`] visited instances and continues in the next one. The
//! search is iterative, so a long dependency chain cannot overflow the stack. Memory is the
//! committed-but-unexecuted instances, bounded by `RETAINED_INSTANCES_MAX`.

use crate::EPaxos;
use crate::types::{InstanceId, Status};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use synod_core::PlantedBug;

/// Instances one execution pass may visit before it yields to the next call.
pub const EXEC_VISITS_MAX: usize = 50_000;

/// What is executed, and what waits.
#[derive(Debug)]
pub struct ExecState {
    /// Per member position: every slot up to this is executed.
    upto: Vec<u64>,
    /// Per member position: executed slots above `upto`.
    above: Vec<BTreeSet<u64>>,
    /// Committed here and not executed yet.
    committed: BTreeSet<InstanceId>,
    /// Instances whose search reached an uncommitted instance: waiter → blocker.
    blocked: HashMap<InstanceId, InstanceId>,
    /// blocker → waiters.
    blocked_by: BTreeMap<InstanceId, Vec<InstanceId>>,
    /// Something committed since the last pass.
    dirty: bool,
}

impl ExecState {
    pub fn new(n: usize) -> ExecState {
        ExecState {
            upto: vec![0; n],
            above: vec![BTreeSet::new(); n],
            committed: BTreeSet::new(),
            blocked: HashMap::new(),
            blocked_by: BTreeMap::new(),
            dirty: false,
        }
    }

    pub fn restore(upto: &[u64], above: &[Vec<u64>]) -> ExecState {
        let mut e = ExecState::new(upto.len());
        e.upto = upto.to_vec();
        for (k, slots) in above.iter().enumerate() {
            e.above[k] = slots.iter().copied().collect();
        }
        e
    }

    pub fn save(&self) -> (Vec<u64>, Vec<Vec<u64>>) {
        let above = self
            .above
            .iter()
            .map(|s| s.iter().copied().collect())
            .collect();
        (self.upto.clone(), above)
    }

    pub fn upto(&self, k: usize) -> u64 {
        self.upto[k]
    }

    pub fn is_executed(&self, k: usize, slot: u64) -> bool {
        slot <= self.upto[k] || self.above[k].contains(&slot)
    }

    pub fn on_commit(&mut self, id: InstanceId) {
        self.committed.insert(id);
        if let Some(waiters) = self.blocked_by.remove(&id) {
            for w in waiters {
                self.blocked.remove(&w);
            }
        }
        self.dirty = true;
    }

    fn mark_executed(&mut self, k: usize, id: InstanceId) {
        self.committed.remove(&id);
        self.above[k].insert(id.slot);
        while self.above[k].remove(&(self.upto[k] + 1)) {
            self.upto[k] += 1;
        }
    }

    fn block(&mut self, waiter: InstanceId, blocker: InstanceId) {
        if self.blocked.insert(waiter, blocker).is_none() {
            self.blocked_by.entry(blocker).or_default().push(waiter);
        }
    }

    /// Committed instances waiting to execute (reports).
    pub fn backlog(&self) -> usize {
        self.committed.len()
    }
}

/// Tarjan bookkeeping for one visited instance.
struct Visit {
    index: usize,
    low: usize,
    on_stack: bool,
}

impl EPaxos {
    /// Executes whatever can be, appending the commands to the execution order.
    pub(crate) fn execute(&mut self) {
        if self.config.bug(PlantedBug::EpaxosExecuteBeforeDeps) {
            let ready: Vec<InstanceId> = self.exec.committed.iter().copied().collect();
            for id in ready {
                self.execute_one(id);
            }
            return;
        }
        if !self.exec.dirty {
            return;
        }
        self.exec.dirty = false;
        let roots: Vec<InstanceId> = self
            .exec
            .committed
            .iter()
            .filter(|id| !self.exec.blocked.contains_key(id))
            .copied()
            .collect();
        let mut visits: HashMap<InstanceId, Visit> = HashMap::new();
        for root in roots {
            if visits.len() > EXEC_VISITS_MAX {
                self.exec.dirty = true;
                break;
            }
            if visits.contains_key(&root) || self.is_executed(root) {
                continue;
            }
            self.search(root, &mut visits);
        }
    }

    /// The interfering, not yet executed instances `v` depends on; `Err(blocker)` if one
    /// of the instances its dependencies cover is not committed here.
    fn edges(&self, v: InstanceId) -> Result<Vec<InstanceId>, InstanceId> {
        let Some(inst) = self.instance(v) else {
            return Err(v);
        };
        let commute = self.config.bug(PlantedBug::EpaxosGetCommutesWithPut);
        let mut out = Vec::new();
        for (k, &dep) in inst.attrs.deps.iter().enumerate() {
            let replica = self.config.members[k];
            let from = self.exec.upto(k) + 1;
            for slot in from..=dep {
                let w = InstanceId { replica, slot };
                if w == v || self.exec.is_executed(k, slot) {
                    continue;
                }
                match self.instances[k].get(&slot) {
                    Some(i) if i.status == Status::Committed => {
                        let interferes = if commute {
                            inst.footprint.interferes_writes_only(&i.footprint)
                        } else {
                            inst.footprint.interferes(&i.footprint)
                        };
                        if interferes {
                            out.push(w);
                        }
                    }
                    _ => return Err(w),
                }
            }
        }
        Ok(out)
    }

    /// One iterative Tarjan search from `root`; executes each component as it completes.
    fn search(&mut self, root: InstanceId, visits: &mut HashMap<InstanceId, Visit>) {
        let mut stack: Vec<InstanceId> = Vec::new();
        let mut calls: Vec<(InstanceId, Vec<InstanceId>, usize)> = Vec::new();
        let mut blocker: Option<InstanceId> = None;
        match self.edges(root) {
            Ok(e) => calls.push((root, e, 0)),
            Err(b) => blocker = Some(b),
        }
        if blocker.is_none() {
            visits.insert(
                root,
                Visit {
                    index: visits.len(),
                    low: visits.len(),
                    on_stack: true,
                },
            );
            stack.push(root);
        }
        while blocker.is_none() {
            let Some((v, edges, pos)) = calls.last_mut() else {
                break;
            };
            let v = *v;
            if *pos < edges.len() {
                let w = edges[*pos];
                *pos += 1;
                if let Some(wv) = visits.get(&w) {
                    if wv.on_stack {
                        let wi = wv.index;
                        if let Some(vv) = visits.get_mut(&v) {
                            vv.low = vv.low.min(wi);
                        }
                    } else if !self.is_executed(w) {
                        // Visited in this pass and left blocked.
                        blocker = Some(self.exec.blocked.get(&w).copied().unwrap_or(w));
                    }
                    continue;
                }
                if let Some(b) = self.exec.blocked.get(&w) {
                    blocker = Some(*b);
                    continue;
                }
                match self.edges(w) {
                    Ok(e) => {
                        let index = visits.len();
                        visits.insert(
                            w,
                            Visit {
                                index,
                                low: index,
                                on_stack: true,
                            },
                        );
                        stack.push(w);
                        calls.push((w, e, 0));
                    }
                    Err(b) => blocker = Some(b),
                }
                continue;
            }
            calls.pop();
            let (index, low) = visits.get(&v).map(|x| (x.index, x.low)).unwrap_or((0, 0));
            if index == low {
                let mut scc = Vec::new();
                while let Some(x) = stack.pop() {
                    if let Some(xv) = visits.get_mut(&x) {
                        xv.on_stack = false;
                    }
                    scc.push(x);
                    if x == v {
                        break;
                    }
                }
                self.execute_component(scc);
            }
            if let Some((parent, _, _)) = calls.last()
                && let Some(pv) = visits.get_mut(parent)
            {
                pv.low = pv.low.min(low);
            }
        }
        if let Some(b) = blocker {
            // Everything still on the stack reaches `b`, which is not committed here.
            for x in stack.drain(..).chain(std::iter::once(root)) {
                if let Some(xv) = visits.get_mut(&x) {
                    xv.on_stack = false;
                }
                if !self.is_executed(x) {
                    self.exec.block(x, b);
                }
            }
            self.wait_for(b);
        }
    }

    /// Executes one strongly connected component: by seq, then by instance id.
    fn execute_component(&mut self, mut scc: Vec<InstanceId>) {
        scc.sort_by_key(|id| (self.instance(*id).map(|i| i.attrs.seq).unwrap_or(0), *id));
        for id in scc {
            self.execute_one(id);
        }
    }

    pub(crate) fn execute_one(&mut self, id: InstanceId) {
        let Some(k) = self.pos(id.replica) else {
            return;
        };
        if self.exec.is_executed(k, id.slot) {
            return;
        }
        if let Some(inst) = self.instances[k].get(&id.slot) {
            debug_assert_eq!(inst.status, Status::Committed, "executing uncommitted {id}");
            self.log.extend(inst.cmds.iter().cloned());
        }
        self.exec.mark_executed(k, id);
        self.executed_now.push(id);
    }
}
