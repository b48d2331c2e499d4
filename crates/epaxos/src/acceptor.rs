//! The acceptor side of EPaxos's phases (§4.3 Figure 2, §4.4 Figure 3): PreAccept merges
//! this replica's own interfering instances into the attributes, Accept and Prepare follow
//! Paxos's promise rule per instance, and Commit is final. Every state change is recorded
//! before the reply that depends on it (the records precede the messages in the output).

use crate::types::{Attrs, Ballot, Batch, Instance, InstanceId, Message, Record, Reported, Status};
use crate::{EPaxos, Out};
use synod_core::{NodeId, PlantedBug};

/// Most slots one catch-up request covers.
const FETCH_SLOTS_MAX: u64 = 512;

impl EPaxos {
    /// An instance this replica already committed: answer any phase message with the commit,
    /// so a coordinator (or a recoverer) learns it at once.
    fn answer_committed(&self, to: NodeId, id: InstanceId, out: &mut Out) -> bool {
        match self.instance(id) {
            Some(i) if i.status == Status::Committed => {
                out.send(
                    to,
                    Message::Commit {
                        id,
                        bal: i.vbal,
                        cmds: Some(i.cmds.clone()),
                        attrs: i.attrs.clone(),
                    },
                );
                true
            }
            _ => false,
        }
    }

    fn promised(&self, id: InstanceId) -> Ballot {
        self.instance(id).map(|i| i.bal).unwrap_or(Ballot::ZERO)
    }

    pub(crate) fn on_pre_accept(
        &mut self,
        from: NodeId,
        id: InstanceId,
        bal: Ballot,
        cmds: Batch,
        attrs: Attrs,
        out: &mut Out,
    ) {
        if self.is_collected(id) || self.answer_committed(from, id, out) {
            return;
        }
        let promised = self.promised(id);
        if bal < promised {
            let reply = Message::PreAcceptReply {
                id,
                bal: promised,
                ok: false,
                attrs: Attrs::default(),
            };
            out.send(from, reply);
            return;
        }
        if let Some(i) = self.instance(id)
            && i.status == Status::PreAccepted
            && i.vbal == bal
        {
            // A retransmission: the same answer as before.
            let reply = Message::PreAcceptReply {
                id,
                bal,
                ok: true,
                attrs: i.attrs.clone(),
            };
            out.send(from, reply);
            return;
        }
        let merged = self.merged_attrs(&cmds, &attrs);
        let unchanged = merged == attrs && bal == Ballot::initial(id);
        let inst = Instance::at(Status::PreAccepted, bal, cmds, merged.clone(), unchanged);
        self.record_instance(id, inst, out);
        self.wait_for(id);
        let reply = Message::PreAcceptReply {
            id,
            bal,
            ok: true,
            attrs: merged,
        };
        out.send(from, reply);
    }

    /// The coordinator's attributes with this replica's own interfering instances merged in
    /// (or, with the planted `EpaxosEchoDeps`, echoed unchanged).
    fn merged_attrs(&self, cmds: &Batch, attrs: &Attrs) -> Attrs {
        let mut merged = attrs.clone();
        if merged.deps.len() != self.n() {
            merged.deps.resize(self.n(), 0);
        }
        if self.config.bug(PlantedBug::EpaxosEchoDeps) {
            return merged;
        }
        let f = crate::types::batch_footprint(cmds);
        let local = self
            .conflicts
            .attrs_for(&f, self.config.bug(PlantedBug::EpaxosGetCommutesWithPut));
        if !cmds.is_empty() {
            merged.merge(&local);
        }
        merged
    }

    pub(crate) fn on_accept(
        &mut self,
        from: NodeId,
        id: InstanceId,
        bal: Ballot,
        cmds: Batch,
        attrs: Attrs,
        out: &mut Out,
    ) {
        if self.is_collected(id) || self.answer_committed(from, id, out) {
            return;
        }
        let promised = self.promised(id);
        if bal < promised {
            out.send(
                from,
                Message::AcceptReply {
                    id,
                    bal: promised,
                    ok: false,
                },
            );
            return;
        }
        let inst = Instance::at(Status::Accepted, bal, cmds, attrs, false);
        self.record_instance(id, inst, out);
        self.wait_for(id);
        out.send(from, Message::AcceptReply { id, bal, ok: true });
    }

    pub(crate) fn on_prepare(&mut self, from: NodeId, id: InstanceId, bal: Ballot, out: &mut Out) {
        if self.is_collected(id) || self.answer_committed(from, id, out) {
            return;
        }
        let promised = self.promised(id);
        if bal <= promised {
            let reply = Message::PrepareReply {
                id,
                bal: promised,
                ok: false,
                state: None,
            };
            out.send(from, reply);
            return;
        }
        // A promise to a higher ballot voids whatever this replica coordinates for it.
        self.coords.remove(&id);
        let state = self.promise(id, bal, out);
        self.wait_for(id);
        let reply = Message::PrepareReply {
            id,
            bal,
            ok: true,
            state,
        };
        out.send(from, reply);
    }

    /// Records a promise of `bal` for `id` and returns what this replica holds of it.
    pub(crate) fn promise(
        &mut self,
        id: InstanceId,
        bal: Ballot,
        out: &mut Out,
    ) -> Option<Reported> {
        match self.instance_mut(id) {
            Some(i) => i.bal = bal,
            None => self.store(id, Instance::promised(bal)),
        }
        out.records.push(Record::Promise { id, bal });
        let i = self.instance(id)?;
        (i.status != Status::None).then(|| Reported {
            status: i.status,
            bal: i.bal,
            vbal: i.vbal,
            cmds: i.cmds.clone(),
            attrs: i.attrs.clone(),
            unchanged: i.unchanged,
        })
    }

    /// A Commit from a peer (the coordinator, or an acceptor answering with what it knows).
    pub(crate) fn on_commit(
        &mut self,
        id: InstanceId,
        bal: Ballot,
        cmds: Option<Batch>,
        attrs: Attrs,
        out: &mut Out,
    ) {
        if self.is_collected(id) || self.is_executed(id) {
            return;
        }
        let known = self.instance(id);
        if let Some(i) = known
            && i.status == Status::Committed
        {
            // Agreement (§4.3, Theorem 1): one instance is committed with one command and
            // one set of attributes everywhere. Anything else is a broken protocol: stop.
            let same = i.attrs == attrs && cmds.as_ref().is_none_or(|c| *c == i.cmds);
            assert!(
                same,
                "epaxos safety violation at n{}: instance {id} committed as {:?} {:?} and again as {:?} {:?}",
                self.config.id,
                i.attrs,
                i.cmds.iter().map(|c| c.id).collect::<Vec<_>>(),
                attrs,
                cmds.map(|c| c.iter().map(|c| c.id).collect::<Vec<_>>())
            );
            return;
        }
        let cmds = match cmds {
            Some(c) => c,
            None => match known {
                Some(i) if i.status != Status::None && i.vbal == bal => i.cmds.clone(),
                // Not the commands chosen: recovery will fetch them.
                _ => {
                    self.wait_for(id);
                    return;
                }
            },
        };
        self.commit_local(id, bal, cmds, attrs, out);
    }

    /// Commits `id` here: records it, lets execution see it, and re-proposes this replica's
    /// own commands if something else was chosen in its instance.
    pub(crate) fn commit_local(
        &mut self,
        id: InstanceId,
        bal: Ballot,
        cmds: Batch,
        attrs: Attrs,
        out: &mut Out,
    ) {
        let same_cmds = self
            .instance(id)
            .is_some_and(|i| i.status != Status::None && i.cmds == cmds);
        let promised = self.promised(id);
        let mut inst = Instance::at(Status::Committed, bal, cmds, attrs.clone(), false);
        inst.bal = promised.max(bal);
        let committed_cmds = inst.cmds.clone();
        if same_cmds {
            out.records.push(Record::Commit { id, attrs });
            self.store(id, inst);
        } else {
            out.records.push(Record::Instance {
                id,
                inst: Box::new(inst.clone()),
            });
            self.store(id, inst);
        }
        self.waiting.remove(&id);
        self.coords.remove(&id);
        self.exec.on_commit(id);
        if id.replica == self.config.id
            && let Some(mine) = self.own.remove(&id.slot)
            && mine != committed_cmds
        {
            self.queue.extend(mine);
        }
    }

    /// Answers a catch-up request with the commits this replica holds in the range.
    pub(crate) fn on_fetch(
        &mut self,
        from: NodeId,
        replica: NodeId,
        lo: u64,
        hi: u64,
        out: &mut Out,
    ) {
        let Some(k) = self.pos(replica) else {
            return;
        };
        let hi = hi.min(lo.saturating_add(FETCH_SLOTS_MAX));
        for (slot, i) in self.instances[k].range(lo..=hi) {
            if i.status == Status::Committed {
                let m = Message::Commit {
                    id: InstanceId {
                        replica,
                        slot: *slot,
                    },
                    bal: i.vbal,
                    cmds: Some(i.cmds.clone()),
                    attrs: i.attrs.clone(),
                };
                out.send(from, m);
            }
        }
    }

    /// Asks every peer for the commits of instances this replica waits for, per member from
    /// its first unexecuted slot to the highest awaited one.
    pub(crate) fn fetch_missing(&mut self, out: &mut Out) {
        let mut hi: Vec<u64> = vec![0; self.n()];
        for id in self.waiting.keys() {
            if let Some(k) = self.pos(id.replica) {
                hi[k] = hi[k].max(id.slot);
            }
        }
        for (k, &h) in hi.iter().enumerate() {
            let lo = self.exec.upto(k) + 1;
            if h >= lo {
                let replica = self.config.members[k];
                for p in self.config.peers() {
                    out.send(p, Message::Fetch { replica, lo, hi: h });
                }
            }
        }
    }

    /// Records and stores an instance (before the reply that depends on it).
    pub(crate) fn record_instance(&mut self, id: InstanceId, inst: Instance, out: &mut Out) {
        out.records.push(Record::Instance {
            id,
            inst: Box::new(inst.clone()),
        });
        self.store(id, inst);
    }
}
