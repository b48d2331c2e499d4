//! Range reads over keys of several groups: one clamped read per group, merged in key order,
//! **every part read at one revision**.
//!
//! Why one revision: a reply's header revision `H` is what a client resumes from — etcd's
//! list-then-watch (`get --prefix`, then `watch --rev H+1`) misses nothing only if the list
//! holds every write at or below `H` and no later one, in every group. Each group answers a
//! read with its own latest state and revision; the groups close each other's revisions
//! (`close.rs`), but a group can still be a round behind when its part is read, and a write
//! it takes next would get a revision at or below the largest answer's — after the list, and
//! below the resume point. So the parts are *aligned*:
//!
//! * **Linearizable**: `H` is the largest revision a part came back with; a part whose group
//!   was behind is read again at `H` (its state at `H`, from its history) once its group has
//!   closed `H` — asked again every [`RETRY_TICKS`] while it answers "future revision". Every
//!   part's state is then a state its group had during the read, so each key's answer is
//!   linearizable as before, and the whole is one cut of every group at `H`.
//! * **Serializable**: `H` is the smallest; the parts ahead are read again at `H` from their
//!   history at once, so a member cut off from the rest still answers from what it has. If a
//!   part's history no longer reaches `H` (compacted), or `H` is 0 (a group never written:
//!   not a revision one can ask for), the read turns to the largest instead.
//! * **At a revision the client gave** (`get --rev R`): every part at `R`; a part whose group
//!   has not closed `R` yet is asked again while some group here has reached it (else "future
//!   revision", as etcd).

use crate::layout::GroupId;
use std::collections::BTreeMap;
use synod_core::kv::{Op, RangeRequest, RangeResponse, Response, ResponseBody, merge_ranges};
use synod_core::{ClientReply, ClientRequest, Consistency, EngineError, RequestId};

/// Ticks (10 ms) between two tries of a part whose group has not closed the revision yet:
/// about a close's interval (`close::CLOSE_EVERY_TICKS`).
pub(crate) const RETRY_TICKS: u64 = 1;

/// The range reads split over several groups, waiting for their parts.
#[derive(Default)]
pub(crate) struct Gathers {
    reads: BTreeMap<RequestId, Gather>,
    /// Planted bug `PartitionSpanReadUnaligned`: the parts' own states, the largest revision.
    pub(crate) bug_unaligned: bool,
}

/// One split range read.
struct Gather {
    /// The client's request (its op: the whole range).
    request: ClientRequest,
    range: RangeRequest,
    parts: Vec<Part>,
    /// The revision every part must be read at, once known.
    at: Option<u64>,
    /// Serializable reads align on the smallest revision (until one cannot).
    lowest: bool,
    /// The largest revision any group reported (its current one).
    seen: u64,
    /// The tick at which it is answered `Timeout`.
    until: u64,
    /// The error that answers it, once one came: given once no part is asked any more, so
    /// that no part's late answer reaches the client as if it were the read's.
    error: Option<EngineError>,
}

/// One group's part of a split read.
struct Part {
    group: GroupId,
    /// The clamped read, as first sent.
    range: RangeRequest,
    /// Its answer and the revision that answer's state is at.
    answer: Option<(RangeResponse, u64)>,
    /// Asked and not answered yet.
    asked: bool,
    /// The revision it was last asked at (none: its group's latest).
    asked_at: Option<u64>,
    /// The tick at which it is asked again (its group had not closed the revision).
    retry_at: Option<u64>,
}

/// What the partitioned engine does next for the split reads: submit these parts, send
/// these replies.
#[derive(Default)]
pub(crate) struct Next {
    pub(crate) submit: Vec<(GroupId, ClientRequest)>,
    pub(crate) replies: Vec<ClientReply>,
}

impl Gathers {
    pub(crate) fn contains(&self, id: &RequestId) -> bool {
        self.reads.contains_key(id)
    }

    /// Whether group `g`'s answer to `id` is a part of a split read (not someone else's
    /// request with the same id).
    pub(crate) fn is_part(&self, id: &RequestId, g: GroupId) -> bool {
        let parts = self
            .reads
            .get(id)
            .map(|r| r.parts.as_slice())
            .unwrap_or_default();
        parts.iter().any(|p| p.group == g && p.asked)
    }

    /// Starts a split read of `request` (a range read) over `parts`; what to submit.
    pub(crate) fn start(
        &mut self,
        request: ClientRequest,
        parts: Vec<(GroupId, Op)>,
        until: u64,
    ) -> Next {
        let Op::Range(range) = &request.op else {
            unreachable!("only range reads are split");
        };
        let at = (range.revision != 0).then_some(range.revision);
        let parts: Vec<Part> = parts
            .into_iter()
            .filter_map(|(group, op)| match op {
                Op::Range(range) => Some(Part {
                    group,
                    range,
                    answer: None,
                    asked: true,
                    asked_at: at,
                    retry_at: None,
                }),
                _ => None,
            })
            .collect();
        let submit = parts
            .iter()
            .map(|p| (p.group, part_request(&request, &p.range, at)))
            .collect();
        let gather = Gather {
            range: range.clone(),
            lowest: request.consistency == Consistency::Sequential,
            request,
            parts,
            at,
            seen: 0,
            until,
            error: None,
        };
        self.reads.insert(gather.request.id, gather);
        Next {
            submit,
            replies: Vec::new(),
        }
    }

    /// Takes group `g`'s answer to a part ([`Gathers::is_part`]). `highest`: the highest
    /// revision of this member's groups.
    pub(crate) fn answer(
        &mut self,
        g: GroupId,
        reply: ClientReply,
        now: u64,
        highest: u64,
    ) -> Next {
        let mut next = Next::default();
        let Some(gather) = self.reads.get_mut(&reply.id) else {
            return next;
        };
        let Some(slot) = gather.parts.iter().position(|p| p.group == g && p.asked) else {
            return next;
        };
        gather.parts[slot].asked = false;
        // A part of a read already failed is only waited for.
        if gather.error.is_none() {
            match gather.take(slot, reply.result, now, highest) {
                Err(e) => gather.fail(e),
                Ok(()) if !self.bug_unaligned => gather.align(&mut next),
                Ok(()) => {}
            }
        }
        next.replies.extend(self.settle(&reply.id));
        next
    }

    /// Ends split read `id` with `error`: part `g` was not asked after all (its group is
    /// gone). The reply, if no other part is still asked.
    pub(crate) fn fail(
        &mut self,
        id: &RequestId,
        g: GroupId,
        error: EngineError,
    ) -> Option<ClientReply> {
        let gather = self.reads.get_mut(id)?;
        for p in gather.parts.iter_mut().filter(|p| p.group == g) {
            p.asked = false;
        }
        gather.fail(error);
        self.settle(id)
    }

    /// The reply to read `id` once it is whole: every part answered at its revision, or an
    /// error and no part still asked.
    fn settle(&mut self, id: &RequestId) -> Option<ClientReply> {
        let gather = self.reads.get(id)?;
        let done = match gather.error {
            Some(_) => gather.parts.iter().all(|p| !p.asked),
            None => gather.parts.iter().all(|p| p.answer.is_some()),
        };
        if !done {
            return None;
        }
        let gather = self.reads.remove(id)?;
        Some(match gather.error {
            Some(e) => ClientReply {
                id: *id,
                result: Err(e),
            },
            None => gather.reply(),
        })
    }

    /// The parts due to be asked again, and the reads whose time ran out.
    pub(crate) fn pump(&mut self, now: u64) -> Next {
        let mut next = Next::default();
        let mut settled = Vec::new();
        for (id, gather) in &mut self.reads {
            if now >= gather.until && gather.error.is_none() {
                gather.fail(EngineError::Timeout);
                settled.push(*id);
            }
            for p in &mut gather.parts {
                if p.retry_at.is_some_and(|t| now >= t) {
                    next.submit.push(p.ask(&gather.request, gather.at));
                }
            }
        }
        for id in settled {
            next.replies.extend(self.settle(&id));
        }
        next
    }
}

impl Gather {
    /// The read fails with `error`: no part is asked again.
    fn fail(&mut self, error: EngineError) {
        self.error.get_or_insert(error);
        for p in &mut self.parts {
            p.retry_at = None;
        }
    }

    /// Records part `slot`'s answer; an error that answers the whole read.
    fn take(
        &mut self,
        slot: usize,
        result: Result<Response, EngineError>,
        now: u64,
        highest: u64,
    ) -> Result<(), EngineError> {
        match result {
            Ok(Response {
                revision,
                body: ResponseBody::Range(r),
            }) => {
                self.seen = self.seen.max(revision);
                // A part read at a revision holds its state at that revision.
                let state_at = self.parts[slot].asked_at.unwrap_or(revision);
                self.parts[slot].answer = Some((r, state_at));
                Ok(())
            }
            Ok(other) => Err(EngineError::InvalidRequest(format!(
                "a range part was answered with {:?}",
                other.body
            ))),
            Err(e @ EngineError::FutureRevision { .. }) => {
                // Some group has reached it: this one closes it within a round.
                if self.at.unwrap_or(0) <= self.seen.max(highest) {
                    self.parts[slot].retry_at = Some(now + RETRY_TICKS);
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(EngineError::Compacted { .. }) if self.lowest && self.chosen() => {
                // This part's history no longer reaches the smallest revision: align on
                // the largest instead, which every group reaches.
                self.lowest = false;
                self.at = None;
                self.parts[slot].retry_at = Some(now);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the revision was chosen here (not given by the client).
    fn chosen(&self) -> bool {
        self.range.revision == 0
    }

    /// Once every part has answered at least once (and none waits), chooses the revision to
    /// align on if the client gave none, and asks the parts not at it again.
    fn align(&mut self, next: &mut Next) {
        if self.parts.iter().any(|p| p.asked || p.retry_at.is_some()) {
            return;
        }
        if self.at.is_none() && self.lowest {
            let states = self.parts.iter().filter_map(|p| p.answer.as_ref());
            let lowest = states.map(|(_, at)| *at).min().unwrap_or(self.seen);
            // Revision 0 (a group never written) cannot be asked for: 0 means "the latest".
            // Such a read waits for the closes, as a linearizable one does.
            self.lowest = lowest > 0;
            self.at = self.lowest.then_some(lowest);
        }
        // The largest revision any group reported: every write acknowledged before the read
        // is at or below it.
        let at = *self.at.get_or_insert(self.seen);
        debug_assert!(
            at > 0 || self.parts.iter().all(|p| p.answer.is_some()),
            "a part to read again at revision 0"
        );
        for p in &mut self.parts {
            if p.answer
                .as_ref()
                .is_none_or(|(_, state_at)| *state_at != at)
            {
                p.answer = None;
                next.submit.push(p.ask(&self.request, Some(at)));
            }
        }
    }

    /// The merged reply: every part's state at one revision.
    fn reply(self) -> ClientReply {
        // The cut's revision, or for a read at the client's revision the store's current one
        // (as etcd answers a read at a past revision).
        let revision = match self.at {
            Some(at) if self.chosen() => at,
            _ => self.seen,
        };
        let parts = self.parts.into_iter().filter_map(|p| p.answer.map(|a| a.0));
        ClientReply {
            id: self.request.id,
            result: Ok(Response {
                revision,
                body: ResponseBody::Range(merge_ranges(parts.collect(), &self.range)),
            }),
        }
    }
}

impl Part {
    /// Asks this part again: at `at` from this member's own replica, or (none) its group's
    /// latest state as the client asked for it.
    fn ask(&mut self, request: &ClientRequest, at: Option<u64>) -> (GroupId, ClientRequest) {
        self.retry_at = None;
        self.asked = true;
        self.asked_at = at;
        let request = match at {
            Some(at) => reread(request, &self.range, at),
            None => part_request(request, &self.range, None),
        };
        (self.group, request)
    }
}

/// Part `range`'s request, read at `at` if given.
fn part_request(request: &ClientRequest, range: &RangeRequest, at: Option<u64>) -> ClientRequest {
    let mut range = range.clone();
    if let Some(at) = at {
        range.revision = at;
    }
    ClientRequest {
        op: Op::Range(range),
        ..request.clone()
    }
}

/// Part `range` read again at `at`: from this member's own replica of the group — its state
/// at a revision its group has closed is final, so no round to the leader is needed, and a
/// replica not there yet answers "future revision" and is asked again.
fn reread(request: &ClientRequest, range: &RangeRequest, at: u64) -> ClientRequest {
    ClientRequest {
        consistency: Consistency::Sequential,
        ..part_request(request, range, Some(at))
    }
}
