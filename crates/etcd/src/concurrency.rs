//! The server side of etcd's `concurrency` recipes, shared by the Lock and Election services
//! (`lock.rs`, `election.rs`): a contender's key, the queue of contenders ordered by create
//! revision, and waiting — on the member's watch streams, never by polling — for the contender
//! ahead to go.
//!
//! **The recipe** (etcd's `concurrency.Mutex` / `Election`). Contenders for `name` each own one
//! key, `name/<lease id in hex>`, attached to their lease and created by a Txn guarded by
//! `create_revision == 0` (so a second call with the same lease reuses the key instead of
//! queueing behind itself). Create revisions order the queue: the owner is the key with the
//! smallest one. A contender waits for the deletion of the key just ahead of it (not of the
//! owner: a release wakes one waiter, no herd), then looks again, until none is ahead.
//!
//! **Why it is safe.** Each check is a linearizable Range, so "no key ahead and mine exists"
//! held at that Range's revision; keys are only ever created with a larger revision, so none
//! can get ahead later. Ownership ends when the key is deleted — by Unlock / Resign, or by the
//! lease ending, which deletes the lease's keys. A holder that stops renewing (paused,
//! partitioned) therefore loses the lock while it may still believe it holds it: that is why
//! writers must fence with the key's create revision (docs/locks.md).
//!
//! **Cleanup.** A call that created its key and then fails or is dropped (the client cancelled
//! or went away) deletes the key again — guarded by its create revision, so it can never
//! delete a later contender's key of the same lease — the way etcd's recipe unlocks on error.
//!
//! **Bounded.** Calls that wait (Lock, Campaign, Observe) hold a permit from a per-member
//! semaphore of [`COORDINATION_WAITERS_MAX`]; beyond it a call is refused at once with
//! RESOURCE_EXHAUSTED, so a flood of waiters cannot exhaust the member.

use crate::error::api_error_to_status;
use crate::service::EtcdService;
use std::sync::Arc;
use synod_core::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, KeyValue, Op, PutRequest,
    RangeRequest, Response, ResponseBody, RevisionEvents, SortOrder, SortTarget, TxnOp, TxnRequest,
};
use synod_core::{Consistency, EngineError};
use synod_node::watch::{Cursor, CursorError, WatchHubs};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;

/// Lock, Campaign and Observe calls one member lets wait at once. A waiter costs a task and a
/// watch cursor (a few KiB) and one linearizable Range per predecessor that leaves, so this
/// bounds both memory and the work a release can cause.
pub const COORDINATION_WAITERS_MAX: usize = 4096;

/// Revisions read from the hub per step while waiting.
const REVISIONS_PER_READ: usize = 64;

/// etcd's `concurrency.ErrSessionExpired`: the caller's key vanished (its lease ended) while
/// it waited.
pub const SESSION_EXPIRED: &str = "mutex: session is expired";
/// etcd's `concurrency.ErrElectionNoLeader`.
pub const NO_LEADER: &str = "election: no leader";
/// etcd's `concurrency.ErrElectionNotLeader`.
pub const NOT_LEADER: &str = "election: not leader";
/// etcd's `v3election.ErrMissingLeaderKey`.
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

/// What the Lock and Election services share: the member's etcd service (handle, headers,
/// metrics, shutdown signal) and the waiter bound.
#[derive(Clone)]
pub struct Coordination {
    pub(crate) svc: EtcdService,
    /// Permits for waiting calls; see [`COORDINATION_WAITERS_MAX`].
    waiters: Arc<Semaphore>,
    waiters_max: usize,
}

/// A contender's key after the create-or-reuse Txn.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: Vec<u8>,
    /// Orders the queue; the fencing token of this ownership.
    pub create_revision: u64,
    /// Whether this call created the key (and so must delete it if it fails).
    pub created: bool,
    /// The key's value when it already existed.
    pub value: Vec<u8>,
}

impl Coordination {
    pub fn new(svc: EtcdService) -> Self {
        Self::with_waiters_max(svc, COORDINATION_WAITERS_MAX)
    }

    /// With another waiter bound (tests use a small one).
    pub fn with_waiters_max(svc: EtcdService, waiters_max: usize) -> Self {
        Coordination {
            svc,
            waiters: Arc::new(Semaphore::new(waiters_max)),
            waiters_max,
        }
    }

    /// The watch streams to wait on, or UNIMPLEMENTED on an engine without leases,
    /// transactions or watches (CASPaxos, EPaxos): the recipe needs all three.
    pub(crate) fn hubs(&self, method: &str) -> Result<Arc<WatchHubs>, Status> {
        let info = self.svc.handle.info();
        let caps = &info.capabilities;
        if !(caps.leases && caps.transactions && caps.watch) {
            return Err(Status::unimplemented(format!(
                "{method} not supported by synod's {} engine: it needs leases, transactions \
                 and revisions (use the omnipaxos or vr engine)",
                info.engine
            )));
        }
        self.svc
            .handle
            .watch_hubs()
            .cloned()
            .map_err(|e| api_error_to_status(&e))
    }

    /// A permit to wait, or RESOURCE_EXHAUSTED when [`COORDINATION_WAITERS_MAX`] calls already
    /// wait on this member.
    pub(crate) fn waiter(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.waiters.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "synod: too many waiting Lock / Campaign / Observe calls on this member (at \
                 most {}); retry later or use another member",
                self.waiters_max
            ))
        })
    }

    pub(crate) async fn execute(&self, op: Op) -> Result<Response, Status> {
        self.svc
            .handle
            .execute(op, Consistency::Linearizable)
            .await
            .map_err(|e| api_error_to_status(&e))
    }

    /// Runs a Txn and answers whether it succeeded, its revision and its responses.
    pub(crate) async fn txn(
        &self,
        t: TxnRequest,
    ) -> Result<(bool, u64, Vec<ResponseBody>), Status> {
        let reply = self.execute(Op::Txn(t)).await?;
        match reply.body {
            ResponseBody::Txn(x) => Ok((x.succeeded, reply.revision, x.responses)),
            other => Err(wrong_reply("txn", &other)),
        }
    }

    pub(crate) async fn range(&self, r: RangeRequest) -> Result<(Vec<KeyValue>, u64), Status> {
        let reply = self.execute(Op::Range(r)).await?;
        match reply.body {
            ResponseBody::Range(x) => Ok((x.kvs, reply.revision)),
            other => Err(wrong_reply("range", &other)),
        }
    }

    /// Creates `key` with `value` attached to `lease` unless it exists, in which case the
    /// existing key is reused (etcd's `create_revision == 0` Txn).
    pub(crate) async fn enter(
        &self,
        key: Vec<u8>,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<Entry, Status> {
        if lease <= 0 {
            return Err(Status::invalid_argument(
                "synod: a lock or campaign needs a lease (grant one with Lease.LeaseGrant and \
                 keep it alive): without one the key would never go away",
            ));
        }
        let t = TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![TxnOp::Put(PutRequest {
                key: key.clone(),
                value,
                lease,
                ..Default::default()
            })],
            failure: vec![TxnOp::Range(RangeRequest::key(key.clone()))],
        };
        let (created, revision, responses) = self.txn(t).await?;
        if created {
            return Ok(Entry {
                key,
                create_revision: revision,
                created,
                value: Vec::new(),
            });
        }
        let existing = match responses.into_iter().next() {
            Some(ResponseBody::Range(r)) => r.kvs.into_iter().next(),
            _ => None,
        };
        // Deleted between the compare and the read cannot happen inside one Txn.
        let kv = existing.ok_or_else(|| Status::internal("synod: txn else-branch read nothing"))?;
        Ok(Entry {
            key,
            create_revision: kv.create_revision,
            created,
            value: kv.value,
        })
    }

    /// Waits until no key under `prefix` was created before `me`: then `me` owns it. Fails
    /// with [`SESSION_EXPIRED`] if `me`'s key is deleted first (its lease ended). Returns the
    /// revision at which ownership was observed.
    pub(crate) async fn wait_turn(
        &self,
        hubs: &Arc<WatchHubs>,
        prefix: &[u8],
        me: &Entry,
    ) -> Result<u64, Status> {
        loop {
            // Mine (if it still exists) and the newest key ahead of it, in one read.
            let (kvs, revision) = self
                .range(RangeRequest {
                    limit: 2,
                    sort_order: SortOrder::Descend,
                    sort_target: SortTarget::Create,
                    max_create_revision: me.create_revision,
                    ..RangeRequest::prefix(prefix.to_vec())
                })
                .await?;
            let mine = kvs
                .iter()
                .any(|kv| kv.key == me.key && kv.create_revision == me.create_revision);
            if !mine {
                return Err(Status::failed_precondition(SESSION_EXPIRED));
            }
            let Some(ahead) = kvs
                .iter()
                .find(|kv| kv.create_revision < me.create_revision)
            else {
                return Ok(revision);
            };
            let mut follow =
                Follow::new(hubs, prefix, revision + 1, self.svc.stopping.clone()).await?;
            let watched = [ahead.key.clone(), me.key.clone()];
            // Whichever went (or if history was compacted), the next Range tells.
            follow.until_deleted(&watched).await?;
        }
    }

    /// Deletes `key` if it is still the one created at `create_revision`; answers the Txn's
    /// revision.
    pub(crate) async fn delete_own(&self, key: &[u8], create_revision: u64) -> Result<u64, Status> {
        let t = TxnRequest {
            compare: vec![create_revision_is(key, create_revision)],
            success: vec![TxnOp::DeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })],
            failure: vec![],
        };
        let (_, revision, _) = self.txn(t).await?;
        Ok(revision)
    }

    /// A guard that deletes `entry`'s key when dropped armed (the call failed or was
    /// cancelled after creating it).
    pub(crate) fn guard(&self, entry: &Entry) -> KeyGuard {
        KeyGuard {
            coord: self.clone(),
            key: entry.key.clone(),
            create_revision: entry.create_revision,
            armed: entry.created,
            caller: synod_node::auth::current(),
        }
    }
}

/// The compare `create_revision(key) == revision`.
pub(crate) fn create_revision_is(key: &[u8], revision: u64) -> Compare {
    Compare {
        key: key.to_vec(),
        range_end: Vec::new(),
        target: CompareTarget::CreateRevision(revision),
        result: CompareResult::Equal,
    }
}

/// `name/<lease id in lower-case hex>`, etcd's key for a contender.
pub(crate) fn contender_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = contenders_prefix(name);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name/`: every contender's key starts with it.
pub(crate) fn contenders_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

fn wrong_reply(expected: &str, got: &ResponseBody) -> Status {
    Status::internal(format!("synod: expected a {expected} reply, got {got:?}"))
}

/// Deletes a contender's key on drop unless disarmed; see the module doc's "Cleanup".
pub(crate) struct KeyGuard {
    coord: Coordination,
    key: Vec<u8>,
    create_revision: u64,
    armed: bool,
    /// Who created the key: the cleanup deletes it as them (a dropped call's future is not
    /// polled inside its request's auth scope any more).
    caller: synod_node::auth::Caller,
}

impl KeyGuard {
    /// The call succeeded: the key now belongs to the caller.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // The runtime is going away; the lease will end the key.
        };
        let coord = self.coord.clone();
        let key = std::mem::take(&mut self.key);
        let rev = self.create_revision;
        let caller = std::mem::replace(&mut self.caller, synod_node::auth::Caller::Anonymous);
        rt.spawn(synod_node::auth::scope(caller, async move {
            if let Err(s) = coord.delete_own(&key, rev).await {
                // The lease still ends it; nothing else can be done from here.
                tracing::debug!(status = %s, "could not delete an abandoned contender key");
            }
        }));
    }
}

/// Why following the hub stopped without an answer.
pub(crate) enum Stopped {
    /// The member is shutting down.
    Shutdown,
    /// The keys followed left their group with no stream to follow them on (partitioned).
    Moved(String),
}

impl From<Stopped> for Status {
    fn from(s: Stopped) -> Status {
        match s {
            Stopped::Shutdown => {
                Status::unavailable("synod: the member is shutting down; retry elsewhere")
            }
            Stopped::Moved(reason) => Status::unavailable(reason),
        }
    }
}

/// A cursor over the applied revisions of a contenders' prefix, waiting on the member's watch
/// streams for new ones.
pub(crate) struct Follow {
    cursor: Cursor,
    any: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
}

impl Follow {
    /// From revision `from` of the group holding `prefix` (FAILED_PRECONDITION if its keys
    /// span groups of a partitioned cluster: their revisions could not be compared).
    pub(crate) async fn new(
        hubs: &Arc<WatchHubs>,
        prefix: &[u8],
        from: u64,
        stopping: watch::Receiver<bool>,
    ) -> Result<Self, Status> {
        // Subscribed before the first read, so a publish in between is not missed.
        let any = hubs.subscribe();
        let end = synod_core::kv::prefix_end(prefix);
        // Groups hosted elsewhere (placement) are read through remote hubs, started here.
        hubs.prepare(prefix, &end)
            .await
            .map_err(Status::failed_precondition)?;
        let cursor = hubs
            .cursor(prefix, &end, Some(from))
            .map_err(Status::failed_precondition)?;
        Ok(Follow {
            cursor,
            any,
            stopping,
        })
    }

    /// Reads again from revision `next` on the next step.
    pub(crate) fn rewind(&mut self, next: u64) {
        self.cursor.rewind(next);
    }

    /// The next applied revisions (at least one), waiting for them if need be. `Ok(None)`:
    /// the history from `next` was compacted away — the caller re-reads the current state.
    pub(crate) async fn step(&mut self) -> Result<Option<Vec<Arc<RevisionEvents>>>, Stopped> {
        loop {
            self.any.borrow_and_update();
            match self.cursor.read(REVISIONS_PER_READ).await {
                Ok(revs) if !revs.is_empty() => {
                    if let Some(last) = revs.last() {
                        self.cursor.advance(last.revision + 1);
                    }
                    return Ok(Some(revs));
                }
                Ok(_) => {}
                Err(CursorError::Engine(EngineError::Compacted { .. })) => return Ok(None),
                Err(CursorError::Moved(reason)) => return Err(Stopped::Moved(reason)),
                Err(CursorError::Engine(e)) => {
                    tracing::debug!(error = %e, "coordination: hub read failed");
                    return Err(Stopped::Shutdown);
                }
            }
            if *self.stopping.borrow() {
                return Err(Stopped::Shutdown);
            }
            tokio::select! {
                r = self.any.changed() => if r.is_err() {
                    return Err(Stopped::Shutdown);
                },
                _ = self.stopping.wait_for(|s| *s) => return Err(Stopped::Shutdown),
            }
        }
    }

    /// Waits until one of `keys` is deleted and answers which (`None`: history was compacted,
    /// so the caller must look again).
    pub(crate) async fn until_deleted(
        &mut self,
        keys: &[Vec<u8>],
    ) -> Result<Option<Vec<u8>>, Stopped> {
        loop {
            let Some(revs) = self.step().await? else {
                return Ok(None);
            };
            for rev in &revs {
                for e in &rev.events {
                    if e.kind == EventKind::Delete && keys.contains(&e.kv.key) {
                        return Ok(Some(e.kv.key.clone()));
                    }
                }
            }
        }
    }
}
