//! A TCP listener that bounds open connections. Beyond the bound a new connection gets a
//! canned `503 busy` JSON answer and is closed, so a flood of connections costs the node a
//! fixed amount of memory and file descriptors instead of piling up in hyper.
//!
//! axum's own `TcpListener` impl accepts without limit; this wraps it. Each accepted stream
//! carries a semaphore permit that is returned when hyper drops the connection.
//!
//! With TLS the handshake runs in a task of its own (bounded by [`ServerTls`]: timeout and
//! handshakes in progress; the connection holds its permit meanwhile) and the finished
//! stream comes back through a channel, so one slow client never stalls `accept`.

use crate::error::{ErrorCode, HttpError};
use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use synod_node::tls::{ServerStream, ServerTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Refused connections being answered at once; beyond this they are closed without an answer
/// (the answer itself must not become the unbounded work a flood causes).
pub const REFUSED_CONNECTIONS_ANSWERING_MAX: usize = 64;
/// How long a refused connection may take to send its request head and read our answer.
pub const REFUSED_CONNECTION_TIMEOUT_MS: u64 = 500;
/// How much of a refused connection's request we read before answering (so the client is
/// not reset before it can read the 503).
pub const REFUSED_REQUEST_READ_BYTES_MAX: usize = 8 * 1024;
/// Pause after an accept error such as EMFILE, so the loop does not spin.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;

pub struct LimitedListener {
    tcp: Tcp,
    tls: Option<TlsAccept>,
}

/// The bounded TCP side.
struct Tcp {
    inner: TcpListener,
    connections: Arc<Semaphore>,
    answering_refused: Arc<Semaphore>,
}

/// The TLS side of a listener: where handshakes finish.
struct TlsAccept {
    server: Arc<ServerTls>,
    done_tx: mpsc::Sender<(LimitedStream, SocketAddr)>,
    done_rx: mpsc::Receiver<(LimitedStream, SocketAddr)>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, connections_max: usize) -> Self {
        assert!(connections_max > 0, "connections_max must be positive");
        LimitedListener {
            tcp: Tcp {
                inner,
                connections: Arc::new(Semaphore::new(connections_max)),
                answering_refused: Arc::new(Semaphore::new(REFUSED_CONNECTIONS_ANSWERING_MAX)),
            },
            tls: None,
        }
    }

    /// Serves TLS on every connection (see the module doc).
    pub fn with_tls(mut self, server: Arc<ServerTls>) -> Self {
        // Bounded by the permits: every stream in the channel holds one.
        let (done_tx, done_rx) = mpsc::channel(synod_node::tls::TLS_HANDSHAKES_IN_PROGRESS_MAX);
        self.tls = Some(TlsAccept {
            server,
            done_tx,
            done_rx,
        });
        self
    }
}

impl Tcp {
    /// The next TCP connection with a permit.
    async fn accept(&self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Per-connection errors (the peer reset before we accepted) are routine;
                    // resource errors (EMFILE) are worth a warning and a pause.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::warn!(error = %e, "accepting an HTTP connection failed");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    }
                    continue;
                }
            };
            match self.connections.clone().try_acquire_owned() {
                Ok(permit) => {
                    // Small request/response exchanges: Nagle would only add latency.
                    let _ = stream.set_nodelay(true);
                    return (stream, addr, permit);
                }
                Err(_) => {
                    tracing::debug!(%addr, "refusing an HTTP connection: too many open");
                    if let Ok(permit) = self.answering_refused.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            answer_refused(stream).await;
                            drop(permit);
                        });
                    }
                    // else: dropping the stream closes it; the flood is bigger than we answer.
                }
            }
        }
    }
}

/// An accepted connection holding one of the listener's permits.
pub struct LimitedStream {
    stream: ServerStream,
    _permit: OwnedSemaphorePermit,
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let Some(tls) = &mut self.tls else {
            let (stream, addr, permit) = self.tcp.accept().await;
            let stream = LimitedStream {
                stream: ServerStream::Plain(stream),
                _permit: permit,
            };
            return (stream, addr);
        };
        loop {
            let (stream, addr, permit) = tokio::select! {
                Some(done) = tls.done_rx.recv() => return done,
                accepted = self.tcp.accept() => accepted,
            };
            let (server, done) = (tls.server.clone(), tls.done_tx.clone());
            tokio::spawn(async move {
                if let Some(s) = server.accept_logged(stream, addr, "HTTP").await {
                    let stream = LimitedStream {
                        stream: ServerStream::Tls(Box::new(s)),
                        _permit: permit,
                    };
                    let _ = done.send((stream, addr)).await;
                }
            });
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.inner.local_addr()
    }
}

/// Reads the request head (up to a bound, within a deadline) and writes `503 busy`.
async fn answer_refused(mut stream: TcpStream) {
    let answer = async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < REFUSED_REQUEST_READ_BYTES_MAX
            && !head.windows(4).any(|w| w == b"\r\n\r\n")
        {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let body = HttpError::new(
            ErrorCode::Busy,
            "too many open connections at this node; retry later",
        )
        .body();
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let timeout = Duration::from_millis(REFUSED_CONNECTION_TIMEOUT_MS);
    if let Ok(Err(e)) = tokio::time::timeout(timeout, answer).await {
        tracing::debug!(error = %e, "answering a refused connection failed");
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
