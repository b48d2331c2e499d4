//! The Prometheus metrics every layer records into, served at `/metrics` by the HTTP API.
//! One registry per node; families are created up front so recording is lock-free counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// "http" or "grpc".
    pub api: String,
    /// "range", "put", "delete", "txn", "cas", "status", …
    pub op: String,
    /// "ok" or an error code.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// One consensus group of a partitioned cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

/// The gauges of one group (see [`Metrics::group_gauges`]).
#[derive(Clone)]
pub struct GroupGauges {
    is_leader: Gauge,
    applied_index: Gauge,
    revision: Gauge,
    keys: Gauge,
}

impl GroupGauges {
    /// Sets them from the group's status as member `me` sees it.
    pub fn observe(&self, me: synod_core::NodeId, g: &synod_core::GroupStatus) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.is_leader.set(i64::from(g.leader == Some(me)));
        self.applied_index.set(gauge(g.applied_index));
        self.revision.set(gauge(g.revision));
        self.keys.set(gauge(g.keys));
    }
}

pub struct Metrics {
    registry: Registry,
    /// Client requests handed to the engine.
    pub proposals: Counter,
    /// Log entries (or registers) decided.
    pub decisions: Counter,
    /// Times this node saw the leader change.
    pub leader_changes: Counter,
    /// 1 while this node is the leader.
    pub is_leader: Gauge,
    /// Commands this member led that committed on the fast / slow path (EPaxos).
    pub fast_path_commits: Gauge,
    pub slow_path_commits: Gauge,
    /// Request latency at the API edge, seconds.
    pub request_seconds: Family<RequestLabels, Histogram>,
    /// 1 while the connection to a peer is up.
    pub peer_connected: Family<PeerLabels, Gauge>,
    /// Peer messages dropped because a send queue was full.
    pub peer_dropped_messages: Family<PeerLabels, Counter>,
    /// fsync calls and records written by the WAL (group-commit effect = records / fsyncs).
    pub wal_fsyncs: Counter,
    pub wal_records: Counter,
    /// 1 while this member's NOSPACE alarm is raised (see `alarm`).
    pub alarm_nospace: Gauge,
    /// Decided but not yet applied: a member falling behind its own log (slow apply).
    pub apply_lag_entries: Gauge,
    /// What `Maintenance.Status` reports as dbSize: WAL segments plus the snapshot.
    pub db_size_bytes: Gauge,
    /// What `Maintenance.Status` reports as dbSizeInUse (see `NodeStatus`).
    pub db_size_in_use_bytes: Gauge,
    /// The newest checkpoint's size: what a new member's state transfer costs.
    pub snapshot_bytes: Gauge,
    pub keys: Gauge,
    /// Receivers of the watch hub's head (one per watch stream waiting for revisions).
    pub watch_streams: Gauge,
    /// Live leases in this member's state machine.
    pub leases: Gauge,
    /// Partitioned mode, per group: 1 while this member leads it, its applied index, its
    /// revision and its keys.
    pub group_is_leader: Family<GroupLabels, Gauge>,
    pub group_applied_index: Family<GroupLabels, Gauge>,
    pub group_revision: Family<GroupLabels, Gauge>,
    pub group_keys: Family<GroupLabels, Gauge>,
    /// Partitioned mode: groups this member should host and could not start (a bug).
    pub groups_failed: Gauge,
    /// How late the engine thread ran each tick (behind a batch or an fsync), seconds.
    pub engine_tick_delay_seconds: Histogram,
    /// Time the engine thread spent making one batch durable (WAL write + fsync), seconds.
    pub engine_persist_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("synod");
        let proposals = Counter::default();
        let decisions = Counter::default();
        let leader_changes = Counter::default();
        let is_leader = Gauge::default();
        let fast_path_commits = Gauge::default();
        let slow_path_commits = Gauge::default();
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        let peer_connected = Family::<PeerLabels, Gauge>::default();
        let peer_dropped_messages = Family::<PeerLabels, Counter>::default();
        let wal_fsyncs = Counter::default();
        let wal_records = Counter::default();
        let alarm_nospace = Gauge::default();
        let apply_lag_entries = Gauge::default();
        let db_size_bytes = Gauge::default();
        let db_size_in_use_bytes = Gauge::default();
        let snapshot_bytes = Gauge::default();
        let keys = Gauge::default();
        let watch_streams = Gauge::default();
        let leases = Gauge::default();
        let groups_failed = Gauge::default();
        let group_is_leader = Family::<GroupLabels, Gauge>::default();
        let group_applied_index = Family::<GroupLabels, Gauge>::default();
        let group_revision = Family::<GroupLabels, Gauge>::default();
        let group_keys = Family::<GroupLabels, Gauge>::default();
        for (name, help, family) in [
            (
                "group_is_leader",
                "1 while this member leads the group (partitioned mode)",
                &group_is_leader,
            ),
            (
                "group_applied_index",
                "The group's applied log index on this member (partitioned mode)",
                &group_applied_index,
            ),
            (
                "group_revision",
                "The group's own revision on this member (partitioned mode)",
                &group_revision,
            ),
            (
                "group_keys",
                "Keys in the group's store on this member (partitioned mode)",
                &group_keys,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        // 0.1 ms to ≈ 3.3 s: from a healthy fsync to a stall longer than any election timeout.
        let engine_tick_delay_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let engine_persist_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "engine_tick_delay_seconds",
            "How late the engine thread ran each tick",
            engine_tick_delay_seconds.clone(),
        );
        registry.register(
            "engine_persist_seconds",
            "WAL write and fsync time per engine batch",
            engine_persist_seconds.clone(),
        );
        registry.register(
            "proposals",
            "Client requests handed to the engine",
            proposals.clone(),
        );
        registry.register("decisions", "Entries decided", decisions.clone());
        registry.register(
            "groups_failed",
            "Groups this member should host and could not start (partitioned mode; a bug)",
            groups_failed.clone(),
        );
        registry.register(
            "leader_changes",
            "Leader changes seen by this node",
            leader_changes.clone(),
        );
        registry.register(
            "is_leader",
            "1 while this node is the leader",
            is_leader.clone(),
        );
        registry.register(
            "fast_path_commits",
            "Commands this member led that committed on the fast path (EPaxos)",
            fast_path_commits.clone(),
        );
        registry.register(
            "slow_path_commits",
            "Commands this member led that needed the slow path (EPaxos)",
            slow_path_commits.clone(),
        );
        registry.register(
            "request_seconds",
            "Client request latency at the API edge",
            request_seconds.clone(),
        );
        registry.register(
            "peer_connected",
            "1 while the peer connection is up",
            peer_connected.clone(),
        );
        registry.register(
            "peer_dropped_messages",
            "Messages dropped on a full peer queue",
            peer_dropped_messages.clone(),
        );
        registry.register(
            "wal_fsyncs",
            "fsync calls by the write-ahead log",
            wal_fsyncs.clone(),
        );
        registry.register(
            "wal_records",
            "Records appended to the write-ahead log",
            wal_records.clone(),
        );
        registry.register(
            "alarm_nospace",
            "1 while this member refuses writes for lack of disk space (NOSPACE alarm)",
            alarm_nospace.clone(),
        );
        registry.register(
            "apply_lag_entries",
            "Entries decided but not yet applied on this member",
            apply_lag_entries.clone(),
        );
        registry.register(
            "db_size_bytes",
            "Bytes of the write-ahead log and snapshot this member recovers from",
            db_size_bytes.clone(),
        );
        registry.register(
            "db_size_in_use_bytes",
            "Bytes of live data and retained history: what a defragment would leave",
            db_size_in_use_bytes.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Size of the newest checkpoint (snapshot file)",
            snapshot_bytes.clone(),
        );
        registry.register("keys", "Keys in the store", keys.clone());
        registry.register(
            "watch_streams",
            "Watchers waiting on this member's applied revisions",
            watch_streams.clone(),
        );
        registry.register(
            "leases",
            "Live leases in this member's state machine",
            leases.clone(),
        );
        Metrics {
            registry,
            apply_lag_entries,
            db_size_bytes,
            db_size_in_use_bytes,
            snapshot_bytes,
            keys,
            watch_streams,
            leases,
            group_is_leader,
            group_applied_index,
            group_revision,
            group_keys,
            groups_failed,
            proposals,
            decisions,
            leader_changes,
            is_leader,
            fast_path_commits,
            slow_path_commits,
            request_seconds,
            peer_connected,
            peer_dropped_messages,
            wal_fsyncs,
            wal_records,
            alarm_nospace,
            engine_tick_delay_seconds,
            engine_persist_seconds,
        }
    }

    /// Group `group`'s gauges, looked up once: the engine thread keeps them and sets them
    /// after every batch without a label lookup.
    pub fn group_gauges(&self, group: u64) -> GroupGauges {
        let l = GroupLabels {
            group: synod_partition::layout::group_name(group),
        };
        GroupGauges {
            is_leader: self.group_is_leader.get_or_create(&l).clone(),
            applied_index: self.group_applied_index.get_or_create(&l).clone(),
            revision: self.group_revision.get_or_create(&l).clone(),
            keys: self.group_keys.get_or_create(&l).clone(),
        }
    }

    /// Removes group `group`'s series (it was merged away).
    pub fn drop_group_gauges(&self, group: u64) {
        let l = GroupLabels {
            group: synod_partition::layout::group_name(group),
        };
        self.group_is_leader.remove(&l);
        self.group_applied_index.remove(&l);
        self.group_revision.remove(&l);
        self.group_keys.remove(&l);
    }

    /// Observes one API request.
    /// The histogram [`Metrics::observe_request`] would use, to keep for a hot path (it shares
    /// its buckets with the registered one).
    pub fn request_histogram(&self, api: &str, op: &str, outcome: &str) -> Histogram {
        self.request_seconds
            .get_or_create(&RequestLabels {
                api: api.into(),
                op: op.into(),
                outcome: outcome.into(),
            })
            .clone()
    }

    pub fn observe_request(&self, api: &str, op: &str, outcome: &str, seconds: f64) {
        self.request_seconds
            .get_or_create(&RequestLabels {
                api: api.into(),
                op: op.into(),
                outcome: outcome.into(),
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition format, with the standard `process_*` metrics first.
    pub fn encode(&self) -> String {
        let mut out = crate::process_metrics::encode();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# encoding metrics failed: {e}\n");
        }
        out
    }
}
