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
//! Every step is retried until the configuration it wants is seen at some member, because a
//! change whose request timed out may still be decided. A cluster that cannot decide a change
//! (no quorum without this member) makes the start fail after [`STEP_MS_MAX`] with the reason;
//! `--allow-wiped-rejoin` stays as the documented last resort for that case. EPaxos has no
//! membership change, so there a wiped member is refused as before. `--no-auto-rejoin` turns
//! the behaviour off.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::Duration;
use synod_core::NodeId;
use synod_node::joined::JoinRecord;
use synod_node::runtime::NodeError;
use synod_node::{MemberConfig, NodeConfig, NodeHandle};

use crate::member_http::MemberHttp;

/// Longest one step (remove, add) is retried.
const STEP_MS_MAX: u64 = 60_000;
/// One request's timeout, and how often a step's request is sent again.
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
}

/// The HTTP side of the rejoin: whom to ask, and how.
struct Operator {
    http: MemberHttp,
    /// HTTP host:port of members to ask (grows as configurations list more).
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

    /// Sends one change to endpoint `attempt` (round robin), in the background: only the
    /// configuration is trusted (see the module doc).
    fn send(&self, attempt: usize, method: reqwest::Method, path: &str, body: Option<Value>) {
        if self.endpoints.is_empty() {
            return;
        }
        let ep = &self.endpoints[attempt % self.endpoints.len()];
        let url = self.http.url(ep, path);
        let mut req = self.http.client().request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        tokio::spawn(async move {
            let _ = req.send().await;
        });
    }

    /// Sends `request` until `done` holds for a configuration seen.
    async fn step<T>(
        &mut self,
        what: &str,
        request: impl Fn(&Self, usize),
        done: impl Fn(&[Listed]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_millis(STEP_MS_MAX);
        let mut next_send = start;
        let mut attempt = 0;
        loop {
            if let Some(members) = self.configuration().await
                && let Some(t) = done(&members)
            {
                return Ok(t);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                bail!(
                    "{what}: not done within {} s (does the rest of the cluster have a quorum?); \
                     asked {:?}",
                    STEP_MS_MAX / 1000,
                    self.endpoints
                );
            }
            if now >= next_send {
                request(self, attempt);
                attempt += 1;
                next_send = now + Duration::from_millis(REQUEST_TIMEOUT_MS);
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
    op.step(
        &format!("remove the wiped member {old}"),
        |o, a| {
            o.send(
                a,
                reqwest::Method::DELETE,
                &format!("/v1/members/{old}"),
                None,
            )
        },
        |ms| (!ms.iter().any(|m| m.id == old)).then_some(()),
    )
    .await?;
    let learner = cfg.cluster.engine != "caspaxos";
    let body = json!({
        "name": me.name, "peer_addr": me.peer_addr, "http_addr": me.http_addr,
        "grpc_addr": me.grpc_addr, "learner": learner,
    });
    let at = me.peer_addr.clone();
    let new = op
        .step(
            "add this node back",
            |o, a| o.send(a, reqwest::Method::POST, "/v1/members", Some(body.clone())),
            |ms| ms.iter().find(|m| m.peer_addr == at).map(|m| m.id),
        )
        .await?;
    tracing::warn!(old, new, learner, "re-added as a new member; joining");
    let joiner = crate::join::Joiner {
        name: me.name.clone(),
        peer_addr: me.peer_addr.clone(),
        http_addr: me.http_addr.clone(),
        grpc_addr: me.grpc_addr.clone(),
    };
    let mut record = crate::join::discover(&op.endpoints, &joiner, cfg.cluster.clone()).await?;
    record.auto_promote = learner;
    record.save(&cfg.data_dir)?;
    Ok(record)
}

/// Promotes this learner (re-added after a wipe) once it has caught up: through the voters'
/// HTTP APIs, since a learner knows no leader to forward to. Runs until done or removed.
pub async fn promote_self(handle: NodeHandle, me: NodeId, http: MemberHttp) {
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
            let voters: Vec<&str> = members
                .iter()
                .filter(|m| !m.learner && !m.http_addr.is_empty())
                .map(|m| m.http_addr.as_str())
                .collect();
            if !voters.is_empty() {
                let ep = voters[attempts as usize % voters.len()];
                let url = http.url(ep, &format!("/v1/members/{me}/promote"));
                let answer = match http.client().post(&url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
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
