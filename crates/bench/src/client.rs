//! Clients: endpoint normalisation, the connections of a run, the KV client over one, and
//! finding the leader through Maintenance.Status (the member whose `header.member_id` equals
//! the `leader` it reports), which works the same against etcd and Synod.

use crate::conn::{self, Connection};
use anyhow::Context as _;
use std::time::Duration;
use synod_etcd::pb::etcdserverpb::StatusRequest;
use synod_etcd::pb::etcdserverpb::kv_client::KvClient;
use synod_etcd::pb::etcdserverpb::maintenance_client::MaintenanceClient;

/// The KV client the workers drive.
pub type Kv = KvClient<Connection>;

/// A KV client over (a clone of) `conn`.
pub fn kv(conn: &Connection) -> Kv {
    KvClient::with_origin(conn.clone(), conn.origin().clone())
}

/// `host:port` → `https://host:port` when `tls`, else [`normalize_endpoint`]'s.
pub fn normalize_endpoint_as(endpoint: &str, tls: bool) -> String {
    let e = endpoint.trim();
    if tls && !e.contains("://") {
        format!("https://{e}")
    } else {
        normalize_endpoint(e)
    }
}

/// `host:port` → `http://host:port`; an explicit scheme is kept.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// Opens `connections` connections, each its own TCP connection, spread round-robin over `uris`.
pub async fn connect_all(
    uris: &[String],
    connections: usize,
    request_timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<Vec<Connection>> {
    assert!(
        !uris.is_empty(),
        "callers validate that there is an endpoint"
    );
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        conns.push(conn::connect_with(&uris[i % uris.len()], request_timeout, tls).await?);
    }
    Ok(conns)
}

/// What one endpoint said about itself.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub uri: String,
    pub member_id: u64,
    pub leader: u64,
}

/// Maintenance.Status of one endpoint.
pub async fn status(
    uri: &str,
    request_timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<MemberStatus> {
    let conn = conn::connect_with(uri, request_timeout, tls).await?;
    let resp = MaintenanceClient::with_origin(conn.clone(), conn.origin().clone())
        .status(StatusRequest {})
        .await
        .with_context(|| format!("Maintenance.Status on {uri} failed"))?
        .into_inner();
    let member_id = resp.header.map(|h| h.member_id).unwrap_or_default();
    Ok(MemberStatus {
        uri: uri.to_string(),
        member_id,
        leader: resp.leader,
    })
}

/// The endpoint that reports itself as leader; the error lists what every endpoint said.
pub async fn find_leader(
    uris: &[String],
    request_timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<String> {
    let mut seen = Vec::with_capacity(uris.len());
    for uri in uris {
        match status(uri, request_timeout, tls).await {
            Ok(s) if s.leader != 0 && s.member_id == s.leader => return Ok(s.uri),
            Ok(s) => seen.push(format!(
                "{uri}: member {:x}, leader {:x}",
                s.member_id, s.leader
            )),
            Err(e) => seen.push(format!("{uri}: {e:#}")),
        }
    }
    anyhow::bail!(
        "--target leader: no endpoint reports itself as the leader (pass the leader's endpoint \
         or use --target all): {}",
        seen.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_once() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379"),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint(" http://a:1 "), "http://a:1");
        assert_eq!(normalize_endpoint("https://a:1"), "https://a:1");
    }
}
