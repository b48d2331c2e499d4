//! The gRPC server loop: accepts connections and drives each one, with every request handler
//! of that connection, inside a single task.
//!
//! Why not tonic's own server: it spawns one task per request (stream), and each handler that
//! finishes wakes the connection task, which then writes and flushes that one response — one
//! `writev` per reply. Profiles of 64-in-flight loads put a third of the API thread in those
//! syscalls. Here a connection's handlers are polled by the connection's own task, handlers
//! first and the connection after, so all the replies that became ready together (the engine
//! answers a whole batch at once) leave in one write. Requests for the KV service skip tonic's
//! router as well; every other service still goes through it.
//!
//! TLS (`--cert-file` …): the handshake runs inside the connection's task, bounded by
//! [`ServerTls`] (timeout, handshakes in progress), so a slow client never holds up the
//! accept loop. A connection is driven as a [`Driver`] generic over its stream, so the plain
//! path is exactly what it was (a `TcpStream`) and a wrapper around the stream composes.
//!
//! **HTTP on the same port**, as etcd's client URL serves it: when the node gives an HTTP
//! router (its HTTP/JSON API with the /v3 gateway, `/metrics`, `/health`, `/version`), a plain
//! connection whose first bytes are not HTTP/2's preface is served as HTTP/1.1 by that router,
//! and so is a TLS connection that negotiated `http/1.1` (one that negotiated nothing is told
//! by its first bytes, as a plain one); an HTTP/2 request that is not gRPC
//! (by its content type) goes to the router too. So `curl http://HOST:2379/health`, a
//! Prometheus scrape and `etcdctl check datascale` work against the gRPC address, as with etcd.
//!
//! Shutdown matches tonic's: stop accepting, send GOAWAY on every connection, let requests in
//! flight finish (at most [`SHUTDOWN_GRACE`]), then return.

use crate::authority::AuthorityFix;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::{
    EtcdService, GRPC_KEEPALIVE_INTERVAL_MS, GRPC_KEEPALIVE_TIMEOUT_MS,
    GRPC_STREAMS_PER_CONNECTION_MAX,
};
use futures::stream::{FuturesUnordered, StreamExt};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use synod_node::tls::ServerTls;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::codegen::Service;
use tonic::service::Routes;

/// The gRPC metadata key etcd clients (clientv3, etcdctl) send their auth token under.
pub const AUTH_TOKEN_METADATA: &str = "token";

/// How long a shutdown waits for a connection's requests in flight before dropping it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// HTTP/2's connection preface: the first bytes of every gRPC client.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest a new plain connection may stay silent before its protocol is known; then it is
/// closed (a client that connects and says nothing holds no task longer than this).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1.1 client may take to send a request's headers.
const HTTP1_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed `accept` (e.g. out of file descriptors), wait this long before the next, so
/// the loop does not spin while the condition lasts.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Response = http::Response<tonic::body::Body>;
use tonic::codegen::http;

/// The etcd services behind one `call`: KV directly, the rest through tonic's router.
#[derive(Clone)]
struct GrpcService {
    kv: KvServer<EtcdService>,
    rest: Routes,
    /// Resolves each request's token to its caller (see `synod_node::auth`).
    auth: Arc<synod_node::auth::AuthGate>,
    /// The subject CN of the connection's verified TLS client certificate: the caller of a
    /// request without a token once auth is on (etcd's rule).
    cert_user: Option<Arc<str>>,
    /// The node's HTTP API, for requests that are not gRPC (module doc).
    http: Option<axum::Router>,
}

/// Whether a request is gRPC: its content type (`application/grpc`, `application/grpc+proto`…).
fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"))
}

/// An HTTP request on the gRPC port, answered by the node's HTTP API (which does its own auth).
fn serve_http(
    router: &axum::Router,
    req: http::Request<Incoming>,
) -> BoxFuture<Result<Response, Infallible>> {
    let mut router = router.clone();
    Box::pin(async move {
        let resp = router.call(req).await?;
        Ok(resp.map(tonic::body::Body::new))
    })
}

impl hyper::service::Service<http::Request<Incoming>> for GrpcService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response, Infallible>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        if let Some(router) = &self.http
            && !is_grpc(&req)
        {
            return serve_http(router, req);
        }
        // Auth off: one atomic load, no scope. On: the whole call runs as its caller — the
        // token's user, else the client certificate's CN.
        let caller = self.auth.enabled().then(|| {
            let headers = req.headers();
            // etcd also takes `authorization` (what its gateway forwards the header as).
            let token = headers
                .get(AUTH_TOKEN_METADATA)
                .or_else(|| headers.get("authorization"));
            let token = token.and_then(|t| t.to_str().ok());
            self.auth.resolve(token, self.cert_user.as_deref())
        });
        let call: BoxFuture<Result<Response, Infallible>> =
            if req.uri().path().starts_with("/etcdserverpb.KV/") {
                let mut kv = self.kv.clone();
                Box::pin(async move { kv.call(req).await })
            } else {
                let mut rest = self.rest.clone();
                Box::pin(async move { rest.call(req).await })
            };
        match caller {
            None => call,
            Some(caller) => Box::pin(synod_node::auth::scope(caller, call)),
        }
    }
}

/// hyper's "executor" for a connection's request handlers: instead of spawning them it hands
/// them to the [`Driver`] of that connection.
#[derive(Clone, Default)]
struct Handlers(Arc<Mutex<Vec<BoxFuture<()>>>>);

impl<F> hyper::rt::Executor<F> for Handlers
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        // A poisoned lock only means a handler panicked while pushing; the Vec is still whole.
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        queue.push(Box::pin(fut));
    }
}

/// A stream (TCP, or TLS over it) that tells h2 it has no vectored writes. h2 then copies DATA frames of up to
/// 1 KiB into its write buffer instead of chaining them — and a chained frame forces a flush
/// before the next frame is buffered, so messages with a 256-byte value would each cost a
/// syscall again, however many were ready together. The bench client uses it too.
pub struct Unvectored<S = TcpStream>(pub S);

impl<S: AsyncRead + Unpin> tokio::io::AsyncRead for Unvectored<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> tokio::io::AsyncWrite for Unvectored<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

type Connection<S> = http2::Connection<TokioIo<AuthorityFix<Unvectored<S>>>, GrpcService, Handlers>;

/// One connection and its handlers, polled as one future.
struct Driver<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    conn: Pin<Box<Connection<S>>>,
    new: Handlers,
    running: FuturesUnordered<BoxFuture<()>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Driver<S> {
    /// Serves HTTP/2 on an accepted (and, with TLS, handshaken) stream.
    fn new(stream: S, service: GrpcService) -> Self {
        let handlers = Handlers::default();
        let conn = http2::Builder::new(handlers.clone())
            .timer(TokioTimer::new())
            .max_concurrent_streams(GRPC_STREAMS_PER_CONNECTION_MAX)
            .keep_alive_interval(Duration::from_millis(GRPC_KEEPALIVE_INTERVAL_MS))
            .keep_alive_timeout(Duration::from_millis(GRPC_KEEPALIVE_TIMEOUT_MS))
            // gRPC clients ignore it; formatting it is pure cost.
            .auto_date_header(false)
            .serve_connection(TokioIo::new(AuthorityFix::new(Unvectored(stream))), service);
        Driver {
            conn: Box::pin(conn),
            new: handlers,
            running: FuturesUnordered::new(),
        }
    }

    fn graceful_shutdown(&mut self) {
        self.conn.as_mut().graceful_shutdown();
    }

    fn take_new(&mut self) -> bool {
        let mut queue = self.new.0.lock().unwrap_or_else(|p| p.into_inner());
        let any = !queue.is_empty();
        self.running.extend(queue.drain(..));
        any
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Future for Driver<S> {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            // Handlers first: the responses they finish are queued in the connection, and the
            // connection poll below writes all of them with one flush.
            while let Poll::Ready(Some(())) = this.running.poll_next_unpin(cx) {}
            let done = this.conn.as_mut().poll(cx);
            if let Poll::Ready(r) = done {
                // The peer is gone or the connection failed: handlers still waiting on the
                // engine have nobody to answer; dropping them is what tonic's reset does.
                return Poll::Ready(r);
            }
            // New requests read by that poll run now, so that the ones that finish at once
            // (errors, serializable reads) are answered without another wake-up.
            if !this.take_new() {
                return Poll::Pending;
            }
        }
    }
}

/// Bounds of the client port.
pub(crate) struct Limits {
    /// Connections served at once; at the bound, no more are accepted until one ends.
    pub connections_max: usize,
}

/// Serves the etcd API on `listener` until `shutdown` completes; over TLS when `tls` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    listener: TcpListener,
    kv: KvServer<EtcdService>,
    rest: Routes,
    auth: Arc<synod_node::auth::AuthGate>,
    tls: Option<Arc<ServerTls>>,
    http: Option<axum::Router>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let mut full_logged = false;
    let service = GrpcService {
        kv,
        rest,
        auth,
        cert_user: None,
        http,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the bound, clients wait in the backlog rather than being taken in.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !std::mem::replace(&mut full_logged, true) {
                    tracing::warn!(
                        max = limits.connections_max,
                        "gRPC port: client connections at their bound; waiting for one to close"
                    );
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                }
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    full_logged = false;
                    // Small request/reply pairs: Nagle's algorithm would hold replies back by
                    // up to a delayed-ACK period.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    let stop = stop_rx.clone();
                    match &tls {
                        None => {
                            let drive = drive_plain(stream, service.clone(), peer, stop);
                            connections.spawn(holding(slot, drive));
                        }
                        Some(tls) => {
                            let service = service.clone();
                            let drive = drive_tls(tls.clone(), stream, service, peer, stop);
                            connections.spawn(holding(slot, drive));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed; retrying");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            // Reap finished connections so the set does not grow with every client ever seen.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// `drive`, holding one of the port's connection slots until it ends.
async fn holding(slot: tokio::sync::OwnedSemaphorePermit, drive: impl Future<Output = ()>) {
    drive.await;
    drop(slot);
}

/// Handshakes (within [`ServerTls`]'s bounds, or until shutdown), then drives the connection.
async fn drive_tls(
    tls: Arc<ServerTls>,
    stream: TcpStream,
    service: GrpcService,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let tls_stream = tokio::select! {
        s = tls.accept_logged(stream, peer, "gRPC") => s,
        _ = stop.wait_for(|s| *s) => None,
    };
    if let Some(s) = tls_stream {
        // Only certificates rustls verified against the trusted CA get this far.
        let cert_user = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| synod_node::tls::common_name(cert.as_ref()))
            .map(Arc::<str>::from);
        let service = GrpcService {
            cert_user,
            ..service
        };
        let alpn = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        match (service.http.clone(), alpn.as_deref()) {
            (Some(router), Some(synod_node::tls::ALPN_HTTP1)) => {
                drive_http1(s, router, peer, stop).await
            }
            // No protocol negotiated (a client that offers no ALPN): told by its first bytes,
            // as on a plain connection.
            (Some(router), None) => {
                let first = tokio::select! {
                    f = tokio::time::timeout(SNIFF_TIMEOUT, first_bytes(s)) => f.ok().flatten(),
                    _ = stop.wait_for(|s| *s) => None,
                };
                match first {
                    Some((h2, s)) if h2 => drive(Driver::new(s, service), peer, stop).await,
                    Some((_, s)) => drive_http1(s, router, peer, stop).await,
                    None => tracing::debug!(%peer, "gRPC port: TLS client silent or gone"),
                }
            }
            _ => drive(Driver::new(s, service), peer, stop).await,
        }
    }
}

/// A plain connection: HTTP/2 (gRPC) if it opens with the preface, else HTTP/1.1 when the node
/// gave an HTTP router (module doc).
async fn drive_plain(
    stream: TcpStream,
    service: GrpcService,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let Some(router) = service.http.clone() else {
        return drive(Driver::new(stream, service), peer, stop).await;
    };
    let h2 = tokio::select! {
        h2 = tokio::time::timeout(SNIFF_TIMEOUT, speaks_h2(&stream)) => h2.ok().flatten(),
        _ = stop.wait_for(|s| *s) => None,
    };
    match h2 {
        Some(true) => drive(Driver::new(stream, service), peer, stop).await,
        Some(false) => drive_http1(stream, router, peer, stop).await,
        None => {
            tracing::debug!(%peer, "gRPC port: connection closed or silent before its first bytes")
        }
    }
}

/// Whether the client's first bytes are HTTP/2's preface, read without consuming them: `false`
/// as soon as they differ from it (an HTTP/1.x request line never starts with `PRI `), `None`
/// if the connection ends first.
async fn speaks_h2(stream: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A prefix of the preface so far; `peek` would return the same bytes at once, so
        // wait, longer each time: a client trickling bytes costs a few wake-ups, not a spin.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Reads a stream's first bytes until they are HTTP/2's preface or differ from it: whether they
/// are, and the stream with them given back to be read again. `None` if it ends first.
async fn first_bytes<S: AsyncRead + Unpin>(mut s: S) -> Option<(bool, Prefixed<S>)> {
    use tokio::io::AsyncReadExt;
    let mut first = Vec::with_capacity(H2_PREFACE.len());
    let mut buf = [0u8; H2_PREFACE.len()];
    while first.len() < H2_PREFACE.len() {
        let want = H2_PREFACE.len() - first.len();
        let n = s.read(&mut buf[..want]).await.ok()?;
        if n == 0 {
            return None;
        }
        first.extend_from_slice(&buf[..n]);
        if first[..] != H2_PREFACE[..first.len()] {
            return Some((false, Prefixed { first, at: 0, s }));
        }
    }
    Some((true, Prefixed { first, at: 0, s }))
}

/// A stream whose first bytes were read already, given back before the rest.
struct Prefixed<S> {
    first: Vec<u8>,
    at: usize,
    s: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = (this.first.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.s).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().s).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().s).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.s.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().s).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().s).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 with the node's HTTP router until the client leaves or shutdown (then the
/// request in flight may finish, at most [`SHUTDOWN_GRACE`]).
async fn drive_http1<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    router: axum::Router,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP1_HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let stopped = async move {
        // The guard `wait_for` returns is not `Send`: drop it before anything else awaits.
        let _ = stop.wait_for(|s| *s).await.is_ok();
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP/1.1 connection on the gRPC port ended");
    }
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut driver: Driver<S>,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let result = tokio::select! {
        r = &mut driver => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    let result = match result {
        Some(r) => r,
        None => {
            driver.graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut driver).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(%peer, "gRPC connection still busy at shutdown; dropped");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "gRPC connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What `speaks_h2` says of a connection whose client writes `parts` with a pause between
    /// them (a trickle, the case under test), then stays until the verdict is in, then closes.
    async fn sniffed(parts: &[&'static [u8]]) -> Option<bool> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let parts = parts.to_vec();
        let (decided_tx, decided_rx) = tokio::sync::oneshot::channel::<()>();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            if parts.is_empty() {
                return; // closes before a byte
            }
            for p in parts {
                s.write_all(p).await.expect("write");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            // The server decides on what was sent, not on the close.
            let _ = decided_rx.await;
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let verdict = tokio::time::timeout(Duration::from_secs(5), speaks_h2(&stream))
            .await
            .expect("decided in time");
        let _ = decided_tx.send(());
        let _ = client.await;
        verdict
    }

    #[tokio::test]
    async fn the_preface_decides_even_when_it_arrives_in_pieces() {
        assert_eq!(sniffed(&[H2_PREFACE]).await, Some(true));
        assert_eq!(
            sniffed(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM", b"\r\n\r\n"]).await,
            Some(true)
        );
        assert_eq!(
            sniffed(&[b"GET /health HTTP/1.1\r\n\r\n"]).await,
            Some(false)
        );
        // "P" could begin the preface; the next byte tells a POST apart.
        assert_eq!(
            sniffed(&[b"P", b"OST /v3/kv/range HTTP/1.1\r\n"]).await,
            Some(false)
        );
        assert_eq!(sniffed(&[]).await, None, "closed before a byte");
    }
}
