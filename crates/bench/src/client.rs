//! Connections: endpoint normalisation, gRPC channels, and finding the leader through
//! Maintenance.Status (the member whose `header.member_id` equals the `leader` it reports),
//! which works the same against etcd and Synod.

use anyhow::Context as _;
use std::time::Duration;
use synod_etcd::pb::etcdserverpb::StatusRequest;
use synod_etcd::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

/// How long establishing one connection may take before the run gives up on that endpoint.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// `host:port` → `http://host:port`; an explicit scheme is kept.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

fn endpoint(uri: &str, request_timeout: Duration) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(uri.to_string())
        .with_context(|| format!("bad endpoint `{uri}`"))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(request_timeout)
        // Small request/reply pairs: Nagle would hold requests back by a delayed-ACK period.
        .tcp_nodelay(true))
}

/// Opens `connections` channels, each its own TCP connection, spread round-robin over `uris`.
pub async fn connect_channels(
    uris: &[String],
    connections: usize,
    request_timeout: Duration,
) -> anyhow::Result<Vec<Channel>> {
    assert!(
        !uris.is_empty(),
        "callers validate that there is an endpoint"
    );
    let mut channels = Vec::with_capacity(connections);
    for i in 0..connections {
        let uri = &uris[i % uris.len()];
        let channel = endpoint(uri, request_timeout)?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {uri}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// What one endpoint said about itself.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub uri: String,
    pub member_id: u64,
    pub leader: u64,
}

/// Maintenance.Status of one endpoint.
pub async fn status(uri: &str, request_timeout: Duration) -> anyhow::Result<MemberStatus> {
    let channel = endpoint(uri, request_timeout)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {uri}"))?;
    let resp = MaintenanceClient::new(channel)
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
pub async fn find_leader(uris: &[String], request_timeout: Duration) -> anyhow::Result<String> {
    let mut seen = Vec::with_capacity(uris.len());
    for uri in uris {
        match status(uri, request_timeout).await {
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
