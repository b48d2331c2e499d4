//! Client-side helpers for Synod's own tools that speak etcd gRPC (`synodctl lock` / `elect`,
//! the chaos lock clients): one copy of the lease keep-alive loop.

use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// Pause before reopening a keep-alive stream that failed.
const KEEPALIVE_RETRY_MS: u64 = 100;

/// Keeps `lease` alive — one keep-alive every third of its TTL, etcd's client cadence — until
/// the lease is gone (a keep-alive answered with TTL ≤ 0, or NOT_FOUND), then returns. A
/// broken stream (member paused, restarted, unreachable) is reopened after a short pause; an
/// answer that does not come within `rpc_timeout` counts as a broken stream. Abort the task
/// running it to stop early.
pub async fn keep_alive(channel: Channel, lease: i64, ttl_secs: i64, rpc_timeout: Duration) {
    let every = Duration::from_millis(u64::try_from(ttl_secs.max(1)).unwrap_or(1) * 1000 / 3);
    loop {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(pb::LeaseKeepAliveRequest { id: lease });
        let mut client = LeaseClient::new(channel.clone());
        let call = client.lease_keep_alive(ReceiverStream::new(rx));
        match tokio::time::timeout(rpc_timeout, call).await {
            Ok(Ok(resp)) => {
                let mut answers = resp.into_inner();
                loop {
                    match tokio::time::timeout(rpc_timeout, answers.message()).await {
                        Ok(Ok(Some(a))) if a.ttl <= 0 => return,
                        Ok(Ok(Some(_))) => {}
                        Ok(Err(s)) if s.code() == Code::NotFound => return,
                        _ => break,
                    }
                    tokio::time::sleep(every).await;
                    if tx
                        .send(pb::LeaseKeepAliveRequest { id: lease })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            Ok(Err(s)) if s.code() == Code::NotFound => return,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(KEEPALIVE_RETRY_MS)).await;
    }
}
