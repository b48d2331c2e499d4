//! What the coordination examples share: finding the leader among etcd v3 endpoints (Synod's
//! or etcd's) by Maintenance.Status, and latency histograms that merge.

use anyhow::Context as _;
use synod_etcd::pb::etcdserverpb::StatusRequest;
use synod_etcd::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

/// The endpoint whose member leads, by Maintenance.Status (the first one if none says so).
pub async fn leader(endpoints: &[String]) -> anyhow::Result<String> {
    for e in endpoints {
        let ch = Channel::from_shared(e.clone())?.connect().await?;
        let st = MaintenanceClient::new(ch)
            .status(StatusRequest {})
            .await?
            .into_inner();
        if st.header.is_some_and(|h| h.member_id == st.leader) {
            return Ok(e.clone());
        }
    }
    endpoints.first().cloned().context("no endpoints")
}

/// A latency histogram in microseconds, 1 µs to 10 min at 3 significant digits. Fixed bounds:
/// merging auto-resizing histograms lost the merged counts' scale (p50 read as 0).
pub fn histogram() -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    Ok(hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)?)
}
