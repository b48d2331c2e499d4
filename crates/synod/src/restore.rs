//! `synod restore`: builds the data directories of a NEW cluster's members from a backup
//! (`etcdctl snapshot save`, `synodctl snapshot save`, `GET /v1/snapshot`; format in
//! `docs/backup.md`), or with `--verify` only checks a backup and prints what it holds.
//!
//! What a restored member starts with: the backup's data (keys, MVCC history, compaction,
//! leases) at the backup's revision, the membership of the NEW cluster file (not the
//! backup's), and the new file's cluster id — which must differ from the backup's, so that a
//! restored member and a member of the old cluster refuse each other in the transport
//! handshake (the cluster id is the hash of `cluster_name`). Its only durable record is a
//! checkpoint of a fresh protocol instance starting at the backup's applied index (see
//! `synod_replica::restored_checkpoint`).
//!
//! A partitioned member's backup (every group's image) and an unpartitioned one restore into
//! either kind of cluster: the images are joined and cut at the new cluster file's split keys,
//! and a partitioned member's first record is a checkpoint of every configured group.
//!
//! Nothing is written unless everything checks out: the file is verified whole (magic,
//! version, both CRCs, the SHA-256 trailer), the image decoded and the checkpoint built, and
//! every target directory found absent or empty, before the first byte goes to disk. Each
//! member's directory is then built beside its target and renamed into place, so a failure
//! half-way leaves no half-built directory where `synod server` would look.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use synod_core::DurableRecord;
use synod_core::backup::{Backup, decode_backup};
use synod_core::membership::Configuration;
use synod_node::storage::{DataDir, Wal, WalOptions};
use synod_node::{ClusterConfig, MemberConfig};
use synod_partition::{GroupRecord, GroupsImage};

/// Largest backup file read (the largest state a snapshot transfer carries, plus framing).
const BACKUP_FILE_BYTES_MAX: u64 = synod_replica::SNAPSHOT_BYTES_MAX + 1024 * 1024;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The NEW cluster's file: its members, engine (omnipaxos or vr) and cluster_name (which
    /// must differ from the backed-up cluster's).
    #[arg(long, required_unless_present = "verify")]
    config: Option<PathBuf>,
    /// Restore only this member, into --data-dir itself. Without it every member of the
    /// cluster file is restored into --data-dir/n<ID> (`synod dev`'s layout).
    #[arg(long)]
    id: Option<u64>,
    /// Where to build the data directory (absent or empty).
    #[arg(long, required_unless_present = "verify")]
    data_dir: Option<PathBuf>,
    /// Only check the backup and print what it holds; write nothing.
    #[arg(long)]
    verify: bool,
}

pub fn run(args: RestoreArgs) -> ExitCode {
    let backup = match read_backup(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("synod restore: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    if args.verify {
        if let Err(e) = backup_images(&backup) {
            eprintln!("synod restore: {}: {e:#}", args.file.display());
            return ExitCode::from(2);
        }
        print_summary(&args.file, &backup);
        return ExitCode::SUCCESS;
    }
    match restore(&args, &backup) {
        Ok(dirs) => {
            for (id, dir) in dirs {
                println!(
                    "restored member {id} at revision {} into {}",
                    backup.header.revision,
                    dir.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod restore: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Reads and verifies the whole file.
fn read_backup(path: &Path) -> anyhow::Result<Backup> {
    let len = std::fs::metadata(path)?.len();
    if len > BACKUP_FILE_BYTES_MAX {
        anyhow::bail!(
            "{len} bytes: larger than any backup ({BACKUP_FILE_BYTES_MAX} bytes at most)"
        );
    }
    let bytes = std::fs::read(path)?;
    Ok(decode_backup(&bytes)?)
}

fn print_summary(path: &Path, b: &Backup) {
    let h = &b.header;
    let sha: String = b.sha256.iter().map(|x| format!("{x:02x}")).collect();
    println!("file             {}", path.display());
    println!("engine           {}", h.engine);
    println!("cluster id       {:x}", h.cluster_id);
    println!("member           {}", h.member_id);
    println!("revision         {}", h.revision);
    println!("compact revision {}", h.compact_revision);
    println!("applied index    {}", h.applied_index);
    println!("keys             {}", h.keys);
    if h.engine.ends_with("-partitioned") {
        // Decoded once already (`backup_images`).
        if let Ok(g) = GroupsImage::decode(&b.payload) {
            let starts: Vec<String> = g
                .groups
                .iter()
                .map(|(k, _, _)| format!("{:?}", String::from_utf8_lossy(k)))
                .collect();
            println!(
                "groups           {} (ranges from {})",
                starts.len(),
                starts.join(", ")
            );
        }
    }
    println!("payload bytes    {}", b.payload.len());
    println!("payload crc32c   {:08x}", b.payload_crc32c);
    println!("sha256           {sha}");
    println!("status           OK (magic, version, checksums verified)");
}

/// Checks everything, then builds each member's directory. Returns (member, directory).
fn restore(args: &RestoreArgs, backup: &Backup) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let (Some(config), Some(data_dir)) = (&args.config, &args.data_dir) else {
        anyhow::bail!("pass --config CLUSTER.toml and --data-dir DIR (or --verify)");
    };
    let cluster = ClusterConfig::from_file(config)?;
    cluster.validate()?;
    if cluster.cluster_id() == backup.header.cluster_id {
        anyhow::bail!(
            "{}: cluster_name {:?} is the backed-up cluster's (id {:x}); a restore starts a NEW \
             cluster, so give it another cluster_name (its members must never talk to the old \
             cluster's)",
            config.display(),
            cluster.cluster_name,
            cluster.cluster_id()
        );
    }
    let images = backup_images(backup)?;
    let targets = targets(&cluster, args.id, data_dir)?;
    let bootstrap =
        Configuration::bootstrap(cluster.members.iter().map(MemberConfig::member).collect());
    let images: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let writer = Writer::new(&cluster, &images, bootstrap)?;
    for (_, dir) in &targets {
        ensure_empty(dir)?;
    }
    for (member, dir) in &targets {
        writer.write(&cluster, member, dir)?;
    }
    Ok(targets.into_iter().map(|(m, d)| (m.id, d)).collect())
}

/// The members to restore and where.
fn targets(
    cluster: &ClusterConfig,
    id: Option<u64>,
    data_dir: &Path,
) -> anyhow::Result<Vec<(MemberConfig, PathBuf)>> {
    match id {
        Some(id) => {
            let m = cluster
                .members
                .iter()
                .find(|m| m.id == id)
                .ok_or_else(|| anyhow::anyhow!("member {id} is not in the cluster file"))?;
            Ok(vec![(m.clone(), data_dir.to_path_buf())])
        }
        None => Ok(cluster
            .members
            .iter()
            .map(|m| (m.clone(), data_dir.join(format!("n{}", m.id))))
            .collect()),
    }
}

fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    let in_use = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => anyhow::bail!("{}: {e}", dir.display()),
    };
    if in_use {
        anyhow::bail!(
            "{} is not empty: a restore builds a new member's directory and overwrites nothing",
            dir.display()
        );
    }
    Ok(())
}

/// The state images a backup holds: one, or one per group of a partitioned member's backup
/// (in key order).
fn backup_images(backup: &Backup) -> anyhow::Result<Vec<Vec<u8>>> {
    let engine = backup.header.engine.as_str();
    match engine.strip_suffix("-partitioned").unwrap_or(engine) {
        "omnipaxos" | "vr" => {}
        _ => anyhow::bail!(
            "a backup of the {engine} engine cannot be restored: its members number their own \
             revisions, so its image is not a point of one shared history"
        ),
    }
    if engine.ends_with("-partitioned") {
        let groups = GroupsImage::decode(&backup.payload).map_err(anyhow::Error::msg)?;
        return Ok(groups.groups.into_iter().map(|(_, _, s)| s).collect());
    }
    Ok(vec![backup.payload.clone()])
}

/// The first records of a restored member, built once for the target engine and layout and
/// written into each directory: one record, or a checkpoint of every configured group.
enum Writer {
    OmniPaxos(Restored<ReplicaRecord<synod_omnipaxos::OmniPaxos>>),
    Vr(Restored<ReplicaRecord<synod_vr::Vr>>),
}

/// One engine's first records: the groups', whether the cluster is partitioned, and the empty
/// range directory's first record where it keeps one.
struct Restored<R> {
    groups: Vec<R>,
    partitioned: bool,
    directory: Option<R>,
}

/// Protocol `P`'s first records for the layout `splits` (and `directory`) names.
fn restored<P: synod_core::LogProtocol>(
    images: &[&[u8]],
    splits: &[Vec<u8>],
    c: Configuration,
    directory: bool,
) -> Result<Restored<ReplicaRecord<P>>, String> {
    Ok(Restored {
        groups: synod_replica::restored_checkpoints::<P>(images, splits, c.clone())?,
        partitioned: !splits.is_empty(),
        directory: directory
            .then(|| synod_replica::empty_checkpoint::<P>(c))
            .transpose()?,
    })
}

type ReplicaRecord<P> = <synod_replica::Replica<P> as synod_core::Engine>::Record;

impl Writer {
    fn new(cluster: &ClusterConfig, images: &[&[u8]], c: Configuration) -> anyhow::Result<Self> {
        let bad = |e: String| anyhow::anyhow!("the backup's state image: {e}");
        let splits: Vec<Vec<u8>> = cluster
            .partition
            .split_keys
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let directory = !splits.is_empty() && cluster.partition.directory;
        Ok(match cluster.engine.as_str() {
            "omnipaxos" => Writer::OmniPaxos(
                restored::<synod_omnipaxos::OmniPaxos>(images, &splits, c, directory)
                    .map_err(bad)?,
            ),
            "vr" => {
                Writer::Vr(restored::<synod_vr::Vr>(images, &splits, c, directory).map_err(bad)?)
            }
            other => anyhow::bail!(
                "the new cluster's engine is {other}: a backup restores into omnipaxos or vr \
                 (CASPaxos keeps per-key registers, EPaxos cannot start past the first index)"
            ),
        })
    }

    fn write(&self, cluster: &ClusterConfig, m: &MemberConfig, dir: &Path) -> anyhow::Result<()> {
        match self {
            Writer::OmniPaxos(r) => write_records(cluster, m, dir, r),
            Writer::Vr(r) => write_records(cluster, m, dir, r),
        }
    }
}

/// A partitioned member's first record is a checkpoint of every group of its configured
/// layout (group `i` is the `i`-th range) and of its range directory, an unpartitioned one's
/// the group's own.
fn write_records<R: DurableRecord + Clone>(
    cluster: &ClusterConfig,
    m: &MemberConfig,
    dir: &Path,
    restored: &Restored<R>,
) -> anyhow::Result<()> {
    if !restored.partitioned {
        return write_member(cluster, m, dir, &restored.groups);
    }
    let mut groups: Vec<_> = restored
        .groups
        .iter()
        .enumerate()
        .map(|(g, r)| (g as synod_partition::layout::GroupId, r.clone()))
        .collect();
    groups.extend((restored.directory.clone()).map(|r| (synod_partition::META_GROUP, r)));
    write_member(cluster, m, dir, &[GroupRecord::Checkpoint(groups)])
}

/// Builds `dir` beside it, then renames it into place.
fn write_member<R: DurableRecord>(
    cluster: &ClusterConfig,
    m: &MemberConfig,
    dir: &Path,
    records: &[R],
) -> anyhow::Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{}: not a directory name", dir.display()))?;
    let building = dir.with_file_name(format!(".{}.restoring", name.to_string_lossy()));
    if building.exists() {
        std::fs::remove_dir_all(&building)?;
    }
    let built = (|| -> anyhow::Result<()> {
        let data = DataDir::open(&building, cluster.cluster_id(), &cluster.cluster_name, m.id)?;
        let opts = WalOptions {
            segment_bytes_max: cluster.storage.segment_bytes_max,
            record_bytes_max: cluster.storage.record_bytes_max,
            fsync: true,
            preallocate_bytes: cluster.storage.preallocate_bytes,
        };
        let (mut wal, _) = Wal::<R>::open(&data.wal_dir(), opts)?;
        wal.append_and_sync(records)?;
        Ok(())
    })();
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&building);
        return Err(e.context(format!("building member {}'s directory", m.id)));
    }
    if dir.exists() {
        // Checked empty above.
        std::fs::remove_dir(dir)?;
    }
    std::fs::rename(&building, dir)?;
    Ok(())
}
