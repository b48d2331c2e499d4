//! Node and cluster configuration.
//!
//! One TOML file describes a new cluster and is shared verbatim by its first members (like the
//! vstamp seed's member list): cluster name, members and their addresses, the engine, timing,
//! limits, storage settings. The `[[members]]` list only bootstraps: it becomes the engine's
//! first configuration (`EngineConfig::initial_members`), which then changes as replicated
//! state, and a restarted node takes its peers from the configuration it recovered. What differs per node — which member it is and where its data
//! lives — is in [`NodeConfig`], filled from flags or `SYNOD_*` environment variables by the
//! binary. Every field has a default, so a file needs only `cluster_name` and `[[members]]`.
//! Unknown fields are refused: a typo must not silently fall back to a default.

use crate::handle::{ApiLimits, MemberInfo};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use synod_core::{EngineConfig, NodeId};

/// Why a configuration was refused. Messages name the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// One cluster member as written in the shared file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Chosen by the operator; 1..=u32::MAX (the runtime packs it into client ids).
    pub id: NodeId,
    pub name: String,
    /// host:port other members dial for the peer protocol.
    pub peer_addr: String,
    /// host:port of the HTTP/JSON API.
    pub http_addr: String,
    /// host:port of the etcd v3 gRPC API.
    pub grpc_addr: String,
}

impl MemberConfig {
    pub fn info(&self) -> MemberInfo {
        MemberInfo::of(&self.member())
    }

    /// This entry as a member of the replicated configuration (file members are voters).
    pub fn member(&self) -> synod_core::membership::Member {
        synod_core::membership::Member {
            id: self.id,
            name: self.name.clone(),
            peer_addr: self.peer_addr.clone(),
            http_addr: self.http_addr.clone(),
            grpc_addr: self.grpc_addr.clone(),
            learner: false,
        }
    }
}

/// Request limits at the API edge; mirrors [`ApiLimits`] with per-field defaults so a file may
/// set only the ones it changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub request_bytes_max: usize,
    pub txn_ops_max: usize,
    pub request_timeout_ms: u64,
    pub watch_progress_notify_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = ApiLimits::default();
        LimitsConfig {
            key_bytes_max: d.key_bytes_max,
            value_bytes_max: d.value_bytes_max,
            request_bytes_max: d.request_bytes_max,
            txn_ops_max: d.txn_ops_max,
            request_timeout_ms: d.request_timeout_ms,
            watch_progress_notify_ms: d.watch_progress_notify_ms,
        }
    }
}

impl LimitsConfig {
    pub fn api_limits(&self) -> ApiLimits {
        ApiLimits {
            key_bytes_max: self.key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            request_bytes_max: self.request_bytes_max,
            txn_ops_max: self.txn_ops_max,
            request_timeout_ms: self.request_timeout_ms,
            watch_progress_notify_ms: self.watch_progress_notify_ms,
        }
    }
}

/// Peer transport bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest frame accepted or sent; a bigger length prefix closes the connection. Must hold
    /// the largest engine message (a batch of max-size values).
    pub frame_bytes_max: u32,
    /// Messages queued per peer; beyond it messages to that peer are dropped (and counted).
    pub peer_queue_messages_max: usize,
    /// Most frames one write of a peer's backlog takes (capped at 64 by the transport).
    pub write_batch_frames_max: usize,
    /// First reconnect delay; doubles per failure up to `reconnect_backoff_ms_max`.
    pub reconnect_backoff_ms_min: u64,
    pub reconnect_backoff_ms_max: u64,
    /// A dialed or accepted connection must finish the handshake within this.
    pub handshake_timeout_ms: u64,
    /// Inbound peer connections served at once; more are closed on accept (connection floods).
    pub inbound_connections_max: usize,
    /// Peer TLS, copied from the file's `[tls]` section by
    /// [`ClusterConfig::effective_transport`] (so `[transport]` has no second place for it).
    #[serde(skip)]
    pub tls: crate::tls::TlsFiles,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            frame_bytes_max: 64 * 1024 * 1024,
            peer_queue_messages_max: 4096,
            write_batch_frames_max: 256,
            reconnect_backoff_ms_min: 20,
            reconnect_backoff_ms_max: 2_000,
            handshake_timeout_ms: 2_000,
            inbound_connections_max: 64,
            tls: crate::tls::TlsFiles::default(),
        }
    }
}

/// Write-ahead log and snapshot settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// fsync every batch before anything depending on it leaves. `false` is UNSAFE (an
    /// acknowledged write can be lost on power failure) and logs a warning at start.
    pub fsync: bool,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes_max: u64,
    /// Largest single durable record.
    pub record_bytes_max: u32,
    /// Zero-filled space kept ahead of the write-ahead log's end, so that an fsync flushes
    /// data only (no file-size or extent metadata); 0 = grow the file with each batch.
    pub preallocate_bytes: u64,
    /// Engines take a checkpoint (snapshot record, log compaction) after this many applied
    /// entries; 0 = never.
    pub snapshot_entries: u64,
    /// Free space (bytes) the data directory's filesystem must keep: below it the member raises
    /// its NOSPACE alarm and refuses writes until space is back (see the `alarm` module);
    /// 0 = no watermark (the alarm then rises only when a WAL write actually fails).
    pub reserve_bytes: u64,
    /// etcd's `--quota-backend-bytes`: once the member's database (WAL + newest snapshot, what
    /// Status reports as dbSize) grows past this, it raises NOSPACE and refuses writes that
    /// grow the store until an operator compacts, defragments (a checkpoint that drops the log
    /// before it) and disarms the alarm; 0 = no quota.
    pub quota_backend_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: true,
            segment_bytes_max: 64 * 1024 * 1024,
            record_bytes_max: 256 * 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
            snapshot_entries: 100_000,
            reserve_bytes: 64 * 1024 * 1024,
            quota_backend_bytes: 0,
        }
    }
}

/// The engine task's bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Inputs (submissions, peer messages) handled before one `ready()` and one fsync.
    pub inputs_per_batch_max: usize,
    /// Submissions queued from the APIs to the engine task.
    pub submit_queue_max: usize,
    /// Decoded peer messages queued to the engine task (back-pressure onto peer sockets).
    pub inbox_messages_max: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            inputs_per_batch_max: 1024,
            submit_queue_max: 4096,
            inbox_messages_max: 8192,
        }
    }
}

/// Default election timeout of a cluster file: 1 s at the default 10 ms tick, etcd's default.
pub const SERVER_ELECTION_TIMEOUT_TICKS: u64 = 100;

/// Election timeout of [`ClusterConfig::local`] (`synod dev`, tests, chaos): 100 ms, so that
/// failover on one machine is quick to watch and to test.
pub const LOCAL_ELECTION_TIMEOUT_TICKS: u64 = 10;

/// The file every member shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names the cluster; its hash is the cluster id peers check in the handshake.
    pub cluster_name: String,
    /// One of [`ENGINE_NAMES`]: "omnipaxos", "vr", "caspaxos" or "epaxos".
    pub engine: String,
    /// Wall-clock length of one engine tick.
    pub tick_ms: u64,
    /// Leader-failure detection. The default (1 s at 10 ms ticks, etcd's) suits real networks
    /// and busy disks: a leader stalled behind a slow fsync for less than this keeps leading.
    /// `synod dev` and the test clusters use [`LOCAL_ELECTION_TIMEOUT_TICKS`].
    pub election_timeout_ticks: u64,
    pub heartbeat_ticks: u64,
    pub request_timeout_ticks: u64,
    pub batch_entries_max: usize,
    pub pending_requests_max: usize,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub transport: TransportConfig,
    pub runtime: RuntimeConfig,
    pub history: HistoryConfig,
    pub tls: TlsConfig,
    /// How often this member compares its HashKV with its peers' and raises CORRUPT on a
    /// mismatch (etcd's `--experimental-corrupt-check-time`); 0 = never (etcd's default).
    /// See `synod_node::backup` and docs/backup.md.
    pub corrupt_check_ms: u64,
    /// Partitioned mode: the keyspace split into ranges, one consensus group each. See
    /// [`PartitionConfig`] and docs/partitioning.md.
    pub partition: PartitionConfig,
    pub members: Vec<MemberConfig>,
}

/// The `[partition]` section: where the keyspace is split into groups at first boot. Every
/// member must have the same (the split keys are part of the cluster id, so members with
/// others refuse each other). Ranges split at run time (`synodctl range split`, or
/// automatically past `auto_split_keys` or `auto_split_writes`) are recorded in the log; the
/// configured split keys stay as they were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartitionConfig {
    /// Ascending, distinct, non-empty keys: group 0 holds the keys below the first, group
    /// `i` the keys from the `i`-th on. Empty: one group (the ordinary, unpartitioned store).
    pub split_keys: Vec<String>,
    /// A group whose store holds more keys than this is split at its middle key by its
    /// leader (0: never; at most 64 groups in all).
    pub auto_split_keys: u64,
    /// A group applying more writes per second than this for 5 s is split by its leader
    /// where its recent writes divide in half (0: never).
    pub auto_split_writes: u64,
    /// A group whose leader confirms more linearizable reads per second than this for 5 s
    /// is split by that leader where the reads it served itself divide in half (0: never).
    pub auto_split_reads: u64,
    /// A range split off automatically merges back into the range below after 30 s without
    /// a layout change once the two hold fewer keys than this together (and take less than
    /// half of `auto_split_writes` and of `auto_split_reads`). At most half of
    /// `auto_split_keys` (0: never).
    pub auto_merge_keys: u64,
    /// Threads a member works on its groups' batches with, its engine thread included
    /// (0: half the machine's cores, 1 to [`ENGINE_THREADS_AUTO_MAX`]: the API threads and
    /// the WAL need the others). Members that share one machine should share its cores out
    /// (`ClusterConfig::local`, hence `synod dev`, does). Each member may have its own.
    pub engine_threads: usize,
    /// Keep a range directory: a group of its own on every member that records which group
    /// owns which range (`synodctl range list` shows it). Set at the cluster's first boot,
    /// the same on every member (it is part of the cluster id). See docs/partitioning.md.
    pub directory: bool,
    /// Members each group after the first is placed on (0: every group on every member). At
    /// least 3 and below the members, with `directory` on: the groups spread over the
    /// members evenly, the first group and the directory's stay on every member. Splits, merges, membership changes,
    /// leases and requests over groups not all on the member asked are refused while it is
    /// set (docs/partitioning.md, "Placement"). Part of the cluster id.
    pub replicas: usize,
    /// With `replicas` set: the leader of a placed group moves it off a member hosting two
    /// groups more than another voter, so a new member gets ranges and groups that piled on
    /// one member spread out (on by default; docs/partitioning.md, "Rebalancing"). A group's
    /// leader's setting decides for its group.
    pub rebalance: bool,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            split_keys: Vec::new(),
            auto_split_keys: 0,
            auto_split_writes: 0,
            auto_split_reads: 0,
            auto_merge_keys: 0,
            engine_threads: 0,
            directory: false,
            replicas: 0,
            rebalance: true,
        }
    }
}

/// The most engine threads a member takes by itself (`engine_threads = 0`).
pub const ENGINE_THREADS_AUTO_MAX: usize = 8;

impl PartitionConfig {
    /// `engine_threads`, with 0 resolved to half this machine's cores (1 to
    /// [`ENGINE_THREADS_AUTO_MAX`]). On 2 cores that is the engine thread alone: a pool of
    /// two measured no reliable gain there (README, "Engine threads").
    pub fn engine_threads(&self) -> usize {
        match self.engine_threads {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2)
                .clamp(1, ENGINE_THREADS_AUTO_MAX),
            n => n,
        }
    }

    /// `groups` groups over keys that start with a printable ASCII character: the first byte's
    /// range `!`..`~` cut into equal parts (one split key of one character each). A guess for
    /// a keyspace nobody described; name split keys that fit the data where it is known.
    pub fn even(groups: usize) -> Self {
        let (lo, span) = (0x21usize, 0x7e - 0x21 + 1);
        let groups = groups.clamp(1, span);
        let split_keys = (1..groups)
            .map(|i| char::from((lo + i * span / groups) as u8).to_string())
            .collect();
        PartitionConfig {
            split_keys,
            ..PartitionConfig::default()
        }
    }
}

/// Engines that can run partitioned (log engines on the replica layer with a leader).
pub const PARTITIONED_ENGINES: [&str; 2] = ["omnipaxos", "vr"];

/// Most groups one cluster may be split into: each group costs every member an engine
/// instance (its log, its store, its timers), all driven by the member's one engine thread.
pub const GROUPS_MAX: usize = 64;

/// How much revision history the store keeps (etcd's `--auto-compaction-mode` and
/// `--auto-compaction-retention`). History costs memory and checkpoint size per retained
/// revision (about twice the key and value of each change, see docs/watch.md), so it is
/// bounded by default; clients can still compact further themselves (`KV.Compact`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// "revision": keep the last `retention_revisions` revisions; "periodic": keep about
    /// `retention_seconds` of history; "off": keep everything until a client compacts.
    pub auto_compaction_mode: String,
    pub retention_revisions: u64,
    pub retention_seconds: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            auto_compaction_mode: "revision".into(),
            retention_revisions: 10_000,
            retention_seconds: 3600,
        }
    }
}

/// TLS for clients and peers, under etcd's flag names (`cert_file` is `--cert-file`, and so
/// on; `synod server`'s flags override these). Paths are this member's, so members sharing
/// one file need the same paths on every machine. Unset: plain TCP. See docs/security.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub peer_cert_file: Option<PathBuf>,
    pub peer_key_file: Option<PathBuf>,
    pub peer_trusted_ca_file: Option<PathBuf>,
    pub peer_client_cert_auth: bool,
    /// Refuse peer certificates whose subject CN is not this (needs `peer_client_cert_auth`).
    pub peer_cert_allowed_cn: Option<String>,
    /// A client-port connection must finish its TLS handshake within this (the peer port
    /// uses `transport.handshake_timeout_ms`).
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            client_cert_auth: false,
            peer_cert_file: None,
            peer_key_file: None,
            peer_trusted_ca_file: None,
            peer_client_cert_auth: false,
            peer_cert_allowed_cn: None,
            handshake_timeout_ms: crate::tls::TLS_HANDSHAKE_TIMEOUT_MS,
        }
    }
}

impl TlsConfig {
    /// The client APIs' files (gRPC and HTTP share them, as etcd's client port does).
    pub fn client(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            allowed_cn: None,
        }
    }

    /// The peer transport's files.
    pub fn peer(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert_file: self.peer_cert_file.clone(),
            key_file: self.peer_key_file.clone(),
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
            allowed_cn: self.peer_cert_allowed_cn.clone(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.handshake_timeout_ms == 0 {
            return Err(invalid("tls.handshake_timeout_ms", "must be positive"));
        }
        self.client()
            .check("client TLS")
            .map_err(|m| invalid("tls", m))?;
        let peer = self.peer();
        peer.check("peer TLS").map_err(|m| invalid("tls", m))?;
        if peer.enabled() && peer.trusted_ca_file.is_none() {
            // The dialing side verifies the member it reaches against this CA.
            return Err(invalid(
                "tls.peer_trusted_ca_file",
                "peer TLS needs the cluster CA",
            ));
        }
        Ok(())
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let e = EngineConfig::new(1, vec![1], 0);
        ClusterConfig {
            cluster_name: String::new(),
            engine: "omnipaxos".into(),
            tick_ms: 10,
            election_timeout_ticks: SERVER_ELECTION_TIMEOUT_TICKS,
            heartbeat_ticks: e.heartbeat_ticks,
            request_timeout_ticks: e.request_timeout_ticks,
            batch_entries_max: e.batch_entries_max,
            pending_requests_max: e.pending_requests_max,
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            transport: TransportConfig::default(),
            runtime: RuntimeConfig::default(),
            history: HistoryConfig::default(),
            tls: TlsConfig::default(),
            corrupt_check_ms: 0,
            partition: PartitionConfig::default(),
            members: Vec::new(),
        }
    }
}

/// Engines the runtime knows how to start.
pub const ENGINE_NAMES: [&str; 4] = ["omnipaxos", "vr", "caspaxos", "epaxos"];

impl ClusterConfig {
    /// Reads and validates a cluster file. Errors name the file and the offending field.
    pub fn from_file(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text (the `path` in a parse error is `<string>`).
    pub fn from_toml_str(text: &str) -> Result<ClusterConfig, ConfigError> {
        let cfg: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml_string(&self) -> String {
        // Serialising plain structs of strings and integers cannot fail.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// A cluster of `n` members on loopback for `synod dev` and tests. Member `i` (1-based)
    /// uses `base_port + 10*(i-1)` for peers, `+1` for HTTP and `+2` for gRPC.
    pub fn local(n: usize, base_port: u16) -> ClusterConfig {
        assert!(n > 0, "a cluster needs at least one member");
        let members = (1..=n as u64)
            .map(|id| {
                let p = base_port as u64 + 10 * (id - 1);
                MemberConfig {
                    id,
                    name: format!("n{id}"),
                    peer_addr: format!("127.0.0.1:{p}"),
                    http_addr: format!("127.0.0.1:{}", p + 1),
                    grpc_addr: format!("127.0.0.1:{}", p + 2),
                }
            })
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        ClusterConfig {
            cluster_name: "synod-local".into(),
            election_timeout_ticks: LOCAL_ELECTION_TIMEOUT_TICKS,
            members,
            // Every member on this machine: they share its cores rather than each take all.
            partition: PartitionConfig {
                engine_threads: (cores / n).max(1),
                ..PartitionConfig::default()
            },
            ..ClusterConfig::default()
        }
    }

    /// Stable across processes, versions and platforms: FNV-1a of the cluster name (never 0),
    /// and of the split keys (and whether it keeps a range directory) when the cluster is
    /// partitioned.
    pub fn cluster_id(&self) -> u64 {
        if self.partition.split_keys.is_empty() {
            return cluster_id_of(&self.cluster_name);
        }
        // Members that split the keys differently must not talk: a key would have two owners.
        // Nor members that disagree on the directory: its group would have no quorum.
        // Nor members that place groups differently: a group's members would disagree.
        let placed = match self.partition.replicas {
            0 => String::new(),
            r => format!("\0replicas:{r}"),
        };
        cluster_id_of(&format!(
            "{}\0split:{}{}{placed}",
            self.cluster_name,
            self.partition.split_keys.join("\0"),
            if self.partition.directory {
                "\0directory"
            } else {
                ""
            },
        ))
    }

    /// Consensus groups: one more than the split keys.
    pub fn groups(&self) -> usize {
        self.partition.split_keys.len() + 1
    }

    pub fn member(&self, id: NodeId) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn member_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids
    }

    /// The election timeout in wall-clock time.
    pub fn election_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.tick_ms.saturating_mul(self.election_timeout_ticks))
    }

    /// The transport settings a node runs with: the configured ones, with the reconnect backoff
    /// capped at one election timeout (never below its minimum). A peer that comes back must be
    /// redialed within about an election timeout, or its clients wait on our backoff long
    /// after the cluster itself recovered.
    pub fn effective_transport(&self) -> TransportConfig {
        let mut t = self.transport.clone();
        let election_ms = u64::try_from(self.election_timeout().as_millis()).unwrap_or(u64::MAX);
        t.reconnect_backoff_ms_max = t
            .reconnect_backoff_ms_max
            .min(election_ms)
            .max(t.reconnect_backoff_ms_min);
        t.tls = self.tls.peer();
        t
    }

    /// The engine configuration of member `id`.
    pub fn engine_config(&self, id: NodeId) -> EngineConfig {
        let mut e = EngineConfig::new(id, self.member_ids(), self.cluster_id() ^ id);
        e.election_timeout_ticks = self.election_timeout_ticks;
        e.heartbeat_ticks = self.heartbeat_ticks;
        e.tick_ms = self.tick_ms;
        e.request_timeout_ticks = self.request_timeout_ticks;
        e.batch_entries_max = self.batch_entries_max;
        e.pending_requests_max = self.pending_requests_max;
        e.snapshot_entries = self.storage.snapshot_entries;
        e.initial_members = self.members.iter().map(MemberConfig::member).collect();
        e.split_keys = self
            .partition
            .split_keys
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        e.auto_split_keys = self.partition.auto_split_keys;
        e.auto_split_writes = self.partition.auto_split_writes;
        e.auto_split_reads = self.partition.auto_split_reads;
        e.auto_merge_keys = self.partition.auto_merge_keys;
        e.engine_threads = self.partition.engine_threads();
        e.range_directory = self.partition.directory;
        e.partition_replicas = self.partition.replicas;
        e.partition_rebalance = self.partition.rebalance;
        e
    }

    fn validate_replicas(&self) -> Result<(), ConfigError> {
        let p = &self.partition;
        if p.replicas == 0 {
            return Ok(());
        }
        if p.replicas < 3 || p.replicas >= self.members.len() {
            return Err(invalid(
                "partition.replicas",
                format!(
                    "{} with {} members: at least 3 and fewer than the members (0: every \
                     group on every member)",
                    p.replicas,
                    self.members.len()
                ),
            ));
        }
        if !p.directory {
            return Err(invalid(
                "partition.replicas",
                "placing groups needs the range directory (partition.directory = true): it is \
                 where every member finds the groups it does not host",
            ));
        }
        if p.auto_merge_keys > 0 {
            return Err(invalid(
                "partition.replicas",
                "groups placed on some members do not merge: unset partition.auto_merge_keys \
                 (they split, on command or by the auto_split_* thresholds)",
            ));
        }
        Ok(())
    }

    fn validate_partition(&self) -> Result<(), ConfigError> {
        if self.partition.engine_threads > GROUPS_MAX {
            // A thread per group is the most a batch could use.
            return Err(invalid(
                "partition.engine_threads",
                format!("at most {GROUPS_MAX} (0: the machine's cores)"),
            ));
        }
        let splits = &self.partition.split_keys;
        if splits.is_empty() {
            if self.partition.directory {
                return Err(invalid(
                    "partition.directory",
                    "a range directory needs ranges: set partition.split_keys too",
                ));
            }
            if self.partition.replicas != 0 {
                return Err(invalid(
                    "partition.replicas",
                    "placing groups needs groups: set partition.split_keys too",
                ));
            }
            return Ok(());
        }
        if !PARTITIONED_ENGINES.contains(&self.engine.as_str()) {
            return Err(invalid(
                "partition.split_keys",
                format!(
                    "the {} engine cannot run partitioned; engines that can: {PARTITIONED_ENGINES:?}",
                    self.engine
                ),
            ));
        }
        if self.groups() > GROUPS_MAX {
            return Err(invalid(
                "partition.split_keys",
                format!("{} groups; at most {GROUPS_MAX}", self.groups()),
            ));
        }
        if splits.iter().any(String::is_empty) || splits.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "partition.split_keys",
                "split keys must be non-empty, ascending and distinct",
            ));
        }
        let p = &self.partition;
        self.validate_replicas()?;
        if p.auto_merge_keys > 0
            && p.auto_split_keys > 0
            && p.auto_merge_keys > p.auto_split_keys / 2
        {
            // Else a merged range could be over the split threshold at once: split, merge, …
            return Err(invalid(
                "partition.auto_merge_keys",
                format!(
                    "{} is more than half of auto_split_keys ({}): merged ranges would split again",
                    p.auto_merge_keys, p.auto_split_keys
                ),
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tls.validate()?;
        if self.cluster_name.trim().is_empty() {
            return Err(invalid("cluster_name", "must be set and non-empty"));
        }
        if !ENGINE_NAMES.contains(&self.engine.as_str()) {
            return Err(invalid(
                "engine",
                format!("unknown engine {:?}; known: {ENGINE_NAMES:?}", self.engine),
            ));
        }
        self.validate_partition()?;
        match self.history.auto_compaction_mode.as_str() {
            "off" => {}
            "revision" if self.history.retention_revisions > 0 => {}
            "periodic" if self.history.retention_seconds > 0 => {}
            "revision" | "periodic" => {
                return Err(invalid(
                    "history",
                    "the retention of the chosen auto_compaction_mode must be > 0",
                ));
            }
            other => {
                return Err(invalid(
                    "history.auto_compaction_mode",
                    format!("unknown mode {other:?}; known: \"revision\", \"periodic\", \"off\""),
                ));
            }
        }
        if self.members.is_empty() {
            return Err(invalid(
                "members",
                "at least one [[members]] entry is needed",
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            let field = |f: &str| format!("members[{i}].{f}");
            if m.id == 0 || m.id > u32::MAX as u64 {
                return Err(invalid(&field("id"), "must be in 1..=4294967295"));
            }
            if !ids.insert(m.id) {
                return Err(invalid(
                    &field("id"),
                    format!("duplicate member id {}", m.id),
                ));
            }
            if m.name.is_empty() || !names.insert(m.name.clone()) {
                return Err(invalid(&field("name"), "must be non-empty and unique"));
            }
            for (f, a) in [
                ("peer_addr", &m.peer_addr),
                ("http_addr", &m.http_addr),
                ("grpc_addr", &m.grpc_addr),
            ] {
                if a.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(invalid(&field(f), format!("{a:?} is not host:port")));
                }
            }
        }
        let positive = [
            ("tick_ms", self.tick_ms),
            ("election_timeout_ticks", self.election_timeout_ticks),
            ("heartbeat_ticks", self.heartbeat_ticks),
            ("request_timeout_ticks", self.request_timeout_ticks),
            ("batch_entries_max", self.batch_entries_max as u64),
            ("pending_requests_max", self.pending_requests_max as u64),
            ("storage.segment_bytes_max", self.storage.segment_bytes_max),
            (
                "storage.record_bytes_max",
                self.storage.record_bytes_max as u64,
            ),
            (
                "transport.frame_bytes_max",
                self.transport.frame_bytes_max as u64,
            ),
            (
                "transport.peer_queue_messages_max",
                self.transport.peer_queue_messages_max as u64,
            ),
            (
                "transport.write_batch_frames_max",
                self.transport.write_batch_frames_max as u64,
            ),
            (
                "transport.reconnect_backoff_ms_min",
                self.transport.reconnect_backoff_ms_min,
            ),
            (
                "transport.handshake_timeout_ms",
                self.transport.handshake_timeout_ms,
            ),
            (
                "transport.inbound_connections_max",
                self.transport.inbound_connections_max as u64,
            ),
            (
                "runtime.inputs_per_batch_max",
                self.runtime.inputs_per_batch_max as u64,
            ),
            (
                "runtime.submit_queue_max",
                self.runtime.submit_queue_max as u64,
            ),
            (
                "runtime.inbox_messages_max",
                self.runtime.inbox_messages_max as u64,
            ),
            ("limits.request_timeout_ms", self.limits.request_timeout_ms),
        ];
        for (f, v) in positive {
            if v == 0 {
                return Err(invalid(f, "must be greater than 0"));
            }
        }
        if self.heartbeat_ticks >= self.election_timeout_ticks {
            return Err(invalid(
                "heartbeat_ticks",
                format!(
                    "must be below election_timeout_ticks ({} >= {})",
                    self.heartbeat_ticks, self.election_timeout_ticks
                ),
            ));
        }
        if self.transport.reconnect_backoff_ms_max < self.transport.reconnect_backoff_ms_min {
            return Err(invalid(
                "transport.reconnect_backoff_ms_max",
                "must be at least reconnect_backoff_ms_min",
            ));
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit. Chosen because it is tiny, fixed forever and needs no dependency; the id only
/// has to tell clusters apart, not resist an adversary.
pub fn cluster_id_of(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if h == 0 { 1 } else { h }
}

/// Everything one node needs: the shared cluster file plus who this node is.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub cluster: ClusterConfig,
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Where to bind the peer listener when it differs from the advertised `peer_addr` (the
    /// chaos proxy listens on the advertised address and forwards here).
    pub peer_listen_addr: Option<String>,
    /// Test only: run a deliberately broken engine variant (see [`PlantedBug`]).
    pub planted_bug: Option<synod_core::PlantedBug>,
    /// Start even if this node's data directory is empty while its peers remember it with
    /// other data (it was wiped): the engine then starts repairing (it rebuilds its state from
    /// its peers before taking part in any vote). See the storage module doc.
    pub allow_wiped_rejoin: bool,
    /// This node was added to a running cluster (`synod server --join`): it has no state of
    /// its own, takes configuration and state from its peers, and the cluster file only says
    /// whom to contact. Its empty data directory is expected; the wiped-directory probe still
    /// runs, for a member that joined, ran and lost its directory (its peers remember it).
    pub join: bool,
}

impl NodeConfig {
    pub fn new(cluster: ClusterConfig, node_id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            cluster,
            node_id,
            data_dir: data_dir.into(),
            peer_listen_addr: None,
            planted_bug: None,
            allow_wiped_rejoin: false,
            join: false,
        }
    }

    /// Checks the cluster file and that this node is one of its members.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster.validate()?;
        if self.cluster.member(self.node_id).is_none() {
            return Err(invalid(
                "node_id",
                format!(
                    "{} is not a member of cluster {:?} (members: {:?})",
                    self.node_id,
                    self.cluster.cluster_name,
                    self.cluster.member_ids()
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must be set"));
        }
        Ok(())
    }

    pub fn me(&self) -> Option<&MemberConfig> {
        self.cluster.member(self.node_id)
    }

    /// Applies `SYNOD_*` environment variables (see [`ENV_VARS`]). The binary calls this after
    /// reading the file and before applying its flags, so flags win over the environment.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_overrides(|k| std::env::var(k).ok())
    }

    /// [`NodeConfig::apply_env`] with the lookup injected, so tests need not touch the process
    /// environment.
    pub fn apply_overrides(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, ConfigError> {
            v.trim()
                .parse()
                .map_err(|_| invalid(var, format!("{v:?} is not a valid number")))
        }
        if let Some(v) = get("SYNOD_NODE_ID") {
            self.node_id = num("SYNOD_NODE_ID", &v)?;
        }
        if let Some(v) = get("SYNOD_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("SYNOD_ENGINE") {
            self.cluster.engine = v;
        }
        if let Some(v) = get("SYNOD_TICK_MS") {
            self.cluster.tick_ms = num("SYNOD_TICK_MS", &v)?;
        }
        if let Some(v) = get("SYNOD_ELECTION_TIMEOUT_TICKS") {
            self.cluster.election_timeout_ticks = num("SYNOD_ELECTION_TIMEOUT_TICKS", &v)?;
        }
        if let Some(v) = get("SYNOD_HEARTBEAT_TICKS") {
            self.cluster.heartbeat_ticks = num("SYNOD_HEARTBEAT_TICKS", &v)?;
        }
        if let Some(v) = get("SYNOD_SNAPSHOT_ENTRIES") {
            self.cluster.storage.snapshot_entries = num("SYNOD_SNAPSHOT_ENTRIES", &v)?;
        }
        if let Some(v) = get("SYNOD_FSYNC") {
            self.cluster.storage.fsync = match v.trim() {
                "1" | "true" | "on" | "yes" => true,
                "0" | "false" | "off" | "no" => false,
                other => {
                    return Err(invalid(
                        "SYNOD_FSYNC",
                        format!("{other:?} is not a boolean (true/false)"),
                    ));
                }
            };
        }
        Ok(())
    }
}

/// The environment variables [`NodeConfig::apply_env`] reads.
pub const ENV_VARS: [&str; 8] = [
    "SYNOD_NODE_ID",
    "SYNOD_DATA_DIR",
    "SYNOD_ENGINE",
    "SYNOD_TICK_MS",
    "SYNOD_ELECTION_TIMEOUT_TICKS",
    "SYNOD_HEARTBEAT_TICKS",
    "SYNOD_SNAPSHOT_ENTRIES",
    "SYNOD_FSYNC",
];

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
cluster_name = "prod"
engine = "caspaxos"
tick_ms = 5

[storage]
fsync = false

[[members]]
id = 1
name = "a"
peer_addr = "10.0.0.1:2380"
http_addr = "10.0.0.1:8080"
grpc_addr = "10.0.0.1:2379"

[[members]]
id = 2
name = "b"
peer_addr = "10.0.0.2:2380"
http_addr = "10.0.0.2:8080"
grpc_addr = "10.0.0.2:2379"
"#;

    #[test]
    fn a_cluster_file_defaults_to_etcds_election_timeout_and_dev_to_a_short_one() {
        let c = ClusterConfig::from_toml_str(FILE).unwrap();
        assert_eq!(c.election_timeout_ticks, SERVER_ELECTION_TIMEOUT_TICKS);
        assert_eq!(
            ClusterConfig::default().election_timeout().as_millis(),
            1_000
        );
        assert_eq!(
            ClusterConfig::local(3, 7000).election_timeout().as_millis(),
            100
        );
    }

    #[test]
    fn reconnect_backoff_is_capped_at_one_election_timeout() {
        let mut c = ClusterConfig::local(3, 7000);
        assert_eq!(c.transport.reconnect_backoff_ms_max, 2_000);
        assert_eq!(c.effective_transport().reconnect_backoff_ms_max, 100);
        c.election_timeout_ticks = 1_000; // 10 s: the configured 2 s cap is the lower one.
        assert_eq!(c.effective_transport().reconnect_backoff_ms_max, 2_000);
        c.election_timeout_ticks = 1;
        c.tick_ms = 1; // 1 ms: never below the backoff's own minimum.
        let t = c.effective_transport();
        assert_eq!(t.reconnect_backoff_ms_max, t.reconnect_backoff_ms_min);
    }

    #[test]
    fn parses_a_minimal_file_with_defaults() {
        let c = ClusterConfig::from_toml_str(FILE).unwrap();
        assert_eq!(c.engine, "caspaxos");
        assert_eq!(c.tick_ms, 5);
        assert!(!c.storage.fsync);
        assert_eq!(c.storage.segment_bytes_max, 64 * 1024 * 1024);
        assert_eq!(c.member_ids(), vec![1, 2]);
        assert_eq!(c.engine_config(2).members, vec![1, 2]);
        // Round trip through our own serialisation.
        let again = ClusterConfig::from_toml_str(&c.to_toml_string()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn errors_name_the_field() {
        let typo = FILE.replace("tick_ms = 5", "tick_msec = 5");
        let e = ClusterConfig::from_toml_str(&typo).unwrap_err().to_string();
        assert!(e.contains("tick_msec"), "{e}");
        let bad_type = FILE.replace("tick_ms = 5", "tick_ms = \"fast\"");
        let e = ClusterConfig::from_toml_str(&bad_type)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tick_ms"), "{e}");
        let dup = FILE.replace("id = 2", "id = 1");
        let e = ClusterConfig::from_toml_str(&dup).unwrap_err().to_string();
        assert!(e.contains("members[1].id"), "{e}");
        let bad_addr = FILE.replace("10.0.0.2:2380", "10.0.0.2");
        let e = ClusterConfig::from_toml_str(&bad_addr)
            .unwrap_err()
            .to_string();
        assert!(e.contains("members[1].peer_addr"), "{e}");
        let engine = FILE.replace("caspaxos", "raft");
        let e = ClusterConfig::from_toml_str(&engine)
            .unwrap_err()
            .to_string();
        assert!(e.contains("engine"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster.toml");
        std::fs::write(&p, "cluster_name = [").unwrap();
        let e = ClusterConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("cluster.toml"), "{e}");
        let e = ClusterConfig::from_file(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn cluster_id_is_stable_and_distinguishes_names() {
        // Pinned: changing the hash would make upgraded nodes refuse each other.
        assert_eq!(cluster_id_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(cluster_id_of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(cluster_id_of("prod"), cluster_id_of("prod2"));
    }

    #[test]
    fn a_range_directory_needs_ranges_and_changes_the_cluster_id() {
        let mut c = ClusterConfig::local(3, 20000);
        c.partition.directory = true;
        let e = c.validate().expect_err("no ranges to direct");
        assert!(e.to_string().contains("partition.directory"), "{e}");
        c.partition = PartitionConfig::even(4);
        let without = c.cluster_id();
        c.partition.directory = true;
        c.validate().unwrap();
        assert_ne!(
            c.cluster_id(),
            without,
            "members that disagree must not talk"
        );
        assert!(c.engine_config(1).range_directory);
    }

    #[test]
    fn placement_needs_groups_the_directory_and_fewer_replicas_than_members() {
        let mut c = ClusterConfig::local(5, 20000);
        c.partition.replicas = 3;
        let e = c.validate().expect_err("no groups to place");
        assert!(e.to_string().contains("partition.replicas"), "{e}");
        c.partition = PartitionConfig::even(4);
        c.partition.replicas = 3;
        let e = c.validate().expect_err("no directory");
        assert!(e.to_string().contains("range directory"), "{e}");
        c.partition.directory = true;
        let unplaced = {
            let mut u = c.clone();
            u.partition.replicas = 0;
            u.cluster_id()
        };
        c.validate().unwrap();
        assert_ne!(
            c.cluster_id(),
            unplaced,
            "members that disagree must not talk"
        );
        assert_eq!(c.engine_config(2).partition_replicas, 3);
        assert!(
            c.engine_config(2).partition_rebalance,
            "rebalancing is on by default"
        );
        // Placed groups split by themselves, but do not merge.
        c.partition.auto_split_keys = 1000;
        c.validate().unwrap();
        c.partition.auto_merge_keys = 100;
        let e = c.validate().expect_err("placed groups do not merge");
        assert!(e.to_string().contains("auto_merge_keys"), "{e}");
        c.partition.auto_split_keys = 0;
        c.partition.auto_merge_keys = 0;
        for bad in [2, 5, 6] {
            c.partition.replicas = bad;
            let e = c.validate().expect_err("replicas out of bounds");
            assert!(e.to_string().contains("at least 3 and fewer"), "{bad}: {e}");
        }
    }

    #[test]
    fn even_partitions_are_valid_and_change_the_cluster_id() {
        let mut c = ClusterConfig::local(3, 20000);
        let plain = c.cluster_id();
        c.partition = PartitionConfig::even(4);
        assert_eq!(c.partition.split_keys, ["8", "P", "g"]);
        c.validate().unwrap();
        assert_ne!(c.cluster_id(), plain);
        c.partition.split_keys = vec!["b".into(), "a".into()];
        assert!(c.validate().is_err());
        c.partition = PartitionConfig::even(2);
        c.engine = "caspaxos".into();
        assert!(
            c.validate().is_err(),
            "CASPaxos has no groups to partition into"
        );
    }

    #[test]
    fn automatic_merges_stay_under_half_the_split_size() {
        let mut c = ClusterConfig::local(3, 20000);
        c.partition = PartitionConfig::even(2);
        let id = c.cluster_id();
        c.partition.auto_split_keys = 1000;
        c.partition.auto_split_writes = 5000;
        c.partition.auto_split_reads = 20000;
        c.partition.auto_merge_keys = 500;
        c.validate().unwrap();
        assert_eq!(
            c.cluster_id(),
            id,
            "thresholds are each member's, not the cluster's"
        );
        assert_eq!(c.engine_config(1).auto_merge_keys, 500);
        assert_eq!(c.engine_config(1).auto_split_writes, 5000);
        assert_eq!(c.engine_config(1).auto_split_reads, 20000);
        c.partition.auto_merge_keys = 501;
        let e = c.validate().expect_err("a merged range could split again");
        assert!(e.to_string().contains("auto_merge_keys"), "{e}");
        c.partition.auto_split_keys = 0;
        c.validate().unwrap();
    }

    #[test]
    fn engine_threads_are_shared_out_locally_and_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut c = ClusterConfig::local(3, 20000);
        c.partition.split_keys = vec!["m".into()];
        let id = c.cluster_id();
        assert_eq!(
            c.partition.engine_threads,
            (cores / 3).max(1),
            "members share the cores"
        );
        assert_eq!(c.engine_config(1).engine_threads, (cores / 3).max(1));
        c.partition.engine_threads = 0;
        assert_eq!(
            c.engine_config(1).engine_threads,
            (cores / 2).clamp(1, ENGINE_THREADS_AUTO_MAX),
            "by itself: half the cores"
        );
        c.partition.engine_threads = 5;
        c.validate().unwrap();
        assert_eq!(c.engine_config(2).engine_threads, 5);
        assert_eq!(c.cluster_id(), id, "each member's own, not the cluster's");
        c.partition.engine_threads = GROUPS_MAX + 1;
        let e = c
            .validate()
            .expect_err("more threads than groups could use");
        assert!(e.to_string().contains("engine_threads"), "{e}");
    }

    #[test]
    fn local_cluster_is_valid() {
        let c = ClusterConfig::local(5, 20000);
        c.validate().unwrap();
        assert_eq!(c.members[4].peer_addr, "127.0.0.1:20040");
        assert_eq!(c.members[4].grpc_addr, "127.0.0.1:20042");
    }

    #[test]
    fn env_overrides_apply_and_are_checked() {
        let mut n = NodeConfig::new(ClusterConfig::local(3, 1000), 1, "/tmp/x");
        let env = |k: &str| match k {
            "SYNOD_NODE_ID" => Some("3".to_string()),
            "SYNOD_FSYNC" => Some("off".to_string()),
            "SYNOD_TICK_MS" => Some("7".to_string()),
            _ => None,
        };
        n.apply_overrides(env).unwrap();
        assert_eq!(n.node_id, 3);
        assert!(!n.cluster.storage.fsync);
        assert_eq!(n.cluster.tick_ms, 7);
        n.validate().unwrap();
        let e = n
            .apply_overrides(|k| (k == "SYNOD_TICK_MS").then(|| "soon".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SYNOD_TICK_MS"), "{e}");
        n.node_id = 9;
        let e = n.validate().unwrap_err().to_string();
        assert!(e.contains("node_id"), "{e}");
    }
}
