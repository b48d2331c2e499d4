//! One HTTP/2 connection per `--connections`, driven without tonic's `Channel`.
//!
//! Why: `Channel` puts every request through a `tower::buffer::Buffer` — a worker task of its
//! own that each request is handed to and answered from — plus reconnect, origin, user-agent
//! and timeout layers that each box a future. On the 2-core machine the bench shares with three
//! servers, that client-side overhead is CPU the servers do not get. [`Connection`] is the
//! plain alternative: a cloneable `tower::Service` straight over an HTTP/2 connection, which
//! tonic's generated clients accept like any other `GrpcService`. The bytes on the wire are
//! still tonic's gRPC framing over the same HTTP/2 stack, so etcd and Synod see an ordinary
//! gRPC client.
//!
//! What it keeps from `Channel`: TCP_NODELAY, the connect timeout, the per-request deadline
//! (reported as `Cancelled: Timeout expired`, as tonic reports its own), hyper's HTTP/2
//! settings. What it drops: reconnecting. A connection that dies stays dead, and every later
//! request on it fails at once with `Unavailable` naming the endpoint — a benchmark should show
//! a lost connection as errors, not paper over it.

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
use tonic::body::Body;

/// How long establishing one connection (TCP connect plus the HTTP/2 handshake) may take.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

// HTTP/2 settings: hyper's client defaults, which is what tonic's `Channel` sent, so moving off
// `Channel` changes no SETTINGS frame and no flow-control behaviour.
/// Per-stream receive window.
pub const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
/// Connection-level receive window.
pub const CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;
/// Largest frame we accept.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Largest header list we accept.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams we may open before the server's SETTINGS arrive.
pub const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Most locally caused stream resets before the connection is torn down (h2's guard).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// What every request says about its sender. tonic's `Channel` sent `tonic/<version>`; this
/// names the bench instead, the same for every server it is pointed at.
const BENCH_USER_AGENT: &str = concat!("synod-bench/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Which HTTP/2 driver (experiment).
#[derive(Clone)]
enum Driver {
    Hyper(hyper::client::conn::http2::SendRequest<Body>),
    H2(h2::client::SendRequest<Bytes>),
}

/// One HTTP/2 connection; clones share it (each clone is one caller's handle, as h2 intends).
#[derive(Clone)]
pub struct Connection {
    driver: Driver,
    /// `http://host:port`, for the generated clients' `with_origin` and for error messages.
    origin: http::Uri,
    request_timeout: Duration,
    /// Set by `poll_ready` when the connection is gone, so `call` can fail with a clear
    /// `Unavailable` instead of tonic's generic "Service was not ready".
    broken: Option<Arc<str>>,
}

impl Connection {
    /// The `http://host:port` this connection goes to.
    pub fn origin(&self) -> &http::Uri {
        &self.origin
    }

    fn lost(&self, e: &dyn std::fmt::Display) -> tonic::Status {
        tonic::Status::unavailable(format!("connection to {} lost: {e}", self.origin))
    }
}

/// Opens one TCP connection to `uri` (`http://host:port`) with TCP_NODELAY and does the HTTP/2
/// handshake; the connection's I/O runs on a task of its own until the last clone is dropped.
pub async fn connect(uri: &str, request_timeout: Duration) -> anyhow::Result<Connection> {
    let origin: http::Uri = uri
        .parse()
        .with_context(|| format!("bad endpoint `{uri}`"))?;
    anyhow::ensure!(
        origin.scheme_str() == Some("http"),
        "endpoint `{uri}`: only plaintext http:// endpoints are supported"
    );
    let authority = origin
        .authority()
        .with_context(|| format!("endpoint `{uri}` has no host:port"))?;
    // Bracketed IPv6 literals are bracketed in URIs only.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(80);
    let use_h2 = std::env::var("SYNOD_BENCH_DRIVER").as_deref() != Ok("hyper");
    let open = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        // Small request/reply pairs: Nagle would hold requests back by a delayed-ACK period.
        tcp.set_nodelay(true)?;
        let driver = if use_h2 {
            let (send, conn) = h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .max_frame_size(MAX_FRAME_BYTES)
                .max_header_list_size(MAX_HEADER_LIST_BYTES)
                .max_send_buffer_size(1024 * 1024)
                .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
                .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
                .enable_push(false)
                .handshake::<_, Bytes>(tcp)
                .await?;
            // Ends with an error when the peer goes away; every request then reports it.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Driver::H2(send)
        } else {
            let (send, conn) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Driver::Hyper(send)
        };
        Ok::<_, BoxError>(driver)
    };
    let driver = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), open)
        .await
        .map_err(|_| anyhow::anyhow!("no connection within {CONNECT_TIMEOUT_MS} ms"))
        .and_then(|r| r.map_err(|e| anyhow::anyhow!(e)))
        .with_context(|| format!("cannot connect to {uri}"))?;
    Ok(Connection {
        driver,
        origin,
        request_timeout,
        broken: None,
    })
}

impl tower_service::Service<http::Request<Body>> for Connection {
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let r = match &mut self.driver {
            Driver::Hyper(s) => s.poll_ready(cx).map_err(|e| e.to_string()),
            Driver::H2(s) => s.poll_ready(cx).map_err(|e| e.to_string()),
        };
        match ready!(r) {
            Ok(()) => self.broken = None,
            Err(e) => self.broken = Some(e.into()),
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if let Some(e) = &self.broken {
            let status = self.lost(e);
            return Box::pin(async move { Err(status.into()) });
        }
        let (mut head, body) = req.into_parts();
        head.headers
            .insert(USER_AGENT, HeaderValue::from_static(BENCH_USER_AGENT));
        let timeout = self.request_timeout;
        match &mut self.driver {
            Driver::Hyper(s) => {
                let fut = s.send_request(http::Request::from_parts(head, body));
                let origin = self.origin.clone();
                Box::pin(async move {
                    match tokio::time::timeout(timeout, fut).await {
                        Err(_) => Err(tonic::TimeoutExpired(()).into()),
                        Ok(Ok(resp)) => Ok(resp.map(ResponseBody::Hyper)),
                        Ok(Err(e)) if e.is_closed() || e.is_canceled() => Err(
                            tonic::Status::unavailable(format!("connection to {origin} lost: {e}"))
                                .into(),
                        ),
                        Ok(Err(e)) => Err(e.into()),
                    }
                })
            }
            Driver::H2(s) => {
                let eos = body.is_end_stream();
                let sent = s.send_request(http::Request::from_parts(head, ()), eos);
                let origin = self.origin.clone();
                Box::pin(async move {
                    let exchange = async {
                        let (response, stream) = sent?;
                        if !eos {
                            send_body(body, stream).await?;
                        }
                        response.await
                    };
                    match tokio::time::timeout(timeout, exchange).await {
                        Err(_) => Err(tonic::TimeoutExpired(()).into()),
                        Ok(Ok(resp)) => Ok(resp.map(|recv| {
                            ResponseBody::H2(H2Body {
                                recv,
                                data_done: false,
                            })
                        })),
                        Ok(Err(e)) if e.is_io() || e.is_go_away() => Err(
                            tonic::Status::unavailable(format!("connection to {origin} lost: {e}"))
                                .into(),
                        ),
                        Ok(Err(e)) => Err(e.into()),
                    }
                })
            }
        }
    }
}

/// Sends a request body as hyper does: each data frame as it comes, the end of the stream as an
/// empty DATA frame with END_STREAM unless the body said it had ended, trailers if any. A unary
/// body is ready at once, so this never waits; no capacity is reserved, so h2 buffers what the
/// flow-control window does not yet admit (bounded: one message per request in flight).
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
            Some(Err(_)) => {
                tx.send_reset(h2::Reason::CANCEL);
                return Ok(());
            }
            None => return tx.send_data(Bytes::new(), true),
        }
    }
}

/// A response body.
pub enum ResponseBody {
    Hyper(hyper::body::Incoming),
    H2(H2Body),
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Hyper(b) => b.is_end_stream(),
            ResponseBody::H2(b) => b.is_end_stream(),
        }
    }
}

/// An h2 response stream as an `http_body::Body`: data frames (handing their bytes back to the
/// flow-control window as they are taken), then the trailers gRPC puts its status in.
pub struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for H2Body {
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
                    // Only fails if the stream is already gone, which the next poll reports.
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
