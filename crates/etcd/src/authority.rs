//! Makes the gRPC port accept clients that send a URL, not a `host:port`, as HTTP/2
//! `:authority`.
//!
//! etcdctl 3.4 (and clientv3 of that era) dials through a resolver whose target ends in the
//! endpoint as the user wrote it, so `--endpoints=http://10.0.0.1:2379` — the form every
//! `--cluster` command uses, because MemberList's client URLs carry a scheme — arrives as
//! `:authority: http://10.0.0.1:2379`. etcd's grpc-go server ignores the value; the h2 crate
//! under hyper parses it as a URI authority, fails on the `//`, and resets every stream with
//! PROTOCOL_ERROR, and h2 has no switch to relax that.
//!
//! [`AuthorityFix`] sits between the socket and hyper on the read side. It inspects the
//! connection's first header block: when its `:authority` parses, the connection is passed
//! through untouched from then on (the cost for well-behaved clients is one decoded header
//! block per connection). When it does not, every header block of that connection is decoded
//! with the client's HPACK context and re-encoded with a fresh one for the server, with the
//! authority reduced to its `host:port` (or dropped when even that does not parse). HPACK
//! contexts are per direction, so the two stay consistent: the client's encoder keeps talking
//! to our decoder, the server's decoder only ever sees our encoder. Frames other than
//! HEADERS and CONTINUATION are copied through as they arrive.

use loona_hpack::{Decoder, Encoder};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Re-encoded blocks are cut into frames no larger than the HTTP/2 default maximum, which
/// every server accepts whatever it advertised.
const FRAME_PAYLOAD_MAX: usize = 16_384;
/// A header block (HEADERS plus CONTINUATIONs) larger than this closes the connection: the
/// server's own header-list limit is far smaller, so nothing legitimate is refused.
const HEADER_BLOCK_MAX: usize = 1 << 20;
/// How much is read from the socket at a time while frames are being inspected.
const READ_CHUNK: usize = 16 * 1024;

/// What the filter does with the bytes it reads.
enum Mode {
    /// Before and during the first header block: frames are parsed.
    Inspect,
    /// The client's authorities are not `host:port`: header blocks are rewritten.
    Rewrite(Box<Rewriter>),
    /// Bytes go straight from the socket to the reader.
    Pass,
}

/// The two HPACK contexts of a rewritten connection.
struct Rewriter {
    from_client: Decoder<'static>,
    to_server: Encoder<'static>,
}

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream_id: [u8; 4],
    end_stream: bool,
    /// The PRIORITY fields of the HEADERS frame, kept as they were sent.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames exactly as received, forwarded when the block turns out not to need a
    /// rewrite.
    raw: Vec<u8>,
}

/// A stream whose reads deliver the client's HTTP/2 bytes with any non-`host:port`
/// `:authority` rewritten; writes go to the inner stream unchanged.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Whether the preface has been seen (Inspect mode only).
    preface_seen: bool,
    /// Bytes read from the socket and not yet parsed.
    input: Vec<u8>,
    /// Bytes ready for the reader.
    output: Vec<u8>,
    output_at: usize,
    /// Payload bytes of a non-header frame still to copy through unparsed.
    copy_left: usize,
    block: Option<Block>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Inspect,
            preface_seen: false,
            input: Vec::new(),
            output: Vec::new(),
            output_at: 0,
            copy_left: 0,
            block: None,
            eof: false,
        }
    }

    /// Whether header blocks of this connection are being rewritten.
    #[cfg(test)]
    fn rewriting(&self) -> bool {
        matches!(self.mode, Mode::Rewrite(_))
    }

    /// Parses as much of `input` as is complete, appending what the reader gets to `output`.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_seen {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                // Not HTTP/2 with prior knowledge: nothing to fix; hyper answers it.
                return self.pass_rest();
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            self.preface_seen = true;
            self.output.extend_from_slice(PREFACE);
            self.input.drain(..PREFACE.len());
        }
        let mut at = 0;
        loop {
            if self.copy_left > 0 {
                let n = self.copy_left.min(self.input.len() - at);
                self.output.extend_from_slice(&self.input[at..at + n]);
                self.copy_left -= n;
                at += n;
                if self.copy_left > 0 {
                    break;
                }
            }
            if matches!(self.mode, Mode::Pass) {
                self.output.extend_from_slice(&self.input[at..]);
                at = self.input.len();
                break;
            }
            let rest = &self.input[at..];
            if rest.len() < FRAME_HEADER_LEN {
                break;
            }
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let kind = rest[3];
            let header_frame =
                kind == TYPE_HEADERS || (kind == TYPE_CONTINUATION && self.block.is_some());
            if !header_frame {
                // Copied through as it streams in: DATA frames need no buffering.
                self.output.extend_from_slice(&rest[..FRAME_HEADER_LEN]);
                at += FRAME_HEADER_LEN;
                self.copy_left = len;
                continue;
            }
            if rest.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let frame = rest[..FRAME_HEADER_LEN + len].to_vec();
            at += frame.len();
            self.header_frame(&frame)?;
        }
        self.input.drain(..at);
        Ok(())
    }

    /// Switches to pass-through, forwarding whatever was read but not parsed.
    fn pass_rest(&mut self) -> io::Result<()> {
        self.mode = Mode::Pass;
        self.output.append(&mut self.input);
        Ok(())
    }

    /// Takes one HEADERS or CONTINUATION frame; a completed block is decided and emitted.
    fn header_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let payload = &frame[FRAME_HEADER_LEN..];
        if kind == TYPE_HEADERS {
            if self.block.is_some() {
                return Err(invalid("HEADERS frame inside an unfinished header block"));
            }
            let (priority, fragment) = headers_payload(flags, payload)?;
            self.block = Some(Block {
                stream_id: [frame[5], frame[6], frame[7], frame[8]],
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
                raw: Vec::new(),
            });
        } else if let Some(block) = self.block.as_mut() {
            block.fragment.extend_from_slice(payload);
        }
        let Some(block) = self.block.as_mut() else {
            return Ok(());
        };
        block.raw.extend_from_slice(frame);
        if block.raw.len() > HEADER_BLOCK_MAX {
            return Err(invalid("header block larger than 1 MiB"));
        }
        if flags & FLAG_END_HEADERS == 0 {
            return Ok(());
        }
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        self.finish_block(block)
    }

    fn finish_block(&mut self, block: Block) -> io::Result<()> {
        if let Mode::Inspect = self.mode {
            let mut rewriter = Rewriter {
                from_client: Decoder::new(),
                to_server: Encoder::new(),
            };
            let headers = rewriter.decode(&block.fragment)?;
            if !headers
                .iter()
                .any(|(n, v)| n == b":authority" && !authority_ok(v))
            {
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::Pass;
                return Ok(());
            }
            tracing::debug!("client sends a URL as :authority; rewriting its header blocks");
            rewriter.emit(&block, headers, &mut self.output);
            self.mode = Mode::Rewrite(Box::new(rewriter));
            return Ok(());
        }
        if let Mode::Rewrite(rewriter) = &mut self.mode {
            let headers = rewriter.decode(&block.fragment)?;
            rewriter.emit(&block, headers, &mut self.output);
        }
        Ok(())
    }
}

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

impl Rewriter {
    fn decode(&mut self, fragment: &[u8]) -> io::Result<Headers> {
        self.from_client
            .decode(fragment)
            .map_err(|e| invalid(&format!("undecodable header block: {e:?}")))
    }

    /// Re-encodes `headers` with a repaired authority as HEADERS + CONTINUATION frames.
    fn emit(&mut self, block: &Block, headers: Headers, out: &mut Vec<u8>) {
        let fixed: Headers = headers
            .into_iter()
            .filter_map(|(name, value)| {
                if name == b":authority" {
                    repair_authority(&value).map(|v| (name, v))
                } else {
                    Some((name, value))
                }
            })
            .collect();
        let encoded = self
            .to_server
            .encode(fixed.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut first_payload = Vec::new();
        if let Some(p) = block.priority {
            first_payload.extend_from_slice(&p);
        }
        let first_room = FRAME_PAYLOAD_MAX - first_payload.len();
        let (head, mut rest) = encoded.split_at(encoded.len().min(first_room));
        first_payload.extend_from_slice(head);
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        push_frame(out, TYPE_HEADERS, flags, block.stream_id, &first_payload);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(FRAME_PAYLOAD_MAX));
            let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            push_frame(out, TYPE_CONTINUATION, flags, block.stream_id, chunk);
            rest = tail;
        }
    }
}

/// Splits a HEADERS payload into its PRIORITY fields and its header block fragment,
/// dropping padding.
fn headers_payload(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        let (&n, rest) = body
            .split_first()
            .ok_or_else(|| invalid("PADDED HEADERS frame without a pad length"))?;
        pad = usize::from(n);
        body = rest;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if body.len() < 5 {
            return Err(invalid("PRIORITY HEADERS frame too short"));
        }
        let mut p = [0; 5];
        p.copy_from_slice(&body[..5]);
        priority = Some(p);
        body = &body[5..];
    }
    if pad > body.len() {
        return Err(invalid("HEADERS padding longer than the frame"));
    }
    Ok((priority, &body[..body.len() - pad]))
}

fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: [u8; 4], payload: &[u8]) {
    debug_assert!(payload.len() <= FRAME_PAYLOAD_MAX);
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id);
    out.extend_from_slice(payload);
}

/// Whether h2 accepts `value` as an authority.
fn authority_ok(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// `http://host:port/anything` → `host:port`; `None` (drop the header, which HTTP/2 allows)
/// when no usable authority is left.
fn repair_authority(value: &[u8]) -> Option<Vec<u8>> {
    if authority_ok(value) {
        return Some(value.to_vec());
    }
    let text = std::str::from_utf8(value).ok()?;
    let after_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
    let host = after_scheme.split('/').next().unwrap_or_default();
    authority_ok(host.as_bytes()).then(|| host.as_bytes().to_vec())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from client: {what}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_at < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.output_at);
                buf.put_slice(&this.output[this.output_at..this.output_at + n]);
                this.output_at += n;
                if this.output_at == this.output.len() {
                    this.output.clear();
                    this.output_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if (matches!(this.mode, Mode::Pass) && this.input.is_empty()) || this.eof {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let start = this.input.len();
            this.input.resize(start + READ_CHUNK, 0);
            let mut chunk = ReadBuf::new(&mut this.input[start..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
            let got = chunk.filled().len();
            this.input.truncate(start + got);
            ready!(polled)?;
            if got == 0 {
                // EOF: whatever is unparsed goes to hyper as it is, then EOF.
                this.eof = true;
                this.output.append(&mut this.input);
                continue;
            }
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
