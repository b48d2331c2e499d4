//! The authority filter on hand-built HTTP/2 byte streams: rewritten when needed, untouched
//! otherwise, whatever the read sizes.

use super::*;
use tokio::io::AsyncReadExt;

const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

fn request_headers(authority: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_frame(&mut out, kind, flags, stream.to_be_bytes(), payload);
    out
}

/// A client's bytes: two requests sharing one HPACK context (the second refers to the
/// dynamic table entries the first created), the second split over HEADERS (padded, with
/// priority) and a CONTINUATION, with DATA frames between.
fn client_stream(authority: &str) -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&SETTINGS);
    let first = enc.encode(
        request_headers(authority, "/etcdserverpb.KV/Put")
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice())),
    );
    out.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &first));
    out.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\x03abc"));
    let second = enc.encode(
        request_headers(authority, "/etcdserverpb.KV/Range")
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice())),
    );
    let (a, b) = second.split_at(second.len() / 2);
    let mut payload = vec![3];
    payload.extend_from_slice(&[0, 0, 0, 1, 15]);
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0, 0, 0]);
    out.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY,
        3,
        &payload,
    ));
    out.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, b));
    out.extend(frame(0x0, FLAG_END_STREAM, 3, b"\0\0\0\0\x02xy"));
    out
}

/// Yields at most `step` bytes per read, to cut frames at every possible place.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this
            .step
            .min(this.data.len() - this.at)
            .min(buf.remaining());
        buf.put_slice(&this.data[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

async fn filtered(data: Vec<u8>, step: usize) -> (Vec<u8>, bool) {
    let mut fix = AuthorityFix::new(Trickle { data, at: 0, step });
    let mut out = Vec::new();
    fix.read_to_end(&mut out).await.expect("filter");
    let rewriting = fix.rewriting();
    (out, rewriting)
}

/// A frame as the server sees it: type, stream, decoded headers (header blocks), payload.
type ServerFrame = (u8, u32, Headers, Vec<u8>);

/// Parses `bytes` as a server would: the frames, with header blocks decoded.
fn server_view(bytes: &[u8]) -> Vec<ServerFrame> {
    assert!(bytes.starts_with(PREFACE), "preface kept");
    let mut dec = Decoder::new();
    let mut at = PREFACE.len();
    let mut frames = Vec::new();
    let mut pending: Option<(u32, Vec<u8>)> = None;
    while at < bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
        let payload = &bytes[at + 9..at + 9 + len];
        at += 9 + len;
        match kind {
            TYPE_HEADERS => {
                let (_, fragment) = headers_payload(flags, payload).expect("headers");
                pending = Some((stream, fragment.to_vec()));
            }
            TYPE_CONTINUATION => pending
                .as_mut()
                .expect("open block")
                .1
                .extend_from_slice(payload),
            _ => frames.push((kind, stream, Vec::new(), payload.to_vec())),
        }
        if matches!(kind, TYPE_HEADERS | TYPE_CONTINUATION) && flags & FLAG_END_HEADERS != 0 {
            let (stream, block) = pending.take().expect("block");
            let headers = dec.decode(&block).expect("server decodes the block");
            frames.push((TYPE_HEADERS, stream, headers, Vec::new()));
        }
    }
    frames
}

fn authority_of(headers: &[(Vec<u8>, Vec<u8>)]) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test]
async fn url_authority_is_reduced_to_host_port_in_every_block() {
    for step in [1, 7, 4096, usize::MAX] {
        let (out, rewriting) = filtered(client_stream("http://127.0.0.1:2379"), step).await;
        assert!(rewriting, "step {step}");
        let frames = server_view(&out);
        let blocks: Vec<_> = frames.iter().filter(|f| f.0 == TYPE_HEADERS).collect();
        assert_eq!(blocks.len(), 2, "step {step}");
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(authority_of(&b.2).as_deref(), Some("127.0.0.1:2379"));
            let mut expected = request_headers(
                "127.0.0.1:2379",
                if i == 0 {
                    "/etcdserverpb.KV/Put"
                } else {
                    "/etcdserverpb.KV/Range"
                },
            );
            expected.sort();
            let mut got = b.2.clone();
            got.sort();
            assert_eq!(got, expected, "every other header kept, step {step}");
        }
        let data: Vec<_> = frames
            .iter()
            .filter(|f| f.0 == 0x0)
            .map(|f| (f.1, f.3.clone()))
            .collect();
        assert_eq!(
            data,
            vec![
                (1, b"\0\0\0\0\x03abc".to_vec()),
                (3, b"\0\0\0\0\x02xy".to_vec())
            ],
            "DATA frames copied through, step {step}"
        );
        assert!(frames.iter().any(|f| f.0 == 0x4), "SETTINGS copied through");
    }
}

#[tokio::test]
async fn well_formed_authority_passes_through_byte_for_byte() {
    let input = client_stream("127.0.0.1:2379");
    for step in [1, 9, usize::MAX] {
        let (out, rewriting) = filtered(input.clone(), step).await;
        assert!(!rewriting);
        assert_eq!(out, input, "step {step}");
    }
}

#[tokio::test]
async fn non_http2_bytes_and_truncated_streams_pass_through() {
    for input in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        PREFACE[..10].to_vec(),
        client_stream("http://h:1")[..PREFACE.len() + 12].to_vec(),
    ] {
        let (out, _) = filtered(input.clone(), 5).await;
        assert_eq!(out, input);
    }
}

#[tokio::test]
async fn an_authority_with_no_usable_host_is_dropped() {
    let (out, rewriting) = filtered(client_stream("unix:///tmp/sock"), usize::MAX).await;
    assert!(rewriting);
    let frames = server_view(&out);
    for b in frames.iter().filter(|f| f.0 == TYPE_HEADERS) {
        assert_eq!(authority_of(&b.2), None);
    }
}

#[test]
fn repair_keeps_host_and_port_only() {
    assert_eq!(
        repair_authority(b"https://a.b:2379/x/y").as_deref(),
        Some(&b"a.b:2379"[..])
    );
    assert_eq!(
        repair_authority(b"[::1]:2379").as_deref(),
        Some(&b"[::1]:2379"[..])
    );
    assert_eq!(
        repair_authority(b"http://[::1]:2379").as_deref(),
        Some(&b"[::1]:2379"[..])
    );
}

#[tokio::test]
async fn malformed_header_frames_close_the_connection() {
    let mut input = PREFACE.to_vec();
    // PADDED with a pad length larger than the frame.
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_END_HEADERS,
        1,
        &[200, 1, 2],
    ));
    let mut fix = AuthorityFix::new(Trickle {
        data: input,
        at: 0,
        step: usize::MAX,
    });
    let mut out = Vec::new();
    let err = fix.read_to_end(&mut out).await.expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
