//! The node runtime: starts storage, transport and the engine task, and hands out a
//! [`NodeHandle`].
//!
//! **One OS thread owns the engine** (no lock around it). It runs a single-threaded tokio
//! runtime of its own — which also reads the peer connections, and the engine writes to peers
//! directly (see the transport module doc), so a message costs no thread hand-off on either
//! side — and loops:
//! 1. wait for any input — a submission from a [`NodeHandle`], a decoded peer message, or the
//!    tick timer (`tick_ms`);
//! 2. take, in this order, the peer messages already received (up to `inputs_per_batch_max`),
//!    the tick if it is due, and queued client submissions (what is left of
//!    `inputs_per_batch_max`, at least a quarter of it);
//! 3. drain [`Engine::ready`] and call [`synod_core::Ready::persist`] with the WAL: records are
//!    written with one fsync, and only then are messages queued to peers and replies delivered.
//!
//! **Why peers first.** Heartbeats and their replies arrive while the previous batch is being
//! persisted. Handled after a burst of client work, or after the tick that closes a heartbeat
//! round, a reply that was already here counts as missing, and a busy but live leader loses
//! its leadership. (Stalls longer than a round — a slow fsync, a starved thread — are what the
//! election timeout must outlast; see docs/stability.md.)
//!
//! Group commit falls out of step 2: while one fsync runs, inputs pile up in the channels and
//! the next iteration turns all of them into one batch and one fsync. fsync blocks only this
//! thread, never the API or transport tasks.
//!
//! **A full or failing disk** (see `docs/durability.md`, "Full disk"). A failed *write* of a
//! batch (ENOSPC, EIO) rolls the WAL back to its last whole record, raises the NOSPACE alarm
//! and HOLDS the batch: the engine thread retries the same append with backoff
//! ([`HOLD_RETRY_MS_MIN`] doubling to [`HOLD_RETRY_MS_MAX`]) and takes no new input meanwhile,
//! so nothing can depend on the unpersisted state, and nothing of the batch is sent or
//! acknowledged until it is durable; peers see a slow member. A failed *fdatasync* stops the
//! node with [`NodeError::WalFatal`] instead (a retried fsync can lie: see `storage::wal`'s
//! `held` module). Either way nothing of that batch is sent or acknowledged.
//!
//! **Request ids.** Each boot gets one [`ClientId`] — the member id in the high 32 bits and the
//! data directory's boot counter in the low 32 — so ids never repeat across nodes or restarts.
//! Seqs count up from 1; `first_unacked` is the smallest seq still awaiting its reply, which
//! lets every replica's client table drop replies this node will never ask for again.

use crate::alarm::{Alarms, SpaceWatcher};
use crate::config::{ConfigError, NodeConfig};
use crate::handle::{NodeHandle, NodeInfo, NodeStatus, Submission};
use crate::metrics::Metrics;
use crate::storage::{AppendError, DataDir, StorageError, Wal, WalOptions, quarantine};
use crate::transport::{
    Answerer, PROBE_MS_MAX, PeerAnswer, PeerQuestion, Transport, TransportIdentity,
    TransportStopper, probe_peers,
};
use crate::watch::{HistoryQuery, WatchHubs};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use synod_core::kv::Response;
use synod_core::membership::Configuration;
use synod_core::{ClientId, ClientRequest, Engine, EngineError, EngineStatus, NodeId, RequestId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Why a node could not start, or why it stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("the {engine} engine cannot recover from its {records} durable records: {reason}")]
    Recover {
        engine: &'static str,
        records: usize,
        reason: String,
    },
    #[error("engine {0:?} is not available in this build")]
    EngineUnavailable(String),
    /// A WAL fsync failed, or the log could not be brought back to a known state after a
    /// failed write: the node stopped (see [`AppendError::Fatal`]).
    #[error("write-ahead log unusable, node stopped: {0}")]
    WalFatal(AppendError),
    /// Asked to stop while holding a batch its WAL could not write: nothing of that batch was
    /// sent or acknowledged.
    #[error(
        "stopped while holding a batch the write-ahead log could not write ({0}); nothing of \
         it was sent or acknowledged"
    )]
    StoppedWhileHeld(AppendError),
    #[error("engine thread: {0}")]
    Thread(String),
    /// This node's data directory is empty but its peers remember it with other data.
    #[error(
        "refusing to start member {member} with the EMPTY data directory {dir}: peer(s) \
         {peers:?} remember this member with other data, so its data directory was wiped or \
         replaced (or --data-dir points at the wrong place). `synod server` then removes this \
         member and adds the node back as a new one (unless --no-auto-rejoin; not on EPaxos). \
         As a last resort, when the cluster cannot decide that change, --allow-wiped-rejoin \
         rebuilds this member's state from its peers and takes no part in any vote until it \
         has (it needs answers from a majority of the cluster among the OTHER members that \
         still hold their data). Or restore the directory from the original disk. See \
         docs/durability.md"
    )]
    WipedDataDir {
        member: NodeId,
        dir: String,
        peers: Vec<NodeId>,
    },
}

/// A started node. Drop it, or better call [`RunningNode::shutdown`], to stop it.
pub struct RunningNode {
    pub handle: NodeHandle,
    peer_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    /// The engine thread's outcome, sent after it dropped all its state (and the data-dir lock).
    done: Option<oneshot::Receiver<Result<(), NodeError>>>,
    transport: Option<TransportStopper>,
    /// Tells an engine thread holding an unwritable batch to give up (see `persist_held`).
    stop_holding: Arc<AtomicBool>,
    _space_watcher: Option<SpaceWatcher>,
    /// Auto-compaction; aborted with the node.
    _compactor: AbortOnDrop,
}

/// Aborts a task when dropped, so a node's helper tasks end with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// First pause before retrying a batch whose WAL write failed; doubles per failure.
pub const HOLD_RETRY_MS_MIN: u64 = 50;
/// Longest pause between retries of a held batch (also bounds how long a stop request waits).
pub const HOLD_RETRY_MS_MAX: u64 = 1_000;

impl RunningNode {
    /// Where the peer listener is bound (useful when the config said port 0).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Waits until the engine thread stops on its own (a fatal error) and returns why.
    /// Pending forever while the node is healthy, so select it against a shutdown signal.
    pub async fn stopped(&mut self) -> Result<(), NodeError> {
        match self.done.as_mut() {
            Some(rx) => {
                let r = rx.await;
                self.done = None;
                r.unwrap_or_else(|_| Err(NodeError::Thread("engine thread vanished".into())))
            }
            None => Ok(()),
        }
    }

    /// Stops the engine thread and the transport, and waits for both. Requests in flight get
    /// "node stopped before replying". Returns an error if the engine had already stopped on
    /// one.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop_holding.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = self.stopped().await;
        if let Some(t) = self.transport.take() {
            t.stop().await;
        }
        result
    }
}

/// Starts a node, binding its peer listener on its configured `peer_addr`.
pub async fn start(cfg: NodeConfig) -> Result<RunningNode, NodeError> {
    cfg.validate()?;
    let addr = match &cfg.peer_listen_addr {
        Some(a) => a.clone(),
        None => cfg.me().map(|m| m.peer_addr.clone()).unwrap_or_default(),
    };
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| NodeError::Listen { addr, source })?;
    start_with_listener(cfg, listener).await
}

/// Starts a node on an already bound peer listener (tests bind port 0 first).
/// Dispatches on the configured engine name.
pub async fn start_with_listener(
    cfg: NodeConfig,
    listener: TcpListener,
) -> Result<RunningNode, NodeError> {
    // The one place that knows which engines exist. Add an arm per engine as they land.
    if !cfg.cluster.partition.split_keys.is_empty() {
        return start_partitioned(cfg, listener).await;
    }
    match cfg.cluster.engine.as_str() {
        #[cfg(feature = "omnipaxos")]
        "omnipaxos" => {
            start_engine::<synod_replica::Replica<synod_omnipaxos::OmniPaxos>>(cfg, listener).await
        }
        #[cfg(feature = "vr")]
        "vr" => start_engine::<synod_replica::Replica<synod_vr::Vr>>(cfg, listener).await,
        #[cfg(feature = "caspaxos")]
        "caspaxos" => start_engine::<synod_caspaxos::CasPaxos>(cfg, listener).await,
        #[cfg(feature = "epaxos")]
        "epaxos" => {
            start_engine::<synod_replica::Replica<synod_epaxos::EPaxos>>(cfg, listener).await
        }
        other => {
            drop(listener);
            Err(NodeError::EngineUnavailable(other.to_string()))
        }
    }
}

/// A partitioned node: the configured log engine, one instance per group, behind
/// [`synod_partition::Partitioned`] (see that crate).
async fn start_partitioned(
    cfg: NodeConfig,
    listener: TcpListener,
) -> Result<RunningNode, NodeError> {
    use synod_partition::Partitioned;
    match cfg.cluster.engine.as_str() {
        #[cfg(feature = "omnipaxos")]
        "omnipaxos" => {
            start_engine::<Partitioned<synod_replica::Replica<synod_omnipaxos::OmniPaxos>>>(
                cfg, listener,
            )
            .await
        }
        #[cfg(feature = "vr")]
        "vr" => {
            start_engine::<Partitioned<synod_replica::Replica<synod_vr::Vr>>>(cfg, listener).await
        }
        other => {
            drop(listener);
            Err(NodeError::EngineUnavailable(format!(
                "{other} (partitioned)"
            )))
        }
    }
}

/// Starts a node running engine `E` (what [`start_with_listener`] dispatches to; tests call
/// it with their own engines).
pub async fn start_engine<E: Engine>(
    cfg: NodeConfig,
    listener: TcpListener,
) -> Result<RunningNode, NodeError> {
    cfg.validate()?;
    let metrics = Arc::new(Metrics::new());
    let id = cfg.node_id;
    let cluster = cfg.cluster.clone();
    let cluster_id = cluster.cluster_id();

    // Blocking disk work (lock, meta, WAL scan) stays off the async workers.
    let recovered = {
        let cfg = cfg.clone();
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || recover::<E>(&cfg, metrics))
            .await
            .map_err(|e| NodeError::Thread(format!("recovery task: {e}")))??
    };
    let (data_dir, wal, mut engine, identity_repaired) = recovered;
    // Watchers see every revision applied from here on (earlier ones come from history).
    let _ = engine.take_group_watch_events();
    let (history_tx, history_rx) = mpsc::channel::<HistoryQuery>(cluster.runtime.submit_queue_max);
    let hubs = Arc::new(WatchHubs::new(&engine.status(), history_tx).planted(cfg.planted_bug));

    let (submit_tx, submit_rx) = mpsc::channel(cluster.runtime.submit_queue_max);
    let (inbox_tx, inbox_rx) = mpsc::channel(cluster.runtime.inbox_messages_max);
    // Published before start returns, so a handle never sees a pre-recovery status.
    let (status_tx, status_rx) = watch::channel(NodeStatus {
        engine: engine.status(),
        db_size_bytes: wal.size_bytes(),
        connected_peers: Vec::new(),
    });
    let peers = startup_peers(&cfg, &engine.status().configuration);
    let peer_ids = Arc::new(peer_data_ids(&data_dir)?);
    let identity = TransportIdentity {
        data_id: data_dir.meta().data_id,
        peers: peer_ids.clone(),
        // Safe: the engine starts amnesic and repairs from its peers before taking part.
        replace_data_id: (data_dir.is_fresh() && cfg.allow_wiped_rejoin) || identity_repaired,
    };
    // The engine thread's runtime exists before the transport so that peer connections can be
    // read on it (see the transport module doc); it starts running once the thread does.
    let mut engine_rt = EngineRuntime(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NodeError::Thread(format!("engine runtime: {e}")))?,
    ));
    let mut transport = Transport::<E::Message>::start_with_identity(
        id,
        cluster_id,
        peers.clone(),
        listener,
        cluster.effective_transport(),
        metrics.clone(),
        inbox_tx,
        Some(identity),
        Some(engine_rt.handle()?),
    )
    .map_err(|source| NodeError::Listen {
        addr: "peer listener".into(),
        source,
    })?;
    let peer_addr = transport.local_addr();
    let stopper = transport.stopper();
    // A joining member is probed too: one added under a new id is unknown to its peers, but
    // one that joined before, ran, and lost its data directory is restarted with the same
    // `--join` flags and finds its old id again, which its peers remember with other data.
    if data_dir.is_fresh() && !identity_repaired {
        // After the transport is up, so peers probing us at the same time get their answer.
        check_not_wiped(&cfg, &data_dir, &peers).await?;
    }

    let info = NodeInfo {
        cluster_id,
        cluster_name: cluster.cluster_name.clone(),
        member_id: id,
        members: cluster.members.iter().map(|m| m.info()).collect(),
        // What refusals name ("watch not supported by synod's omnipaxos-partitioned engine"):
        // the same protocol unpartitioned has what this one lacks.
        engine: if cluster.partition.split_keys.is_empty() {
            E::NAME.to_string()
        } else {
            format!("{}-partitioned", E::NAME)
        },
        capabilities: E::capabilities(),
        limits: cluster.limits.api_limits(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        client_tls: cluster.tls.client().enabled(),
        peer_tls: cluster.tls.peer().enabled(),
    };
    let alarms = Arc::new(Alarms::new(metrics.clone()));
    let space_watcher = SpaceWatcher::start(
        cfg.data_dir.clone(),
        cluster.storage.reserve_bytes,
        alarms.clone(),
    )
    .map_err(|e| NodeError::Thread(format!("spawn free-space watcher: {e}")))?;
    let stop_holding = Arc::new(AtomicBool::new(false));
    let (maintenance_tx, maintenance_rx) = mpsc::channel(crate::backup::MAINTENANCE_QUEUE_MAX);
    let (transfer_tx, transfer_rx) = mpsc::channel(crate::transfer::WAITING_TRANSFERS_MAX);
    let auth = Arc::new(crate::auth::AuthGate::new(
        cfg.planted_bug == Some(synod_core::PlantedBug::TxnElseBranchUnchecked),
    ));
    auth.observe(&engine.status().auth);
    let maintenance = Arc::new(crate::backup::Maintenance::new(maintenance_tx));
    let handle =
        NodeHandle::with_alarms(submit_tx, info, status_rx, metrics.clone(), alarms.clone())
            .with_auth(auth.clone())
            .with_watch_hubs(hubs.clone())
            .with_maintenance(maintenance.clone())
            .with_leader_transfer(transfer_tx)
            .with_peer_asker(crate::transport::PeerAsker::new(
                id,
                cluster_id,
                cluster.effective_transport(),
            ));
    transport.set_answerer(answerer(handle.clone()));
    hubs.set_remote(Arc::new(crate::watch::remote::PeerEvents(handle.clone())));

    // Distinct per boot of this directory, and (by its data id) per directory: a member whose
    // directory was wiped or quarantined counts boots from 1 again, and must not reuse the
    // session ids of its earlier life, whose saved replies the replicated state still holds.
    let client = ClientId(
        (id << 32)
            | ((data_dir.meta().data_id.rotate_left(17)
                ^ data_dir.boot().wrapping_mul(0x9e37_79b9_7f4a_7c15))
                & 0xffff_ffff),
    );
    let last_decided = engine.status().decided_index;
    let handle_for_compactor = handle.clone();
    let state = EngineLoop {
        id,
        engine,
        wal,
        _data_dir: data_dir,
        transport,
        submit_rx,
        inbox_rx,
        history_rx,
        maintenance_rx,
        maintenance,
        quarantined: false,
        defrag_waiters: Vec::new(),
        hubs,
        status_tx,
        auth,
        metrics,
        client,
        next_seq: 1,
        pending: BTreeMap::new(),
        pending_max: cluster.pending_requests_max,
        session_window: cluster.engine_config(id).kv.client_window_max as u64,
        inputs_per_batch_max: cluster.runtime.inputs_per_batch_max,
        tick: Duration::from_millis(cluster.tick_ms),
        to_self: VecDeque::new(),
        last_leader: None,
        last_decided,
        followed: None,
        peer_ids,
        repairing: None,
        failed_groups_logged: Default::default(),
        alarms,
        stop_holding: stop_holding.clone(),
        transfer_rx,
        transfers: crate::transfer::Transfers::new(
            Duration::from_millis(cluster.tick_ms),
            &cluster.engine_config(id),
        ),
        quota_backend_bytes: cluster.storage.quota_backend_bytes,
        group_gauges: std::collections::BTreeMap::new(),
    };
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let engine_rt = engine_rt.take()?;
    std::thread::Builder::new()
        .name(format!("synod-engine-{id}"))
        .spawn(move || {
            let result = engine_rt.block_on(state.run(shutdown_rx));
            // Stops the peer readers running here before anyone learns the node is down.
            drop(engine_rt);
            if let Err(e) = &result {
                tracing::error!(node = id, error = %e, "node stopped");
            }
            let _ = done_tx.send(result);
        })
        .map_err(|e| NodeError::Thread(format!("spawn engine thread: {e}")))?;
    tracing::info!(node = id, engine = E::NAME, %peer_addr, ?client, "node started");
    Ok(RunningNode {
        handle,
        peer_addr,
        shutdown: Some(shutdown_tx),
        done: Some(done_rx),
        transport: Some(stopper),
        stop_holding,
        _space_watcher: space_watcher,
        _compactor: AbortOnDrop(tokio::spawn(crate::compactor::run(
            handle_for_compactor,
            cluster.history.clone(),
        ))),
    })
}

/// The engine thread's runtime until the thread takes it. Start-up can fail after it was built,
/// inside an async context where dropping a runtime the ordinary way panics; this drops it
/// without blocking instead.
struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl EngineRuntime {
    fn handle(&self) -> Result<tokio::runtime::Handle, NodeError> {
        self.0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or_else(|| NodeError::Thread("engine runtime already taken".into()))
    }

    fn take(&mut self) -> Result<tokio::runtime::Runtime, NodeError> {
        self.0
            .take()
            .ok_or_else(|| NodeError::Thread("engine runtime already taken".into()))
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Whom the transport dials at start: the members of the configuration the engine recovered
/// (the replicated truth once there is one), else the cluster file's list (a new cluster's
/// bootstrap members, or the members a joining node contacts). A configuration member without
/// an address (an engine that knows only ids while joining) takes the file's, if it has one.
/// Answers peers' questions (the corruption check's, a member's change of its own membership)
/// from this member's own state, as its client APIs would but without their auth and
/// client-TLS requirements: only members of this cluster reach the peer port.
fn answerer(handle: NodeHandle) -> Answerer {
    Arc::new(move |from, question| {
        let handle = handle.clone();
        Box::pin(async move {
            match question {
                PeerQuestion::Member(change) => {
                    crate::self_change::answer(&handle, from, change).await
                }
                PeerQuestion::Revision => PeerAnswer::Revision(handle.status().engine.revision),
                PeerQuestion::HashKv { revision } => hash_answer(handle.hash_kv(revision).await),
                PeerQuestion::Groups => {
                    let status = handle.status();
                    let groups = status.engine.groups.iter();
                    let revisions = groups.map(|g| (g.group, g.revision, g.compact_revision));
                    PeerAnswer::Groups(revisions.collect())
                }
                PeerQuestion::GroupHashKv { group, revision } => {
                    hash_answer(handle.group_hash_kv(group, revision).await)
                }
                // Its state may differ from its peers': not for other members' watchers.
                PeerQuestion::Events(_) if handle.corrupt() => {
                    PeerAnswer::Unavailable(crate::backup::ERR_CORRUPT.into())
                }
                PeerQuestion::Image(query) => crate::backup::answer_image(&handle, query).await,
                PeerQuestion::Events(query) => match handle.watch_hubs() {
                    Ok(hubs) => match crate::watch::remote::answer(hubs, query).await {
                        Ok(page) => PeerAnswer::Events(page),
                        Err(e) => PeerAnswer::Unavailable(e.to_string()),
                    },
                    Err(e) => PeerAnswer::Unavailable(e.to_string()),
                },
            }
        })
    })
}

/// A HashKV as a peer's answer.
fn hash_answer(h: Result<synod_core::kv::KvHash, crate::handle::ApiError>) -> PeerAnswer {
    match h {
        Ok(h) => PeerAnswer::HashKv {
            hash: h.hash,
            revision: h.revision,
            compact_revision: h.compact_revision,
        },
        Err(crate::handle::ApiError::Engine(EngineError::FutureRevision { .. })) => {
            PeerAnswer::FutureRevision
        }
        Err(e) => PeerAnswer::Unavailable(e.to_string()),
    }
}

fn startup_peers(cfg: &NodeConfig, recovered: &Configuration) -> Vec<(NodeId, String)> {
    let file: Vec<(NodeId, String)> = cfg
        .cluster
        .members
        .iter()
        .map(|m| (m.id, m.peer_addr.clone()))
        .collect();
    let all: Vec<(NodeId, String)> = if recovered.members.is_empty() {
        file
    } else {
        let from_file = |id: NodeId| file.iter().find(|(f, _)| *f == id).map(|(_, a)| a.clone());
        recovered
            .members
            .iter()
            .filter_map(|m| match m.peer_addr.as_str() {
                "" => from_file(m.id).map(|a| (m.id, a)),
                a => Some((m.id, a.to_string())),
            })
            .collect()
    };
    all.into_iter()
        .filter(|(id, _)| *id != cfg.node_id)
        .collect()
}

/// A fresh data directory: ask the peers whether they remember this member with other data
/// (see the storage module doc). Refuses to start if one does, unless the operator allowed it.
async fn check_not_wiped(
    cfg: &NodeConfig,
    data_dir: &DataDir,
    peers: &[(NodeId, String)],
) -> Result<(), NodeError> {
    let data_id = data_dir.meta().data_id;
    let answers = probe_peers(
        cfg.node_id,
        cfg.cluster.cluster_id(),
        peers,
        data_id,
        // Effective: it carries the peer TLS files from the `[tls]` section.
        &cfg.cluster.effective_transport(),
        Duration::from_millis(PROBE_MS_MAX),
    )
    .await;
    let remembering: Vec<NodeId> = answers
        .iter()
        .filter(|(_, a)| a.is_some_and(|r| r != data_id))
        .map(|(p, _)| *p)
        .collect();
    if remembering.is_empty() {
        if answers.len() < peers.len() {
            tracing::warn!(
                node = cfg.node_id,
                answered = answers.len(),
                peers = peers.len(),
                "not every peer answered the wiped-directory probe; a peer that remembers \
                 other data for this member will refuse its connections when it comes up"
            );
        }
        return Ok(());
    }
    if cfg.allow_wiped_rejoin {
        tracing::warn!(
            node = cfg.node_id,
            peers = ?remembering,
            "--allow-wiped-rejoin: this member's data directory was WIPED; it rejoins repairing: \
             it rebuilds its state from the peers that hold theirs and votes only once it has"
        );
        return Ok(());
    }
    data_dir.forget_fresh_identity()?;
    Err(NodeError::WipedDataDir {
        member: cfg.node_id,
        dir: cfg.data_dir.display().to_string(),
        peers: remembering,
    })
}

/// The peers' remembered data ids; a damaged `peers.json` is quarantined and forgotten (its
/// only cost: a peer that lost its disk meanwhile is not recognised as such).
fn peer_data_ids(data_dir: &DataDir) -> Result<crate::storage::PeerDataIds, NodeError> {
    match data_dir.peer_data_ids() {
        Err(e) if e.is_damage() => {
            tracing::error!(error = %e, "peers.json is damaged; quarantining it");
            crate::storage::quarantine_metadata(data_dir.path(), &[crate::storage::PEERS_FILE])?;
            Ok(data_dir.peer_data_ids()?)
        }
        other => Ok(other?),
    }
}

/// Opens the data directory. Damaged identity metadata (`meta.json`, `boot`) means nothing in
/// the directory can be trusted as this member's: metadata and log go to quarantine, and the
/// directory starts afresh with `true` (repairing: not a new member, see `recover`).
fn open_data_dir(cfg: &NodeConfig) -> Result<(DataDir, bool), NodeError> {
    let cluster = &cfg.cluster;
    let open = || {
        DataDir::open(
            &cfg.data_dir,
            cluster.cluster_id(),
            &cluster.cluster_name,
            cfg.node_id,
        )
    };
    match open() {
        Ok(d) => Ok((d, false)),
        Err(e) if e.is_damage() => {
            tracing::error!(
                node = cfg.node_id,
                error = %e,
                "DAMAGED data-directory metadata: quarantining it and the log; this member \
                 repairs its state from its peers"
            );
            crate::storage::quarantine_metadata(&cfg.data_dir, &crate::storage::IDENTITY_FILES)?;
            let wal_dir = cfg.data_dir.join("wal");
            if wal_dir.is_dir() {
                quarantine(&wal_dir)?;
            }
            Ok((open()?, true))
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the WAL. Damage to acknowledged records or to the snapshot recovery needs cannot be
/// fixed from this disk: the log goes to quarantine and the node starts with nothing, as a
/// member that lost its disk, whose engine repairs from its peers before it takes part.
#[allow(clippy::type_complexity)]
fn open_wal<R: synod_core::DurableRecord>(
    cfg: &NodeConfig,
    wal_dir: &std::path::Path,
    opts: WalOptions,
) -> Result<(Wal<R>, Vec<R>, bool), NodeError> {
    match Wal::open(wal_dir, opts.clone()) {
        Ok((wal, records)) => Ok((wal, records, false)),
        Err(e) if e.is_damage() || is_read_error(&e) => {
            tracing::error!(
                node = cfg.node_id,
                error = %e,
                "DAMAGED write-ahead log or snapshot: quarantining it; this member repairs its \
                 state from its peers (it neither votes nor acknowledges until it has)"
            );
            quarantine(wal_dir)?;
            let (wal, records) = Wal::open(wal_dir, opts)?;
            Ok((wal, records, true))
        }
        Err(e) => Err(e.into()),
    }
}

/// Linux's EIO: the device could not read a block (a latent sector error).
const EIO: i32 = 5;

/// A read the disk itself failed: the data behind it is as lost as a damaged record.
fn is_read_error(e: &StorageError) -> bool {
    matches!(e, StorageError::Io { source, .. } if source.raw_os_error() == Some(EIO))
}

/// Opens the data directory and the WAL, and rebuilds the engine from its records. The last
/// value says the directory's identity was damaged and replaced (see `open_data_dir`).
#[allow(clippy::type_complexity)]
fn recover<E: Engine>(
    cfg: &NodeConfig,
    metrics: Arc<Metrics>,
) -> Result<(DataDir, Wal<E::Record>, E, bool), NodeError> {
    let cluster = &cfg.cluster;
    let (data_dir, identity_repaired) = open_data_dir(cfg)?;
    if data_dir.is_fresh() && !identity_repaired {
        // See storage's module doc: an empty directory is a new member, or a wiped one.
        tracing::warn!(
            node = cfg.node_id,
            dir = %cfg.data_dir.display(),
            "starting with an EMPTY data directory: this node remembers no promises. Only do \
             this for a new cluster or a member that was removed and re-added"
        );
    }
    let opts = WalOptions {
        segment_bytes_max: cluster.storage.segment_bytes_max,
        record_bytes_max: cluster.storage.record_bytes_max,
        fsync: cluster.storage.fsync,
        preallocate_bytes: cluster.storage.preallocate_bytes,
    };
    let (wal, records, wal_repaired) = open_wal(cfg, &data_dir.wal_dir(), opts)?;
    let n = records.len();
    let mut engine_config = cluster.engine_config(cfg.node_id);
    // VR's recovery nonce (§4.3): a different value on every boot of this copy of the state.
    engine_config.boot_nonce = data_dir
        .meta()
        .data_id
        .rotate_left(17)
        .wrapping_add(data_dir.boot().wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // A fresh directory is a first boot unless the operator says it is a wiped member coming
    // back (then a protocol that can recover from its peers must do so before taking part).
    engine_config.first_boot = data_dir.is_fresh() && !cfg.allow_wiped_rejoin && !cfg.join;
    // A joined member stays one: with no state yet it asks its peers; with state the engine
    // takes its configuration from its records, like any restart.
    engine_config.join = cfg.join;
    if identity_repaired || wal_repaired {
        // Not a new member: a member that lost its storage (its engine repairs from peers).
        engine_config.first_boot = false;
    }
    if let Some(bug) = cfg.planted_bug {
        tracing::warn!(
            bug = bug.name(),
            "PLANTED BUG ENABLED: this node is deliberately broken (testing only)"
        );
        engine_config.planted_bug = Some(bug);
    }
    let engine = E::recover(engine_config, records).map_err(|reason| NodeError::Recover {
        engine: E::NAME,
        records: n,
        reason,
    })?;
    tracing::info!(
        node = cfg.node_id,
        records = n,
        boot = data_dir.boot(),
        "recovered"
    );
    Ok((
        data_dir,
        wal.with_metrics(metrics),
        engine,
        identity_repaired,
    ))
}

/// Everything the engine thread owns.
struct EngineLoop<E: Engine> {
    id: NodeId,
    engine: E,
    wal: Wal<E::Record>,
    /// Held for its lock: released only when the engine thread is done with the WAL.
    _data_dir: DataDir,
    transport: Transport<E::Message>,
    submit_rx: mpsc::Receiver<Submission>,
    inbox_rx: mpsc::Receiver<(NodeId, E::Message)>,
    /// Watchers' reads of history older than the hub's ring.
    history_rx: mpsc::Receiver<HistoryQuery>,
    /// Backups and hashes (`backup.rs`), answered between batches.
    maintenance_rx: mpsc::Receiver<crate::backup::MaintenanceQuery>,
    /// Its CORRUPT alarm, followed by the engine ([`Engine::quarantine`]) as of `quarantined`.
    maintenance: Arc<crate::backup::Maintenance>,
    quarantined: bool,
    /// Defragmentations waiting for their checkpoint to be persisted (the next batch's).
    defrag_waiters: Vec<DefragReply>,
    hubs: Arc<WatchHubs>,
    status_tx: watch::Sender<NodeStatus>,
    /// Takes each applied auth state, for the API's permission checks.
    auth: Arc<crate::auth::AuthGate>,
    metrics: Arc<Metrics>,
    client: ClientId,
    next_seq: u64,
    /// Requests submitted here awaiting the engine's reply, by seq. Bounded by `pending_max`.
    pending: BTreeMap<u64, oneshot::Sender<Result<Response, EngineError>>>,
    pending_max: usize,
    /// Saved replies per session in the engines' client table (see `submit`).
    session_window: u64,
    inputs_per_batch_max: usize,
    tick: Duration,
    /// Messages the engine addressed to this node itself, delivered on the next iteration.
    to_self: VecDeque<E::Message>,
    last_leader: Option<NodeId>,
    last_decided: u64,
    /// The configuration the transport follows (`None`: the start-up list). Compared whole,
    /// not by version alone: CASPaxos reports a change's target members while the change is
    /// under way, under the old version.
    followed: Option<Configuration>,
    /// Peers' recorded data ids; a member that leaves the configuration is forgotten.
    peer_ids: Arc<crate::storage::PeerDataIds>,
    /// Since when the engine reports "repairing" (lost or damaged storage), and when that was
    /// last logged: a repair that cannot finish must say so, not wait silently.
    repairing: Option<(Instant, Instant)>,
    /// Groups reported as failed to start, each logged once.
    failed_groups_logged: std::collections::BTreeSet<u64>,
    alarms: Arc<Alarms>,
    stop_holding: Arc<AtomicBool>,
    /// Leader transfers asked by the API (`transfer.rs`), and those waiting for their target.
    transfer_rx: mpsc::Receiver<crate::transfer::TransferRequest>,
    transfers: crate::transfer::Transfers,
    /// `storage.quota_backend_bytes` (0 = none), checked after every persisted batch.
    quota_backend_bytes: u64,
    /// Partitioned mode: each group's gauges, taken once (see `Metrics::group_gauges`).
    group_gauges: std::collections::BTreeMap<u64, crate::metrics::GroupGauges>,
}

/// Where a defragmentation's outcome goes.
type DefragReply = oneshot::Sender<Result<crate::backup::Defragmented, synod_core::EngineError>>;

/// How often a repair that has not finished is logged again.
const REPAIR_LOG_EVERY: Duration = Duration::from_secs(30);

impl<E: Engine> EngineLoop<E> {
    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) -> Result<(), NodeError> {
        let mut next_tick = Instant::now() + self.tick;
        let timer = tokio::time::sleep_until(next_tick);
        tokio::pin!(timer);
        let mut inbox_open = true;
        self.publish_status();
        loop {
            // Wake on anything; peer messages and the tick before client submissions.
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                m = self.inbox_rx.recv(), if inbox_open => match m {
                    Some((from, m)) => self.engine.receive(from, m),
                    None => inbox_open = false,
                },
                _ = &mut timer => {}
                Some(t) = self.transfer_rx.recv() => self.transfers.start(&mut self.engine, t),
                Some(q) = self.history_rx.recv() => {
                    let _ = q.reply.send(self.engine.group_watch_history(q.group, q.start, q.max_revisions));
                    continue;
                }
                Some(q) = self.maintenance_rx.recv() => {
                    match q {
                        crate::backup::MaintenanceQuery::Defragment(reply) => self.defragment(reply),
                        q => q.answer(&self.engine),
                    }
                    continue;
                }
                s = self.submit_rx.recv() => match s {
                    Some(s) => self.submit(s),
                    None => return Ok(()), // Every handle is gone.
                },
            }
            let peer_inputs = self.take_peer_messages();
            if let Some(late) = Instant::now().checked_duration_since(next_tick) {
                self.metrics
                    .engine_tick_delay_seconds
                    .observe(late.as_secs_f64());
                self.engine.tick();
                let corrupt = self.maintenance.corrupt();
                if corrupt != self.quarantined {
                    self.quarantined = corrupt;
                    self.engine.quarantine(corrupt);
                }
                // Like `MissedTickBehavior::Delay`: after a stall, one tick, not a burst that
                // would expire election timers all at once.
                next_tick = Instant::now() + self.tick;
                timer.as_mut().reset(next_tick);
            }
            self.take_submissions(peer_inputs);
            while let Some(m) = self.to_self.pop_front() {
                self.engine.receive(self.id, m);
            }
            self.drain()?;
        }
    }

    /// Hands the engine the peer messages already received, up to `inputs_per_batch_max`.
    /// They go first — before this iteration's tick and client submissions — because they
    /// carry heartbeats and acknowledgements that arrived while the previous batch was being
    /// persisted: a tick that ended a heartbeat round before reading the reply already waiting
    /// in the inbox would count a live leader as silent.
    fn take_peer_messages(&mut self) -> usize {
        let mut taken = 0;
        while taken < self.inputs_per_batch_max {
            let Ok((from, m)) = self.inbox_rx.try_recv() else {
                break;
            };
            self.engine.receive(from, m);
            taken += 1;
        }
        taken
    }

    /// Takes queued client submissions into this batch: what is left of `inputs_per_batch_max`
    /// after the peer messages, but at least a quarter of it so clients always progress.
    fn take_submissions(&mut self, peer_inputs: usize) {
        let budget = self
            .inputs_per_batch_max
            .saturating_sub(peer_inputs)
            .max(self.inputs_per_batch_max / 4)
            .max(1);
        for _ in 0..budget {
            let Ok(s) = self.submit_rx.try_recv() else {
                break;
            };
            self.submit(s);
        }
    }

    fn submit(&mut self, s: Submission) {
        self.metrics.proposals.inc();
        if self.pending.len() >= self.pending_max {
            let _ = s.reply.send(Err(EngineError::Busy));
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, s.reply);
        let first_unacked = self.pending.keys().next().copied().unwrap_or(seq);
        // The session keeps `session_window` saved replies; a write that far ahead of this
        // node's oldest unanswered one goes without a session, so it can never push out that
        // one's reply (the engines refuse such a write with `Busy` rather than risk a spurious
        // `SessionExpired`). It stays exactly-once: engines apply a command once per origin.
        let client = if E::NODE_SESSIONS && seq - first_unacked < self.session_window {
            self.client
        } else {
            ClientId::NONE
        };
        self.engine.submit(ClientRequest {
            id: RequestId { client, seq },
            first_unacked,
            op: s.op,
            consistency: s.consistency,
        });
    }

    /// persist → send → reply, in that order, enforced by `Ready::persist`.
    fn drain(&mut self) -> Result<(), NodeError> {
        let mut ready = self.engine.ready();
        // Applied revisions are decided, so watchers may have them before this batch is
        // durable here; and before its replies, so a client that saw its write acknowledged
        // and then watches "from now" is not sent that write.
        // Likewise a compaction: once its reply is out, no watcher may be served below it.
        // Nothing below changes the engine, so this status is also the one published, before
        // the replies: a client that saw its member update acknowledged must list it.
        let fresh = self.engine.take_group_watch_events();
        let status = self.engine.status();
        self.hubs.publish(fresh, &status);
        // Before this batch's messages, which may already address a member it added.
        self.follow_configuration(&status);
        let mut status = Some(status);
        if !ready.is_empty() {
            // Early messages overlap our fsync with the peers' (see Ready::take_early). Inputs
            // that answer them are read only after this batch's persist returns.
            for (to, m) in ready.take_early() {
                if to == self.id {
                    self.to_self.push_back(m);
                } else {
                    self.transport.send(to, &m);
                }
            }
            let (wal, alarms, stop) = (&mut self.wal, &self.alarms, &self.stop_holding);
            let started = std::time::Instant::now();
            let outbox = ready.persist(|records| persist_held(wal, records, alarms, stop))?;
            self.metrics
                .engine_persist_seconds
                .observe(started.elapsed().as_secs_f64());
            self.alarms
                .check_quota(self.wal.size_bytes(), self.quota_backend_bytes);
            self.answer_defragmentations(true);
            for (to, m) in outbox.messages {
                if to == self.id {
                    self.to_self.push_back(m);
                } else {
                    self.transport.send(to, &m);
                }
            }
            if let Some(status) = status.take() {
                self.publish(status);
            }
            for reply in outbox.replies {
                let waiter = (reply.id.client == self.client || reply.id.client == ClientId::NONE)
                    .then(|| self.pending.remove(&reply.id.seq))
                    .flatten();
                match waiter {
                    // The API side may have timed out and gone: that is fine.
                    Some(tx) => {
                        let _ = tx.send(reply.result);
                    }
                    None => tracing::warn!(id = %reply.id, "engine replied to an unknown request"),
                }
            }
        }
        if let Some(status) = status {
            self.publish(status);
        }
        Ok(())
    }

    /// Logs the start and end of a repair, and every `REPAIR_LOG_EVERY` while it lasts.
    fn log_repair(&mut self, role: &str) {
        let now = Instant::now();
        match (&mut self.repairing, role == "repairing") {
            (None, true) => {
                tracing::warn!(
                    node = self.id,
                    "repairing: this member lost its storage and is rebuilding it from its peers; \
                     it votes and acknowledges nothing until done"
                );
                self.repairing = Some((now, now));
            }
            (Some((since, logged)), true) if now.duration_since(*logged) >= REPAIR_LOG_EVERY => {
                tracing::error!(
                    node = self.id,
                    waited_s = since.elapsed().as_secs(),
                    "still repairing: it needs answers from a majority of the cluster among the \
                     OTHER members that hold their data. If a majority lost its storage at once \
                     this cannot finish (nothing acknowledged is lost meanwhile): bring those \
                     members back with their disks, or restore the cluster from a backup"
                );
                *logged = now;
            }
            (Some((since, _)), false) => {
                tracing::info!(
                    node = self.id,
                    took_ms = since.elapsed().as_millis() as u64,
                    "repair complete"
                );
                self.repairing = None;
            }
            _ => {}
        }
    }

    /// Logs each group that failed to start, once, and keeps the gauge of how many there are.
    fn log_failed_groups(&mut self, failed: &[synod_core::GroupFailure]) {
        for f in failed {
            if self.failed_groups_logged.insert(f.group) {
                tracing::error!(
                    node = self.id,
                    group = %synod_partition::layout::group_name(f.group),
                    error = %f.error,
                    "a group split off at run time did not start on this member (a bug: please \
                     report it with this log). Its other members keep its quorum; this member \
                     serves its other groups and fails /healthz while this group is missing \
                     here"
                );
            }
        }
        self.failed_groups_logged
            .retain(|g| failed.iter().any(|f| f.group == *g));
        self.metrics
            .groups_failed
            .set(i64::try_from(failed.len()).unwrap_or(i64::MAX));
    }

    /// Points the transport at a configuration the engine applied, once per change of it (see
    /// the transport's module doc); forgets the data ids of members that left it. On a
    /// partitioned engine, the members some group has beside the cluster's configuration
    /// (while a membership change spreads through the groups) are peers too.
    fn follow_configuration(&mut self, status: &EngineStatus) {
        let joined;
        let c = if status.other_members.is_empty() {
            &status.configuration
        } else {
            let mut all = status.configuration.clone();
            all.members.extend(status.other_members.iter().cloned());
            all.members.sort_by_key(|m| m.id);
            joined = all;
            &joined
        };
        if c.members.is_empty() || self.followed.as_ref() == Some(c) {
            return;
        }
        let before = self.followed.replace(c.clone()).map(|b| b.version);
        if !c.contains(self.id) {
            tracing::warn!(
                node = self.id,
                version = c.version,
                "this member is not in the configuration any more (removed): its peers refuse \
                 it; stop it and wipe its data directory"
            );
        }
        for gone in self.transport.peer_ids() {
            if !c.contains(gone)
                && let Err(e) = self.peer_ids.forget(gone)
            {
                tracing::error!(peer = gone, error = %e, "cannot forget a removed member's data id");
            }
        }
        let peers = c
            .members
            .iter()
            .filter(|m| m.id != self.id)
            .map(|m| (m.id, m.peer_addr.clone()))
            .collect();
        tracing::info!(
            node = self.id,
            version = c.version,
            epoch = c.epoch,
            previous = ?before,
            voters = ?c.voters(),
            learners = ?c.learners(),
            "following configuration"
        );
        self.transport.set_members(c.version, peers);
    }

    fn publish_status(&mut self) {
        let engine = self.engine.status();
        self.hubs.publish(Vec::new(), &engine);
        self.follow_configuration(&engine);
        self.publish(engine);
    }

    /// etcd's Defragment: asks the engine for a checkpoint now; answered after the batch that
    /// persists it, or at once when there is nothing to reclaim.
    fn defragment(&mut self, reply: DefragReply) {
        self.defrag_waiters.push(reply);
        if !self.engine.checkpoint_now() {
            self.answer_defragmentations(false);
        }
    }

    fn answer_defragmentations(&mut self, checkpointed: bool) {
        for reply in self.defrag_waiters.drain(..) {
            let _ = reply.send(Ok(crate::backup::Defragmented {
                checkpointed,
                db_size_bytes: self.wal.size_bytes(),
            }));
        }
    }

    fn publish_size_metrics(&mut self, engine: &EngineStatus) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let m = &self.metrics;
        m.apply_lag_entries.set(gauge(
            engine.decided_index.saturating_sub(engine.applied_index),
        ));
        m.db_size_bytes.set(gauge(self.wal.size_bytes()));
        m.snapshot_bytes.set(gauge(self.wal.snapshot_size_bytes()));
        m.keys.set(gauge(engine.keys));
        m.watch_streams.set(gauge(self.hubs.streams() as u64));
        m.leases.set(gauge(engine.leases));
        for g in &engine.groups {
            let metrics = &self.metrics;
            self.group_gauges
                .entry(g.group)
                .or_insert_with(|| metrics.group_gauges(g.group))
                .observe(self.id, g);
        }
        if self.group_gauges.len() > engine.groups.len() {
            // Groups merged away: their series go, rather than report their last values.
            let live: std::collections::BTreeSet<u64> =
                engine.groups.iter().map(|g| g.group).collect();
            let metrics = &self.metrics;
            self.group_gauges.retain(|g, _| {
                live.contains(g) || {
                    metrics.drop_group_gauges(*g);
                    false
                }
            });
        }
    }

    fn publish(&mut self, engine: EngineStatus) {
        self.log_repair(&engine.role);
        self.log_failed_groups(&engine.failed_groups);
        if engine.leader != self.last_leader {
            if engine.leader.is_some() {
                self.metrics.leader_changes.inc();
            }
            self.last_leader = engine.leader;
        }
        self.metrics
            .is_leader
            .set(i64::from(engine.leader == Some(self.id)));
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics
            .fast_path_commits
            .set(gauge(engine.fast_path_commits));
        self.metrics
            .slow_path_commits
            .set(gauge(engine.slow_path_commits));
        if engine.decided_index > self.last_decided {
            self.metrics
                .decisions
                .inc_by(engine.decided_index - self.last_decided);
            self.last_decided = engine.decided_index;
        }
        self.transfers.check(&engine);
        self.auth.observe(&engine.auth);
        self.publish_size_metrics(&engine);
        let status = NodeStatus {
            engine,
            db_size_bytes: self.wal.size_bytes(),
            connected_peers: self.transport.connected_peers(),
        };
        self.metrics
            .db_size_in_use_bytes
            .set(i64::try_from(status.db_size_in_use_bytes()).unwrap_or(i64::MAX));
        self.status_tx.send_if_modified(|cur| {
            if *cur != status {
                *cur = status;
                true
            } else {
                false
            }
        });
    }
}

/// Appends and syncs `records`, holding them through failed writes (see the module doc): the
/// calling engine thread retries until the write succeeds, the WAL fails fatally, or the node
/// is asked to stop.
fn persist_held<R: synod_core::DurableRecord + serde::Serialize>(
    wal: &mut Wal<R>,
    records: &[R],
    alarms: &Alarms,
    stop: &AtomicBool,
) -> Result<(), NodeError> {
    let mut done = 0;
    let mut pause_ms = HOLD_RETRY_MS_MIN;
    let mut held_since: Option<(Instant, u64)> = None;
    loop {
        let error = match wal.append_and_sync_resumable(records, &mut done) {
            Ok(()) => {
                if let Some((since, failures)) = held_since {
                    alarms.set_wal_write_failing(false);
                    tracing::warn!(
                        held_ms = since.elapsed().as_millis() as u64,
                        failures,
                        "write-ahead log writes again; held batch persisted, NOSPACE alarm \
                         cleared by the log (the free-space watermark may still hold it)"
                    );
                }
                return Ok(());
            }
            Err(e @ AppendError::Fatal { .. }) => return Err(NodeError::WalFatal(e)),
            Err(e) => e,
        };
        // Raised on every failure, so a disarm while the disk is still full does not stick.
        alarms.set_wal_write_failing(true);
        let (since, failures) = held_since.get_or_insert((Instant::now(), 0));
        *failures += 1;
        if *failures == 1 {
            tracing::error!(
                error = %error,
                "write-ahead log write failed: NOSPACE alarm raised; holding this batch (nothing \
                 of it is sent or acknowledged) and retrying until the disk takes it"
            );
        }
        if stop.load(Ordering::Relaxed) {
            tracing::warn!(
                held_ms = since.elapsed().as_millis() as u64,
                "stop requested"
            );
            return Err(NodeError::StoppedWhileHeld(error));
        }
        // Blocking is the point: this thread must take no new input while the batch is held.
        std::thread::sleep(Duration::from_millis(pause_ms));
        pause_ms = (pause_ms * 2).min(HOLD_RETRY_MS_MAX);
    }
}
