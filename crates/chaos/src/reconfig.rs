//! Membership change as a chaos fault (`--faults …,reconfig`): the nemesis replaces members and
//! resizes the cluster through the HTTP API (`/v1/members`, what `etcdctl member` does over
//! gRPC) while the clients and the watchers run, and the same history check judges the run.
//!
//! * **replace** — remove a member (the leader half the time), stop it, wipe its data
//!   directory, add a new member at the same addresses and start it with `--join`; on a log
//!   engine it joins as a learner and is promoted when the fault ends. The slot keeps its ports,
//!   so its clients and watchers reconnect to the newcomer.
//! * **wipe** — SIGKILL a member, wipe its data directory and restart it with the same flags:
//!   `synod server` must notice (its peers remember other data for it) and rejoin by itself
//!   under a new id (remove, add, catch up, promote itself); the nemesis waits until the
//!   configuration shows the newcomer at the slot's address as a voter.
//! * **resize** — grow by two spare slots (learners, then promoted), and shrink back when the
//!   fault ends by removing them again: 3 → 5 → 3.
//!
//! The operator never trusts one answer: each step is retried until the configuration it
//! wants is seen, because a request that timed out may still be decided (its outcome is
//! unknown, exactly as for the clients). A configuration read from any member is a decided one
//! and configurations only move forward, so "seen once" means done. CASPaxos has no learners
//! and its add completes only once the new acceptor answers, so there the add runs in the
//! background while the new member starts.

use super::Nemesis;
use crate::cluster::JoinArgs;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use synod_core::NodeId;

/// Spare slots a reconfiguration run has, for growing.
pub const SPARES: usize = 2;
/// One membership request's timeout.
const REQUEST_TIMEOUT_MS: u64 = 3_000;
/// Longest a step (remove, add, promote) is retried before the nemesis gives up with a warning.
const STEP_MS_MAX: u64 = 30_000;
/// Pause between attempts of a step.
const RETRY_MS: u64 = 300;
/// Placeholder id of spare slot `k` until a member is added there: never a real member's id
/// (ids count up from 1).
pub fn spare_id(k: usize) -> NodeId {
    u64::MAX - k as u64
}

/// One member as `/v1/members` lists it.
#[derive(Clone, Debug)]
struct Listed {
    id: NodeId,
    peer_addr: String,
    learner: bool,
}

impl Nemesis<'_> {
    /// The newest configuration any running member reports: (version, members).
    async fn configuration(&self) -> Option<(u64, Vec<Listed>)> {
        let mut best: Option<(u64, Vec<Listed>)> = None;
        for m in self
            .cluster
            .members
            .iter()
            .filter(|m| m.is_running() && !m.is_paused())
        {
            let url = format!("http://{}/v1/members", m.http_addr);
            let Some(v) = self.get_json(&url).await else {
                continue;
            };
            let version = v.get("version").and_then(Value::as_u64).unwrap_or(0);
            let members = v
                .get("members")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(listed).collect())
                .unwrap_or_default();
            if best.as_ref().is_none_or(|(b, _)| version > *b) {
                best = Some((version, members));
            }
        }
        best
    }

    async fn get_json(&self, url: &str) -> Option<Value> {
        let t = Duration::from_millis(super::STATUS_TIMEOUT_MS);
        let r = tokio::time::timeout(t, self.http.get(url).send())
            .await
            .ok()?
            .ok()?;
        tokio::time::timeout(t, r.json::<Value>()).await.ok()?.ok()
    }

    /// HTTP endpoints of the running members other than slot `not`.
    fn endpoints(&self, not: Option<usize>) -> Vec<String> {
        self.cluster
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| Some(*i) != not && m.is_running() && !m.retired)
            .map(|(_, m)| m.http_addr.clone())
            .collect()
    }

    /// Sends one membership request to a running member (round robin over `attempt`); the
    /// answer is not trusted, the configuration is (see the module doc).
    fn send(&self, attempt: usize, method: reqwest::Method, path: &str, body: Option<Value>) {
        let eps = self.endpoints(None);
        if eps.is_empty() {
            return;
        }
        let url = format!("http://{}{path}", eps[attempt % eps.len()]);
        let mut req = self
            .http
            .request(method, url)
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS));
        if let Some(b) = body {
            req = req.json(&b);
        }
        // In the background: a CASPaxos add answers only once the new member runs.
        tokio::spawn(async move {
            let _ = req.send().await;
        });
    }

    /// Retries `request` until `done` holds for the newest configuration; its result.
    async fn step<T>(
        &mut self,
        what: &str,
        mut request: impl FnMut(&Self, usize),
        done: impl Fn(&[Listed]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + Duration::from_millis(STEP_MS_MAX);
        let mut attempt = 0;
        let mut next_send = Instant::now();
        while Instant::now() < deadline {
            if let Some((_, members)) = self.configuration().await
                && let Some(t) = done(&members)
            {
                return Some(t);
            }
            if Instant::now() >= next_send {
                request(self, attempt);
                attempt += 1;
                next_send = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
            }
            self.reap();
            tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
        }
        self.log.warnings.push(format!(
            "reconfig: {what} not done within {} s",
            STEP_MS_MAX / 1000
        ));
        None
    }

    async fn remove_member(&mut self, id: NodeId) -> bool {
        let path = format!("/v1/members/{id}");
        self.step(
            &format!("remove n{id}"),
            |s, a| s.send(a, reqwest::Method::DELETE, &path, None),
            |ms| (!ms.iter().any(|m| m.id == id)).then_some(()),
        )
        .await
        .is_some()
    }

    /// Adds the member of slot `i` (a learner on a log engine), renames the slot to its new id
    /// and starts it with `--join`. The new id, or None with a warning.
    async fn add_member(&mut self, i: usize) -> Option<NodeId> {
        let slot = &self.cluster.members[i];
        let old = slot.id;
        let peer_addr = self.proxy.listen_addr(old)?.to_string();
        let learner = self.engine != "caspaxos";
        let body = json!({
            "peer_addr": peer_addr, "http_addr": slot.http_addr,
            "grpc_addr": self.grpc_addrs[i], "learner": learner,
        });
        let at = peer_addr.clone();
        let id = self
            .step(
                &format!("add a member at {peer_addr}"),
                |s, a| s.send(a, reqwest::Method::POST, "/v1/members", Some(body.clone())),
                |ms| ms.iter().find(|m| m.peer_addr == at).map(|m| m.id),
            )
            .await?;
        let join = JoinArgs {
            endpoints: self.endpoints(Some(i)),
            peer_addr,
            grpc_addr: self.grpc_addrs[i].clone(),
        };
        self.cluster.kill(i);
        if let Err(e) = self.cluster.assign(i, id, join) {
            self.log
                .warnings
                .push(format!("reconfig: cannot wipe slot {i}: {e}"));
            self.cluster.retire(i);
            return None;
        }
        self.proxy.rename(old, id);
        self.ids.retain(|&n| n != old);
        self.ids.push(id);
        self.ids.sort_unstable();
        if let Err(e) = self.cluster.start(i, self.clock.now_us()) {
            self.log
                .warnings
                .push(format!("reconfig: cannot start n{id}: {e}"));
        }
        Some(id)
    }

    /// Promotes learner `id` once it has caught up (the cluster refuses it until then).
    pub(crate) async fn promote_member(&mut self, id: NodeId) -> bool {
        let path = format!("/v1/members/{id}/promote");
        self.step(
            &format!("promote n{id}"),
            |s, a| s.send(a, reqwest::Method::POST, &path, None),
            |ms| ms.iter().any(|m| m.id == id && !m.learner).then_some(()),
        )
        .await
        .is_some()
    }

    /// Replace: remove `n`, wipe its slot, add a newcomer there. (description, learner to
    /// promote when the fault ends).
    pub(crate) async fn replace(&mut self, n: NodeId, role: &str) -> (String, Option<NodeId>) {
        let Some(i) = self.cluster.index_of(n) else {
            return (format!("replace n{n}: no such member"), None);
        };
        if !self.remove_member(n).await {
            return (
                format!("replace n{n}{role}: the removal did not complete"),
                None,
            );
        }
        self.cluster.kill(i);
        match self.add_member(i).await {
            Some(m) => {
                let learner = (self.engine != "caspaxos").then_some(m);
                (format!("replace n{n}{role} by n{m}"), learner)
            }
            None => {
                self.cluster.retire(i);
                self.ids.retain(|&x| x != n);
                (
                    format!("replace n{n}{role}: removed, the add did not complete"),
                    None,
                )
            }
        }
    }

    /// Wipe: kill `n`, wipe its data directory, restart it as it was; it rejoins by itself.
    pub(crate) async fn wipe(&mut self, n: NodeId, role: &str) -> String {
        let Some(i) = self.cluster.index_of(n) else {
            return format!("wipe n{n}: no such member");
        };
        let Some(peer_addr) = self.proxy.listen_addr(n).map(|a| a.to_string()) else {
            return format!("wipe n{n}: no route");
        };
        self.cluster.kill(i);
        if let Err(e) = self.cluster.wipe(i) {
            self.log
                .warnings
                .push(format!("reconfig: cannot wipe n{n}: {e}"));
        }
        self.restart(i);
        // Nothing to send: the member does it; the steps only wait for the result. The proxy
        // must route the newcomer's id as soon as it exists, or its links stay refused.
        let at = peer_addr.clone();
        let added = self
            .step(
                &format!("the wiped n{n} to re-add itself"),
                |_, _| {},
                |ms| {
                    ms.iter()
                        .find(|m| m.peer_addr == at && m.id != n)
                        .map(|m| m.id)
                },
            )
            .await;
        let Some(new) = added else {
            return format!("wipe n{n}{role}: it did not rejoin");
        };
        // From now on the slot starts as what it is, a member added at run time: should the
        // rejoin stop before the member records its new id (or the disk go again), `--join`
        // finds the id at this peer address. The bootstrap `--id` is no member any more.
        self.cluster.members[i].id = new;
        self.cluster.members[i].join = Some(JoinArgs {
            endpoints: self.endpoints(Some(i)),
            peer_addr: peer_addr.clone(),
            grpc_addr: self.grpc_addrs[i].clone(),
        });
        self.proxy.rename(n, new);
        self.ids.retain(|&x| x != n);
        self.ids.push(new);
        self.ids.sort_unstable();
        let promoted = self
            .step(
                &format!("n{new} (the wiped n{n}) to promote itself"),
                |_, _| {},
                |ms| ms.iter().any(|m| m.id == new && !m.learner).then_some(()),
            )
            .await;
        if promoted.is_none() {
            return format!("wipe n{n}{role}: rejoined as n{new}, not promoted");
        }
        format!("wipe n{n}{role}: rejoined by itself as n{new}")
    }

    /// Resize: add a member in each of up to [`SPARES`] free slots (learners are promoted at
    /// once). The added ids.
    pub(crate) async fn grow(&mut self) -> (String, Vec<NodeId>) {
        let free: Vec<usize> = (0..self.cluster.members.len())
            .filter(|&i| self.cluster.members[i].retired)
            .take(SPARES)
            .collect();
        let mut added = Vec::new();
        for i in free {
            let Some(id) = self.add_member(i).await else {
                break;
            };
            added.push(id);
            if self.engine != "caspaxos" {
                self.promote_member(id).await;
            }
        }
        let list: Vec<String> = added.iter().map(|n| format!("n{n}")).collect();
        (
            format!("resize: grow by {}, then shrink back", list.join(" ")),
            added,
        )
    }

    /// Resize's second half: remove the members `grow` added; their slots become free again
    /// (retired, keeping the removed id until the next add renames them).
    pub(crate) async fn shrink(&mut self, added: &[NodeId]) {
        for &id in added {
            if !self.remove_member(id).await {
                continue;
            }
            if let Some(i) = self.cluster.index_of(id) {
                self.cluster.retire(i);
            }
            self.ids.retain(|&n| n != id);
        }
    }
}

fn listed(v: &Value) -> Option<Listed> {
    Some(Listed {
        id: v.get("id")?.as_u64()?,
        peer_addr: v.get("peer_addr")?.as_str()?.to_string(),
        learner: v.get("learner").and_then(Value::as_bool).unwrap_or(false),
    })
}
