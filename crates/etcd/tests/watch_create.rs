//! Watch creation edge cases answered the way etcd 3.4 answers them (each compared against a
//! real etcd by hand): a range holding no key is refused, and the ids the server picks are
//! never reused on a stream, even after a cancel. Over loopback against a single-node
//! stand-in store.

mod common;

use common::TestServer;
use pb::watch_request::RequestUnion;
use std::time::Duration;
use synod_etcd::pb::etcdserverpb as pb;
use synod_etcd::pb::etcdserverpb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Generous bound on one response from a local in-memory node; exceeding it is a hang.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(5);

/// One watch stream: requests in, responses out.
struct Stream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(s: &TestServer) -> Stream {
        let mut client = WatchClient::connect(s.url()).await.expect("connect");
        let (requests, rx) = mpsc::channel(8);
        let responses = client
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch stream")
            .into_inner();
        Stream {
            requests,
            responses,
        }
    }

    /// Sends one request and returns the response it gets.
    async fn ask(&mut self, union: RequestUnion) -> pb::WatchResponse {
        let request = pb::WatchRequest {
            request_union: Some(union),
        };
        self.requests.send(request).await.expect("send request");
        tokio::time::timeout(RESPONSE_DEADLINE, self.responses.message())
            .await
            .expect("a response in time")
            .expect("stream open")
            .expect("a response")
    }

    async fn create(&mut self, key: &str, range_end: &[u8]) -> pb::WatchResponse {
        self.ask(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.into(),
            range_end: range_end.to_vec(),
            ..Default::default()
        }))
        .await
    }

    async fn cancel(&mut self, watch_id: i64) -> pb::WatchResponse {
        self.ask(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id,
        }))
        .await
    }
}

fn refused(r: &pb::WatchResponse) -> (i64, bool, bool, &str) {
    (r.watch_id, r.created, r.canceled, r.cancel_reason.as_str())
}

#[tokio::test]
async fn a_range_holding_no_key_is_refused_as_etcd_refuses_it() {
    let s = TestServer::start().await;
    let mut w = Stream::open(&s).await;
    let empty = (-1, true, true, "mvcc: watcher range is empty");
    assert_eq!(refused(&w.create("b", b"a").await), empty, "end below key");
    assert_eq!(
        refused(&w.create("b", b"b").await),
        empty,
        "end equal to key"
    );
    // A refused create takes no id: the next one gets the first.
    let ok = w.create("b", b"c").await;
    assert_eq!((ok.watch_id, ok.created, ok.canceled), (0, true, false));
    // "\0" is no end: every key from `key` on.
    let from_key = w.create("b", &[0]).await;
    assert_eq!((from_key.watch_id, from_key.canceled), (1, false));
    drop(w);
    s.stop().await;
}

#[tokio::test]
async fn ids_the_server_picks_are_not_reused_after_a_cancel() {
    let s = TestServer::start().await;
    let mut w = Stream::open(&s).await;
    assert_eq!(w.create("k", b"").await.watch_id, 0);
    let cancelled = w.cancel(0).await;
    assert_eq!((cancelled.watch_id, cancelled.canceled), (0, true));
    assert_eq!(
        w.create("k", b"").await.watch_id,
        1,
        "0 was cancelled, not freed"
    );
    // An id the client chose is skipped, as etcd skips it.
    let chosen = w
        .ask(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: "k".into(),
            watch_id: 2,
            ..Default::default()
        }))
        .await;
    assert_eq!((chosen.watch_id, chosen.canceled), (2, false));
    assert_eq!(w.create("k", b"").await.watch_id, 3);
    drop(w);
    s.stop().await;
}
