//! Range merges on the applied state (partitioned mode). A merge is two commands in two logs:
//!
//! 1. `Op::Merge` in the upper group's log *freezes* it: from that index on it refuses every
//!    command and read (`WrongGroup`, so callers route them again), and its state is final.
//! 2. `Op::Absorb` in the lower group's log carries that final state (made by the partitioned
//!    engine on the lower group's leader, [`AppliedState::merge_image`]): applying it extends
//!    the lower group's range over the upper one's and takes in its keys and client table.
//!
//! Why the state travels in the log rather than being read from the local upper group: a
//! member may apply the absorb before its own replica of the upper group has applied the
//! freeze, and every replica of the lower group must apply the same state at the same index.

use super::{AppliedState, MERGE_BYTES_MAX, MergeImage};
use synod_core::kv::{AbsorbMark, AbsorbRequest, KeyRange, Response, ResponseBody};
use synod_core::{EngineError, MoveKind};

impl AppliedState {
    /// Applies `Op::Merge` at KV index `index` (already skipped): freezes this group if its
    /// range begins at `at`, the first key of the upper of two adjacent ranges.
    pub(super) fn freeze(&mut self, index: u64, at: &[u8]) -> Result<Response, EngineError> {
        let range = &self.range.range;
        if !range.contains(at) || self.range.frozen.is_some() {
            // Routed by a stale layout, or already frozen: another group's question now.
            return Err(self.wrong_group());
        }
        if at.is_empty() || range.start.as_slice() != at {
            return Err(EngineError::InvalidRequest(format!(
                "merge key {} does not begin a range: name the first key of the upper of two \
                 adjacent ranges (this one is [{}, {}))",
                String::from_utf8_lossy(at),
                String::from_utf8_lossy(&range.start),
                String::from_utf8_lossy(&range.end),
            )));
        }
        let bytes = self.kv.live_bytes();
        if bytes > MERGE_BYTES_MAX {
            return Err(EngineError::InvalidRequest(format!(
                "range [{}, {}) holds {bytes} bytes; a merge moves at most {MERGE_BYTES_MAX}",
                String::from_utf8_lossy(&range.start),
                String::from_utf8_lossy(&range.end),
            )));
        }
        self.range.frozen = Some(index);
        self.note_move(self.range.range.clone(), MoveKind::Frozen);
        Ok(Response {
            revision: self.kv.revision(),
            body: ResponseBody::Merge {
                start: self.range.range.start.clone(),
                end: self.range.range.end.clone(),
                index,
            },
        })
    }

    /// This group's final state for the group below to absorb, once frozen.
    pub fn merge_image(&self) -> Option<Vec<u8>> {
        self.range.frozen?;
        let image = postcard::to_allocvec(&MergeImage {
            kv: self.kv.merge_copy(),
            range: self.range.clone(),
        })
        .ok()?;
        postcard::to_extend(&self.range.generation, image).ok()
    }

    /// Applies `Op::Absorb` at KV index `index` (already skipped): the frozen group's state
    /// joins this one if this group's range ends where the frozen one begins.
    pub(super) fn absorb(
        &mut self,
        index: u64,
        a: &AbsorbRequest,
    ) -> Result<Response, EngineError> {
        if self.range.frozen.is_some() || self.range.range.end != a.start || a.start.is_empty() {
            // This group froze itself, or the layout the absorb was made by is stale: the
            // engine makes it again for the group that ends there now.
            return Err(self.wrong_group());
        }
        if self.range.has_absorbed(a.group) {
            // A second absorb of the same frozen state (two leaders each proposed one, or one
            // was made again after its answer was lost), decided after this range ended at
            // that boundary again (a split there since): taking it in again would bring back
            // the keys' values from before the merge, beside the group that owns them now.
            return Err(EngineError::InvalidRequest(format!(
                "group {} was absorbed here already",
                a.group
            )));
        }
        let bad = |e: postcard::Error| EngineError::InvalidRequest(format!("merge image: {e}"));
        let (mut image, rest) = postcard::take_from_bytes::<MergeImage>(&a.image).map_err(bad)?;
        image.range.generation = super::trailing_generation(rest).map_err(bad)?;
        let expected = KeyRange {
            start: a.start.clone(),
            end: a.end.clone(),
        };
        if image.range.range != expected
            || image.range.frozen.is_none()
            || !image.kv.holds_only(&expected)
        {
            return Err(EngineError::InvalidRequest(
                "merge image is not the frozen state of the range it names".into(),
            ));
        }
        let before = self.kv.revision();
        self.kv
            .plant_keep_ended_leases(!self.checks.merge_lease_ends);
        self.kv
            .absorb(image.kv, index, self.checks.merge_sessions, Some(&expected));
        if !self.checks.merge_revision {
            self.kv.planted_rewind_revision(before);
        }
        if !self.checks.merge_history {
            self.kv.planted_shift_history(&expected);
        }
        self.range.range.end = a.end.clone();
        self.range.generation = self.range.generation.max(image.range.generation) + 1;
        self.note_move(
            expected,
            MoveKind::Absorbed {
                before,
                from: a.group,
            },
        );
        self.range.absorbed.push(AbsorbMark {
            group: a.group,
            at: a.start.clone(),
            index,
            splits: image.range.splits,
            absorbed: image.range.absorbed,
        });
        Ok(Response {
            revision: self.kv.revision(),
            body: ResponseBody::Merge {
                start: self.range.range.start.clone(),
                end: self.range.range.end.clone(),
                index,
            },
        })
    }
}
