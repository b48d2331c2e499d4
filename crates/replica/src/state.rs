//! The applied state: the KV state machine plus the window of recently applied command
//! origins, which makes applying a log position idempotent per origin.
//!
//! Why at apply time. A write submitted at one replica is re-forwarded to the leader until it
//! is seen applied, and a leader change can leave a copy in the log that the new leader's
//! re-proposal duplicates. Session writes are deduplicated by the KV store's client table, but
//! writes without a session are not; so every replica skips a log entry whose origin it already
//! applied. The decision is a function of the decided log alone, so every replica skips the same
//! entries and reaches the same state (the skip advances the applied index and the digest).

use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use synod_core::auth::AuthState;
use synod_core::kv::{
    KeyRange, KvLimits, KvStore, Op, RangeState, Response, ResponseBody, SplitMark,
};
use synod_core::membership::Configuration;
use synod_core::{Command, EngineError, MoveKind, NodeId, Origin, WatchMove};

mod merge;

/// Origins remembered for deduplication. A re-forwarded write without a session is applied
/// twice only if its duplicate is decided after this many later commands — far beyond any
/// `request_timeout_ticks` at the rates a group sustains.
pub const APPLIED_ORIGINS_MAX: usize = 65_536;

#[derive(Clone, Debug)]
pub struct AppliedState {
    pub kv: KvStore,
    /// Oldest first.
    origins: VecDeque<Origin>,
    origin_set: HashSet<Origin>,
    /// The configuration as of the applied index (see `synod_core::membership`). No members:
    /// a joining replica that has not received any state yet.
    pub config: Configuration,
    /// Users, roles and permissions as of the applied index (`synod_core::auth`). Shared so
    /// that publishing it with the status after every batch copies a pointer.
    pub auth: Arc<AuthState>,
    /// Partitioned mode: the keys this group owns and the splits it made.
    pub range: RangeState,
    /// Groups split off by the last applies, for the replica to hand out (volatile).
    pub split_out: Vec<(SplitMark, AppliedState)>,
    /// What apply checks of ranges, set by the replica before applying (volatile).
    pub checks: RangeChecks,
    /// Changes of this group's keys for the watch layer, collected while it takes events
    /// (volatile, like the store's fresh events).
    pub watch_moves: Vec<WatchMove>,
}

/// The range checks of apply; each off only for a planted bug.
#[derive(Clone, Copy, Debug)]
pub struct RangeChecks {
    /// Refuse commands outside `range` (off: `PartitionBoundaryMisroute`).
    pub owner: bool,
    /// Refuse everything once frozen for a merge (off: `PartitionMergeFrozenServes`).
    pub frozen: bool,
    /// Take the frozen group's client table with its keys (off: `PartitionMergeDropsSessions`).
    pub merge_sessions: bool,
    /// Go on from the larger revision after an absorb (off: `PartitionAbsorbRevisionBehind`).
    pub merge_revision: bool,
    /// Join the absorbed history at its own revisions (off: `PartitionMergeHistoryShifted`).
    pub merge_history: bool,
    /// A revision close fills its revisions' history slots (off: `PartitionCloseWithoutSlots`).
    pub close_slots: bool,
    /// An absorb ends the leases the absorbed group ended (off: `PartitionMergeKeepsEndedLease`).
    pub merge_lease_ends: bool,
}

impl Default for RangeChecks {
    fn default() -> Self {
        RangeChecks {
            owner: true,
            frozen: true,
            merge_sessions: true,
            merge_revision: true,
            merge_history: true,
            close_slots: true,
            merge_lease_ends: true,
        }
    }
}

/// What a frozen group hands the group below in `Op::Absorb`: its keys and client table (no
/// history, no origins: the origins name proposals of the frozen group's log, which the
/// absorbing group's log never holds) and its range state.
#[derive(Serialize, Deserialize)]
struct MergeImage {
    kv: KvStore,
    range: RangeState,
}

/// A range's generation after its [`RangeState`] in an image (see
/// [`RangeState::generation`]): 0 in an image from before generations, which has no bytes
/// there.
fn trailing_generation(rest: &[u8]) -> Result<u64, postcard::Error> {
    match rest.is_empty() {
        true => Ok(0),
        false => postcard::from_bytes::<u64>(rest),
    }
}

/// The most a merge moves through the absorbing group's log, in live bytes of the frozen
/// group: the whole state travels in one entry (and one peer frame). Larger ranges are
/// refused when the merge is asked for; delete keys, or merge smaller ranges.
pub const MERGE_BYTES_MAX: u64 = 4 << 20;

/// What a snapshot or checkpoint carries of the applied state. Serialised as the KV store and
/// the origins, then — since membership change — the configuration, then — since auth — the
/// auth state; an image from before either (no trailing bytes) decodes with `None` for it
/// (recovery uses the bootstrap configuration, and auth starts empty and disabled).
#[derive(Clone, Debug)]
pub struct StateImage {
    pub kv: KvStore,
    pub origins: Vec<Origin>,
    pub config: Option<Configuration>,
    pub auth: Option<AuthState>,
    pub range: Option<RangeState>,
}

/// The part of a [`StateImage`] every version has.
#[derive(Serialize, Deserialize)]
struct ImageBase {
    kv: KvStore,
    origins: Vec<Origin>,
}

impl StateImage {
    pub fn decode(bytes: &[u8]) -> Result<StateImage, String> {
        let (base, rest) = postcard::take_from_bytes::<ImageBase>(bytes)
            .map_err(|e| format!("state image does not decode: {e}"))?;
        let (config, rest) = if rest.is_empty() {
            (None, rest)
        } else {
            let (c, rest) = postcard::take_from_bytes::<Configuration>(rest)
                .map_err(|e| format!("state image's configuration does not decode: {e}"))?;
            if !c.is_well_formed() {
                return Err("state image's configuration repeats or misorders member ids".into());
            }
            (Some(c), rest)
        };
        let (auth, rest) = if rest.is_empty() {
            (None, rest)
        } else {
            let (a, rest) = postcard::take_from_bytes::<AuthState>(rest)
                .map_err(|e| format!("state image's auth state does not decode: {e}"))?;
            (Some(a), rest)
        };
        let range = if rest.is_empty() {
            None
        } else {
            let (mut range, rest) = postcard::take_from_bytes::<RangeState>(rest)
                .map_err(|e| format!("state image's key range does not decode: {e}"))?;
            range.generation = trailing_generation(rest)
                .map_err(|e| format!("state image's range generation does not decode: {e}"))?;
            Some(range)
        };
        Ok(StateImage {
            kv: base.kv,
            origins: base.origins,
            config,
            auth,
            range,
        })
    }
}

/// A [`StateImage`] in its serialised form (postcard), as checkpoints hold it and snapshot
/// transfers send it: made once, shared by both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateBytes(pub Arc<Vec<u8>>);

impl StateBytes {
    pub fn decode(&self) -> Result<StateImage, String> {
        StateImage::decode(&self.0).map_err(|e| format!("checkpoint: {e}"))
    }
}

impl Serialize for StateBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As bytes, not as a sequence of u8 (one call per byte).
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for StateBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StateBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("serialised applied state bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<StateBytes, E> {
                Ok(StateBytes(Arc::new(v.to_vec())))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<StateBytes, E> {
                Ok(StateBytes(Arc::new(v)))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl AppliedState {
    pub fn new(limits: KvLimits, config: Configuration) -> Self {
        AppliedState {
            kv: KvStore::new(limits),
            origins: VecDeque::new(),
            origin_set: HashSet::new(),
            config,
            auth: Arc::default(),
            range: RangeState::default(),
            split_out: Vec::new(),
            checks: RangeChecks::default(),
            watch_moves: Vec::new(),
        }
    }

    /// `bootstrap` stands in for an image written before configurations were replicated.
    pub fn from_image(image: StateImage, bootstrap: &Configuration) -> Self {
        let mut s = AppliedState {
            kv: image.kv,
            origins: VecDeque::with_capacity(image.origins.len()),
            origin_set: HashSet::with_capacity(image.origins.len()),
            config: image.config.unwrap_or_else(|| bootstrap.clone()),
            auth: Arc::new(image.auth.unwrap_or_default()),
            range: image.range.unwrap_or_default(),
            split_out: Vec::new(),
            checks: RangeChecks::default(),
            watch_moves: Vec::new(),
        };
        for o in image.origins {
            s.remember(o);
        }
        s
    }

    /// The state serialised as a [`StateImage`] — straight from the live state, without
    /// copying it first: a checkpoint used to clone the whole store (≈ 11 ms at 10,000 keys)
    /// before serialising it, both on the engine thread.
    pub fn encode(&self) -> Result<StateBytes, postcard::Error> {
        #[derive(Serialize)]
        struct ImageRef<'a> {
            kv: &'a KvStore,
            origins: &'a VecDeque<Origin>,
        }
        // Sized up front from the store's own estimate (which over-counts each key's metadata):
        // grown by doubling, a checkpoint of a few MB copied itself over and over into fresh
        // pages the kernel had to zero — a tenth of a loaded leader's CPU in a profile.
        let estimate = usize::try_from(self.kv.bytes_in_use()).unwrap_or(usize::MAX / 2);
        let capacity = estimate
            .saturating_add(estimate / 8)
            .saturating_add(64 * 1024);
        let bytes = postcard::to_extend(
            &ImageRef {
                kv: &self.kv,
                origins: &self.origins,
            },
            Vec::with_capacity(capacity),
        )?;
        let bytes = postcard::to_extend(&self.config, bytes)?;
        let mut bytes = postcard::to_extend(&*self.auth, bytes)?;
        if self.range != RangeState::default() {
            bytes = postcard::to_extend(&self.range, bytes)?;
            if self.range.generation != 0 {
                bytes = postcard::to_extend(&self.range.generation, bytes)?;
            }
        }
        Ok(StateBytes(Arc::new(bytes)))
    }

    /// PLANTED BUG (`JoinWithoutState`): a new member takes the configuration and the index
    /// of the state it was sent, but not the state: it goes on (votes, applies, serves) as if
    /// the transfer had finished.
    pub fn planted_config_only(full: &AppliedState, limits: KvLimits) -> AppliedState {
        let mut s = AppliedState::new(limits, full.config.clone());
        s.auth = full.auth.clone();
        s.kv.skip(full.applied_index());
        s
    }

    pub fn applied_index(&self) -> u64 {
        self.kv.applied_index()
    }

    /// The highest incarnation below `below` of `node` among the origins this state remembers.
    pub fn highest_incarnation_of(&self, node: NodeId, below: u64) -> Option<u64> {
        let own = self.origins.iter().filter(|o| o.node == node);
        own.map(|o| o.incarnation).filter(|i| *i < below).max()
    }

    pub fn was_applied(&self, o: &Origin) -> bool {
        self.origin_set.contains(o)
    }

    /// Applies the command at KV index `index` (log position `index - 1`). `None` when its
    /// origin was applied before: nothing executes and nobody is answered twice.
    pub fn apply(&mut self, index: u64, c: &Command) -> Option<Result<Response, EngineError>> {
        if self.origin_set.contains(&c.origin) {
            self.kv.skip(index);
            return None;
        }
        self.remember(c.origin);
        if let Op::Split(split) = &c.op {
            self.kv.skip(index);
            // The engine's own split, not an operator's (whose request may go without a
            // session, also as `ClientId::NONE`, when its node has many in flight).
            let auto = c.id.is_engine_own();
            return Some(self.split(index, &split.at, auto));
        }
        if let Op::Merge(merge) = &c.op {
            self.kv.skip(index);
            return Some(self.freeze(index, &merge.at));
        }
        if let Op::Absorb(absorb) = &c.op {
            self.kv.skip(index);
            return Some(self.absorb(index, absorb));
        }
        let frozen = self.checks.frozen && self.range.frozen.is_some();
        if frozen || (self.checks.owner && !self.range.range.holds(&c.op)) {
            if let Some(saved) = self.kv.sessions().saved(c.id).cloned() {
                // A copy of a write applied here before the split or freeze (re-forwarded,
                // or retried by a member that missed the answer): its answer, not a refusal.
                self.kv.skip(index);
                return Some(Ok(saved));
            }
            // Routed by a layout from before a split decided earlier in this log: refused
            // here, the same way on every replica, and routed again by the origin.
            self.kv.skip(index);
            return Some(Err(self.wrong_group()));
        }
        if let Op::CloseRevisions { through } = &c.op
            && !self.checks.close_slots
        {
            self.kv.skip(index);
            self.kv.planted_raise_revision(*through);
            return Some(Ok(Response {
                revision: self.kv.revision(),
                body: ResponseBody::Closed,
            }));
        }
        if let Some(change) = c.op.member_change() {
            // Not the KV store's: it advances the index (and the digest) without a revision.
            self.kv.skip(index);
            if let Op::MembershipAt { version, .. } = &c.op
                && *version != self.config.version
            {
                return Some(Err(EngineError::Membership(format!(
                    "the configuration changed since this change was made for it (version {}, \
                     made for {version})",
                    self.config.version
                ))));
            }
            return Some(match self.config.apply(change) {
                Ok(next) => {
                    self.config = next.clone();
                    Ok(Response {
                        revision: self.kv.revision(),
                        body: ResponseBody::Membership(next),
                    })
                }
                Err(why) => Err(EngineError::Membership(why)),
            });
        }
        if let Op::Auth(change) = &c.op {
            // Like membership: beside the store, advancing the index without a revision. A
            // refused change leaves the state (and its shared copy) untouched.
            self.kv.skip(index);
            let mut next = (*self.auth).clone();
            return Some(match next.apply(change) {
                Ok(()) => {
                    let auth_revision = next.revision;
                    self.auth = Arc::new(next);
                    Ok(Response {
                        revision: self.kv.revision(),
                        body: ResponseBody::Auth { auth_revision },
                    })
                }
                Err(e) => Err(EngineError::Auth(e)),
            });
        }
        Some(self.kv.apply(index, c.id, c.first_unacked, &c.op))
    }

    /// PLANTED BUG (`PartitionSplitDropsSessions`): forgets which writes were applied.
    pub fn planted_forget_applied(&mut self) {
        self.kv.forget_sessions();
        self.origins.clear();
        self.origin_set.clear();
    }

    /// `WrongGroup`, naming this group's range.
    pub fn wrong_group(&self) -> EngineError {
        EngineError::WrongGroup {
            start: self.range.range.start.clone(),
            end: self.range.range.end.clone(),
        }
    }

    /// Applies a split at `at` (KV index `index`, already skipped): the keys from `at` on
    /// leave this store for the new group's state, which goes to `split_out`. `auto`: the
    /// partitioned engine asked for it itself (its requests have no client).
    fn split(&mut self, index: u64, at: &[u8], auto: bool) -> Result<Response, EngineError> {
        if !self.range.range.contains(at) || self.range.frozen.is_some() {
            // Routed by a layout from before another split: the key is another group's now.
            return Err(self.wrong_group());
        }
        if !self.range.range.splits_at(at) {
            return Err(EngineError::InvalidRequest(format!(
                "split key {} does not cut this group's range [{}, {}) in two",
                String::from_utf8_lossy(at),
                String::from_utf8_lossy(&self.range.range.start),
                String::from_utf8_lossy(&self.range.range.end),
            )));
        }
        let upper = AppliedState {
            kv: self.kv.split_off(at),
            origins: self.origins.clone(),
            origin_set: self.origin_set.clone(),
            config: self.config.clone(),
            auth: self.auth.clone(),
            range: RangeState {
                range: synod_core::kv::KeyRange {
                    start: at.to_vec(),
                    end: self.range.range.end.clone(),
                },
                auto,
                generation: self.range.generation + 1,
                ..RangeState::default()
            },
            split_out: Vec::new(),
            checks: RangeChecks::default(),
            watch_moves: Vec::new(),
        };
        self.range.range.end = at.to_vec();
        self.range.generation += 1;
        let mark = SplitMark {
            at: at.to_vec(),
            index,
        };
        self.range.splits.push(mark.clone());
        self.note_move(upper.range.range.clone(), MoveKind::Split(mark.clone()));
        self.split_out.push((mark, upper));
        Ok(Response {
            revision: self.kv.revision(),
            body: ResponseBody::Split {
                start: self.range.range.start.clone(),
                end: self.range.range.end.clone(),
                index,
            },
        })
    }

    /// Records a change of this group's keys at the current revision, if a watch layer
    /// takes this store's events.
    pub(crate) fn note_move(&mut self, range: KeyRange, kind: MoveKind) {
        if self.kv.collects_events() {
            self.watch_moves.push(WatchMove {
                through: self.kv.revision(),
                range,
                kind,
            });
        }
    }

    fn remember(&mut self, o: Origin) {
        if self.origin_set.insert(o) {
            self.origins.push_back(o);
        }
        while self.origins.len() > APPLIED_ORIGINS_MAX {
            if let Some(old) = self.origins.pop_front() {
                self.origin_set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::auth::AuthChange;

    fn applied_with_user() -> AppliedState {
        let mut s = AppliedState::new(KvLimits::default(), Configuration::default());
        let mut auth = AuthState::default();
        let add = AuthChange::UserAdd {
            name: "alice".into(),
            password: None,
        };
        auth.apply(&add).expect("add");
        s.auth = Arc::new(auth);
        s
    }

    #[test]
    fn the_auth_state_round_trips_through_an_image() {
        let s = applied_with_user();
        let image = s.encode().expect("encode").decode().expect("decode");
        assert_eq!(image.auth.as_ref(), Some(&*s.auth));
        let back = AppliedState::from_image(image, &Configuration::default());
        assert!(back.auth.users.contains_key("alice"));
    }

    fn command(seq: u64, op: Op) -> Command {
        Command {
            id: synod_core::RequestId {
                client: synod_core::ClientId(9),
                seq,
            },
            first_unacked: seq,
            op,
            origin: Origin {
                node: 1,
                incarnation: 1,
                seq,
            },
        }
    }

    /// A guarded change (`Op::MembershipAt`) applies only to the configuration version it was
    /// made for: the copy of a step decided late — here a `Remove(2)` made for version 1,
    /// decided after member 2 was added back — is refused and changes nothing.
    #[test]
    fn a_guarded_membership_change_applies_only_to_its_version() {
        use synod_core::membership::{Member, MemberChange};
        let config = Configuration::bootstrap(vec![Member::example(1, false)]);
        let mut s = AppliedState::new(KvLimits::default(), config);
        let at = |version, change| Op::MembershipAt { version, change };
        let add = MemberChange::Add(Member::example(2, true));
        assert!(matches!(
            s.apply(1, &command(1, at(0, add.clone()))),
            Some(Ok(_))
        ));
        let remove = MemberChange::Remove(2);
        assert!(matches!(
            s.apply(2, &command(2, at(1, remove.clone()))),
            Some(Ok(_))
        ));
        assert!(matches!(s.apply(3, &command(3, at(2, add))), Some(Ok(_))));
        let late = s.apply(4, &command(4, at(1, remove)));
        assert!(
            matches!(&late, Some(Err(EngineError::Membership(m))) if m.contains("made for 1")),
            "{late:?}"
        );
        assert!(s.config.contains(2), "member 2 stays: {:?}", s.config);
        assert_eq!(s.config.version, 3);
    }

    /// Found by the `snapshot_chunk` fuzz target (2026-12-03): a peer's decided `Split` in a
    /// store holding a lease hit the store's assertion and panicked the replica (groups held
    /// no leases then). Since partitioned clusters keep a copy of every lease in every group,
    /// a split cuts the leases too: each half keeps the lease, with the keys it holds.
    #[test]
    fn fuzz_regression_a_split_of_a_store_with_leases_splits_the_leases() {
        use synod_core::kv::{LeaseGrantRequest, PutRequest, SplitRequest};
        let mut s = AppliedState::new(KvLimits::default(), Configuration::default());
        let grant = Op::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 });
        assert!(matches!(s.apply(1, &command(1, grant)), Some(Ok(_))));
        for (i, k) in ["a", "m", "z"].into_iter().enumerate() {
            let mut put = PutRequest::new(k, "v");
            put.lease = 7;
            let index = 2 + i as u64;
            assert!(matches!(
                s.apply(index, &command(index, Op::Put(put))),
                Some(Ok(_))
            ));
        }
        let split = Op::Split(SplitRequest { at: b"m".to_vec() });
        assert!(matches!(s.apply(5, &command(5, split)), Some(Ok(_))));
        let (_, upper) = s.split_out.pop().expect("the upper half");
        let keys = |st: &AppliedState| st.kv.lease(7).map(|l| l.keys.clone()).expect("lease 7");
        assert_eq!(keys(&s).into_iter().collect::<Vec<_>>(), [b"a".to_vec()]);
        assert_eq!(
            keys(&upper).into_iter().collect::<Vec<_>>(),
            [b"m".to_vec(), b"z".to_vec()]
        );
        assert_eq!((s.kv.len(), upper.kv.len()), (1, 2));
    }

    /// A range's generation: both halves of a split one on from the parent, a merge one more
    /// than the larger of the two, carried by state and merge images; an image from before
    /// generations decodes as generation 0.
    #[test]
    fn a_ranges_generation_grows_with_splits_and_merges_and_travels_with_its_state() {
        use synod_core::kv::{AbsorbRequest, MergeRequest, PutRequest, SplitRequest};
        let mut s = AppliedState::new(KvLimits::default(), Configuration::default());
        let put = Op::Put(PutRequest::new("z", "v"));
        assert!(matches!(s.apply(1, &command(1, put)), Some(Ok(_))));
        let split = Op::Split(SplitRequest { at: b"m".to_vec() });
        assert!(matches!(s.apply(2, &command(2, split)), Some(Ok(_))));
        let (_, mut upper) = s.split_out.pop().expect("the upper half");
        assert_eq!((s.range.generation, upper.range.generation), (1, 1));
        let bytes = upper.encode().expect("encode");
        let image = bytes.decode().expect("decode");
        assert_eq!(image.range.as_ref().map(|r| r.generation), Some(1));
        // Before generations, the image ended with the range (generation 1 is one byte).
        let old = StateBytes(Arc::new(bytes.0[..bytes.0.len() - 1].to_vec()));
        let image = old.decode().expect("an image from before generations");
        assert_eq!(image.range.map(|r| r.generation), Some(0));
        let freeze = Op::Merge(MergeRequest { at: b"m".to_vec() });
        assert!(matches!(upper.apply(3, &command(3, freeze)), Some(Ok(_))));
        let absorb = Op::Absorb(AbsorbRequest {
            group: 7,
            start: b"m".to_vec(),
            end: Vec::new(),
            image: upper.merge_image().expect("frozen"),
        });
        assert!(matches!(s.apply(3, &command(4, absorb)), Some(Ok(_))));
        assert_eq!(s.range.generation, 2);
        assert!(s.range.range.end.is_empty() && s.kv.len() == 1);
    }

    /// Found by the `snapshot_chunk` fuzz target (2026-12-03, an 8-minute run): a snapshot
    /// whose configuration named member 2 twice started a VR instance counting 2 voters
    /// with no peer to hear from, and its first commit indexed past its one-element quorum
    /// list. A configuration that repeats (or misorders) ids is refused at decode now.
    #[test]
    fn fuzz_regression_an_image_whose_configuration_repeats_a_member_is_refused() {
        let s = AppliedState::new(KvLimits::default(), Configuration::of_ids(&[1, 2, 3]));
        let bytes = s.encode().expect("encode");
        assert!(bytes.decode().is_ok());
        let mut config = Configuration::of_ids(&[2]);
        config.members.push(config.members[0].clone());
        let mut bad = postcard::to_allocvec(&ImageBase {
            kv: s.kv.clone(),
            origins: Vec::new(),
        })
        .expect("base");
        bad.extend_from_slice(&postcard::to_allocvec(&config).expect("config"));
        let e = StateImage::decode(&bad).expect_err("a repeated member");
        assert!(e.contains("repeats"), "{e}");
    }

    #[test]
    fn an_image_from_before_auth_decodes_with_auth_off() {
        let s = applied_with_user();
        // What an image was before the auth section: the base, then the configuration.
        let mut bytes = postcard::to_allocvec(&ImageBase {
            kv: s.kv.clone(),
            origins: Vec::new(),
        })
        .expect("base");
        bytes.extend_from_slice(&postcard::to_allocvec(&s.config).expect("config"));
        let image = StateImage::decode(&bytes).expect("decode");
        assert!(image.auth.is_none());
        let back = AppliedState::from_image(image, &Configuration::default());
        assert!(!back.auth.enabled && back.auth.users.is_empty());
    }
}
