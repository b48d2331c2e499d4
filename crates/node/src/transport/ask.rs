//! Questions one member asks another over the peer port, outside the engine's messages: what
//! etcd serves on its peer URLs (`/members/hashkv`). The corruption check asks its peers for
//! their revision and their HashKV here rather than over their client APIs, which may demand
//! a user with the root role (auth) or a client certificate (client TLS) that a member does
//! not have — there, the check silently compared nothing.
//!
//! A question is a [`Hello`] with `question` set, checked like any hello (magic, cluster id,
//! a member of the current configuration; the peer port's TLS when configured), answered with
//! [`HelloReply::Answer`]. The asker may then ask again on the same connection (another hello
//! with a question, checked again): it keeps up to [`IDLE_PER_PEER_MAX`] answered connections
//! per peer for [`IDLE_REUSE`], and the answerer closes one after [`IDLE_CLOSE`] without a
//! question. That matters for remote watches (a long poll per page of a busy group) and
//! backups of placed members (a question per page of an image): a connection per question
//! costs a handshake (TLS too, with peer TLS) and leaves a socket in TIME_WAIT every time.
//! Questions that change membership ([`SelfChange`]) always get a connection of their own:
//! a pooled connection that fails is asked again on a new one, which only a question without
//! effects may be.
//!
//! A member also changes *its own* membership here ([`SelfChange`]: a wiped member removing its
//! old id and adding itself back, a learner promoting itself, a joined member publishing its
//! client addresses), for the same reason: with auth on, those changes want the root role over
//! the client APIs, and the member acts for nobody but itself. The answering member checks that
//! the change names only the asker (`Hello::from`) — a check against confusion, not against a
//! liar: what the asker says of itself is believed, as the peer port believes every member's
//! messages (use peer TLS where the network is not private). A wiped member's old id is
//! removed by its own [`SelfChange::Rejoin`], after which that id is no longer a member: the
//! hello of a `Rejoin` is therefore not refused for naming an id outside the configuration —
//! the answerer checks it instead (an id that is no member may only be added back as a new
//! member at addresses nobody holds).

use super::{
    Dialed, Hello, HelloReply, MAGIC, Shared, connect, encode_frame, exchange_hello, write_flushed,
};
use crate::config::TransportConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_core::NodeId;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long the answering member may take to find an answer (a HashKV hashes the history).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Answered connections an asker keeps per peer for its next questions.
pub const IDLE_PER_PEER_MAX: usize = 2;
/// An asker reuses a connection answered at most this long ago...
pub const IDLE_REUSE: Duration = Duration::from_secs(5);
/// ...and the answerer closes one after this long without a question, well after the asker
/// stopped reusing it, so an asker never sends into a connection being closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(15);

/// What a member may ask a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerQuestion {
    /// The revision the peer has applied.
    Revision,
    /// The peer's HashKV at `revision`.
    HashKv { revision: u64 },
    /// A change of the asker's own membership, proposed by the peer on the asker's behalf.
    Member(SelfChange),
    /// The groups the peer hosts and the revision it applied in each (partitioned members).
    Groups,
    /// The peer's HashKV of group `group`'s own history at `revision`.
    GroupHashKv { group: u64, revision: u64 },
    /// A group's applied revisions, for a watch of it on a member that does not host it
    /// (`watch::remote`).
    Events(crate::watch::remote::EventsQuery),
    /// A page of a group's state image, for a backup at a member that does not host the group
    /// (`backup::gather`).
    Image(crate::backup::ImageQuery),
}

/// A change a member may ask for itself ([`PeerQuestion::Member`]); `Hello::from` is "itself".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelfChange {
    /// The asker lost its data directory: remove its id if still a member, then add a new
    /// member at the same addresses — a learner where the engine has learners, else a voter
    /// (the answering member decides). Asked again until the answer names the new id.
    Rejoin {
        name: String,
        peer_addr: String,
        http_addr: String,
        grpc_addr: String,
    },
    /// The asker, a learner, becomes a voter (refused until it caught up, as any promotion).
    Promote,
    /// The asker's name and client addresses (what a joining member publishes).
    Publish {
        name: String,
        http_addr: String,
        grpc_addr: String,
    },
}

/// A peer's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerAnswer {
    Revision(u64),
    HashKv {
        hash: u32,
        /// The revision hashed at (the group's current one when asked at 0).
        revision: u64,
        compact_revision: u64,
    },
    /// Per group the peer hosts: (group, applied revision, compact revision).
    Groups(Vec<(u64, u64, u64)>),
    Events(crate::watch::remote::EventsPage),
    Image(crate::backup::ImagePage),
    /// The peer has not applied (every group of it has not closed) the revision yet.
    FutureRevision,
    /// A [`SelfChange`] is decided: the asker's id after it (new after a rejoin) and the
    /// configuration version that holds it.
    Member {
        id: NodeId,
        version: u64,
    },
    /// No answer: why (compacted, stopping, not ready, timed out).
    Unavailable(String),
}

/// The answer to a question, found by the node (set once its handle exists).
/// It is given the asker's id (`Hello::from`) and the question.
pub type Answerer = Arc<
    dyn Fn(NodeId, PeerQuestion) -> Pin<Box<dyn Future<Output = PeerAnswer> + Send>> + Send + Sync,
>;

/// Answers `question` (its hello already accepted) on `write`.
pub(super) async fn answer<W: AsyncWrite + Unpin>(
    write: &mut W,
    shared: &Shared,
    from: NodeId,
    question: PeerQuestion,
) {
    let answer = match shared.answerer.get() {
        None => PeerAnswer::Unavailable("this member is starting".into()),
        Some(answerer) => tokio::time::timeout(ANSWER_TIMEOUT, answerer(from, question))
            .await
            .unwrap_or_else(|_| PeerAnswer::Unavailable("no answer in time".into())),
    };
    let timeout = Duration::from_millis(shared.cfg.handshake_timeout_ms);
    if let Ok(frame) = encode_frame(&HelloReply::Answer(answer), shared.cfg.frame_bytes_max) {
        let _ = tokio::time::timeout(timeout, write_flushed(write, &frame)).await;
    }
}

/// Answers further questions on a connection whose first question from member `from` was
/// answered, until it is closed, idle for [`IDLE_CLOSE`], or sends anything but a question
/// from `from` that may be asked again (each hello is checked as the first was).
pub(super) async fn answer_more<R, W>(read: &mut R, write: &mut W, shared: &Shared, from: NodeId)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max = shared.cfg.frame_bytes_max;
    loop {
        let frame = match tokio::time::timeout(IDLE_CLOSE, super::read_frame(read, max)).await {
            Ok(Ok(Some(frame))) => frame,
            _ => return,
        };
        let Ok(hello) = super::decode_payload::<Hello>(&frame) else {
            return;
        };
        let question = match hello.question.clone() {
            Some(q) if hello.from == from && reusable(&q) => q,
            _ => return,
        };
        if let Some(reason) = super::hello_refusal(&hello, shared) {
            let timeout = Duration::from_millis(shared.cfg.handshake_timeout_ms);
            if let Ok(frame) = encode_frame(&HelloReply::Refused(reason), max) {
                let _ = tokio::time::timeout(timeout, write_flushed(write, &frame)).await;
            }
            return;
        }
        answer(write, shared, from, question).await;
    }
}

/// Whether `question` may be asked on a connection kept from an earlier one (and so asked
/// again when that connection turns out closed): only questions without effects.
pub(super) fn reusable(question: &PeerQuestion) -> bool {
    !matches!(question, PeerQuestion::Member(_))
}

/// Connections answered lately, per peer: (when, the address dialled, the stream).
type Idle = HashMap<NodeId, Vec<(Instant, String, Dialed)>>;

/// Asks members of this cluster questions over their peer ports (TLS as the transport's).
#[derive(Clone)]
pub struct PeerAsker {
    local: NodeId,
    cluster_id: u64,
    cfg: TransportConfig,
    /// Presented in the hello (0: none); a rejoin must name its new data directory.
    data_id: u64,
    idle: Arc<Mutex<Idle>>,
}

impl PeerAsker {
    pub fn new(local: NodeId, cluster_id: u64, cfg: TransportConfig) -> Self {
        PeerAsker {
            local,
            cluster_id,
            cfg,
            data_id: 0,
            idle: Arc::default(),
        }
    }

    /// This asker, presenting data directory id `data_id` (what a rejoin must show).
    pub fn with_data_id(mut self, data_id: u64) -> Self {
        self.data_id = data_id;
        self
    }

    /// Asks member `peer` at its peer address `addr`.
    pub async fn ask(
        &self,
        peer: NodeId,
        addr: &str,
        question: PeerQuestion,
    ) -> Result<PeerAnswer, String> {
        let tls = match self.cfg.tls.enabled() {
            false => None,
            true => Some(tokio_rustls::TlsConnector::from(
                crate::tls::client_config(&self.cfg.tls, &[crate::tls::ALPN_PEER])
                    .map_err(|e| format!("peer TLS: {e}"))?,
            )),
        };
        let hello = Hello {
            magic: MAGIC,
            cluster_id: self.cluster_id,
            from: self.local,
            to: peer,
            data_id: self.data_id,
            probe: false,
            replace_data_id: false,
            question: Some(question),
        };
        let reusable = hello.question.as_ref().is_some_and(reusable);
        if reusable && let Some(mut kept) = self.take_idle(peer, addr) {
            // Closed meanwhile (the peer restarted, say): asked again on a new connection.
            if let Ok(answer) = self.exchange(&mut kept, &hello).await {
                self.keep_idle(peer, addr, kept);
                return Ok(answer);
            }
        }
        let within = Duration::from_millis(self.cfg.handshake_timeout_ms);
        let mut dialed = tokio::time::timeout(within, connect(addr, tls.as_ref()))
            .await
            .map_err(|_| "connect timed out".to_string())??;
        let answer = self.exchange(&mut dialed, &hello).await?;
        if reusable {
            self.keep_idle(peer, addr, dialed);
        }
        Ok(answer)
    }

    /// Asks `hello`'s question on `dialed` and reads the answer.
    async fn exchange(&self, dialed: &mut Dialed, hello: &Hello) -> Result<PeerAnswer, String> {
        let max = self.cfg.frame_bytes_max;
        let exchange = async {
            let reply = match dialed {
                Dialed::Plain(s) => exchange_hello(s, hello, max).await?,
                Dialed::Tls(s) => exchange_hello(s, hello, max).await?,
            };
            match reply {
                HelloReply::Answer(a) => Ok(a),
                HelloReply::Refused(reason) => Err(format!("peer refused the question: {reason}")),
                other => Err(format!("peer answered a question with {other:?}")),
            }
        };
        let within = Duration::from_millis(self.cfg.handshake_timeout_ms) + ANSWER_TIMEOUT;
        tokio::time::timeout(within, exchange)
            .await
            .map_err(|_| "question timed out".to_string())?
    }

    /// A connection to `peer` at `addr` answered within [`IDLE_REUSE`], if one is kept.
    fn take_idle(&self, peer: NodeId, addr: &str) -> Option<Dialed> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.get_mut(&peer)?;
        kept.retain(|(at, a, _)| at.elapsed() < IDLE_REUSE && a == addr);
        kept.pop().map(|(_, _, d)| d)
    }

    /// Keeps `dialed` for the next question to `peer`, unless [`IDLE_PER_PEER_MAX`] are kept.
    fn keep_idle(&self, peer: NodeId, addr: &str, dialed: Dialed) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.entry(peer).or_default();
        kept.retain(|(at, _, _)| at.elapsed() < IDLE_REUSE);
        if kept.len() < IDLE_PER_PEER_MAX {
            kept.push((Instant::now(), addr.to_string(), dialed));
        }
    }
}
