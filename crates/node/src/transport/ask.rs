//! Questions one member asks another over the peer port, outside the engine's messages: what
//! etcd serves on its peer URLs (`/members/hashkv`). The corruption check asks its peers for
//! their revision and their HashKV here rather than over their client APIs, which may demand
//! a user with the root role (auth) or a client certificate (client TLS) that a member does
//! not have — there, the check silently compared nothing.
//!
//! A question is a [`Hello`] with `question` set, checked like any hello (magic, cluster id,
//! a member of the current configuration; the peer port's TLS when configured), answered with
//! [`HelloReply::Answer`], and the connection closed: one short-lived connection per question,
//! which is cheap at the check's pace (every `corrupt_check_ms`, minutes by default).

use super::{
    Dialed, Hello, HelloReply, MAGIC, Shared, connect, encode_frame, exchange_hello, write_flushed,
};
use crate::config::TransportConfig;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use synod_core::NodeId;
use tokio::io::AsyncWrite;

/// How long the answering member may take to find an answer (a HashKV hashes the history).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a member may ask a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerQuestion {
    /// The revision the peer has applied.
    Revision,
    /// The peer's HashKV at `revision`.
    HashKv { revision: u64 },
}

/// A peer's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerAnswer {
    Revision(u64),
    HashKv {
        hash: u32,
        compact_revision: u64,
    },
    /// The peer has not applied (every group of it has not closed) the revision yet.
    FutureRevision,
    /// No answer: why (compacted, stopping, not ready, timed out).
    Unavailable(String),
}

/// The answer to a question, found by the node (set once its handle exists).
pub type Answerer =
    Arc<dyn Fn(PeerQuestion) -> Pin<Box<dyn Future<Output = PeerAnswer> + Send>> + Send + Sync>;

/// Answers `question` (its hello already accepted) on `write`.
pub(super) async fn answer<W: AsyncWrite + Unpin>(
    write: &mut W,
    shared: &Shared,
    question: PeerQuestion,
) {
    let answer = match shared.answerer.get() {
        None => PeerAnswer::Unavailable("this member is starting".into()),
        Some(answerer) => tokio::time::timeout(ANSWER_TIMEOUT, answerer(question))
            .await
            .unwrap_or_else(|_| PeerAnswer::Unavailable("no answer in time".into())),
    };
    let timeout = Duration::from_millis(shared.cfg.handshake_timeout_ms);
    if let Ok(frame) = encode_frame(&HelloReply::Answer(answer), shared.cfg.frame_bytes_max) {
        let _ = tokio::time::timeout(timeout, write_flushed(write, &frame)).await;
    }
}

/// Asks members of this cluster questions over their peer ports (TLS as the transport's).
#[derive(Clone)]
pub struct PeerAsker {
    local: NodeId,
    cluster_id: u64,
    cfg: TransportConfig,
}

impl PeerAsker {
    pub fn new(local: NodeId, cluster_id: u64, cfg: TransportConfig) -> Self {
        PeerAsker {
            local,
            cluster_id,
            cfg,
        }
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
            data_id: 0,
            probe: false,
            replace_data_id: false,
            question: Some(question),
        };
        let max = self.cfg.frame_bytes_max;
        let exchange = async {
            let reply = match connect(addr, tls.as_ref()).await? {
                Dialed::Plain(mut s) => exchange_hello(&mut s, &hello, max).await?,
                Dialed::Tls(mut s) => exchange_hello(&mut s, &hello, max).await?,
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
}
