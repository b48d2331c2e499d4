//! Peer transport: engine messages between nodes over TCP.
//!
//! * **Connections.** Each node dials every peer and uses that connection only to *send*; it
//!   receives on connections peers dialed to it. Two one-way connections per pair avoid the
//!   "both dialed at once, which one wins" dance at the cost of one extra socket.
//! * **Frames.** `len u32 BE | payload`, `len <= frame_bytes_max`. Payload = a wire version
//!   byte ([`WIRE_VERSION`]) + postcard. A bigger length, an unknown version or bytes that do
//!   not decode close that connection with a log line; the node keeps serving.
//! * **Handshake.** The dialer's first frame is a [`Hello`] naming the cluster id and the
//!   from/to member ids; the acceptor answers [`HelloReply`]. Another cluster, an unknown or
//!   self-claiming member, or a hello addressed to another member is refused with the reason
//!   (logged on both sides) and the connection closed. Only then are messages read, so
//!   everything handed to the engine comes from a member of this cluster.
//! * **Membership follows the configuration.** The member set starts as the bootstrap list (or,
//!   on restart, the engine's recovered configuration) and is replaced by
//!   [`Transport::set_members`] whenever the node applies a new configuration: writers to new
//!   peers start, writers to removed ones stop, a peer whose address changed is redialed at
//!   the new one, and hellos *and frames* from ids outside the current set are refused with
//!   a logged reason naming the member and the configuration version (a reader rechecks only
//!   when the set changed: one atomic load per frame).
//! * **Data ids** (wiped-directory detection, see the storage module doc). A hello also carries
//!   the sender's `data_id` (drawn when its data directory was created). The acceptor records
//!   the first id each member presents and refuses a member presenting a different one: that
//!   member lost the promises it made. A hello with `probe` set is the start-up question
//!   "which data id do you remember for me?" ([`probe_peers`]), answered with
//!   [`HelloReply::Probe`] and the connection closed.
//! * **Sending writes directly.** [`Transport::send`] runs on the engine thread and, when the
//!   peer is connected and nothing is queued before it, writes the frame to the socket right
//!   there with a non-blocking `write`: no hand-off to another thread, which on a loaded
//!   2-core machine cost a context switch per message (profiles put ≈15 % of the leader in the
//!   kernel's task-switch path). Only what the socket does not take at once goes to the peer's
//!   backlog.
//! * **Backlogs** are bounded ([`TransportConfig::peer_queue_messages_max`] frames) and
//!   [`Transport::send`] never blocks: on a full backlog (slow or dead peer) the message is
//!   dropped and counted in `peer_dropped_messages` — protocols tolerate loss, memory does not
//!   tolerate unbounded queues, and one slow peer must not stall the engine or the other
//!   peers. Messages sent while a peer is disconnected wait in its backlog.
//! * **Writer task** per peer: connects with exponential backoff (bounded by
//!   `reconnect_backoff_ms_max`), publishes the connection for direct writes, and drains the
//!   backlog (up to `write_batch_frames_max` frames per vectored write) whenever the socket
//!   has room again. A frame cut short by a lost connection is dropped, never resumed on the
//!   next one, so a peer always sees whole frames.
//! * **Prompt reconnects.** A peer that dials *us* (a hello, or a start-up probe) is alive
//!   again — back from a crash or from the far side of a healed partition — so our writer to
//!   it stops backing off and dials at once ([`PeerLink::heard_from`]). Without this a member
//!   coming back waited out our backoff (up to `reconnect_backoff_ms_max`, seconds) before it
//!   heard any reply, while it already reached us: its clients saw seconds of errors after
//!   the cluster itself had recovered.
//! * **TLS** (`[tls] peer_*`, `--peer-cert-file` …): every connection, probes included, is
//!   TLS first (ALPN [`crate::tls::ALPN_PEER`]); the dialer checks the acceptor's certificate
//!   against the cluster CA and the address it dialed, and with `peer_client_cert_auth` the
//!   acceptor checks the dialer's, so a process without a certificate from the cluster CA is
//!   refused before its hello is read (logged with its address and the verification error).
//!   The TLS handshake gets `handshake_timeout_ms` of its own before the hello gets its, and
//!   holds one of the `inbound_connections_max` slots. Two costs, TLS only: frames go out through the writer task (the engine thread
//!   queues and wakes it instead of writing the socket itself), and inbound connections are
//!   read on the accepting runtime instead of moving to the engine thread's.
//! * **Receiving** applies back-pressure: a reader awaits room in the engine's bounded inbox,
//!   so a flooding peer slows its own socket, not the node. Given a runtime for readers
//!   ([`Transport::start_with_identity`]), each connection moves there after its handshake —
//!   the node passes the engine thread's own runtime, so a peer's message wakes the engine
//!   thread directly instead of a tokio worker that then wakes it.

use crate::config::TransportConfig;
use crate::metrics::{Metrics, PeerLabels};
use crate::storage::{PeerDataIds, PeerIdentity};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::IoSlice;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use synod_core::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

pub mod ask;
pub use ask::{Answerer, PeerAnswer, PeerAsker, PeerQuestion, SelfChange};

/// Version of the frame payload encoding. Bump on any incompatible change to [`Hello`],
/// [`HelloReply`] or an engine's `Message` (3: protocol messages and snapshots carry the
/// configuration epoch; learner and catch-up messages; 4: peer questions; 5: a member's change
/// of its own membership as a question, and partitioned state images carrying each range's
/// generation — a member of an older version would drop it, and the range directory's records
/// are guarded by it, so old and new members must not mix; 6: partitioned frames carry relayed
/// requests and the sender's highest revision (placement), and peer questions ask for groups'
/// revisions, a group's HashKV and a group's applied revisions; 7: a HashKV answer names its
/// revision, and a group's state image is asked in pages for a placed member's backup; 8: a
/// group's membership change guarded by the configuration version it was made for, which an
/// older member could not decode in a group's log; 9: a relayed answer names its group's
/// splits, and a group's applied revisions come with its splits, for placed splits).
pub const WIRE_VERSION: u8 = 9;

/// Identifies our protocol before anything else is believed.
pub const MAGIC: [u8; 4] = *b"SYND";

/// The dialer's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 4],
    pub cluster_id: u64,
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's data directory id; 0 = not checked (a transport without an identity).
    pub data_id: u64,
    /// Only ask which data id the acceptor remembers for the sender, then close.
    pub probe: bool,
    /// The operator allowed this member to rejoin with a wiped directory: replace the record.
    pub replace_data_id: bool,
    /// Only ask this question, then close ([`ask`]).
    pub question: Option<PeerQuestion>,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted,
    Refused(String),
    /// The answer to a probe: the data id recorded for the sender, if any.
    Probe {
        recorded_data_id: Option<u64>,
    },
    /// The answer to a question.
    Answer(PeerAnswer),
}

/// Who this node's data is, for the data-id checks of the handshake.
#[derive(Clone, Debug)]
pub struct TransportIdentity {
    /// This node's data directory id.
    pub data_id: u64,
    /// Ids peers presented before (durable).
    pub peers: Arc<PeerDataIds>,
    /// Ask peers to replace their record of us (a wiped rejoin the operator allowed).
    pub replace_data_id: bool,
}

/// Encodes one frame: length prefix, version byte, postcard.
pub fn encode_frame<T: Serialize>(value: &T, frame_bytes_max: u32) -> Result<Bytes, String> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0u8; 4]);
    buf.push(WIRE_VERSION);
    let mut buf = postcard::to_extend(value, buf).map_err(|e| format!("encode: {e}"))?;
    let len = buf.len() - 4;
    if len > frame_bytes_max as usize {
        return Err(format!(
            "frame of {len} bytes exceeds frame_bytes_max {frame_bytes_max}"
        ));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(Bytes::from(buf))
}

/// Decodes a frame payload (after the length prefix). Trailing bytes are an error: a frame is
/// exactly one value.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    let (version, body) = payload
        .split_first()
        .ok_or_else(|| "empty frame".to_string())?;
    if *version != WIRE_VERSION {
        return Err(format!(
            "unsupported wire version {version} (this node speaks {WIRE_VERSION})"
        ));
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| format!("undecodable frame: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the frame", rest.len()));
    }
    Ok(value)
}

/// Reads one frame payload. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    frame_bytes_max: u32,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len);
    if len == 0 || len > frame_bytes_max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame length {len} outside 1..={frame_bytes_max}"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// One peer's outgoing side, shared by the engine thread (direct writes) and the peer's
/// writer task (connecting, draining the backlog).
struct PeerLink {
    state: Mutex<LinkState>,
    /// Wakes the writer task: there is backlog to drain.
    wake: Notify,
    /// Ends the writer's reconnect backoff: the peer was just heard from.
    redial: Notify,
    connected: AtomicBool,
    backlog_frames_max: usize,
}

#[derive(Default)]
struct LinkState {
    /// The live connection's write half, while there is one.
    stream: Option<Arc<OwnedWriteHalf>>,
    /// Frames not yet (completely) written, oldest first.
    backlog: VecDeque<Bytes>,
    /// The front frame was partly written on the current connection (its rest is `backlog[0]`):
    /// a new connection must not start with it.
    front_partial: bool,
    /// A TLS connection is up: its writer task writes everything (rustls state is not
    /// shared with the engine thread), so a send only queues and wakes it.
    tls_live: bool,
}

/// Most frames one vectored write takes (Linux accepts up to 1024 slices; more frames than
/// this simply take another write).
const VECTORED_FRAMES_MAX: usize = 64;

/// What a non-blocking write attempt did.
enum Wrote {
    All,
    Some,
    Failed(std::io::Error),
}

/// Exponential reconnect backoff: `min`, doubling per failure, never above `max`; back to
/// `min` after a connection or when the peer is heard from.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl PeerLink {
    /// The peer showed it is alive (it dialed us): if our writer is backing off, dial now.
    fn heard_from(&self) {
        if !self.connected.load(Ordering::Relaxed) {
            self.redial.notify_one();
        }
    }
}

impl LinkState {
    /// Writes as much of the backlog as the socket takes now, without blocking.
    fn drain(&mut self, batch_frames_max: usize) -> Wrote {
        let Some(stream) = self.stream.clone() else {
            return Wrote::Some;
        };
        while !self.backlog.is_empty() {
            // On the stack: this runs for every message the engine sends.
            let mut slices = [IoSlice::new(&[]); VECTORED_FRAMES_MAX];
            let mut n = 0;
            for (slot, frame) in slices
                .iter_mut()
                .zip(self.backlog.iter().take(batch_frames_max))
            {
                *slot = IoSlice::new(frame);
                n += 1;
            }
            match stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Wrote::Failed(std::io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    while n > 0 {
                        let Some(front) = self.backlog.front_mut() else {
                            break;
                        };
                        if n >= front.len() {
                            n -= front.len();
                            self.backlog.pop_front();
                            self.front_partial = false;
                        } else {
                            let rest = front.slice(n..);
                            *front = rest;
                            self.front_partial = true;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Wrote::Some,
                Err(e) => return Wrote::Failed(e),
            }
        }
        Wrote::All
    }
}

/// The ids whose hellos and frames are accepted, and which configuration they come from.
#[derive(Clone, Debug)]
struct MemberSet {
    /// The configuration version; `None` while the node runs on its bootstrap list.
    version: Option<u64>,
    /// Every member, this node included.
    ids: BTreeSet<NodeId>,
}

impl MemberSet {
    /// Why `from` may not talk to us, if it may not.
    fn refusal(&self, from: NodeId) -> Option<String> {
        if self.ids.contains(&from) {
            return None;
        }
        Some(match self.version {
            Some(v) => format!(
                "unknown member {from}: not in configuration version {v} (members: {:?})",
                self.ids
            ),
            None => format!("unknown member {from} (members: {:?})", self.ids),
        })
    }
}

/// Everything the connection tasks share.
struct Shared {
    local: NodeId,
    cluster_id: u64,
    /// Replaced by [`Transport::set_members`]; read at every handshake.
    members: RwLock<MemberSet>,
    /// Bumped with every replacement of `members`, so readers recheck only then.
    members_generation: AtomicU64,
    cfg: TransportConfig,
    metrics: Arc<Metrics>,
    identity: Option<TransportIdentity>,
    /// Where connections are read after the handshake (None: right here).
    readers: Option<Handle>,
    /// Our outgoing side to each peer, so an inbound hello can end that writer's backoff.
    links: Mutex<BTreeMap<NodeId, Arc<PeerLink>>>,
    /// Peer TLS, when configured.
    tls: Option<PeerTls>,
    /// Answers peers' questions, once the node set it ([`Transport::set_answerer`]).
    answerer: std::sync::OnceLock<Answerer>,
}

/// Both ends of peer TLS, built once at start (the certificate reloads by itself).
struct PeerTls {
    server: crate::tls::ServerTls,
    connector: tokio_rustls::TlsConnector,
}

impl PeerTls {
    fn new(cfg: &TransportConfig) -> Result<Option<Self>, String> {
        if !cfg.tls.enabled() {
            return Ok(None);
        }
        let alpn = [crate::tls::ALPN_PEER];
        let server = crate::tls::ServerTls::new(&cfg.tls, &alpn)
            .map_err(|e| format!("peer TLS: {e}"))?
            .with_handshake_timeout(Duration::from_millis(cfg.handshake_timeout_ms));
        let client =
            crate::tls::client_config(&cfg.tls, &alpn).map_err(|e| format!("peer TLS: {e}"))?;
        Ok(Some(PeerTls {
            server,
            connector: tokio_rustls::TlsConnector::from(client),
        }))
    }
}

/// The name a dialed peer's certificate must carry: the host of its `host:port`.
fn server_name(addr: &str) -> Result<rustls_pki_types::ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("peer address {addr:?}: {e}"))
}

/// A dialed connection, handshaken.
enum Dialed {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `addr`, through TLS when `tls` is set.
async fn connect(addr: &str, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Dialed, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let Some(connector) = tls else {
        return Ok(Dialed::Plain(stream));
    };
    let tls = connector
        .connect(server_name(addr)?, stream)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    Ok(Dialed::Tls(Box::new(tls)))
}

impl Shared {
    fn members(&self) -> MemberSet {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn link(&self, id: NodeId) -> Option<Arc<PeerLink>> {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}

/// One peer this node sends to.
struct Peer {
    link: Arc<PeerLink>,
    addr: String,
    /// Its writer task, stopped when the peer leaves the configuration.
    writer: tokio::task::AbortHandle,
}

/// The running transport of one node. Dropping it stops every connection task.
pub struct Transport<M> {
    local: NodeId,
    peers: BTreeMap<NodeId, Peer>,
    shared: Arc<Shared>,
    /// Where writer tasks of peers added later run (the runtime the transport started on).
    spawner: Handle,
    write_batch_frames_max: usize,
    local_addr: SocketAddr,
    frame_bytes_max: u32,
    metrics: Arc<Metrics>,
    tasks: Vec<JoinHandle<()>>,
    /// Set once the tasks were handed to a [`TransportStopper`].
    aborts: Vec<tokio::task::AbortHandle>,
    _message: PhantomData<fn(M) -> M>,
}

impl<M: Serialize + DeserializeOwned + Send + 'static> Transport<M> {
    /// Starts accepting on `listener` and dialing every peer in `peers` (id, host:port).
    /// Decoded messages from members go to `inbox`. Must be called inside a tokio runtime.
    /// No data-id checks: see [`Transport::start_with_identity`].
    pub fn start(
        local: NodeId,
        cluster_id: u64,
        peers: Vec<(NodeId, String)>,
        listener: TcpListener,
        cfg: TransportConfig,
        metrics: Arc<Metrics>,
        inbox: mpsc::Sender<(NodeId, M)>,
    ) -> std::io::Result<Self> {
        Self::start_with_identity(
            local, cluster_id, peers, listener, cfg, metrics, inbox, None, None,
        )
    }

    /// [`Transport::start`], presenting and checking data ids (see the module doc), and with
    /// an optional runtime that runs the per-connection readers after their handshake (the
    /// runtime whose thread consumes `inbox`). [`Transport::send`] may be called from any
    /// thread and never blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_identity(
        local: NodeId,
        cluster_id: u64,
        peers: Vec<(NodeId, String)>,
        listener: TcpListener,
        cfg: TransportConfig,
        metrics: Arc<Metrics>,
        inbox: mpsc::Sender<(NodeId, M)>,
        identity: Option<TransportIdentity>,
        readers: Option<Handle>,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let tls = PeerTls::new(&cfg).map_err(std::io::Error::other)?;
        let mut ids: BTreeSet<NodeId> = peers.iter().map(|(id, _)| *id).collect();
        ids.insert(local);
        let shared = Arc::new(Shared {
            local,
            cluster_id,
            members: RwLock::new(MemberSet { version: None, ids }),
            members_generation: AtomicU64::new(0),
            cfg: cfg.clone(),
            metrics: metrics.clone(),
            identity,
            readers,
            links: Mutex::new(BTreeMap::new()),
            tls,
            answerer: std::sync::OnceLock::new(),
        });
        let tasks = vec![tokio::spawn(accept_loop::<M>(
            listener,
            shared.clone(),
            inbox,
        ))];
        let mut transport = Transport {
            local,
            peers: BTreeMap::new(),
            shared,
            spawner: Handle::current(),
            write_batch_frames_max: cfg.write_batch_frames_max,
            local_addr,
            frame_bytes_max: cfg.frame_bytes_max,
            metrics,
            tasks,
            aborts: Vec::new(),
            _message: PhantomData,
        };
        for (id, addr) in peers {
            transport.add_peer(id, addr);
        }
        Ok(transport)
    }

    /// Starts sending to `id` at `addr`: a link, and a writer task that dials it.
    fn add_peer(&mut self, id: NodeId, addr: String) {
        assert_ne!(id, self.local, "a node is not its own peer");
        let link = Arc::new(PeerLink {
            state: Mutex::new(LinkState::default()),
            wake: Notify::new(),
            redial: Notify::new(),
            connected: AtomicBool::new(false),
            backlog_frames_max: self.shared.cfg.peer_queue_messages_max,
        });
        self.metrics
            .peer_connected
            .get_or_create(&peer_label(id))
            .set(0);
        self.shared
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, link.clone());
        let writer = self
            .spawner
            .spawn(writer_loop(
                id,
                addr.clone(),
                link.clone(),
                self.shared.clone(),
            ))
            .abort_handle();
        self.peers.insert(id, Peer { link, addr, writer });
    }

    /// Stops sending to `id`: its writer ends, its backlog is dropped.
    fn remove_peer(&mut self, id: NodeId) {
        if let Some(p) = self.peers.remove(&id) {
            p.writer.abort();
            p.link.connected.store(false, Ordering::Relaxed);
        }
        self.shared
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.metrics
            .peer_connected
            .get_or_create(&peer_label(id))
            .set(0);
    }

    /// Follows configuration `version`: `peers` (id, host:port; this node left out) become
    /// the only members this transport sends to and accepts from. New peers are dialed,
    /// removed ones dropped, a peer at a new address redialed there (an empty address keeps
    /// the one already known); connections from ids outside the set are refused from here on,
    /// open ones at their next frame.
    pub fn set_members(&mut self, version: u64, peers: Vec<(NodeId, String)>) {
        let mut ids: BTreeSet<NodeId> = peers.iter().map(|(id, _)| *id).collect();
        ids.insert(self.local);
        *self
            .shared
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner()) = MemberSet {
            version: Some(version),
            ids,
        };
        self.shared
            .members_generation
            .fetch_add(1, Ordering::Release);
        // An empty address means "not known here": keep dialing the one we have, if any.
        let wanted: BTreeMap<NodeId, String> = peers
            .into_iter()
            .filter(|(id, _)| *id != self.local)
            .filter_map(|(id, addr)| match (addr.is_empty(), self.peers.get(&id)) {
                (false, _) => Some((id, addr)),
                (true, Some(p)) => Some((id, p.addr.clone())),
                (true, None) => None,
            })
            .collect();
        let stale: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| wanted.get(id) != Some(&p.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            self.remove_peer(*id);
        }
        let added: Vec<NodeId> = wanted
            .keys()
            .filter(|id| !self.peers.contains_key(id))
            .copied()
            .collect();
        for (id, addr) in wanted {
            if !self.peers.contains_key(&id) {
                self.add_peer(id, addr);
            }
        }
        tracing::info!(
            local = self.local,
            version,
            ?added,
            dropped = ?stale,
            "peer links follow configuration"
        );
    }

    /// Sends `message` to `to` without blocking: written to the socket at once when it can
    /// be, else queued in the peer's backlog. Returns false if it was dropped (full backlog,
    /// unknown peer, or too big to frame).
    pub fn send(&self, to: NodeId, message: &M) -> bool {
        let Some(peer) = self.peers.get(&to).map(|p| &p.link) else {
            // After a configuration change an engine may still address a member that left.
            tracing::debug!(
                from = self.local,
                to,
                "message to a node that is not a peer"
            );
            self.count_drop(to);
            return false;
        };
        let frame = match encode_frame(message, self.frame_bytes_max) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(to, error = %e, "dropping a message that cannot be framed");
                self.count_drop(to);
                return false;
            }
        };
        // A poisoned lock means a writer task panicked mid-update; the state is still a valid
        // queue of whole or front-partial frames, so carry on with it.
        let mut st = peer.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.backlog.len() >= peer.backlog_frames_max {
            drop(st);
            self.count_drop(to);
            return false;
        }
        st.backlog.push_back(frame);
        if st.stream.is_some() && st.backlog.len() == 1 {
            match st.drain(self.write_batch_frames_max) {
                Wrote::All => return true,
                // The writer task finishes it when the socket has room, or notices the
                // failure and reconnects.
                Wrote::Some | Wrote::Failed(_) => {}
            }
        }
        let wake = st.stream.is_some() || st.tls_live;
        drop(st);
        if wake {
            peer.wake.notify_one();
        }
        true
    }

    fn count_drop(&self, to: NodeId) {
        self.metrics
            .peer_dropped_messages
            .get_or_create(&peer_label(to))
            .inc();
    }

    /// Every peer this transport sends to.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        self.peers.keys().copied().collect()
    }

    /// Peers with a live, handshaken outgoing connection.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.link.connected.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Answers peers' questions with `answerer` from now on (before: "starting"). Once.
    pub fn set_answerer(&self, answerer: Answerer) {
        let _ = self.shared.answerer.set(answerer);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Stops a transport's tasks and waits until they are gone (so its listener port is free).
/// Taken from a running [`Transport`] by an owner that outlives the thread using it.
pub struct TransportStopper {
    tasks: Vec<JoinHandle<()>>,
}

impl TransportStopper {
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl<M> Transport<M> {
    /// Hands the task handles to a [`TransportStopper`]; this transport still aborts them
    /// when dropped.
    pub fn stopper(&mut self) -> TransportStopper {
        let tasks = std::mem::take(&mut self.tasks);
        self.aborts = tasks.iter().map(|t| t.abort_handle()).collect();
        TransportStopper { tasks }
    }

    /// Stops accepting, closes every connection and stops the writers.
    pub fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for a in self.aborts.drain(..) {
            a.abort();
        }
        for (id, p) in &self.peers {
            p.writer.abort();
            p.link.connected.store(false, Ordering::Relaxed);
            self.metrics
                .peer_connected
                .get_or_create(&peer_label(*id))
                .set(0);
        }
    }
}

impl<M> Drop for Transport<M> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn peer_label(id: NodeId) -> PeerLabels {
    PeerLabels {
        peer: id.to_string(),
    }
}

async fn accept_loop<M: DeserializeOwned + Send + 'static>(
    listener: TcpListener,
    shared: Arc<Shared>,
    inbox: mpsc::Sender<(NodeId, M)>,
) {
    let slots = Arc::new(Semaphore::new(shared.cfg.inbound_connections_max));
    // Owning the connection tasks here means aborting this loop closes them all.
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set stays bounded by the live ones.
        while connections.try_join_next().is_some() {}
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                %addr,
                max = shared.cfg.inbound_connections_max,
                "refusing peer connection: inbound_connections_max reached"
            );
            continue;
        };
        let shared = shared.clone();
        let inbox = inbox.clone();
        connections.spawn(async move {
            let _permit = permit;
            match serve_inbound(stream, &shared, inbox).await {
                Ok(()) => tracing::debug!(%addr, "peer connection closed"),
                Err(reason) => {
                    tracing::warn!(%addr, local = shared.local, %reason, "closed peer connection")
                }
            }
        });
    }
}

/// Handshake, then read messages until the peer goes away or misbehaves.
async fn serve_inbound<M: DeserializeOwned + Send + 'static>(
    stream: TcpStream,
    shared: &Arc<Shared>,
    inbox: mpsc::Sender<(NodeId, M)>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let Some(tls) = &shared.tls else {
        return serve_plain(stream, shared, inbox).await;
    };
    let stream = tls
        .server
        .accept(stream)
        .await
        .map_err(|e| format!("refused peer TLS: {e}"))?;
    if let Some(r) =
        crate::tls::cn_refusal(stream.get_ref().1, shared.cfg.tls.allowed_cn.as_deref())
    {
        return Err(format!("refused peer TLS: {r}"));
    }
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    let Some(from) = answer_hello(&mut read, &mut write, shared).await? else {
        return Ok(());
    };
    tracing::debug!(local = shared.local, from, "peer connected (inbound, TLS)");
    read_messages(read, from, shared.clone(), inbox).await
}

/// The plain-TCP inbound path: after the hello the connection moves to the readers' runtime.
async fn serve_plain<M: DeserializeOwned + Send + 'static>(
    stream: TcpStream,
    shared: &Arc<Shared>,
    inbox: mpsc::Sender<(NodeId, M)>,
) -> Result<(), String> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let Some(from) = answer_hello(&mut read, &mut write, shared).await? else {
        return Ok(());
    };
    tracing::debug!(local = shared.local, from, "peer connected (inbound)");
    let Some(readers) = &shared.readers else {
        return read_messages(read, from, shared.clone(), inbox).await;
    };
    // Move the connection to the readers' runtime: out of this runtime's reactor and into
    // that one's, carrying over anything already buffered past the hello.
    let leftover = read.buffer().to_vec();
    let stream = read
        .into_inner()
        .reunite(write)
        .map_err(|e| format!("cannot move the connection: {e}"))?;
    let stream = stream
        .into_std()
        .map_err(|e| format!("cannot move the connection: {e}"))?;
    let shared = shared.clone();
    let task = readers.spawn(async move {
        let stream =
            TcpStream::from_std(stream).map_err(|e| format!("cannot move the connection: {e}"))?;
        let reader = BufReader::new(std::io::Cursor::new(leftover).chain(stream));
        read_messages(reader, from, shared, inbox).await
    });
    // Aborting the accept loop (transport stopped) must end the moved reader too.
    let _abort = AbortOnDrop(task.abort_handle());
    // A join error means the readers' runtime is gone: the node is stopping.
    task.await.unwrap_or(Ok(()))
}

/// Reads the dialer's [`Hello`] and answers it. `Ok(Some(member))`: accepted, messages from
/// `member` follow; `Ok(None)`: a probe, answered, nothing follows; `Err`: refused (why).
async fn answer_hello<R, W>(
    read: &mut R,
    write: &mut W,
    shared: &Arc<Shared>,
) -> Result<Option<NodeId>, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max = shared.cfg.frame_bytes_max;
    let timeout = Duration::from_millis(shared.cfg.handshake_timeout_ms);
    let hello = match tokio::time::timeout(timeout, read_frame(read, max)).await {
        Err(_) => return Err("no handshake within handshake_timeout_ms".into()),
        Ok(Err(e)) => return Err(format!("bad handshake frame: {e}")),
        Ok(Ok(None)) => return Err("closed before the handshake".into()),
        Ok(Ok(Some(p))) => {
            decode_payload::<Hello>(&p).map_err(|e| format!("bad handshake: {e}"))?
        }
    };
    let refusal = hello_refusal(&hello, shared);
    // A question is no sign of the asker's links (a wiped member asks under its old id).
    if refusal.is_none()
        && hello.question.is_none()
        && let Some(link) = shared.link(hello.from)
    {
        link.heard_from();
    }
    let identity = shared.identity.as_ref();
    let refusal = match (refusal, identity) {
        (Some(r), _) => Some(r),
        (None, _) if let Some(question) = hello.question.clone() => {
            let more = ask::reusable(&question);
            ask::answer(write, shared, hello.from, question).await;
            if more {
                ask::answer_more(read, write, shared, hello.from).await;
            }
            return Ok(None);
        }
        (None, _) if hello.probe => {
            let recorded_data_id = identity.and_then(|i| i.peers.recorded(hello.from));
            let reply = HelloReply::Probe { recorded_data_id };
            if let Ok(frame) = encode_frame(&reply, max) {
                let _ = tokio::time::timeout(timeout, write_flushed(write, &frame)).await;
            }
            return Ok(None);
        }
        (None, Some(i)) if hello.data_id != 0 => {
            // Rare (once per member per directory lifetime) and must be durable before we
            // accept, so the blocking write is done right here.
            match i
                .peers
                .check(hello.from, hello.data_id, hello.replace_data_id)
            {
                Ok(PeerIdentity::Known) => None,
                Ok(PeerIdentity::Replaced { recorded }) => {
                    Some(wiped_refusal(hello.from, hello.data_id, recorded))
                }
                Err(e) => Some(format!(
                    "cannot record the data id of member {}: {e}",
                    hello.from
                )),
            }
        }
        (None, _) => None,
    };
    let reply = match &refusal {
        Some(r) => HelloReply::Refused(r.clone()),
        None => HelloReply::Accepted,
    };
    if let Ok(frame) = encode_frame(&reply, max) {
        // Best effort for a refusal: the peer may already be gone.
        let _ = tokio::time::timeout(timeout, write_flushed(write, &frame)).await;
    }
    match refusal {
        Some(r) => Err(format!("refused handshake: {r}")),
        None => Ok(Some(hello.from)),
    }
}

/// Why `hello` may not talk to this node, if it may not (before any data-id check).
fn hello_refusal(hello: &Hello, shared: &Shared) -> Option<String> {
    if hello.magic != MAGIC {
        Some("not a Synod peer (bad magic)".to_string())
    } else if hello.cluster_id != shared.cluster_id {
        Some(format!(
            "wrong cluster: peer is in cluster {:x}, this node in {:x}",
            hello.cluster_id, shared.cluster_id
        ))
    } else if hello.to != shared.local {
        Some(format!(
            "hello addressed to member {}, but this is member {}",
            hello.to, shared.local
        ))
    } else if hello.from == shared.local {
        Some(format!(
            "unknown member {} (it claims this node's id)",
            hello.from
        ))
    } else if matches!(
        hello.question,
        Some(PeerQuestion::Member(ask::SelfChange::Rejoin { .. }))
    ) {
        rejoin_refusal(hello, shared)
    } else {
        shared.members().refusal(hello.from)
    }
}

/// Why a rejoin question may not be answered. Its asker may name an id that is no member any
/// more (its own removal already decided: the answerer checks what it may then ask). A member
/// may rejoin only with a data directory other than the one this node recorded for it, and only
/// while this node has no connection to it: a member that still has its directory has its
/// promises and no reason to leave and come back, so such a question is a misdirected one
/// (another node at its address, say).
fn rejoin_refusal(hello: &Hello, shared: &Shared) -> Option<String> {
    if shared.members().refusal(hello.from).is_some() {
        return None;
    }
    let recorded = shared
        .identity
        .as_ref()
        .and_then(|i| i.peers.recorded(hello.from));
    let linked = shared
        .link(hello.from)
        .is_some_and(|l| l.connected.load(Ordering::Relaxed));
    if hello.data_id == 0 {
        Some(format!(
            "member {} asks to rejoin without naming its data directory",
            hello.from
        ))
    } else if linked {
        Some(format!(
            "member {} asks to rejoin, but this member is connected to it: it was not wiped",
            hello.from
        ))
    } else if recorded == Some(hello.data_id) {
        Some(format!(
            "member {} asks to rejoin, but its data directory is the one this member recorded \
             for it: it was not wiped",
            hello.from
        ))
    } else {
        None
    }
}

/// Writes `bytes` and flushes (a TLS stream holds written bytes until flushed).
async fn write_flushed<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Decodes frames from a handshaken member into the inbox until the peer goes away, misbehaves
/// or leaves the configuration (`Err` names why; the connection is closed either way).
async fn read_messages<M: DeserializeOwned, R: AsyncRead + Unpin>(
    mut read: R,
    from: NodeId,
    shared: Arc<Shared>,
    inbox: mpsc::Sender<(NodeId, M)>,
) -> Result<(), String> {
    let max = shared.cfg.frame_bytes_max;
    let mut generation = shared.members_generation.load(Ordering::Acquire);
    loop {
        let payload = match read_frame(&mut read, max).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("from member {from}: {e}")),
        };
        let now = shared.members_generation.load(Ordering::Acquire);
        if now != generation {
            generation = now;
            if let Some(r) = shared.members().refusal(from) {
                return Err(format!("dropping frames: {r}"));
            }
        }
        let message =
            decode_payload::<M>(&payload).map_err(|e| format!("from member {from}: {e}"))?;
        if inbox.send((from, message)).await.is_err() {
            return Ok(()); // The engine stopped.
        }
    }
}

/// The refusal a member with a replaced data directory gets (and logs).
fn wiped_refusal(member: NodeId, presented: u64, recorded: u64) -> String {
    format!(
        "member {member} presents data directory id {presented:x}, but this node knew it with \
         id {recorded:x}: its data directory was wiped or replaced, so it no longer remembers \
         the promises it made; refusing it (see docs/durability.md, --allow-wiped-rejoin)"
    )
}

/// Most time a starting node spends asking its peers which data id they remember for it.
pub const PROBE_MS_MAX: u64 = 3_000;

/// Asks every peer which data id it recorded for `local` (see the module doc). Returns the
/// answers that came back within `within`: `None` = the peer never saw us. Peers that did not
/// answer (down, unreachable) are missing from the map. Stops early once every peer answered
/// or one remembers a data id other than `data_id`.
pub async fn probe_peers(
    local: NodeId,
    cluster_id: u64,
    peers: &[(NodeId, String)],
    data_id: u64,
    cfg: &TransportConfig,
    within: Duration,
) -> BTreeMap<NodeId, Option<u64>> {
    let mut tasks = JoinSet::new();
    let connector = match cfg.tls.enabled() {
        false => None,
        true => match crate::tls::client_config(&cfg.tls, &[crate::tls::ALPN_PEER]) {
            Ok(c) => Some(tokio_rustls::TlsConnector::from(c)),
            Err(e) => {
                // The transport refuses to start with the same error right after.
                tracing::warn!(error = %e, "peer TLS unusable; not probing peers");
                return BTreeMap::new();
            }
        },
    };
    for (peer, addr) in peers.iter().cloned() {
        let cfg = cfg.clone();
        let connector = connector.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(cfg.reconnect_backoff_ms_min);
            loop {
                let probe = probe_one(
                    local,
                    cluster_id,
                    peer,
                    &addr,
                    data_id,
                    &cfg,
                    connector.as_ref(),
                );
                match probe.await {
                    Ok(answer) => return (peer, answer),
                    Err(e) => tracing::debug!(peer, error = %e, "probe failed; retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(cfg.reconnect_backoff_ms_max));
            }
        });
    }
    let mut answers = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        if let Ok((peer, answer)) = joined {
            answers.insert(peer, answer);
            if answer.is_some_and(|r| r != data_id) {
                break;
            }
        }
    }
    answers
}

async fn probe_one(
    local: NodeId,
    cluster_id: u64,
    peer: NodeId,
    addr: &str,
    data_id: u64,
    cfg: &TransportConfig,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<Option<u64>, String> {
    let timeout = Duration::from_millis(cfg.handshake_timeout_ms);
    let exchange = async {
        let hello = Hello {
            magic: MAGIC,
            cluster_id,
            from: local,
            to: peer,
            data_id,
            probe: true,
            replace_data_id: false,
            question: None,
        };
        let reply = match connect(addr, tls).await? {
            Dialed::Plain(mut s) => exchange_hello(&mut s, &hello, cfg.frame_bytes_max).await?,
            Dialed::Tls(mut s) => exchange_hello(&mut s, &hello, cfg.frame_bytes_max).await?,
        };
        match reply {
            HelloReply::Probe { recorded_data_id } => Ok(recorded_data_id),
            HelloReply::Refused(reason) => Err(format!("peer refused the probe: {reason}")),
            HelloReply::Accepted | HelloReply::Answer(_) => {
                Err(format!("peer answered a probe with {reply:?}"))
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "probe timed out".to_string())?
}

async fn writer_loop(peer: NodeId, addr: String, link: Arc<PeerLink>, shared: Arc<Shared>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(shared.cfg.reconnect_backoff_ms_min),
        Duration::from_millis(shared.cfg.reconnect_backoff_ms_max),
    );
    let mut failures: u64 = 0;
    let gauge = shared
        .metrics
        .peer_connected
        .get_or_create(&peer_label(peer))
        .clone();
    loop {
        match dial(peer, &addr, &shared).await {
            Ok(stream) => {
                tracing::info!(local = shared.local, peer, %addr, "connected to peer");
                backoff.reset();
                failures = 0;
                let batch = shared.cfg.write_batch_frames_max;
                let e = match stream {
                    Dialed::Plain(s) => pump(s, &link, batch, &gauge).await,
                    Dialed::Tls(s) => pump_tls(*s, &link, batch, &gauge).await,
                };
                tracing::warn!(local = shared.local, peer, error = %e, "lost peer connection");
            }
            Err(e) => {
                failures += 1;
                // Loud on the first failure, quiet while it keeps failing.
                if failures == 1 {
                    tracing::warn!(local = shared.local, peer, %addr, error = %e, "cannot connect to peer; retrying with backoff");
                } else {
                    tracing::debug!(local = shared.local, peer, %addr, error = %e, failures, "cannot connect to peer");
                }
                wait_to_redial(&mut backoff, &link).await;
            }
        }
    }
}

/// Sleeps out the backoff, or less if the peer dials us meanwhile (then the backoff restarts
/// from its minimum: the peer is back).
async fn wait_to_redial(backoff: &mut Backoff, link: &PeerLink) {
    tokio::select! {
        _ = tokio::time::sleep(backoff.next_delay()) => {}
        _ = link.redial.notified() => backoff.reset(),
    }
}

/// Sends `hello` on a fresh connection and reads the answer.
async fn exchange_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hello: &Hello,
    frame_bytes_max: u32,
) -> Result<HelloReply, String> {
    let frame = encode_frame(hello, frame_bytes_max)?;
    write_flushed(stream, &frame)
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    let reply = read_frame(stream, frame_bytes_max)
        .await
        .map_err(|e| format!("read hello reply: {e}"))?
        .ok_or_else(|| "peer closed during the handshake".to_string())?;
    decode_payload::<HelloReply>(&reply)
}

async fn dial(peer: NodeId, addr: &str, shared: &Shared) -> Result<Dialed, String> {
    let timeout = Duration::from_millis(shared.cfg.handshake_timeout_ms);
    let handshake = async {
        let connector = shared.tls.as_ref().map(|t| &t.connector);
        let mut dialed = connect(addr, connector).await?;
        let hello = Hello {
            magic: MAGIC,
            cluster_id: shared.cluster_id,
            from: shared.local,
            to: peer,
            data_id: shared.identity.as_ref().map(|i| i.data_id).unwrap_or(0),
            probe: false,
            replace_data_id: shared.identity.as_ref().is_some_and(|i| i.replace_data_id),
            question: None,
        };
        let max = shared.cfg.frame_bytes_max;
        let reply = match &mut dialed {
            Dialed::Plain(s) => exchange_hello(s, &hello, max).await?,
            Dialed::Tls(s) => exchange_hello(s.as_mut(), &hello, max).await?,
        };
        match reply {
            HelloReply::Accepted => Ok(dialed),
            HelloReply::Refused(reason) => Err(format!("peer refused us: {reason}")),
            HelloReply::Probe { .. } | HelloReply::Answer(_) => {
                Err(format!("peer answered a hello with {reply:?}"))
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

/// Publishes a fresh connection for direct writes and drains the backlog whenever asked,
/// until the connection fails; returns why. The transport being dropped aborts this task.
async fn pump(
    stream: TcpStream,
    link: &PeerLink,
    batch_frames_max: usize,
    gauge: &prometheus_client::metrics::gauge::Gauge,
) -> std::io::Error {
    let (mut read, write) = stream.into_split();
    let write = Arc::new(write);
    {
        let mut st = link.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.front_partial {
            // Its beginning went out on the previous connection.
            st.backlog.pop_front();
            st.front_partial = false;
        }
        st.stream = Some(write.clone());
    }
    link.connected.store(true, Ordering::Relaxed);
    gauge.set(1);
    // Whatever queued while disconnected goes out first.
    link.wake.notify_one();
    // The peer never sends on this connection; reading only detects that it closed.
    let mut probe = [0u8; 1];
    let error = loop {
        tokio::select! {
            _ = link.wake.notified() => {}
            r = read.read(&mut probe) => break closed(r),
        }
        let failed = loop {
            let wrote = link
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(batch_frames_max);
            match wrote {
                Wrote::All => break None,
                Wrote::Some => {
                    if let Err(e) = write.writable().await {
                        break Some(e);
                    }
                }
                Wrote::Failed(e) => break Some(e),
            }
        };
        if let Some(e) = failed {
            break e;
        }
    };
    link.state.lock().unwrap_or_else(|p| p.into_inner()).stream = None;
    link.connected.store(false, Ordering::Relaxed);
    gauge.set(0);
    error
}

/// [`pump`] for a TLS connection: the backlog is written by this task alone, a batch of
/// frames per TLS write (see the module doc). A batch cut short by a lost connection is
/// dropped with it, like a frame cut short on plain TCP.
async fn pump_tls(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    link: &PeerLink,
    batch_frames_max: usize,
    gauge: &prometheus_client::metrics::gauge::Gauge,
) -> std::io::Error {
    let (mut read, mut write) = tokio::io::split(stream);
    {
        let mut st = link.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.front_partial {
            st.backlog.pop_front();
            st.front_partial = false;
        }
        st.tls_live = true;
    }
    link.connected.store(true, Ordering::Relaxed);
    gauge.set(1);
    link.wake.notify_one();
    let mut probe = [0u8; 1];
    let mut batch: Vec<u8> = Vec::new();
    let error = 'connection: loop {
        tokio::select! {
            _ = link.wake.notified() => {}
            r = read.read(&mut probe) => break closed(r),
        }
        loop {
            batch.clear();
            {
                let mut st = link.state.lock().unwrap_or_else(|p| p.into_inner());
                let n = st.backlog.len().min(batch_frames_max.max(1));
                for frame in st.backlog.drain(..n) {
                    batch.extend_from_slice(&frame);
                }
            }
            if batch.is_empty() {
                break;
            }
            if let Err(e) = write_flushed(&mut write, &batch).await {
                break 'connection e;
            }
        }
    };
    link.state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .tls_live = false;
    link.connected.store(false, Ordering::Relaxed);
    gauge.set(0);
    error
}

/// Why a writer's connection ended, from the read that watches it: the peer never sends on
/// it, so any completed read (data or EOF) means it went away.
fn closed(read: std::io::Result<usize>) -> std::io::Error {
    match read {
        Ok(_) => std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "peer closed the connection",
        ),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_a_reset_starts_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(20), ms(100));
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [ms(20), ms(40), ms(80), ms(100), ms(100)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(20));
    }

    #[test]
    fn a_cap_below_the_minimum_is_the_minimum() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(50), ms(10));
        assert_eq!(b.next_delay(), ms(50));
        assert_eq!(b.next_delay(), ms(50));
    }
}
