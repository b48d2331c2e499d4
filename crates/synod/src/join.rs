//! `synod server --join`: how a member an operator added to a running cluster (`etcdctl
//! member add` / `synodctl member add`, exactly as with etcd) finds its place in it, and how
//! every member publishes its client addresses once it is in the configuration.
//!
//! **Discovery.** With an empty data directory the new member asks one of the `--join`
//! endpoints (HTTP API) for the cluster's status and member list, finds itself by its peer
//! address, and so learns its id, the cluster's name (whose hash is the id peers check) and
//! engine, and whom to contact. It writes that as a [`JoinRecord`] into its data directory
//! before starting, and starts the engine with `join`: the engine takes the configuration and
//! the state from its peers. On restart the record is there and `--join` is not needed.
//!
//! **Publishing** (etcd's "publish"): a member added by peer URL alone has no name or client
//! addresses in the configuration. Once this node has applied a configuration containing
//! itself, it proposes a MemberUpdate with its name and client addresses if they differ,
//! retrying until it is decided or the server stops. A learner knows no leader to forward to
//! (it answers "no leader" to writes, as etcd's learners refuse them), so when its own handle
//! fails, the update is asked of the other voters over their peer ports instead
//! ([`SelfChange::Publish`]: their client APIs would want a root user once auth is on).

use anyhow::{Context, bail};
use serde_json::Value;
use std::time::Duration;
use synod_core::NodeId;
use synod_core::membership::{Member, MemberChange};
use synod_node::joined::JoinRecord;
use synod_node::transport::{PeerAnswer, PeerQuestion, SelfChange};
use synod_node::{ClusterConfig, MemberConfig, NodeHandle};

use crate::member_http::MemberHttp;

/// How long discovery keeps asking the `--join` endpoints before giving up.
const DISCOVERY_MS_MAX: u64 = 30_000;
/// Pause between rounds over the endpoints.
const DISCOVERY_RETRY_MS: u64 = 500;
/// Pause between attempts to publish the client addresses.
const PUBLISH_RETRY_MS: u64 = 500;

/// Who this node is, from its flags.
#[derive(Clone, Debug)]
pub struct Joiner {
    pub name: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub grpc_addr: String,
    /// The id the cluster gave this node, when known (a wiped member's rejoin): a member list
    /// that does not have it yet — one that still lists the old id at the same peer address —
    /// is not this node's place. `None`: found by peer address alone.
    pub id: Option<NodeId>,
}

/// Asks the cluster at `endpoints` who this node is, and returns what to persist.
/// `settings` gives the timing and limits (the shared cluster file, or the defaults).
pub async fn discover(
    endpoints: &[String],
    me: &Joiner,
    settings: ClusterConfig,
) -> anyhow::Result<JoinRecord> {
    let http = MemberHttp::new(&settings.tls.client(), Duration::from_secs(5))?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(DISCOVERY_MS_MAX);
    loop {
        let mut last = String::new();
        for ep in endpoints {
            match ask(&http, ep).await {
                Ok((status, members)) => match record(&status, &members, me, settings.clone()) {
                    Ok(r) => return Ok(r),
                    // Not listed there yet: that member may not have applied the add that
                    // listed this node elsewhere (a wiped member's rejoin learns its id from
                    // the member that made the add). Another may have, or this one soon.
                    Err(e) => last = format!("{ep}: {e:#}"),
                },
                Err(e) => last = format!("{ep}: {e:#}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("could not join within {DISCOVERY_MS_MAX} ms (last: {last})");
        }
        tracing::warn!(error = %last, "cannot reach the cluster to join yet; retrying");
        tokio::time::sleep(Duration::from_millis(DISCOVERY_RETRY_MS)).await;
    }
}

/// `/v1/status` and `/v1/members` of one endpoint.
async fn ask(http: &MemberHttp, endpoint: &str) -> anyhow::Result<(Value, Value)> {
    let get = |path: &str| {
        let url = http.url(endpoint, path);
        async move {
            let r = http.client().get(&url).send().await?.error_for_status()?;
            r.json::<Value>().await
        }
    };
    let status = get("/v1/status").await.context("GET /v1/status")?;
    let members = get("/v1/members").await.context("GET /v1/members")?;
    Ok((status, members))
}

/// The record for this node from one member's answers.
fn record(
    status: &Value,
    members: &Value,
    me: &Joiner,
    mut cluster: ClusterConfig,
) -> anyhow::Result<JoinRecord> {
    let listed: Vec<MemberConfig> =
        serde_json::from_value::<Vec<synod_node::MemberInfo>>(members["members"].clone())
            .context("member list")?
            .into_iter()
            .map(|m| MemberConfig {
                id: m.id,
                name: m.name,
                peer_addr: m.peer_addr,
                http_addr: m.http_addr,
                grpc_addr: m.grpc_addr,
            })
            .collect();
    let Some(mine) = listed
        .iter()
        .find(|m| m.peer_addr == me.peer_addr && me.id.is_none_or(|id| m.id == id))
    else {
        bail!(
            "no member of the cluster has peer address {}: add this node first (etcdctl member \
             add {} --peer-urls=http://{} [--learner], or synodctl member add), then start it \
             with --join; members: {:?}",
            me.peer_addr,
            me.name,
            me.peer_addr,
            listed
                .iter()
                .map(|m| (m.id, &m.peer_addr))
                .collect::<Vec<_>>()
        );
    };
    let id = mine.id;
    cluster.cluster_name = status["cluster_name"]
        .as_str()
        .context("status without cluster_name")?
        .to_string();
    let engine = status["engine"].as_str().context("status without engine")?;
    // A partitioned cluster reports `<engine>-partitioned`; its split keys are part of the
    // cluster id, so they come from --config like the other settings.
    let partitioned = engine.strip_suffix("-partitioned");
    if status["cluster_id"].as_u64() != Some(cluster.cluster_id()) {
        if partitioned.is_some() {
            bail!(
                "the cluster's id does not match: a partitioned cluster's id covers its split \
                 keys, so start this member with --config naming the cluster's [partition] \
                 split_keys (ours: {:?})",
                cluster.partition.split_keys
            );
        }
        bail!(
            "the cluster's id does not match its name's hash: not a Synod cluster of this version"
        );
    }
    cluster.engine = partitioned.unwrap_or(engine).to_string();
    // Members that have not published client addresses yet cannot be written into a cluster
    // file; the engine's configuration lists them anyway once this node has it.
    cluster.members = listed
        .into_iter()
        .filter(|m| m.id != id && !m.http_addr.is_empty() && !m.grpc_addr.is_empty())
        .collect();
    cluster.members.push(MemberConfig {
        id,
        name: me.name.clone(),
        peer_addr: me.peer_addr.clone(),
        http_addr: me.http_addr.clone(),
        grpc_addr: me.grpc_addr.clone(),
    });
    cluster.members.sort_by_key(|m| m.id);
    cluster.validate()?;
    Ok(JoinRecord {
        member_id: id,
        cluster,
        auto_promote: false,
    })
}

/// What one look at the configuration did about publishing.
enum Published {
    Done,
    /// No configuration yet (still joining), or one without this member (removed).
    NotYet,
    Failed(anyhow::Error),
}

/// Waits until this node applied a configuration that contains it, then proposes its name
/// and client addresses there if they differ (see the module doc). Ends when done, or at once
/// on a bootstrap member whose engine keeps no configuration (CASPaxos).
pub async fn publish(handle: NodeHandle, me: MemberConfig, joined: bool) {
    let mut failures: u32 = 0;
    loop {
        match publish_once(&handle, &me).await {
            Published::Done => return,
            Published::NotYet if !joined && handle.members().1.is_none() => return,
            Published::NotYet => {}
            Published::Failed(e) => {
                failures += 1;
                if failures % 20 == 1 {
                    tracing::warn!(member = me.id, error = %e, failures,
                        "cannot publish client addresses yet; retrying");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(PUBLISH_RETRY_MS)).await;
    }
}

async fn publish_once(handle: &NodeHandle, me: &MemberConfig) -> Published {
    let (members, version) = handle.members();
    let Some(listed) = members.iter().find(|m| m.id == me.id) else {
        return Published::NotYet;
    };
    if version.is_none() {
        return Published::NotYet;
    }
    if listed.name == me.name
        && listed.http_addr == me.http_addr
        && listed.grpc_addr == me.grpc_addr
    {
        return Published::Done;
    }
    let change = MemberChange::Update(Member {
        id: me.id,
        name: me.name.clone(),
        peer_addr: String::new(),
        http_addr: me.http_addr.clone(),
        grpc_addr: me.grpc_addr.clone(),
        learner: false,
    });
    let others: Vec<(NodeId, String)> = members
        .iter()
        .filter(|m| m.id != me.id && !m.learner && !m.peer_addr.is_empty())
        .map(|m| (m.id, m.peer_addr.clone()))
        .collect();
    match propose_update(handle, change, &others).await {
        Ok(None) => {
            tracing::info!(member = me.id, "published client addresses");
            Published::Done
        }
        Ok(Some(through)) => {
            tracing::info!(
                member = me.id,
                "published client addresses through member {through} (asked at its peer port)"
            );
            Published::Done
        }
        Err(e) => Published::Failed(e),
    }
}

/// Proposes `change` (a MemberUpdate of this member) here, or — where this member cannot (a
/// learner knows no leader) — through the first of the voters `others` (id, peer address) that
/// carries it out (which it returns; `None`: here).
async fn propose_update(
    handle: &NodeHandle,
    change: MemberChange,
    others: &[(NodeId, String)],
) -> anyhow::Result<Option<NodeId>> {
    // The update is idempotent, so after any failure here (a learner knows no leader, a
    // joining CASPaxos node cannot coordinate yet) another member may propose it again.
    // On the member's own behalf: with auth on, no client's token covers it.
    let local = synod_node::auth::as_member(handle.change_members(change.clone()));
    let local = match local.await {
        Ok(_) => return Ok(None),
        Err(e) => format!("here: {e}"),
    };
    let MemberChange::Update(m) = change else {
        anyhow::bail!("only updates are published");
    };
    let question = PeerQuestion::Member(SelfChange::Publish {
        name: m.name,
        http_addr: m.http_addr,
        grpc_addr: m.grpc_addr,
    });
    let mut last = local;
    for (id, addr) in others {
        match handle.ask_peer(*id, addr, question.clone()).await {
            Ok(PeerAnswer::Member { .. }) => return Ok(Some(*id)),
            Ok(other) => last = format!("member {id}: {other:?}"),
            Err(e) => last = format!("member {id}: {e}"),
        }
    }
    anyhow::bail!("{last}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn joiner() -> Joiner {
        Joiner {
            name: "n4".into(),
            peer_addr: "127.0.0.1:7030".into(),
            http_addr: "127.0.0.1:7031".into(),
            grpc_addr: "127.0.0.1:7032".into(),
            id: None,
        }
    }

    fn answers() -> (Value, Value) {
        let c = ClusterConfig::local(3, 7000);
        let mut members: Vec<Value> = c
            .members
            .iter()
            .map(|m| serde_json::to_value(m.info()).unwrap())
            .collect();
        members.push(json!({"id": 4, "name": "n4", "peer_addr": "127.0.0.1:7030",
            "http_addr": "", "grpc_addr": "", "learner": true}));
        let status = json!({"cluster_name": "synod-local", "cluster_id": c.cluster_id(),
            "engine": "vr"});
        (status, json!({"version": 1, "members": members}))
    }

    #[test]
    fn a_joiner_finds_itself_by_peer_address() {
        let (status, members) = answers();
        let r = record(&status, &members, &joiner(), ClusterConfig::default()).unwrap();
        assert_eq!(r.member_id, 4);
        assert_eq!(r.cluster.engine, "vr");
        assert_eq!(r.cluster.cluster_name, "synod-local");
        assert_eq!(r.cluster.member_ids(), vec![1, 2, 3, 4]);
        assert_eq!(r.cluster.member(4).unwrap().grpc_addr, "127.0.0.1:7032");
        // A rejoining member told its new id does not take a list without it for its place.
        let told = Joiner {
            id: Some(5),
            ..joiner()
        };
        assert!(record(&status, &members, &told, ClusterConfig::default()).is_err());
        let right = Joiner {
            id: Some(4),
            ..joiner()
        };
        let r = record(&status, &members, &right, ClusterConfig::default()).unwrap();
        assert_eq!(r.member_id, 4);
    }

    #[test]
    fn a_joiner_nobody_added_is_told_to_add_it_first() {
        let (status, members) = answers();
        let stranger = Joiner {
            peer_addr: "127.0.0.1:9999".into(),
            ..joiner()
        };
        let e = record(&status, &members, &stranger, ClusterConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("member add"), "{e}");
    }
}
