//! etcd's Watch and the MVCC parts of KV over gRPC, end to end against a single-node stand-in:
//! create / events / prev_kv / filters / cancel / progress / duplicate ids / compacted starts
//! / fragments, reads at a revision, sorting and compaction — each answer as etcd gives it.

use crate::common;

use common::TestServer;
use std::time::Duration;
use synod_etcd::pb::etcdserverpb as pb;
use synod_etcd::pb::etcdserverpb::kv_client::KvClient;
use synod_etcd::pb::etcdserverpb::watch_client::WatchClient;
use synod_etcd::pb::mvccpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Generous bound on anything a local in-memory node should answer; exceeding it is a hang.
const DEADLINE: Duration = Duration::from_secs(5);

async fn channel(s: &TestServer) -> Channel {
    Channel::from_shared(s.url())
        .expect("valid url")
        .connect()
        .await
        .expect("connect")
}

async fn put(c: &mut KvClient<Channel>, k: &str, v: &str) -> i64 {
    c.put(pb::PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .expect("header")
    .revision
}

async fn del(c: &mut KvClient<Channel>, k: &str) {
    c.delete_range(pb::DeleteRangeRequest {
        key: k.into(),
        ..Default::default()
    })
    .await
    .expect("delete");
}

/// One watch stream: requests in, responses out.
struct Stream {
    tx: mpsc::Sender<pb::WatchRequest>,
    rx: Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(ch: Channel) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        let rx = WatchClient::new(ch)
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: pb::watch_request::RequestUnion) {
        self.tx
            .send(pb::WatchRequest {
                request_union: Some(r),
            })
            .await
            .expect("send");
    }

    async fn create(&self, c: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c))
            .await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    /// Asserts nothing arrives for a short while.
    async fn quiet(&mut self) {
        let r = tokio::time::timeout(Duration::from_millis(200), self.rx.message()).await;
        assert!(r.is_err(), "unexpected response: {r:?}");
    }
}

fn prefix(p: &str) -> pb::WatchCreateRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    pb::WatchCreateRequest {
        key: p.into(),
        range_end: end,
        ..Default::default()
    }
}

/// (type, key, value, mod_revision, prev value) of each event.
fn events(r: &pb::WatchResponse) -> Vec<(i32, String, String, i64, Option<String>)> {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    r.events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            (
                e.r#type,
                s(&kv.key),
                s(&kv.value),
                kv.mod_revision,
                e.prev_kv.as_ref().map(|p| s(&p.value)),
            )
        })
        .collect()
}

const PUT: i32 = mvccpb::event::EventType::Put as i32;
const DELETE: i32 = mvccpb::event::EventType::Delete as i32;

#[tokio::test]
async fn a_watch_replays_history_then_goes_live_with_prev_kv_and_filters() {
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let mut kv = KvClient::new(ch.clone());
    put(&mut kv, "a/1", "x").await; // 1
    put(&mut kv, "b", "y").await; // 2
    put(&mut kv, "a/1", "z").await; // 3

    let mut w = Stream::open(ch.clone()).await;
    w.create(pb::WatchCreateRequest {
        start_revision: 1,
        prev_kv: true,
        ..prefix("a/")
    })
    .await;
    let created = w.next().await;
    assert!(created.created && !created.canceled);
    assert_eq!(created.watch_id, 0, "etcd numbers automatic ids from 0");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(events(&w.next().await));
    }
    assert_eq!(
        seen,
        vec![
            (PUT, "a/1".into(), "x".into(), 1, None),
            (PUT, "a/1".into(), "z".into(), 3, Some("x".into())),
        ],
        "history from revision 1, only the prefix, prev_kv as asked"
    );
    // Live, with a second watcher on the same stream that filters puts out.
    w.create(pb::WatchCreateRequest {
        filters: vec![pb::watch_create_request::FilterType::Noput as i32],
        watch_id: 7,
        ..prefix("a/")
    })
    .await;
    let created = w.next().await;
    assert_eq!((created.watch_id, created.created), (7, true));
    put(&mut kv, "a/2", "n").await; // 4
    del(&mut kv, "a/1").await; // 5
    let mut by_watcher: std::collections::BTreeMap<i64, Vec<_>> = Default::default();
    while by_watcher.values().map(Vec::len).sum::<usize>() < 3 {
        let r = w.next().await;
        by_watcher.entry(r.watch_id).or_default().extend(events(&r));
    }
    assert_eq!(
        by_watcher[&0],
        vec![
            (PUT, "a/2".into(), "n".into(), 4, None),
            (DELETE, "a/1".into(), String::new(), 5, Some("z".into())),
        ]
    );
    assert_eq!(
        by_watcher[&7],
        vec![(DELETE, "a/1".into(), String::new(), 5, None)],
        "NOPUT drops puts; no prev_kv unless asked"
    );
    s.stop().await;
}

#[tokio::test]
async fn duplicate_ids_cancel_and_progress_follow_etcd() {
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let mut kv = KvClient::new(ch.clone());
    let mut w = Stream::open(ch.clone()).await;
    w.create(pb::WatchCreateRequest {
        watch_id: 3,
        ..prefix("k")
    })
    .await;
    assert!(w.next().await.created);
    w.create(pb::WatchCreateRequest {
        watch_id: 3,
        ..prefix("k")
    })
    .await;
    let dup = w.next().await;
    assert!(dup.created && dup.canceled, "{dup:?}");
    assert_eq!(
        dup.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    let rev = put(&mut kv, "k", "1").await;
    assert_eq!(events(&w.next().await).len(), 1);
    // A progress request is answered with watch_id -1 and the member's revision.
    w.send(pb::watch_request::RequestUnion::ProgressRequest(
        pb::WatchProgressRequest {},
    ))
    .await;
    let progress = w.next().await;
    assert_eq!(progress.watch_id, -1);
    assert_eq!(progress.header.expect("header").revision, rev);
    assert!(progress.events.is_empty());
    // Cancel: acknowledged, then silence for that watcher.
    w.send(pb::watch_request::RequestUnion::CancelRequest(
        pb::WatchCancelRequest { watch_id: 3 },
    ))
    .await;
    let cancel = w.next().await;
    assert_eq!((cancel.watch_id, cancel.canceled), (3, true));
    put(&mut kv, "k", "2").await;
    w.quiet().await;
    s.stop().await;
}

#[tokio::test]
async fn a_compacted_start_is_created_then_cancelled_with_the_compact_revision() {
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let mut kv = KvClient::new(ch.clone());
    for i in 0..5 {
        put(&mut kv, "k", &i.to_string()).await;
    }
    kv.compact(pb::CompactionRequest {
        revision: 4,
        physical: true,
    })
    .await
    .expect("compact");
    let mut w = Stream::open(ch.clone()).await;
    w.create(pb::WatchCreateRequest {
        start_revision: 2,
        ..prefix("k")
    })
    .await;
    assert!(w.next().await.created);
    let cancel = w.next().await;
    assert!(cancel.canceled);
    assert_eq!(cancel.compact_revision, 4);
    // From the compaction revision itself, history is still there.
    w.create(pb::WatchCreateRequest {
        start_revision: 4,
        ..prefix("k")
    })
    .await;
    assert!(w.next().await.created);
    let mut revs = Vec::new();
    while revs.len() < 2 {
        revs.extend(events(&w.next().await).into_iter().map(|e| e.3));
    }
    assert_eq!(revs, vec![4, 5]);
    s.stop().await;
}

#[tokio::test]
async fn large_revisions_are_fragmented_only_when_asked() {
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let mut kv = KvClient::new(ch.clone());
    let limit = s.handle.info().limits.request_bytes_max;
    // Three keys of half the request limit each; deleting them is one revision whose
    // prev_kvs together exceed the limit.
    let big = String::from_utf8(vec![b'v'; limit / 2]).expect("ascii");
    for i in 0..3 {
        put(&mut kv, &format!("f/{i}"), &big).await;
    }
    let mut plain = Stream::open(ch.clone()).await;
    plain
        .create(pb::WatchCreateRequest {
            prev_kv: true,
            ..prefix("f/")
        })
        .await;
    assert!(plain.next().await.created);
    let mut w = Stream::open(ch.clone()).await;
    w.create(pb::WatchCreateRequest {
        fragment: true,
        prev_kv: true,
        ..prefix("f/")
    })
    .await;
    assert!(w.next().await.created);
    kv.delete_range(pb::DeleteRangeRequest {
        key: "f/".into(),
        range_end: "f0".into(),
        ..Default::default()
    })
    .await
    .expect("delete the prefix");
    let whole = plain.next().await;
    assert_eq!(
        (whole.events.len(), whole.fragment),
        (3, false),
        "not asked: one response"
    );
    let mut parts = Vec::new();
    loop {
        let r = w.next().await;
        let more = r.fragment;
        parts.push(r.events.len());
        if !more {
            break;
        }
    }
    assert!(parts.len() > 1, "fragmented: {parts:?}");
    assert_eq!(parts.iter().sum::<usize>(), 3);
    s.stop().await;
}

#[tokio::test]
async fn reads_at_a_revision_sorting_and_compaction_errors() {
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let mut kv = KvClient::new(ch.clone());
    put(&mut kv, "s/b", "1").await; // 1
    put(&mut kv, "s/a", "2").await; // 2
    put(&mut kv, "s/b", "3").await; // 3
    let range = |revision, order, target| pb::RangeRequest {
        key: "s/".into(),
        range_end: "s0".into(),
        revision,
        sort_order: order as i32,
        sort_target: target as i32,
        ..Default::default()
    };
    use pb::range_request::{SortOrder, SortTarget};
    let at1 = kv
        .range(range(1, SortOrder::None, SortTarget::Key))
        .await
        .expect("range at 1")
        .into_inner();
    assert_eq!(at1.kvs.len(), 1);
    assert_eq!(at1.kvs[0].value, b"1");
    let by_create = kv
        .range(range(0, SortOrder::Descend, SortTarget::Create))
        .await
        .expect("sorted")
        .into_inner();
    let keys: Vec<_> = by_create.kvs.iter().map(|k| k.key.clone()).collect();
    assert_eq!(keys, vec![b"s/a".to_vec(), b"s/b".to_vec()]);
    kv.compact(pb::CompactionRequest {
        revision: 2,
        physical: false,
    })
    .await
    .expect("compact");
    let err = kv
        .range(range(1, SortOrder::None, SortTarget::Key))
        .await
        .expect_err("compacted");
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let err = kv
        .range(range(9, SortOrder::None, SortTarget::Key))
        .await
        .expect_err("future");
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let err = kv
        .compact(pb::CompactionRequest {
            revision: 1,
            physical: false,
        })
        .await
        .expect_err("compacting below the compaction");
    assert_eq!(err.code(), Code::OutOfRange);
    s.stop().await;
}

fn range_watch(key: &str, range_end: &[u8]) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

/// Compared by hand against etcd 3.4.23: same ids, flags and reasons.
#[tokio::test]
async fn a_range_holding_no_key_is_refused_as_etcd_refuses_it() {
    let s = TestServer::start().await;
    let mut w = Stream::open(channel(&s).await).await;
    let refused = |r: pb::WatchResponse| (r.watch_id, r.created, r.canceled, r.cancel_reason);
    let empty = (-1, true, true, "mvcc: watcher range is empty".to_string());
    w.create(range_watch("b", b"a")).await;
    assert_eq!(refused(w.next().await), empty, "end below key");
    w.create(range_watch("b", b"b")).await;
    assert_eq!(refused(w.next().await), empty, "end equal to key");
    // A refused create takes no id: the next one gets the first.
    w.create(range_watch("b", b"c")).await;
    let ok = w.next().await;
    assert_eq!((ok.watch_id, ok.created, ok.canceled), (0, true, false));
    // "\0" is no end: every key from `key` on.
    w.create(range_watch("b", &[0])).await;
    let from_key = w.next().await;
    assert_eq!((from_key.watch_id, from_key.canceled), (1, false));
    drop(w);
    s.stop().await;
}

/// Compared by hand against etcd 3.4.23: it numbers 0, 1, 2, 3 here too.
#[tokio::test]
async fn ids_the_server_picks_are_not_reused_after_a_cancel() {
    let s = TestServer::start().await;
    let mut w = Stream::open(channel(&s).await).await;
    w.create(range_watch("k", b"")).await;
    assert_eq!(w.next().await.watch_id, 0);
    w.send(pb::watch_request::RequestUnion::CancelRequest(
        pb::WatchCancelRequest { watch_id: 0 },
    ))
    .await;
    let cancelled = w.next().await;
    assert_eq!((cancelled.watch_id, cancelled.canceled), (0, true));
    w.create(range_watch("k", b"")).await;
    assert_eq!(w.next().await.watch_id, 1, "0 was cancelled, not freed");
    // An id the client chose is skipped, as etcd skips it.
    w.create(pb::WatchCreateRequest {
        watch_id: 2,
        ..range_watch("k", b"")
    })
    .await;
    assert_eq!(w.next().await.watch_id, 2);
    w.create(range_watch("k", b"")).await;
    assert_eq!(w.next().await.watch_id, 3);
    drop(w);
    s.stop().await;
}

/// A watcher whose client does not read falls behind without the server buffering for it
/// (beyond the transport's windows and a few responses): when it reads again it catches up
/// from history, every revision in order; if the history it needs is compacted meanwhile, it
/// is cancelled with the compaction revision. 64 KiB values, so the transport's buffers hold
/// only a few hundred revisions.
#[tokio::test]
async fn a_slow_watcher_catches_up_from_history_or_is_cancelled_when_compacted() {
    const WRITES: i64 = 1_000;
    let value = "v".repeat(64 * 1024);
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let mut kv = KvClient::new(ch.clone());
    let mut slow = Stream::open(ch.clone()).await;
    slow.create(prefix("s/")).await;
    assert!(slow.next().await.created);
    // Its own connection: an unread stream holds HTTP/2 connection-level flow-control credit
    // in the client, which would stall the other stream's reads on a shared connection.
    let mut doomed = Stream::open(channel(&s).await).await;
    doomed.create(prefix("s/")).await;
    assert!(doomed.next().await.created);
    // Neither stream is read while the writes go in.
    let mut last = 0;
    for i in 0..WRITES {
        last = put(&mut kv, &format!("s/{}", i % 100), &value).await;
    }
    assert_eq!(last, WRITES);
    // The first stream reads everything: no revision missing or repeated.
    let mut expect = 1;
    while expect <= WRITES {
        for e in events(&slow.next().await) {
            assert_eq!(e.3, expect, "revisions in order, none skipped");
            expect += 1;
        }
    }
    // Compact past the second stream's cursor (it holds at most a few buffered responses).
    kv.compact(pb::CompactionRequest {
        revision: WRITES,
        physical: true,
    })
    .await
    .expect("compact");
    let mut delivered = 0;
    let cancel = loop {
        let r = doomed.next().await;
        if r.canceled {
            break r;
        }
        delivered += r.events.len();
    };
    assert_eq!(cancel.compact_revision, WRITES);
    assert!(
        (delivered as i64) < WRITES,
        "it was cancelled before it caught up ({delivered} events)"
    );
    s.stop().await;
}
