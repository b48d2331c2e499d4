//! Streaming calls through the gateway. A gRPC client stream (Watch, LeaseKeepAlive) is fed
//! from the request body: its JSON objects become protobuf frames in a [`tonic::Streaming`],
//! the same type tonic hands the service for a real gRPC call, which then sees the client
//! half-close (etcd's gateway closes its send side at the end of the body too; the services
//! keep serving a half-closed stream). The reply stream goes out as grpc-gateway's
//! `{"result": …}` lines, ended early by [`Replies::OnePerRequest`] where etcd's server
//! would end it after answering every request.

use super::codec;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body_util::Full;
use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use tokio::sync::OwnedSemaphorePermit;
use tonic::codec::Streaming;
use tonic::{Code, Status};
use tonic_prost::ProstDecoder;

/// How long a streamed reply lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replies {
    /// Until the service ends the stream or the HTTP client leaves (Watch, Observe).
    UntilEnd,
    /// One reply per request in the body, then the reply ends (LeaseKeepAlive: etcd's
    /// gateway answers one keep-alive request with one `{"result": …}` line).
    OnePerRequest,
}

/// gRPC's message framing: a compression flag byte (0: none) and a big-endian length.
const FRAME_HEADER_BYTES: usize = 5;

/// A client stream holding `requests`, then closed, exactly as tonic would decode it from a
/// gRPC call; `message_bytes_max` is the server's decoding limit.
pub fn client_stream<T>(requests: &[T], message_bytes_max: usize) -> Result<Streaming<T>, Status>
where
    T: prost::Message + Default + Send + 'static,
{
    let mut frames = BytesMut::new();
    for request in requests {
        let message = request.encode_to_vec();
        let len = u32::try_from(message.len())
            .map_err(|_| Status::invalid_argument(crate::error::REQUEST_TOO_LARGE))?;
        frames.reserve(FRAME_HEADER_BYTES + message.len());
        frames.put_u8(0);
        frames.put_u32(len);
        frames.put_slice(&message);
    }
    Ok(Streaming::new_request(
        ProstDecoder::<T>::default(),
        Full::new(frames.freeze()),
        None,
        Some(message_bytes_max),
    ))
}

type Lines = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

/// What the reply body still has to send.
struct Pending<T> {
    replies: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    /// Replies still to send; `None`: no bound.
    left: Option<usize>,
    /// Held until the reply ends: it is what bounds the open gateway streams.
    _permit: OwnedSemaphorePermit,
}

/// Answers with `replies` as grpc-gateway streams them. The status line waits for the first
/// reply (as grpc-gateway's does), so a call that fails at once gets its HTTP status and a
/// single error object.
pub async fn respond<T, S>(
    replies: S,
    replies_max: Option<usize>,
    permit: OwnedSemaphorePermit,
) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let mut pending = Pending {
        replies: Box::pin(replies),
        left: replies_max,
        _permit: permit,
    };
    if pending.left == Some(0) {
        return codec::stream_response(futures::stream::empty());
    }
    let first = match pending.replies.next().await {
        None => return codec::stream_response(futures::stream::empty()),
        Some(Err(status)) => return codec::stream_error_response(&status),
        Some(Ok(reply)) => match codec::result_line(&reply) {
            Ok(line) => line,
            Err(status) => return codec::stream_error_response(&status),
        },
    };
    pending.left = pending.left.map(|n| n - 1);
    let rest: Lines = Box::pin(futures::stream::unfold(Some(pending), next_line));
    codec::stream_response(futures::stream::once(async move { Ok(first) }).chain(rest))
}

/// The next line of a reply body; after an error line or the last allowed reply, the end.
async fn next_line<T: Serialize>(
    state: Option<Pending<T>>,
) -> Option<(Result<Bytes, Infallible>, Option<Pending<T>>)> {
    let mut pending = state?;
    if pending.left == Some(0) {
        return None;
    }
    match pending.replies.next().await? {
        Ok(reply) => match codec::result_line(&reply) {
            Ok(line) => {
                pending.left = pending.left.map(|n| n - 1);
                Some((Ok(line), Some(pending)))
            }
            Err(status) => Some((Ok(codec::stream_error_line(&status)), None)),
        },
        Err(status) if status.code() == Code::Ok => None,
        Err(status) => Some((Ok(codec::stream_error_line(&status)), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb as pb;

    #[tokio::test]
    async fn client_stream_yields_the_requests_then_ends() {
        let requests = vec![
            pb::LeaseKeepAliveRequest { id: 7 },
            pb::LeaseKeepAliveRequest { id: 8 },
        ];
        let mut s = client_stream(&requests, 1 << 20).expect("stream");
        assert_eq!(s.message().await.expect("first"), Some(requests[0]));
        assert_eq!(s.message().await.expect("second"), Some(requests[1]));
        assert_eq!(s.message().await.expect("end"), None);
    }

    #[tokio::test]
    async fn one_reply_per_request_ends_the_body() {
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let permit = semaphore.clone().try_acquire_owned().expect("permit");
        let endless = futures::stream::repeat_with(|| Ok(pb::LeaseKeepAliveResponse::default()));
        let response = respond(endless, Some(2), permit).await;
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        assert_eq!(&body[..], &b"{\"result\":{}}\n{\"result\":{}}\n"[..]);
        // The permit went with the body.
        assert_eq!(semaphore.available_permits(), 1);
    }
}
