//! Deletes over keys of several groups (`etcdctl del --prefix`, `del a z`, `del "" --from-key`):
//! one clamped delete per group, answered together — the count added up, the previous values
//! (`--prev-kv`) in key order, the header the largest revision a part was applied at.
//!
//! **Not atomic across groups.** Each part is one delete in its group's log, atomic there and
//! at that group's revision, so each key is deleted once, linearizably, between the request
//! and its answer; but a reader may see one group's keys gone and another's not yet, and a
//! watcher gets each group's deletions at that group's revision. A part that fails fails the
//! whole request, once every part asked has answered (so no late answer is mistaken for the
//! request's): with the part's own error if no part was or may have been applied (a
//! `WrongGroup` the node then routes again), else with `Timeout` — the other groups' parts
//! may have been applied, as any write whose answer says so: retrying deletes what is left.
//! Why not atomic: that needs a commit protocol across groups (intents and a second round, as
//! for a transaction over several groups, which is refused); a delete over a range is
//! idempotent in its effect, so a retry completes it.
//!
//! Every part carries the client's request id, so each group applies its part at most once
//! (its client table) while the layout stays. A retry under the *same* id after a split or
//! merge moved a boundary inside the range could be answered from a group's saved answer to
//! its earlier, differently clamped part — keys the new part adds left in place — so that is
//! not a retry this engine takes: the node runtime gives every submission its own id (and
//! routes again after `WrongGroup` under a new one), and the simulator's clients give a range
//! delete whose outcome is unknown up as unknown rather than retry it under its id.

use crate::layout::GroupId;
use std::collections::BTreeMap;
use synod_core::kv::{DeleteRangeResponse, Op, Response, ResponseBody};
use synod_core::{ClientReply, ClientRequest, EngineError, RequestId};

/// The deletes split over several groups, waiting for their parts.
#[derive(Default)]
pub(crate) struct SplitDeletes {
    pending: BTreeMap<RequestId, Spread>,
    /// Planted bug `PartitionSplitDeleteAnswersEarly`: the first part's answer is the whole's.
    pub(crate) bug_early: bool,
}

/// One split delete.
struct Spread {
    id: RequestId,
    parts: Vec<Part>,
    /// The tick at which it is answered `Timeout`.
    until: u64,
    /// The error that answers it, once a part failed.
    error: Option<EngineError>,
    /// Planted bug: answered already, the parts left only waited for.
    answered: bool,
    /// Some part was applied, or may have been (answered, or timed out): an error of another
    /// part then answers the whole as `Timeout` — applied or not, as far as the client knows —
    /// never as an error that says nothing was applied (a `WrongGroup` the node retries).
    maybe_applied: bool,
}

/// One group's part.
struct Part {
    group: GroupId,
    /// Its answer and the revision it was applied at.
    answer: Option<(DeleteRangeResponse, u64)>,
    /// Asked and not answered yet.
    asked: bool,
}

impl SplitDeletes {
    pub(crate) fn contains(&self, id: &RequestId) -> bool {
        self.pending.contains_key(id)
    }

    /// Starts a split delete of `request` over `parts` (each group's clamped delete, in key
    /// order); what to submit to which group.
    pub(crate) fn start(
        &mut self,
        request: ClientRequest,
        parts: Vec<(GroupId, Op)>,
        until: u64,
    ) -> Vec<(GroupId, ClientRequest)> {
        debug_assert!(
            matches!(request.op, Op::DeleteRange(_)),
            "only deletes are split here"
        );
        let submit: Vec<(GroupId, ClientRequest)> = parts
            .into_iter()
            .map(|(g, op)| {
                debug_assert!(matches!(op, Op::DeleteRange(_)));
                let part = ClientRequest {
                    op,
                    ..request.clone()
                };
                (g, part)
            })
            .collect();
        let spread = Spread {
            id: request.id,
            parts: (submit.iter())
                .map(|(group, _)| Part {
                    group: *group,
                    answer: None,
                    asked: true,
                })
                .collect(),
            until,
            error: None,
            answered: false,
            maybe_applied: false,
        };
        self.pending.insert(request.id, spread);
        submit
    }

    /// Takes group `g`'s answer under delete `id`'s request id: its part's, or (not a part
    /// still asked) nobody's; the whole answer once every part is in.
    pub(crate) fn answer(&mut self, g: GroupId, reply: ClientReply) -> Option<ClientReply> {
        let spread = self.pending.get_mut(&reply.id)?;
        let part = (spread.parts.iter_mut()).find(|p| p.group == g && p.asked)?;
        part.asked = false;
        match reply.result {
            Ok(Response {
                revision,
                body: ResponseBody::DeleteRange(d),
            }) => {
                spread.maybe_applied = true;
                part.answer = Some((d, revision));
                if self.bug_early && !spread.answered && spread.error.is_none() {
                    // PLANTED BUG: answered before the other groups applied their parts.
                    spread.answered = true;
                    let answered = spread.parts.iter().filter_map(|p| p.answer.clone());
                    let result = Ok(merged(answered));
                    return Some(ClientReply {
                        id: reply.id,
                        result,
                    });
                }
            }
            Ok(other) => {
                let e = EngineError::InvalidRequest(format!(
                    "a delete's part was answered with {:?}",
                    other.body
                ));
                spread.error.get_or_insert(e);
            }
            Err(e) => {
                spread.maybe_applied |= e == EngineError::Timeout;
                spread.error.get_or_insert(e);
            }
        }
        self.settle(&reply.id)
    }

    /// Part `g` of delete `id` was not asked after all (its group is gone here): the delete
    /// fails with `error`, once no other part is still asked.
    pub(crate) fn fail(
        &mut self,
        id: &RequestId,
        g: GroupId,
        error: EngineError,
    ) -> Option<ClientReply> {
        let spread = self.pending.get_mut(id)?;
        for p in spread.parts.iter_mut().filter(|p| p.group == g) {
            p.asked = false;
        }
        spread.error.get_or_insert(error);
        self.settle(id)
    }

    /// The deletes whose time ran out: their answer is `Timeout` whatever their parts said
    /// so far (a part still asked may yet be applied), given once every part asked has
    /// answered — each group answers its own `Timeout`, and a relayed part its relay's — so
    /// that no part's late answer reaches the client after the whole.
    pub(crate) fn pump(&mut self, now: u64) -> Vec<ClientReply> {
        let late: Vec<RequestId> = (self.pending.values())
            .filter(|s| now >= s.until && s.error != Some(EngineError::Timeout))
            .map(|s| s.id)
            .collect();
        let mut replies = Vec::new();
        for id in late {
            if let Some(s) = self.pending.get_mut(&id) {
                s.error = Some(EngineError::Timeout);
                s.maybe_applied = true;
            }
            replies.extend(self.settle(&id));
        }
        replies
    }

    /// The reply to delete `id` once it is whole: every part answered, or an error and no
    /// part still asked.
    fn settle(&mut self, id: &RequestId) -> Option<ClientReply> {
        let spread = self.pending.get(id)?;
        let done = match spread.error {
            Some(_) => spread.parts.iter().all(|p| !p.asked),
            None => spread.parts.iter().all(|p| p.answer.is_some()),
        };
        if !done {
            return None;
        }
        let spread = self.pending.remove(id)?;
        if spread.answered {
            return None;
        }
        let result = match spread.error {
            Some(_) if spread.maybe_applied => Err(EngineError::Timeout),
            Some(e) => Err(e),
            None => Ok(merged(spread.parts.into_iter().filter_map(|p| p.answer))),
        };
        Some(ClientReply { id: *id, result })
    }
}

/// The parts' answers as one: in key order, since the parts are.
fn merged(answers: impl Iterator<Item = (DeleteRangeResponse, u64)>) -> Response {
    let mut whole = DeleteRangeResponse::default();
    let mut revision = 0;
    for (d, at) in answers {
        whole.deleted += d.deleted;
        whole.prev_kvs.extend(d.prev_kvs);
        revision = revision.max(at);
    }
    Response {
        revision,
        body: ResponseBody::DeleteRange(whole),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::kv::{DeleteRangeRequest, KeyValue};
    use synod_core::{ClientId, Consistency};

    fn request(seq: u64) -> ClientRequest {
        ClientRequest {
            id: RequestId {
                client: ClientId(9),
                seq,
            },
            first_unacked: seq,
            op: Op::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: vec![0],
                prev_kv: true,
            }),
            consistency: Consistency::Linearizable,
        }
    }

    fn gone_error() -> EngineError {
        EngineError::WrongGroup {
            start: Vec::new(),
            end: b"gone".to_vec(),
        }
    }

    fn part(key: &[u8], end: &[u8]) -> Op {
        Op::DeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            prev_kv: true,
        })
    }

    fn deleted(id: RequestId, revision: u64, keys: &[&str]) -> ClientReply {
        let prev_kvs = (keys.iter())
            .map(|k| KeyValue {
                key: k.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        ClientReply {
            id,
            result: Ok(Response {
                revision,
                body: ResponseBody::DeleteRange(DeleteRangeResponse {
                    deleted: keys.len() as u64,
                    prev_kvs,
                }),
            }),
        }
    }

    #[test]
    fn parts_answered_in_any_order_merge_in_key_order() {
        let mut d = SplitDeletes::default();
        let r = request(1);
        let submit = d.start(
            r.clone(),
            vec![(0, part(b"a", b"m")), (1, part(b"m", &[0]))],
            50,
        );
        assert_eq!(submit.len(), 2);
        assert!(
            submit.iter().all(|(_, q)| q.id == r.id),
            "every part is the client's id"
        );
        assert!(d.answer(1, deleted(r.id, 12, &["n", "z"])).is_none());
        let again = deleted(r.id, 12, &["n", "z"]);
        assert!(
            d.answer(1, again).is_none(),
            "an answered part is not waited for"
        );
        let whole = d.answer(0, deleted(r.id, 9, &["a", "b"])).expect("whole");
        let Ok(Response {
            revision,
            body: ResponseBody::DeleteRange(dr),
        }) = whole.result
        else {
            panic!("{whole:?}");
        };
        assert_eq!((revision, dr.deleted), (12, 4));
        let keys: Vec<&[u8]> = dr.prev_kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [b"a", b"b", b"n", b"z"]);
        assert!(!d.contains(&r.id));
    }

    #[test]
    fn a_failed_part_answers_once_every_part_is_in() {
        let mut d = SplitDeletes::default();
        let r = request(2);
        d.start(
            r.clone(),
            vec![(0, part(b"a", b"m")), (1, part(b"m", &[0]))],
            50,
        );
        let failed = ClientReply {
            id: r.id,
            result: Err(EngineError::Timeout),
        };
        assert!(d.answer(0, failed).is_none(), "part 1 is still asked");
        let whole = d.answer(1, deleted(r.id, 3, &["n"])).expect("whole");
        assert_eq!(whole.result, Err(EngineError::Timeout));
        // A gone group fails its part at once; the other part applied: may have been applied.
        let r = request(3);
        d.start(
            r.clone(),
            vec![(0, part(b"a", b"m")), (1, part(b"m", &[0]))],
            50,
        );
        let gone = EngineError::WrongGroup {
            start: Vec::new(),
            end: b"gone".to_vec(),
        };
        assert!(d.fail(&r.id, 1, gone.clone()).is_none());
        let whole = d.answer(0, deleted(r.id, 3, &["a"])).expect("whole");
        assert_eq!(whole.result, Err(EngineError::Timeout));
        // No part applied: the error says so (the node routes a `WrongGroup` again).
        let r = request(5);
        d.start(
            r.clone(),
            vec![(0, part(b"a", b"m")), (1, part(b"m", &[0]))],
            50,
        );
        assert!(d.fail(&r.id, 1, gone.clone()).is_none());
        let refused = ClientReply {
            id: r.id,
            result: Err(gone.clone()),
        };
        assert_eq!(d.answer(0, refused).expect("whole").result, Err(gone));
        // Time runs out: `Timeout`, whatever a part said, once every part answered.
        let r = request(4);
        let parts = vec![(0, part(b"a", b"m")), (1, part(b"m", &[0]))];
        d.start(r.clone(), parts, 50);
        assert!(d.answer(0, deleted(r.id, 3, &["a"])).is_none());
        assert!(d.pump(49).is_empty());
        assert!(d.pump(50).is_empty(), "part 1 is still asked");
        assert!(d.pump(51).is_empty());
        let refused = ClientReply {
            id: r.id,
            result: Err(gone_error()),
        };
        let late = d.answer(1, refused).expect("whole");
        assert_eq!(late.result, Err(EngineError::Timeout));
        assert!(!d.contains(&r.id));
    }
}
