//! One HTTP/2 connection as a gRPC service, driven with the `h2` crate instead of tonic's
//! `Channel`, because the client's own CPU is taken from the servers it measures.
//!
//! The bench shares a 2-core machine with three servers, so every cycle the client spends per
//! request is a cycle the servers do not get. tonic's `Channel` hands each request to a
//! `tower::buffer::Buffer` worker task and back, and boxes a future in each of its reconnect,
//! origin, user-agent and timeout layers; under it, hyper's HTTP/2 client hands each request
//! over a channel to its connection task, which spawns one more task per request to wait for
//! the response. Measured with `synod bench` against a 3-node dev cluster on the 2-core machine
//! (client CPU per request, two-worker runtime): `Channel` ~20 µs, hyper's client driven
//! directly about the same, `h2` driven directly ~16 µs (~10 µs on the current-thread runtime
//! `run` now uses). With `h2` the caller's own task opens the stream (h2 keeps the connection
//! state behind a lock, not behind a task) and awaits the response itself; the connection task
//! only moves bytes on the socket.
//!
//! The requests on the wire are the ones `Channel` sent: tonic's generated clients build and
//! encode them (`Connection` is an ordinary `tower::Service`, which tonic accepts as a
//! `GrpcService`), the HTTP/2 settings are hyper's defaults (which `Channel` used), and the body
//! goes out as hyper sends it. Only the `user-agent` names the bench instead of tonic.
//!
//! Kept from `Channel`: TCP_NODELAY, the connect timeout, the per-request deadline (reported as
//! `Cancelled: Timeout expired`, as tonic reports its own; see `Deadlines` for why it is coarse). Dropped: reconnecting. A connection
//! that dies stays dead and every later request on it fails at once with `Unavailable` naming
//! the endpoint — a benchmark should show a lost connection as errors, not paper over it.
//! Unary calls only: the request body is sent in full before the response is awaited.
//!
//! With `--cacert` (and `--cert`/`--key`) the same h2 runs over rustls (ALPN h2) to
//! `https://` endpoints, so TLS on and off are measured with one client.

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HeaderValue, USER_AGENT};
use http_body::{Body as _, Frame};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::body::Body;

/// How long establishing one connection (TCP connect plus the HTTP/2 preface) may take.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

// HTTP/2 settings: hyper's client defaults, which is what tonic's `Channel` sent, so leaving
// `Channel` changes no SETTINGS frame and no flow-control behaviour.
/// Per-stream receive window.
pub const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
/// Connection-level receive window.
pub const CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;
/// Largest frame we accept.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Largest header list we accept.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Most send capacity h2 reports as available per stream.
pub const MAX_SEND_BUFFER_BYTES: usize = 1024 * 1024;
/// Streams we may open before the server's SETTINGS arrive.
pub const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Most locally caused stream resets before h2 tears the connection down.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// What every request says about its sender (tonic's `Channel` said `tonic/<version>`): the
/// same for every server the bench is pointed at.
pub const BENCH_USER_AGENT: &str = concat!("synod-bench/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One HTTP/2 connection. Clones share it; each clone is one caller's handle, which is how h2
/// means `SendRequest` to be used (a clone waits on its own stream when the server's stream
/// limit is reached).
#[derive(Clone)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    /// `http://host:port`: the origin the generated clients put in every request's URI, and the
    /// name in error messages.
    origin: http::Uri,
    deadlines: Deadlines,
    /// Set by `poll_ready` when the connection is gone, so that `call` fails with a clear
    /// `Unavailable` rather than tonic's generic "Service was not ready" (code Unknown).
    broken: Option<Arc<str>>,
}

impl Connection {
    /// The `http://host:port` this connection goes to.
    pub fn origin(&self) -> &http::Uri {
        &self.origin
    }
}

/// Sends the HTTP/2 preface on `io` and runs its driver on a task of its own.
async fn h2_over<S>(io: S) -> Result<h2::client::SendRequest<Bytes>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buffer_size(MAX_SEND_BUFFER_BYTES)
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .enable_push(false)
        .handshake::<_, Bytes>(synod_etcd::Unvectored(io))
        .await?;
    // The driver's own error is not lost: h2 hands it to every stream and to `poll_ready`.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Opens one TCP connection to `uri` (`http://host:port`), sets TCP_NODELAY and sends the
/// HTTP/2 preface; the connection's socket I/O runs on a task of its own until every clone is
/// dropped or the peer goes away.
#[cfg(test)]
pub async fn connect(uri: &str, request_timeout: Duration) -> anyhow::Result<Connection> {
    connect_with(uri, request_timeout, None).await
}

/// [`connect`], or over TLS to an `https://` endpoint when given a connector (ALPN h2).
pub async fn connect_with(
    uri: &str,
    request_timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<Connection> {
    let origin: http::Uri = uri
        .parse()
        .with_context(|| format!("bad endpoint `{uri}`"))?;
    let tls = match (origin.scheme_str(), tls) {
        (Some("http"), _) => None,
        (Some("https"), Some(tls)) => Some(tls.clone()),
        (Some("https"), None) => anyhow::bail!("endpoint `{uri}`: https:// needs --cacert"),
        _ => anyhow::bail!("endpoint `{uri}`: only http:// and https:// endpoints"),
    };
    let authority = origin
        .authority()
        .with_context(|| format!("endpoint `{uri}` has no host:port"))?;
    // IPv6 literals are bracketed in URIs only.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(80);
    let open = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        // Small request/reply pairs: Nagle would hold requests back by a delayed-ACK period.
        tcp.set_nodelay(true)?;
        match tls {
            None => h2_over(tcp).await,
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(host.clone())?;
                h2_over(tls.connect(name, tcp).await?).await
            }
        }
    };
    let send = match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), open).await {
        Ok(Ok(send)) => send,
        Ok(Err(e)) => return Err(anyhow::anyhow!(e).context(format!("cannot connect to {uri}"))),
        Err(_) => {
            anyhow::bail!("cannot connect to {uri}: no connection within {CONNECT_TIMEOUT_MS} ms")
        }
    };
    Ok(Connection {
        send,
        origin,
        deadlines: Deadlines::start(request_timeout),
        broken: None,
    })
}

/// Request deadlines without a timer per request. A tokio timer per request costs the client
/// an eventfd write (the timer wheel unparks its driver) and a wheel insert and removal — about
/// a fifth of the client's CPU at 64 in flight, on the same cores as the servers it measures.
/// Instead one task per connection counts ticks of an eighth of the timeout, and a request
/// gives up once nine ticks have passed since it started: after between 1 and 1.125 times the
/// timeout.
#[derive(Clone)]
struct Deadlines {
    ticks: watch::Receiver<u64>,
}

/// Ticks per request timeout; a request waits one more, since it starts mid-tick.
const TICKS_PER_TIMEOUT: u64 = 8;

impl Deadlines {
    fn start(timeout: Duration) -> Deadlines {
        let (tx, ticks) = watch::channel(0u64);
        let period = (timeout / TICKS_PER_TIMEOUT as u32).max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            let mut n = 0u64;
            loop {
                every.tick().await;
                n += 1;
                // Every clone of the connection is gone: nobody waits on a deadline.
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        Deadlines { ticks }
    }

    /// Completes once a request started now is past its deadline.
    fn expiry(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut ticks = self.ticks.clone();
        let due = *ticks.borrow() + TICKS_PER_TIMEOUT + 1;
        async move {
            if ticks.wait_for(|&n| n >= due).await.is_err() {
                // The ticker stopped, which it does only once no connection is left.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The status of a request that failed because the connection to `origin` failed.
fn lost(origin: &http::Uri, e: &dyn std::fmt::Display) -> tonic::Status {
    tonic::Status::unavailable(format!("connection to {origin} lost: {e}"))
}

impl tower_service::Service<http::Request<Body>> for Connection {
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Pending only while the server's concurrent-stream limit holds this clone's last stream.
        match ready!(self.send.poll_ready(cx)) {
            Ok(()) => self.broken = None,
            Err(e) => self.broken = Some(e.to_string().into()),
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if let Some(e) = &self.broken {
            let status = lost(&self.origin, e);
            return Box::pin(async move { Err(status.into()) });
        }
        let (mut head, body) = req.into_parts();
        head.headers
            .insert(USER_AGENT, HeaderValue::from_static(BENCH_USER_AGENT));
        let eos = body.is_end_stream();
        // Opens the stream now, on the caller's task: h2 queues the HEADERS frame for the
        // connection task to write.
        let sent = self
            .send
            .send_request(http::Request::from_parts(head, ()), eos);
        let (expiry, origin) = (self.deadlines.expiry(), self.origin.clone());
        Box::pin(async move {
            let exchange = async {
                let (response, stream) = sent?;
                if !eos {
                    send_body(body, stream).await?;
                }
                response.await
            };
            // As tonic's `Channel` did: the deadline covers the request up to the response head.
            let outcome = tokio::select! {
                biased;
                r = exchange => Ok(r),
                _ = expiry => Err(()),
            };
            match outcome {
                Err(()) => Err(tonic::TimeoutExpired(()).into()),
                Ok(Ok(resp)) => Ok(resp.map(|recv| ResponseBody {
                    recv,
                    data_done: false,
                })),
                Ok(Err(e)) if e.is_io() || e.is_go_away() => Err(lost(&origin, &e).into()),
                // Stream-level errors (a reset with a reason): tonic maps h2 reasons to codes.
                Ok(Err(e)) => Err(e.into()),
            }
        })
    }
}

/// Sends a request body as hyper does: each data frame as it comes, then an empty DATA frame
/// with END_STREAM unless the body said it had ended, or the trailers if it has any. A unary
/// body is ready at once, so this never waits. No capacity is reserved first: h2 buffers what
/// the flow-control window does not yet admit, which is bounded by one message per request in
/// flight.
async fn send_body(mut body: Body, mut tx: h2::SendStream<Bytes>) -> Result<(), h2::Error> {
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let eos = body.is_end_stream();
                    tx.send_data(data, eos)?;
                    if eos {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return tx.send_trailers(trailers);
                    }
                }
            },
            // Encoding failed (e.g. the message is over tonic's size limit): abandon the stream;
            // the server's answer to the reset is what the caller sees.
            Some(Err(_)) => {
                tx.send_reset(h2::Reason::CANCEL);
                return Ok(());
            }
            None => return tx.send_data(Bytes::new(), true),
        }
    }
}

/// A response's h2 stream as an `http_body::Body`: the data frames, each handed back to the
/// flow-control window as it is taken, then the trailers gRPC puts its status in.
pub struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only if the stream is already gone, which the next poll reports.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    //! Against an in-process tonic server on loopback: what a request carries, the deadline, and
    //! what a dead connection looks like to the caller.

    use super::*;
    use crate::client;
    use std::sync::Mutex;
    use synod_etcd::pb::etcdserverpb::kv_server::{Kv, KvServer};
    use synod_etcd::pb::etcdserverpb::*;
    use synod_etcd::pb::mvccpb::KeyValue;
    use tonic::{Code, Request, Response, Status};

    /// The key whose put never answers within the tests' deadline.
    const SLOW_KEY: &[u8] = b"slow";
    /// Far beyond the deadline the tests set: giving up this late means the deadline failed.
    /// (The slow put itself never answers.)
    const SLOW_PUT_MS: u64 = 10_000;
    /// The deadline of the timeout test.
    const SHORT_TIMEOUT_MS: u64 = 200;

    /// Echoes range keys, counts puts, and remembers each request's user-agent.
    #[derive(Default)]
    struct Stub {
        user_agents: Arc<Mutex<Vec<String>>>,
    }

    impl Stub {
        fn note<T>(&self, req: &Request<T>) {
            let ua = req
                .metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.user_agents.lock().expect("not poisoned").push(ua);
        }
    }

    #[tonic::async_trait]
    impl Kv for Stub {
        async fn range(
            &self,
            req: Request<RangeRequest>,
        ) -> Result<Response<RangeResponse>, Status> {
            self.note(&req);
            let key = req.into_inner().key;
            Ok(Response::new(RangeResponse {
                kvs: vec![KeyValue {
                    value: key.clone(),
                    key,
                    ..Default::default()
                }],
                count: 1,
                ..Default::default()
            }))
        }

        async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            self.note(&req);
            if req.get_ref().key == SLOW_KEY {
                std::future::pending::<()>().await;
            }
            Ok(Response::new(PutResponse {
                header: Some(ResponseHeader {
                    revision: 7,
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }

        async fn delete_range(
            &self,
            _: Request<DeleteRangeRequest>,
        ) -> Result<Response<DeleteRangeResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }

        async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }

        async fn compact(
            &self,
            _: Request<CompactionRequest>,
        ) -> Result<Response<CompactionResponse>, Status> {
            Err(Status::unimplemented("stub"))
        }
    }

    /// Serves `stub` on a free loopback port until the test's runtime ends; returns its URI.
    async fn serve(stub: Stub) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback bind");
        let addr = listener.local_addr().expect("bound socket has an address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(stub))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn unary_calls_round_trip_and_say_who_sent_them() {
        let stub = Stub::default();
        let seen = stub.user_agents.clone();
        let uri = serve(stub).await;
        let conn = connect(&uri, Duration::from_secs(5))
            .await
            .expect("connects");
        assert_eq!(conn.origin().to_string(), format!("{uri}/"));
        let mut kv = client::kv(&conn);
        let put = kv
            .put(PutRequest {
                key: b"k".to_vec(),
                value: vec![b'v'; 100_000],
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        assert_eq!(put.header.map(|h| h.revision), Some(7));
        // Many concurrent calls over clones of one connection, as the workers make them.
        let calls = (0..64u32).map(|i| {
            let mut kv = client::kv(&conn);
            async move {
                let key = format!("key-{i}").into_bytes();
                let resp = kv
                    .range(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("range")
                    .into_inner();
                assert_eq!(resp.kvs[0].value, key);
            }
        });
        let handles: Vec<_> = calls.map(tokio::spawn).collect();
        for h in handles {
            h.await.expect("call task");
        }
        let seen = seen.lock().expect("not poisoned");
        assert_eq!(seen.len(), 65);
        assert!(seen.iter().all(|ua| ua == BENCH_USER_AGENT), "{seen:?}");
    }

    #[tokio::test]
    async fn a_late_reply_is_cancelled_at_the_deadline_and_the_connection_lives_on() {
        let uri = serve(Stub::default()).await;
        let conn = connect(&uri, Duration::from_millis(SHORT_TIMEOUT_MS))
            .await
            .expect("connects");
        let mut kv = client::kv(&conn);
        let t0 = std::time::Instant::now();
        let err = kv
            .put(PutRequest {
                key: SLOW_KEY.to_vec(),
                ..Default::default()
            })
            .await
            .expect_err("the slow put outlives the deadline");
        let waited = t0.elapsed();
        // What tonic's `Channel` reported, so error tables read the same as before.
        assert_eq!(err.code(), Code::Cancelled, "{err:?}");
        assert_eq!(err.message(), "Timeout expired");
        assert!(
            waited >= Duration::from_millis(SHORT_TIMEOUT_MS)
                && waited < Duration::from_millis(SLOW_PUT_MS),
            "gave up after {waited:?}"
        );
        let resp = kv
            .range(RangeRequest {
                key: b"after".to_vec(),
                ..Default::default()
            })
            .await
            .expect("the abandoned stream does not take the connection down");
        assert_eq!(resp.into_inner().kvs[0].key, b"after");
    }

    #[tokio::test]
    async fn a_dead_connection_fails_every_request_with_unavailable() {
        // A "server" that accepts and hangs up: the connection dies right after it is made.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback bind");
        let uri = format!(
            "http://{}",
            listener.local_addr().expect("bound socket has an address")
        );
        let hang_up = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            drop(socket);
        });
        let conn = connect(&uri, Duration::from_secs(5))
            .await
            .expect("connects");
        hang_up.await.expect("hung up");
        let mut kv = client::kv(&conn);
        for attempt in 0..3 {
            let err = kv
                .range(RangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })
                .await
                .expect_err("nobody answers");
            assert_eq!(err.code(), Code::Unavailable, "attempt {attempt}: {err:?}");
            assert!(
                err.message()
                    .contains(&format!("connection to {uri}/ lost")),
                "attempt {attempt}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn connect_errors_name_the_endpoint() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
        let addr = listener.local_addr().expect("bound socket has an address");
        drop(listener); // nothing listens there now
        let uri = format!("http://{addr}");
        let err = connect(&uri, Duration::from_secs(1))
            .await
            .err()
            .expect("nothing listens");
        assert!(
            format!("{err:#}").contains(&format!("cannot connect to {uri}")),
            "{err:#}"
        );
        let err = connect("https://127.0.0.1:1", Duration::from_secs(1))
            .await
            .err()
            .expect("https without a CA");
        assert!(format!("{err:#}").contains("needs --cacert"), "{err:#}");
    }
}
