//! Writes the seed corpus of every fuzz target into `corpus/<target>/` from real encodings:
//! messages and records that a small in-process cluster of real engines produced, WAL files
//! that `Wal::append_and_sync` wrote, snapshot chunks of a real state image, HTTP requests
//! from the API contract and prost-encoded etcd requests.
//!
//! Run from `fuzz/`: `cargo run --example gen_corpus` (rewrites only the `seed-*` files, so
//! inputs libFuzzer added to the corpus are kept).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use synod_core::kv::{Op, PutRequest, RangeRequest};
use synod_core::{
    ClientId, ClientReply, ClientRequest, Consistency, Engine, EngineConfig, EngineError, NodeId,
    RequestId,
};
use synod_fuzz::{CasPaxosEngine, OmniPaxosEngine, PartitionedOmniPaxos, PartitionedVr, VrEngine};
use synod_node::backup::{ImagePage, ImageQuery};
use synod_node::config::TransportConfig;
use synod_node::storage::Wal;
use synod_node::transport::{
    Hello, HelloReply, MAGIC, PeerAnswer, PeerQuestion, SelfChange, encode_frame,
};
use synod_node::watch::remote::{EventsPage, EventsQuery};
use synod_partition::{GroupMessage, Relayed, SplitNotice};

/// Errors end the generator with their message; there is nothing to recover.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A file of a WAL directory: name and bytes.
type WalFile = (String, Vec<u8>);

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    peer_frame(&root.join("peer_frame"))?;
    wal_segment(&root.join("wal_segment"))?;
    snapshot_chunk(&root.join("snapshot_chunk"))?;
    http_json(&root.join("http_json"))?;
    grpc_request(&root.join("grpc_request"))?;
    Ok(())
}

/// Replaces the `seed-*` files of one target's corpus directory.
fn write_seeds(dir: &Path, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("seed-") {
            std::fs::remove_file(entry.path())?;
        }
    }
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), s)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}

/// What a short run of a real 3-member cluster produced.
struct Run<E: Engine> {
    /// (from, to, message), in delivery order.
    messages: Vec<(NodeId, NodeId, E::Message)>,
    /// Member 1's records, in emission order.
    records: Vec<E::Record>,
}

/// The members of every cluster the generator runs.
const MEMBERS: [NodeId; 3] = [1, 2, 3];

/// Members {1, 2, 3} of engine `E`, booting for the first time.
fn boot<E: Engine>(snapshot_entries: u64) -> Vec<E> {
    MEMBERS
        .iter()
        .map(|&id| {
            let mut c = EngineConfig::new(id, MEMBERS.to_vec(), 42);
            c.first_boot = true;
            c.snapshot_entries = snapshot_entries;
            // Partitioned engines split the keys written below over two groups (others ignore it).
            c.split_keys = vec![b"k2".to_vec()];
            E::recover(c, Vec::new()).expect("a fresh replica recovers")
        })
        .collect()
}

/// Runs members {1, 2, 3} of engine `E` with instant delivery for `steps` ticks, submitting
/// writes and reads to member 1.
fn cluster<E: Engine>(steps: u64, snapshot_entries: u64) -> Run<E> {
    let mut nodes: Vec<E> = boot(snapshot_entries);
    let mut run = Run {
        messages: Vec::new(),
        records: Vec::new(),
    };
    let mut seq = 0;
    for step in 0..steps {
        for n in nodes.iter_mut() {
            n.tick();
        }
        if step % 3 == 0 {
            seq += 1;
            let op = if seq % 4 == 0 {
                Op::Range(RangeRequest {
                    range_end: b"l".to_vec(),
                    ..RangeRequest::key(b"k".to_vec())
                })
            } else {
                Op::Put(PutRequest {
                    prev_kv: seq % 2 == 0,
                    ..PutRequest::new(format!("k{}", seq % 5), format!("v{seq}"))
                })
            };
            nodes[0].submit(ClientRequest {
                id: RequestId {
                    client: ClientId(7),
                    seq,
                },
                first_unacked: seq,
                op,
                consistency: Consistency::Linearizable,
            });
        }
        settle(&mut nodes, &mut run);
    }
    println!(
        "{}: {} messages, {} records of member 1",
        E::NAME,
        run.messages.len(),
        run.records.len()
    );
    run
}

/// Delivers the members' messages instantly until none is left (at most 20 rounds), noting
/// them and member 1's records in `run`.
fn settle<E: Engine>(nodes: &mut [E], run: &mut Run<E>) {
    for _ in 0..20 {
        let mut inflight = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            let from = MEMBERS[i];
            let ready = n.ready();
            let outbox = ready
                .persist(|records| {
                    if from == 1 {
                        run.records.extend(records.iter().cloned());
                    }
                    Ok::<(), ()>(())
                })
                .expect("in-memory persist");
            for (to, m) in outbox.messages {
                inflight.push((from, to, m));
            }
        }
        if inflight.is_empty() {
            break;
        }
        for (from, to, m) in inflight {
            run.messages.push((from, to, m.clone()));
            if let Some(i) = MEMBERS.iter().position(|&x| x == to) {
                nodes[i].receive(from, m);
            }
        }
    }
}

/// The first `n` bytes of `m`'s encoding.
fn head<M: serde::Serialize>(m: &M, n: usize) -> Vec<u8> {
    let bytes = postcard::to_allocvec(m).expect("encodes");
    bytes.into_iter().take(n).collect()
}

/// A message's kind: its first three encoded bytes (the variant and what follows).
fn kind<M: serde::Serialize>(m: &M) -> Vec<u8> {
    head(m, 3)
}

/// A replica-layer message's kind: the variant and, for a wrapped protocol message, the
/// protocol's variants. Not the epoch between them, which says nothing of the kind.
fn replica_kind<M: serde::Serialize, T: serde::Serialize>(
    message: &synod_replica::Message<M, T>,
) -> Vec<u8> {
    match message {
        synod_replica::Message::Protocol { m, .. } => [head(message, 1), head(m, 2)].concat(),
        other => kind(other),
    }
}

/// Messages of distinct `kind`s, at most `max`.
fn distinct<M: Clone>(
    messages: &[(NodeId, NodeId, M)],
    max: usize,
    kind: impl Fn(&M) -> Vec<u8>,
) -> Vec<M> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (_, _, m) in messages {
        if seen.insert(kind(m)) {
            out.push(m.clone());
        }
        if out.len() == max {
            break;
        }
    }
    out
}

/// A partitioned frame of relays only: a request for group 1, an answer, and "elsewhere".
fn relays() -> <PartitionedOmniPaxos as Engine>::Message {
    let id = RequestId {
        client: ClientId(1 << 63 | 5),
        seq: 3,
    };
    let request = ClientRequest {
        id,
        first_unacked: 2,
        op: Op::Put(PutRequest::new("k3", "v")),
        consistency: Consistency::Linearizable,
    };
    let reply = ClientReply {
        id,
        result: Err(EngineError::Timeout),
    };
    GroupMessage {
        parts: Vec::new(),
        relayed: vec![
            Relayed::Request(1, request),
            Relayed::Answer {
                reply,
                group: 1,
                leader: Some(2),
                splits: vec![SplitNotice {
                    at: b"k".to_vec(),
                    group: 1 << 52 | 7,
                    hosts: vec![1, 2, 3],
                }],
            },
            Relayed::Elsewhere(id, 1),
        ],
        top: 9,
    }
}

/// One of each question a member asks another over the peer port.
fn questions() -> Vec<PeerQuestion> {
    vec![
        PeerQuestion::Revision,
        PeerQuestion::HashKv { revision: 4 },
        PeerQuestion::Member(SelfChange::Rejoin {
            name: "n1".into(),
            peer_addr: "127.0.0.1:7000".into(),
            http_addr: "127.0.0.1:7001".into(),
            grpc_addr: "127.0.0.1:7002".into(),
        }),
        PeerQuestion::Member(SelfChange::Promote),
        PeerQuestion::Member(SelfChange::Publish {
            name: "n1".into(),
            http_addr: "127.0.0.1:7001".into(),
            grpc_addr: "127.0.0.1:7002".into(),
        }),
        PeerQuestion::Groups,
        PeerQuestion::GroupHashKv {
            group: 1,
            revision: 4,
        },
        PeerQuestion::Events(EventsQuery {
            group: 1,
            start: 5,
            max: 256,
            wait_ms: 2_000,
        }),
        PeerQuestion::Image(ImageQuery {
            group: 1,
            taken: 2,
            offset: 4096,
        }),
    ]
}

/// One of each answer.
fn answers() -> Vec<PeerAnswer> {
    vec![
        PeerAnswer::Revision(42),
        PeerAnswer::HashKv {
            hash: 0xdead_beef,
            revision: 42,
            compact_revision: 7,
        },
        PeerAnswer::Groups(vec![(0, 42, 7), (1, 40, 7)]),
        PeerAnswer::Events(EventsPage {
            revisions: Vec::new(),
            through: 15,
            compacted: 7,
            moves: vec![synod_core::WatchMove {
                through: 12,
                range: synod_core::kv::KeyRange::new("k", ""),
                kind: synod_core::MoveKind::Group(1 << 52 | 7),
            }],
        }),
        PeerAnswer::Image(ImagePage {
            taken: 2,
            applied_index: 9,
            revision: 8,
            compact_revision: 1,
            keys: 3,
            total: 6,
            chunk: vec![1, 2, 3],
        }),
        PeerAnswer::FutureRevision,
        PeerAnswer::Member { id: 4, version: 3 },
        PeerAnswer::Unavailable("no answer in time".into()),
    ]
}

/// Member 1's hello to member 2, with `question` if any.
fn hello_asking(question: Option<PeerQuestion>) -> Hello {
    Hello {
        magic: MAGIC,
        cluster_id: 0x5eed,
        from: 1,
        to: 2,
        data_id: 0xfeed,
        probe: false,
        replace_data_id: false,
        question,
    }
}

fn peer_frame(dir: &Path) -> Result<()> {
    let max = TransportConfig::default().frame_bytes_max;
    let hello = encode_frame(&hello_asking(None), max)?;
    let mut seeds = vec![
        hello.to_vec(),
        encode_frame(&HelloReply::Accepted, max)?.to_vec(),
        encode_frame(&HelloReply::Refused("wrong cluster".into()), max)?.to_vec(),
        encode_frame(
            &HelloReply::Probe {
                recorded_data_id: Some(3),
            },
            max,
        )?
        .to_vec(),
    ];
    fn stream<M: serde::Serialize>(hello: &[u8], ms: &[M], max: u32) -> Vec<Vec<u8>> {
        ms.iter()
            .map(|m| {
                let mut s = hello.to_vec();
                s.extend_from_slice(&encode_frame(m, max).expect("a frame"));
                s
            })
            .collect()
    }
    let omni = cluster::<OmniPaxosEngine>(40, 0);
    seeds.extend(stream(
        &hello,
        &distinct(&omni.messages, 16, replica_kind),
        max,
    ));
    let vr = cluster::<VrEngine>(40, 0);
    seeds.extend(stream(
        &hello,
        &distinct(&vr.messages, 16, replica_kind),
        max,
    ));
    let cas = cluster::<CasPaxosEngine>(40, 0);
    seeds.extend(stream(&hello, &distinct(&cas.messages, 16, kind), max));
    let groups = cluster::<PartitionedOmniPaxos>(40, 0);
    seeds.extend(stream(&hello, &distinct(&groups.messages, 16, kind), max));
    let groups = cluster::<PartitionedVr>(40, 0);
    seeds.extend(stream(&hello, &distinct(&groups.messages, 16, kind), max));
    seeds.extend(stream(&hello, &[relays()], max));
    for q in questions() {
        seeds.push(encode_frame(&hello_asking(Some(q)), max)?.to_vec());
    }
    for a in answers() {
        seeds.push(encode_frame(&HelloReply::Answer(a), max)?.to_vec());
    }
    write_seeds(dir, &seeds)?;
    Ok(())
}

/// The files a real log of `records` leaves behind: (name, bytes), sorted by name.
fn wal_files<R: synod_core::DurableRecord>(records: &[R], batch: usize) -> Result<Vec<WalFile>> {
    let dir = tempfile::tempdir()?;
    let mut opts = synod_fuzz::wal_segment::options();
    // Small segments, so a short log rotates.
    opts.segment_bytes_max = 256;
    let (mut wal, _) = Wal::<R>::open(dir.path(), opts)?;
    for chunk in records.chunks(batch) {
        wal.append_and_sync(chunk)?;
    }
    drop(wal);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path())? {
        let entry = entry?;
        files.push((
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path())?,
        ));
    }
    files.sort();
    Ok(files)
}

fn seq_of(name: &str) -> Option<u64> {
    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Seeds of every layout the files of one real log allow.
fn wal_seeds(
    kind: synod_fuzz::wal_segment::RecordKind,
    files: &[WalFile],
    seeds: &mut Vec<Vec<u8>>,
) {
    use synod_fuzz::wal_segment::{Layout, input};
    let segments: Vec<_> = files
        .iter()
        .filter(|(n, _)| n.starts_with("wal-"))
        .collect();
    let snapshots: Vec<_> = files
        .iter()
        .filter(|(n, _)| n.starts_with("snap-"))
        .collect();
    let small = |b: &Vec<u8>| b.len() <= 16 * 1024;
    if let Some((name, bytes)) = segments.first()
        && seq_of(name) == Some(1)
        && small(bytes)
    {
        seeds.push(input(Layout::Segment, kind, 1, 0, bytes));
        if let Some((second, b2)) = segments.get(1)
            && let Some(s) = seq_of(second).and_then(|s| u8::try_from(s - 1).ok())
        {
            let mut both = bytes.clone();
            both.extend_from_slice(b2);
            seeds.push(input(
                Layout::TwoSegments,
                kind,
                s,
                bytes.len() as u16,
                &both,
            ));
        }
    }
    if let Some((name, snap)) = snapshots.last()
        && let Some(seq) = seq_of(name).and_then(|s| u8::try_from(s).ok())
        && small(snap)
    {
        seeds.push(input(Layout::Snapshot, kind, seq, 0, snap));
        if let Some((_, seg)) = segments
            .iter()
            .find(|(n, _)| seq_of(n) == Some(u64::from(seq) + 1))
        {
            let mut both = snap.clone();
            both.extend_from_slice(seg);
            seeds.push(input(
                Layout::SnapshotThenSegment,
                kind,
                seq,
                snap.len() as u16,
                &both,
            ));
        }
    }
}

fn wal_segment(dir: &Path) -> Result<()> {
    use synod_fuzz::wal_segment::RecordKind;
    let mut seeds = Vec::new();
    for (steps, snapshot_entries, batch) in [(24, 0, 1), (24, 0, 4), (60, 6, 2), (60, 4, 3)] {
        let omni = cluster::<OmniPaxosEngine>(steps, snapshot_entries);
        wal_seeds(
            RecordKind::OmniPaxos,
            &wal_files(&omni.records, batch)?,
            &mut seeds,
        );
        let vr = cluster::<VrEngine>(steps, snapshot_entries);
        wal_seeds(RecordKind::Vr, &wal_files(&vr.records, batch)?, &mut seeds);
        let cas = cluster::<CasPaxosEngine>(steps, snapshot_entries);
        wal_seeds(
            RecordKind::CasPaxos,
            &wal_files(&cas.records, batch)?,
            &mut seeds,
        );
    }
    write_seeds(dir, &seeds)?;
    Ok(())
}

fn snapshot_chunk(dir: &Path) -> Result<()> {
    use synod_fuzz::snapshot_chunk::input;
    type VrMessage = <VrEngine as Engine>::Message;
    // A real applied state at index 6, as a VR primary (member 1, view 0) sends it.
    let bytes = vr_primary_state(6)?;
    let chunks = |n: usize| -> Vec<(NodeId, VrMessage)> {
        let size = bytes.len().div_ceil(n);
        bytes
            .chunks(size)
            .enumerate()
            .map(|(i, c)| {
                (
                    1,
                    VrMessage::SnapshotChunk {
                        // First boot: configuration epoch 0, view 0.
                        epoch: 0,
                        term: 0,
                        snapshot_idx: 6,
                        total_bytes: bytes.len() as u64,
                        offset: (i * size) as u64,
                        data: c.to_vec(),
                    },
                )
            })
            .collect()
    };
    // The snapshot, then the primary's next write and commit: the installed state is used.
    let mut then_write = chunks(1);
    let command = synod_core::Command {
        id: RequestId {
            client: ClientId(9),
            seq: 7,
        },
        first_unacked: 7,
        op: Op::Put(PutRequest {
            prev_kv: true,
            ..PutRequest::new(b"key7".to_vec(), b"after the snapshot".to_vec())
        }),
        origin: synod_core::Origin {
            node: 1,
            incarnation: 1,
            seq: 7,
        },
    };
    then_write.push((
        1,
        VrMessage::Protocol {
            epoch: 0,
            m: synod_vr::Message::Prepare {
                view: 0,
                start: 6,
                entries: vec![command],
                commit: 6,
            },
        },
    ));
    then_write.push((
        1,
        VrMessage::Protocol {
            epoch: 0,
            m: synod_vr::Message::Commit { view: 0, commit: 7 },
        },
    ));
    let mut seeds = vec![
        input(false, false, &then_write),
        input(false, false, &chunks(1)),
        input(false, false, &chunks(3)),
        input(false, true, &chunks(2)),
    ];
    // Real traffic to member 2, as it arrived in a short run of each engine.
    let to_two = |ms: Vec<(NodeId, NodeId, VrMessage)>| -> Vec<(NodeId, VrMessage)> {
        ms.into_iter()
            .filter(|(_, to, _)| *to == 2)
            .map(|(f, _, m)| (f, m))
            .take(48)
            .collect()
    };
    let vr = cluster::<VrEngine>(30, 4);
    seeds.push(input(false, false, &to_two(vr.messages)));
    let omni = cluster::<OmniPaxosEngine>(30, 4);
    let omni_to_two: Vec<_> = omni
        .messages
        .into_iter()
        .filter(|(_, to, _)| *to == 2)
        .map(|(f, _, m)| (f, m))
        .take(48)
        .collect();
    seeds.push(input(true, false, &omni_to_two));
    seeds.push(input(true, true, &omni_to_two));
    write_seeds(dir, &seeds)?;
    Ok(())
}

/// The applied state of a real VR primary (member 1 of {1, 2, 3}, view 0) after `puts`
/// writes, in the bytes its snapshot transfers send: the replica serialises it itself (as it
/// does for a backup), so the seeds follow the image's layout wherever it goes next.
fn vr_primary_state(puts: u64) -> Result<Vec<u8>> {
    let mut nodes: Vec<VrEngine> = boot(0);
    let mut run = Run {
        messages: Vec::new(),
        records: Vec::new(),
    };
    // Once, so that the primary knows it leads view 0 before the writes come: a write
    // submitted before is proposed again when it finds out (a duplicate the apply skips, which
    // would take an index of its own).
    for n in nodes.iter_mut() {
        n.tick();
    }
    settle(&mut nodes, &mut run);
    for seq in 1..=puts {
        nodes[0].submit(ClientRequest {
            id: RequestId {
                client: ClientId(9),
                seq,
            },
            first_unacked: seq,
            op: Op::Put(PutRequest::new(format!("key{seq}"), vec![b'v'; 40])),
            consistency: Consistency::Linearizable,
        });
        settle(&mut nodes, &mut run);
    }
    let image = nodes[0].backup_image().map_err(|e| format!("{e:?}"))?;
    // The seeds name this index in their chunks and in the write that follows them.
    if image.applied_index != puts {
        return Err(format!(
            "the primary applied {} entries, not the {puts} writes",
            image.applied_index
        )
        .into());
    }
    Ok(image.state.to_vec())
}

fn http_json(dir: &Path) -> Result<()> {
    use synod_fuzz::http_json::input;
    let seeds = vec![
        input("GET", "/v1/kv/a", b""),
        input("GET", "/v1/kv/a?consistency=sequential", b""),
        input("PUT", "/v1/kv/b", br#"{"value":"x"}"#),
        input("PUT", "/v1/kv/b", br#"{"value":"x","extra":1}"#),
        input("DELETE", "/v1/kv/a", b""),
        input(
            "POST",
            "/v1/kv/a/cas",
            br#"{"expect":{"value":"1"},"value":"2"}"#,
        ),
        input("POST", "/v1/kv/a/cas", br#"{"expect":{"version":1}}"#),
        input(
            "POST",
            "/v1/kv/n/cas",
            br#"{"expect":"absent","value":"v"}"#,
        ),
        input(
            "GET",
            "/v1/kv?prefix=a&limit=10&keys_only=true&consistency=linearizable",
            b"",
        ),
        input("GET", "/v1/kv?start=a&end=z&count_only=true", b""),
        input("GET", "/v1/status", b""),
        input("GET", "/v1/members", b""),
        input("GET", "/healthz", b""),
        input("HEAD", "/v1/kv/a", b""),
        input("PATCH", "/v1/kv/a", b"{}"),
        input("GET", "/v1/kv/%ff%00", b""),
        input("GET", "/nope", b""),
    ];
    write_seeds(dir, &seeds)?;
    Ok(())
}

fn grpc_request(dir: &Path) -> Result<()> {
    use synod_etcd::pb::etcdserverpb as pb;
    use synod_fuzz::grpc_request::input;
    let range = pb::RangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        limit: 10,
        ..Default::default()
    };
    let put = pb::PutRequest {
        key: b"b".to_vec(),
        value: b"2".to_vec(),
        prev_kv: true,
        ..Default::default()
    };
    let delete = pb::DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        prev_kv: true,
    };
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Value as i32,
            key: b"a".to_vec(),
            range_end: Vec::new(),
            target_union: Some(pb::compare::TargetUnion::Value(b"1".to_vec())),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put.clone())),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(range.clone())),
        }],
    };
    let mut seeds = vec![
        input("range", &range),
        input("put", &put),
        input("delete_range", &delete),
        input("txn", &txn),
        input("compact", &pb::CompactionRequest::default()),
    ];
    // The same requests against a node without ranges or transactions.
    for s in seeds.clone() {
        let mut limited = s;
        limited[0] |= 0x80;
        seeds.push(limited);
    }
    write_seeds(dir, &seeds)?;
    Ok(())
}
