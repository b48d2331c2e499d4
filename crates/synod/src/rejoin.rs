//! A member whose data directory was wiped comes back by itself, as a **new member**.
//!
//! A member that lost its disk also lost its promises (ballots promised, entries accepted): if
//! it voted again under its old id it could break a quorum's intersection and lose an
//! acknowledged write. The node runtime detects the wipe (its peers remember another data id
//! for it, `docs/durability.md`) and refuses to start the engine. Then, instead of stopping,
//! `synod server` does what an operator would do with `etcdctl member remove` / `member add`:
//!
//! 1. asks the cluster to remove the old id (a voter change, decided like any other);
//! 2. adds itself back at the same addresses — a learner on the log engines, an acceptor on
//!    CASPaxos (which has no learners; there the add completes once the node runs);
//! 3. starts as a joining member under the new id: it takes the configuration and the state
//!    from its peers (a snapshot) and so never votes with state it forgot, since an id that
//!    never voted has nothing to forget;
//! 4. promotes itself once it has caught up (the cluster refuses the promotion until then:
//!    etcd's 90 % rule), so the cluster gets its voter back with nobody at the keyboard.
//!
//! The changes are asked of the other members over their peer ports
//! ([`SelfChange`]), not their client APIs: with auth on, those want a root user the member does
//! not have, and a member changing its own membership acts for nobody else. A member asked
//! carries out what is left (removal, then add) and answers with the new id; the question is
//! asked again, of one member after another, until one does, because a change whose answer was
//! lost may still be decided. A cluster that cannot decide a change
//! (no quorum without this member) makes the start fail after [`STEP_MS_MAX`] with the reason;
//! `--allow-wiped-rejoin` stays as the documented last resort for that case. EPaxos has no
//! membership change, so there a wiped member is refused as before. `--no-auto-rejoin` turns
//! the behaviour off.

use anyhow::{Context, bail};
use serde_json::Value;
use std::time::Duration;
use synod_core::NodeId;
use synod_node::joined::JoinRecord;
use synod_node::runtime::NodeError;
use synod_node::transport::{PeerAnswer, PeerAsker, PeerQuestion, SelfChange};
use synod_node::{MemberConfig, NodeConfig, NodeHandle};

use crate::member_http::MemberHttp;

/// Longest the removal and the add are asked for, together (60 s for each).
const STEP_MS_MAX: u64 = 120_000;
/// One HTTP read's timeout (the configuration, looked up at the members' client APIs).
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Pause between looks at the configuration.
const POLL_MS: u64 = 500;
/// Pause between self-promotion attempts (the learner catches up meanwhile).
const PROMOTE_RETRY_MS: u64 = 1_000;

/// Whether `e` is the runtime's refusal of a wiped data directory.
pub fn is_wiped(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<NodeError>(),
        Some(NodeError::WipedDataDir { .. })
    )
}

/// One member as `/v1/members` lists it.
struct Listed {
    id: NodeId,
    peer_addr: String,
    http_addr: String,
    /// A learner cannot carry out a change (it knows no leader): not asked.
    learner: bool,
}

/// Whom the rejoin asks: the members' HTTP addresses (the configuration) and, through it,
/// their peer addresses (the changes).
struct Operator {
    http: MemberHttp,
    /// HTTP host:port of members whose configuration is read (grows as configurations list
    /// more); the changes themselves are asked at the members' peer ports.
    endpoints: Vec<String>,
    /// This node's own HTTP address, never asked.
    me_http: String,
}

impl Operator {
    /// The newest configuration any endpoint reports.
    async fn configuration(&mut self) -> Option<Vec<Listed>> {
        let mut best: Option<(u64, Vec<Listed>)> = None;
        for ep in &self.endpoints {
            let Some(v) = self.get(&self.http.url(ep, "/v1/members")).await else {
                continue;
            };
            let version = v["version"].as_u64().unwrap_or(0);
            let members: Vec<Listed> = v["members"]
                .as_array()
                .map(|a| a.iter().filter_map(listed).collect())
                .unwrap_or_default();
            if best.as_ref().is_none_or(|(b, _)| version > *b) {
                best = Some((version, members));
            }
        }
        let members = best?.1;
        for m in &members {
            if !m.http_addr.is_empty()
                && m.http_addr != self.me_http
                && !self.endpoints.contains(&m.http_addr)
            {
                self.endpoints.push(m.http_addr.clone());
            }
        }
        Some(members)
    }

    async fn get(&self, url: &str) -> Option<Value> {
        let r = self.http.client().get(url).send().await.ok()?;
        r.json::<Value>().await.ok()
    }

    /// Asks the members over their peer ports, one after another, to carry out `change` for
    /// this node, until one answers that it is done; returns this node's id after it. A change
    /// whose answer was lost may still be decided: asked again, a member finds it done.
    async fn ask_until(
        &mut self,
        what: &str,
        asker: &PeerAsker,
        change: SelfChange,
        fallback: &[(NodeId, String)],
    ) -> anyhow::Result<NodeId> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(STEP_MS_MAX);
        let mut last = String::from("no member asked yet");
        let mut attempt = 0usize;
        let mut peers: Vec<(NodeId, String)> = Vec::new();
        loop {
            // Read again once per round over the members, not per question: a member that
            // does not answer costs an HTTP timeout.
            if attempt.is_multiple_of(peers.len().max(1)) {
                peers = match self.configuration().await {
                    Some(ms) => ms
                        .into_iter()
                        .filter(|m| {
                            m.http_addr != self.me_http && !m.peer_addr.is_empty() && !m.learner
                        })
                        .map(|m| (m.id, m.peer_addr))
                        .collect(),
                    None => fallback.to_vec(),
                };
            }
            if let Some((id, addr)) = peers.get(attempt % peers.len().max(1)) {
                let question = PeerQuestion::Member(change.clone());
                match asker.ask(*id, addr, question).await {
                    Ok(PeerAnswer::Member { id, .. }) => return Ok(id),
                    Ok(other) => last = format!("member {id}: {other:?}"),
                    Err(e) => last = format!("member {id}: {e}"),
                }
            }
            attempt += 1;
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{what}: not done within {} s (does the rest of the cluster have a quorum?); \
                     last answer: {last}",
                    STEP_MS_MAX / 1000
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }
}

fn listed(v: &Value) -> Option<Listed> {
    Some(Listed {
        id: v["id"].as_u64()?,
        peer_addr: v["peer_addr"].as_str()?.to_string(),
        http_addr: v["http_addr"].as_str().unwrap_or_default().to_string(),
        learner: v["learner"].as_bool().unwrap_or(false),
    })
}

/// Removes this wiped member's old id and adds it back under a new one; returns the join
/// record (saved in the data directory) to start with. See the module doc.
pub async fn rejoin(cfg: &NodeConfig) -> anyhow::Result<JoinRecord> {
    let me: MemberConfig = cfg
        .me()
        .cloned()
        .context("this node is not in its cluster")?;
    if cfg.cluster.engine == "epaxos" {
        bail!("the epaxos engine has no membership change, so a wiped member cannot rejoin");
    }
    let mut op = Operator {
        http: MemberHttp::new(
            &cfg.cluster.tls.client(),
            Duration::from_millis(REQUEST_TIMEOUT_MS),
        )?,
        endpoints: cfg
            .cluster
            .members
            .iter()
            .filter(|m| m.id != me.id)
            .map(|m| m.http_addr.clone())
            .collect(),
        me_http: me.http_addr.clone(),
    };
    tracing::warn!(
        member = me.id,
        "this member's data directory was wiped: removing member {} and adding this node back \
         as a new member (it votes again only after catching up)",
        me.id
    );
    let old = me.id;
    let learner = cfg.cluster.engine != "caspaxos";
    // Asked as the old id, with a data directory id the peers do not remember for it (what a
    // wiped member has): peers refuse a rejoin from a member whose directory they recognise.
    let asker = PeerAsker::new(
        old,
        cfg.cluster.cluster_id(),
        cfg.cluster.effective_transport(),
    )
    .with_data_id(fresh_data_id());
    let change = SelfChange::Rejoin {
        name: me.name.clone(),
        peer_addr: me.peer_addr.clone(),
        http_addr: me.http_addr.clone(),
        grpc_addr: me.grpc_addr.clone(),
    };
    let fallback: Vec<(NodeId, String)> = cfg
        .cluster
        .members
        .iter()
        .filter(|m| m.id != old)
        .map(|m| (m.id, m.peer_addr.clone()))
        .collect();
    let new = op
        .ask_until(
            &format!("remove the wiped member {old} and add this node back"),
            &asker,
            change,
            &fallback,
        )
        .await?;
    tracing::warn!(old, new, learner, "re-added as a new member; joining");
    let joiner = crate::join::Joiner {
        name: me.name.clone(),
        peer_addr: me.peer_addr.clone(),
        http_addr: me.http_addr.clone(),
        grpc_addr: me.grpc_addr.clone(),
        id: Some(new),
    };
    let mut record = crate::join::discover(&op.endpoints, &joiner, cfg.cluster.clone()).await?;
    record.auto_promote = learner;
    record.save(&cfg.data_dir)?;
    Ok(record)
}

/// A data directory id for the rejoin's questions: any id but the one the peers recorded for
/// the wiped member (the directory that will hold this node's data is made only once it joins).
fn fresh_data_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id()).max(1)
}

/// Promotes this learner (re-added after a wipe) once it has caught up: asked of the voters
/// over their peer ports (a learner knows no leader to forward to, and with auth on the client
/// APIs want a root user this member does not have). Runs until done or removed.
pub async fn promote_self(handle: NodeHandle, me: NodeId) {
    let mut attempts: u32 = 0;
    loop {
        let (members, version) = handle.members();
        if version.is_some() {
            match members.iter().find(|m| m.id == me) {
                None => return,
                Some(m) if !m.learner => {
                    tracing::info!(member = me, "promoted: a voter again");
                    return;
                }
                Some(_) => {}
            }
            let voters: Vec<(NodeId, &str)> = members
                .iter()
                .filter(|m| !m.learner && !m.peer_addr.is_empty())
                .map(|m| (m.id, m.peer_addr.as_str()))
                .collect();
            if !voters.is_empty() {
                let (id, addr) = voters[attempts as usize % voters.len()];
                let question = PeerQuestion::Member(SelfChange::Promote);
                let answer = match handle.ask_peer(id, addr, question).await {
                    Ok(a) => format!("{a:?}"),
                    Err(e) => e,
                };
                attempts += 1;
                if attempts % 20 == 1 {
                    tracing::info!(member = me, %answer, "promoting this learner (retried until it has caught up)");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(PROMOTE_RETRY_MS)).await;
    }
}
