//! Peer transport: messages flow between members; another cluster, an unknown member, garbage
//! bytes and oversized frames are refused and the listener keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_core::NodeId;
use synod_node::Metrics;
use synod_node::backup::{ImagePage, ImageQuery};
use synod_node::config::TransportConfig;
use synod_node::transport::{
    Hello, HelloReply, MAGIC, PeerAnswer, PeerAsker, PeerQuestion, SelfChange, Transport,
    decode_payload, encode_frame, read_frame,
};
use synod_node::watch::remote::{EventsPage, EventsQuery};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Msg = (u64, String);
const CLUSTER: u64 = 0xc1;
const DEADLINE: Duration = Duration::from_secs(10);

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn cfg() -> TransportConfig {
    TransportConfig {
        reconnect_backoff_ms_min: 5,
        reconnect_backoff_ms_max: 50,
        frame_bytes_max: 4096,
        ..TransportConfig::default()
    }
}

struct Node {
    t: Transport<Msg>,
    inbox: mpsc::Receiver<(NodeId, Msg)>,
    metrics: Arc<Metrics>,
}

fn start(
    id: NodeId,
    cluster: u64,
    listener: TcpListener,
    peers: Vec<(NodeId, String)>,
    cfg: TransportConfig,
) -> Node {
    let (tx, rx) = mpsc::channel(1024);
    let metrics = Arc::new(Metrics::new());
    let t = Transport::start(id, cluster, peers, listener, cfg, metrics.clone(), tx).unwrap();
    Node {
        t,
        inbox: rx,
        metrics,
    }
}

/// Sends `msg` repeatedly until it arrives (the first sends may be dropped while connecting).
async fn deliver(from: &Node, to_id: NodeId, to: &mut Node, msg: Msg) -> NodeId {
    let start = Instant::now();
    loop {
        from.t.send(to_id, &msg);
        if let Ok(Some((sender, got))) =
            tokio::time::timeout(Duration::from_millis(50), to.inbox.recv()).await
            && got == msg
        {
            return sender;
        }
        assert!(start.elapsed() < DEADLINE, "message {msg:?} never arrived");
    }
}

async fn hello_exchange(addr: std::net::SocketAddr, hello: &Hello) -> (TcpStream, HelloReply) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&encode_frame(hello, 4096).unwrap())
        .await
        .unwrap();
    let reply = read_frame(&mut s, 4096).await.unwrap().unwrap();
    (s, decode_payload(&reply).unwrap())
}

/// After a refusal the acceptor closes: the next read sees end of stream.
async fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("connection not closed: {other:?}"),
    }
}

#[tokio::test]
async fn two_transports_exchange_messages_in_order() {
    let (la, lb) = (bind().await, bind().await);
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let a = start(1, CLUSTER, la, vec![(2, ab.to_string())], cfg());
    let mut b = start(2, CLUSTER, lb, vec![(1, aa.to_string())], cfg());
    let from = deliver(&a, 2, &mut b, (0, "hello".into())).await;
    assert_eq!(from, 1);
    // Once connected, a burst arrives complete and in order.
    for i in 1..=500u64 {
        assert!(a.t.send(2, &(i, format!("m{i}"))));
    }
    let mut next = 1;
    while next <= 500 {
        let (from, (i, body)) = tokio::time::timeout(DEADLINE, b.inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, 1);
        if i == 0 {
            continue; // Late duplicates of the probe message.
        }
        assert_eq!((i, body), (next, format!("m{next}")));
        next += 1;
    }
    let mut a = a;
    let back = deliver(&b, 1, &mut a, (7, "back".into())).await;
    assert_eq!(back, 2);
    assert_eq!(a.t.connected_peers(), vec![2]);
    assert!(
        a.metrics
            .encode()
            .contains("synod_peer_connected{peer=\"2\"} 1")
    );
}

#[tokio::test]
async fn wrong_cluster_and_unknown_members_are_refused() {
    let l = bind().await;
    let addr = l.local_addr().unwrap();
    let mut node = start(1, CLUSTER, l, vec![(2, "127.0.0.1:1".into())], cfg());
    let good = Hello {
        magic: MAGIC,
        cluster_id: CLUSTER,
        from: 2,
        to: 1,
        data_id: 0,
        probe: false,
        replace_data_id: false,
        question: None,
    };
    let cases = [
        (
            Hello {
                cluster_id: 0xbad,
                ..good.clone()
            },
            "wrong cluster",
        ),
        (
            Hello {
                from: 9,
                ..good.clone()
            },
            "unknown member 9",
        ),
        (
            Hello {
                from: 1,
                ..good.clone()
            },
            "unknown member 1",
        ),
        (
            Hello {
                to: 3,
                ..good.clone()
            },
            "addressed to member 3",
        ),
        (
            Hello {
                magic: *b"HTTP",
                ..good.clone()
            },
            "bad magic",
        ),
    ];
    for (hello, why) in cases {
        let (mut s, reply) = hello_exchange(addr, &hello).await;
        match reply {
            HelloReply::Refused(r) => assert!(r.contains(why), "{r:?} should say {why:?}"),
            other => panic!("{hello:?} answered {other:?}"),
        }
        assert_closed(&mut s).await;
    }
    // A real member is still accepted and its messages reach the inbox.
    let (mut s, reply) = hello_exchange(addr, &good).await;
    assert_eq!(reply, HelloReply::Accepted);
    s.write_all(&encode_frame(&(5u64, "ok".to_string()), 4096).unwrap())
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, node.inbox.recv())
        .await
        .unwrap();
    assert_eq!(got, Some((2, (5, "ok".to_string()))));
}

#[tokio::test]
async fn transports_of_different_clusters_never_connect() {
    let (la, lb) = (bind().await, bind().await);
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let a = start(1, CLUSTER, la, vec![(2, ab.to_string())], cfg());
    let mut b = start(2, CLUSTER + 1, lb, vec![(1, aa.to_string())], cfg());
    // Give the dialers time for several attempts (backoff is at most 50 ms here), sending
    // all along: nothing may arrive and neither side may count the other as connected.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        a.t.send(2, &(1, "x".into()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.inbox.try_recv().is_err());
    assert!(a.t.connected_peers().is_empty());
    assert!(b.t.connected_peers().is_empty());
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_the_connection_and_listener_keeps_serving() {
    let l = bind().await;
    let addr = l.local_addr().unwrap();
    let mut node = start(1, CLUSTER, l, vec![(2, "127.0.0.1:1".into())], cfg());
    // Garbage instead of a handshake.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut s).await;
    // A length prefix over frame_bytes_max.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&(1_000_000u32).to_be_bytes()).await.unwrap();
    assert_closed(&mut s).await;
    // A valid handshake followed by an oversized frame, then by garbage in a valid frame.
    let good = Hello {
        magic: MAGIC,
        cluster_id: CLUSTER,
        from: 2,
        to: 1,
        data_id: 0,
        probe: false,
        replace_data_id: false,
        question: None,
    };
    let (mut s, reply) = hello_exchange(addr, &good).await;
    assert_eq!(reply, HelloReply::Accepted);
    s.write_all(&(5000u32).to_be_bytes()).await.unwrap();
    s.write_all(&[0u8; 5000]).await.unwrap();
    assert_closed(&mut s).await;
    let (mut s, _) = hello_exchange(addr, &good).await;
    s.write_all(&[0, 0, 0, 3, 1, 0xff, 0xff]).await.unwrap();
    assert_closed(&mut s).await;
    let (mut s, _) = hello_exchange(addr, &good).await;
    s.write_all(&[0, 0, 0, 2, 9, 0]).await.unwrap(); // unknown wire version 9
    assert_closed(&mut s).await;
    assert!(node.inbox.try_recv().is_err());
    // Still serving.
    let (mut s, reply) = hello_exchange(addr, &good).await;
    assert_eq!(reply, HelloReply::Accepted);
    s.write_all(&encode_frame(&(1u64, "alive".to_string()), 4096).unwrap())
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, node.inbox.recv())
        .await
        .unwrap();
    assert_eq!(got, Some((2, (1, "alive".to_string()))));
}

#[tokio::test]
async fn a_dead_peer_fills_only_its_own_queue_and_drops_are_counted() {
    let (la, lb) = (bind().await, bind().await);
    let ab = lb.local_addr().unwrap();
    // Peer 3 is dead: nothing listens on its address (bound, read back, closed).
    let dead = bind().await.local_addr().unwrap();
    let small = TransportConfig {
        peer_queue_messages_max: 8,
        ..cfg()
    };
    let a = start(
        1,
        CLUSTER,
        la,
        vec![(2, ab.to_string()), (3, dead.to_string())],
        small,
    );
    let mut b = start(2, CLUSTER, lb, vec![(1, "127.0.0.1:1".into())], cfg());
    let sent: usize = (0..100).filter(|i| a.t.send(3, &(*i, "x".into()))).count();
    // Nothing drains a never-connected peer's queue: exactly its bound is accepted.
    assert_eq!(sent, 8, "queue bound not applied");
    let dropped = a.metrics.encode();
    assert!(
        dropped.contains("synod_peer_dropped_messages_total{peer=\"3\"}"),
        "{dropped}"
    );
    // Peer 2 is unaffected.
    deliver(&a, 2, &mut b, (42, "fine".into())).await;
}

/// Readers moved to another runtime (as the node does with its engine thread's), and frames
/// large enough that the socket takes them only in parts: the backlog path must still deliver
/// every frame whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_readers_and_partial_writes_deliver_whole_frames_in_order() {
    let (la, lb) = (bind().await, bind().await);
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let big = TransportConfig {
        frame_bytes_max: 1 << 20,
        ..cfg()
    };
    // The readers' runtime runs on a thread of its own until the test ends.
    let (rt_tx, rt_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt_tx.send(rt.handle().clone()).unwrap();
        rt.block_on(async {
            let _ = stop_rx.await;
        });
    });
    let readers = rt_rx.recv().unwrap();
    let (tx, mut inbox) = mpsc::channel(16);
    let metrics = Arc::new(Metrics::new());
    let _b = Transport::<Msg>::start_with_identity(
        2,
        CLUSTER,
        vec![(1, aa.to_string())],
        lb,
        big.clone(),
        metrics,
        tx,
        None,
        Some(readers),
    )
    .unwrap();
    let a = start(1, CLUSTER, la, vec![(2, ab.to_string())], big);
    let start_at = Instant::now();
    while a.t.connected_peers().is_empty() {
        assert!(start_at.elapsed() < DEADLINE, "never connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 64 frames of 200 KB: far more than a loopback socket buffer takes at once.
    let body = "x".repeat(200_000);
    for i in 0..64u64 {
        assert!(a.t.send(2, &(i, body.clone())));
    }
    for i in 0..64u64 {
        let (from, (n, got)) = tokio::time::timeout(DEADLINE, inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((from, n), (1, i));
        assert_eq!(got.len(), body.len());
    }
    let _ = stop_tx.send(());
    thread.join().unwrap();
}

/// A peer that dials us is back: our writer to it stops backing off and connects at once,
/// instead of after the rest of a backoff that grew while the peer was down.
#[tokio::test]
async fn a_peer_that_dials_us_is_redialed_without_waiting_out_the_backoff() {
    // Backoff far longer than the test's bound: only the redial can connect in time.
    let long = TransportConfig {
        reconnect_backoff_ms_min: 30_000,
        reconnect_backoff_ms_max: 30_000,
        ..cfg()
    };
    // Peer 2's address answers 1's first dial by closing it mid-handshake: 1 then backs off
    // for 30 s. Waiting for that dial (not for a while) makes the backoff certain.
    let lb = bind().await;
    let ab = lb.local_addr().unwrap();
    let la = bind().await;
    let aa = la.local_addr().unwrap();
    let a = start(1, CLUSTER, la, vec![(2, ab.to_string())], long);
    let (first_dial, _) = tokio::time::timeout(DEADLINE, lb.accept())
        .await
        .expect("1 dials 2 at once")
        .unwrap();
    drop(first_dial);
    assert!(a.t.connected_peers().is_empty());
    // Peer 2 comes up on that address and dials 1 (its own backoff is fresh).
    let back = Instant::now();
    let b = start(2, CLUSTER, lb, vec![(1, aa.to_string())], cfg());
    while a.t.connected_peers() != vec![2] {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "1 did not redial 2 within 5 s of hearing from it (backoff 30 s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(b);
}

/// The member set follows the configuration: an added member is dialed and accepted, a removed
/// one's open connection is dropped at its next frame and its new hellos are refused naming
/// the configuration version.
#[tokio::test]
async fn set_members_adds_and_drops_peers() {
    let (la, lb, lc) = (bind().await, bind().await, bind().await);
    let (aa, ab, ac) = (
        la.local_addr().unwrap(),
        lb.local_addr().unwrap(),
        lc.local_addr().unwrap(),
    );
    let mut a = start(1, CLUSTER, la, vec![(2, ab.to_string())], cfg());
    let b = start(2, CLUSTER, lb, vec![(1, aa.to_string())], cfg());
    let mut c = start(3, CLUSTER, lc, vec![(1, aa.to_string())], cfg());
    deliver(&b, 1, &mut a, (1, "from 2".into())).await;

    // 3 is added: 1 dials it and accepts it.
    a.t.set_members(1, vec![(2, ab.to_string()), (3, ac.to_string())]);
    assert_eq!(a.t.peer_ids(), vec![2, 3]);
    deliver(&a, 3, &mut c, (2, "to 3".into())).await;
    assert_eq!(deliver(&c, 1, &mut a, (3, "from 3".into())).await, 3);

    // 2 is removed: 1 no longer sends to it, and drops what 2 sends on its open connection.
    a.t.set_members(2, vec![(3, ac.to_string())]);
    assert_eq!(a.t.peer_ids(), vec![3]);
    assert!(!a.t.send(2, &(4, "to 2".into())));
    for i in 0..20 {
        b.t.send(1, &(100 + i, "stale".into()));
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        // Only what 2 sent after its removal counts (retried deliveries may be queued).
        while let Some((from, (i, _))) = a.inbox.recv().await {
            if from == 2 && i >= 100 {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        !matches!(quiet, Ok(true)),
        "a removed member's frame reached the engine"
    );
    let hello = Hello {
        magic: MAGIC,
        cluster_id: CLUSTER,
        from: 2,
        to: 1,
        data_id: 0,
        probe: false,
        replace_data_id: false,
        question: None,
    };
    let (mut s, reply) = hello_exchange(aa, &hello).await;
    match reply {
        HelloReply::Refused(r) => assert!(
            r.contains("unknown member 2: not in configuration version 2"),
            "{r}"
        ),
        other => panic!("a removed member was not refused: {other:?}"),
    }
    assert_closed(&mut s).await;
}

/// A member this node is connected to may not rejoin (it was not wiped: it is right there),
/// whatever data directory id its question shows.
#[tokio::test]
async fn a_connected_member_may_not_rejoin() {
    let (la, lb) = (bind().await, bind().await);
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let a = start(1, CLUSTER, la, vec![(2, ab.to_string())], cfg());
    let _b = start(2, CLUSTER, lb, vec![(1, aa.to_string())], cfg());
    let start_at = Instant::now();
    while a.t.connected_peers().is_empty() {
        assert!(start_at.elapsed() < DEADLINE, "never connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rejoin = PeerQuestion::Member(SelfChange::Rejoin {
        name: "n2".into(),
        peer_addr: ab.to_string(),
        http_addr: String::new(),
        grpc_addr: String::new(),
    });
    let asker = PeerAsker::new(2, CLUSTER, cfg()).with_data_id(99);
    let refused = asker.ask(1, &aa.to_string(), rejoin).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("connected to it: it was not wiped")),
        "{refused:?}"
    );
}

/// A member's question (the corruption check's) is answered by what the node set; before the
/// node set anything, "starting"; a stranger's or another cluster's question is refused as its
/// hello would be.
#[tokio::test]
async fn questions_from_members_are_answered_and_strangers_refused() {
    let l = bind().await;
    let addr = l.local_addr().unwrap().to_string();
    let node = start(1, CLUSTER, l, vec![(2, "127.0.0.1:1".into())], cfg());
    let member = PeerAsker::new(2, CLUSTER, cfg());
    let early = member.ask(1, &addr, PeerQuestion::Revision).await;
    assert!(matches!(early, Ok(PeerAnswer::Unavailable(_))), "{early:?}");
    node.t.set_answerer(Arc::new(|from, q| {
        Box::pin(async move {
            match q {
                PeerQuestion::Revision => PeerAnswer::Revision(42),
                PeerQuestion::HashKv { revision } => PeerAnswer::HashKv {
                    hash: revision as u32 + 1,
                    revision,
                    compact_revision: 7,
                },
                PeerQuestion::Member(_) => PeerAnswer::Member {
                    id: from,
                    version: 1,
                },
                PeerQuestion::Groups => PeerAnswer::Groups(vec![(0, 42, 7), (3, 40, 7)]),
                PeerQuestion::GroupHashKv { group, revision } => PeerAnswer::HashKv {
                    hash: (group * 100 + revision) as u32,
                    revision,
                    compact_revision: 7,
                },
                PeerQuestion::Image(q) => PeerAnswer::Image(ImagePage {
                    taken: q.taken + 1,
                    applied_index: 3,
                    revision: 4,
                    compact_revision: 1,
                    keys: 2,
                    total: 8,
                    chunk: vec![q.group as u8; q.offset as usize],
                }),
                PeerQuestion::Events(q) => PeerAnswer::Events(EventsPage {
                    revisions: Vec::new(),
                    through: q.start + u64::from(q.max),
                    compacted: 7,
                    moves: Vec::new(),
                }),
            }
        })
    }));
    let revision = member.ask(1, &addr, PeerQuestion::Revision).await;
    assert_eq!(revision, Ok(PeerAnswer::Revision(42)));
    let query = EventsQuery {
        group: 3,
        start: 10,
        max: 5,
        wait_ms: 0,
    };
    let events = member.ask(1, &addr, PeerQuestion::Events(query)).await;
    let page = EventsPage {
        revisions: Vec::new(),
        through: 15,
        compacted: 7,
        moves: Vec::new(),
    };
    assert_eq!(events, Ok(PeerAnswer::Events(page)));
    let groups = member.ask(1, &addr, PeerQuestion::Groups).await;
    assert_eq!(groups, Ok(PeerAnswer::Groups(vec![(0, 42, 7), (3, 40, 7)])));
    let question = PeerQuestion::GroupHashKv {
        group: 3,
        revision: 9,
    };
    let group_hash = member.ask(1, &addr, question).await;
    let want = PeerAnswer::HashKv {
        hash: 309,
        revision: 9,
        compact_revision: 7,
    };
    assert_eq!(group_hash, Ok(want));
    let hash = member
        .ask(1, &addr, PeerQuestion::HashKv { revision: 9 })
        .await;
    let want = PeerAnswer::HashKv {
        hash: 10,
        revision: 9,
        compact_revision: 7,
    };
    assert_eq!(hash, Ok(want));
    let image = ImageQuery {
        group: 5,
        taken: 1,
        offset: 3,
    };
    let page = member.ask(1, &addr, PeerQuestion::Image(image)).await;
    let want = ImagePage {
        taken: 2,
        applied_index: 3,
        revision: 4,
        compact_revision: 1,
        keys: 2,
        total: 8,
        chunk: vec![5; 3],
    };
    assert_eq!(page, Ok(PeerAnswer::Image(want)));
    // A rejoin may come from an id no longer a member (its removal already decided): the
    // answerer checks it. From a member it must name its (new) data directory.
    let rejoin = PeerQuestion::Member(SelfChange::Rejoin {
        name: "n9".into(),
        peer_addr: "127.0.0.1:9".into(),
        http_addr: String::new(),
        grpc_addr: String::new(),
    });
    let removed = PeerAsker::new(9, CLUSTER, cfg()).with_data_id(77);
    let answered = removed.ask(1, &addr, rejoin.clone()).await;
    assert_eq!(answered, Ok(PeerAnswer::Member { id: 9, version: 1 }));
    let unnamed = member.ask(1, &addr, rejoin.clone()).await;
    assert!(
        unnamed
            .as_ref()
            .is_err_and(|e| e.contains("without naming its data directory")),
        "{unnamed:?}"
    );
    let named = PeerAsker::new(2, CLUSTER, cfg()).with_data_id(78);
    let answered = named.ask(1, &addr, rejoin).await;
    assert_eq!(answered, Ok(PeerAnswer::Member { id: 2, version: 1 }));
    for (asker, why) in [
        (PeerAsker::new(9, CLUSTER, cfg()), "unknown member 9"),
        (PeerAsker::new(2, 0xbad, cfg()), "wrong cluster"),
    ] {
        let refused = asker.ask(1, &addr, PeerQuestion::Revision).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains(why)),
            "{refused:?} should say {why:?}"
        );
    }
}

/// A hello with `question` from member `from` to member 1 of [`CLUSTER`].
fn asking(from: NodeId, question: PeerQuestion) -> Hello {
    Hello {
        magic: MAGIC,
        cluster_id: CLUSTER,
        from,
        to: 1,
        data_id: 0,
        probe: false,
        replace_data_id: false,
        question: Some(question),
    }
}

/// An answered connection takes the same member's next questions, each checked as the first:
/// a question that changes membership, or a hello from another member, closes it instead.
#[tokio::test]
async fn an_answered_connection_takes_more_questions() {
    let l = bind().await;
    let addr = l.local_addr().unwrap();
    let peers = vec![(2, "127.0.0.1:1".into()), (3, "127.0.0.1:1".into())];
    let node = start(1, CLUSTER, l, peers, cfg());
    node.t.set_answerer(Arc::new(|from, _| {
        Box::pin(async move { PeerAnswer::Revision(from * 10) })
    }));
    let answered = |reply: HelloReply| match reply {
        HelloReply::Answer(PeerAnswer::Revision(r)) => r,
        other => panic!("not answered: {other:?}"),
    };
    for closing in [
        asking(2, PeerQuestion::Member(SelfChange::Promote)),
        asking(3, PeerQuestion::Revision),
    ] {
        let (mut s, reply) = hello_exchange(addr, &asking(2, PeerQuestion::Revision)).await;
        assert_eq!(answered(reply), 20);
        for _ in 0..3 {
            let again = asking(2, PeerQuestion::Groups);
            s.write_all(&encode_frame(&again, 4096).unwrap())
                .await
                .unwrap();
            let reply = read_frame(&mut s, 4096).await.unwrap().unwrap();
            assert_eq!(answered(decode_payload(&reply).unwrap()), 20);
        }
        s.write_all(&encode_frame(&closing, 4096).unwrap())
            .await
            .unwrap();
        assert_closed(&mut s).await;
    }
}

/// An asker keeps an answered connection for its next question to the same peer, and asks on
/// a new one when the kept connection turns out closed; membership questions always dial.
#[tokio::test]
async fn an_asker_reuses_its_connection_and_redials_a_closed_one() {
    let l = bind().await;
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = accepted.clone();
    // A peer that answers three questions per connection, then closes it.
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                for _ in 0..3 {
                    let Ok(Some(frame)) = read_frame(&mut s, 4096).await else {
                        return;
                    };
                    let _: Hello = decode_payload(&frame).unwrap();
                    let reply = HelloReply::Answer(PeerAnswer::Revision(n));
                    s.write_all(&encode_frame(&reply, 4096).unwrap())
                        .await
                        .unwrap();
                }
            });
        }
    });
    let asker = PeerAsker::new(2, CLUSTER, cfg());
    let mut answers = Vec::new();
    for _ in 0..4 {
        match asker.ask(1, &addr, PeerQuestion::Revision).await {
            Ok(PeerAnswer::Revision(connection)) => answers.push(connection),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        answers,
        [1, 1, 1, 2],
        "one connection, then a new one after it closed"
    );
    let promote = PeerQuestion::Member(SelfChange::Promote);
    assert_eq!(
        asker.ask(1, &addr, promote).await,
        Ok(PeerAnswer::Revision(3))
    );
    assert_eq!(
        asker.ask(1, &addr, PeerQuestion::Groups).await,
        Ok(PeerAnswer::Revision(2)),
        "the kept connection again, not the membership question's"
    );
}
