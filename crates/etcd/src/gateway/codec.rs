//! The gateway's wire format: request bodies in (bounded, protobuf-JSON via the pbjson impls
//! generated in `build.rs`), replies and errors out, each exactly as etcd 3.4's grpc-gateway
//! (v1) writes them:
//!
//! * a unary reply is the response message itself; a streamed one is a sequence of
//!   `{"result": <message>}` lines, one per HTTP chunk;
//! * a unary error (and any error before a call is made: a body that is too large, not JSON,
//!   or not the request message) is `{"error": msg, "code": grpc_code, "message": msg}` with
//!   the HTTP status from [`http_status`];
//! * a stream's error is `{"error": {"grpc_code", "http_code", "message", "http_status"}}`,
//!   as the whole body (status from [`http_status`]) if nothing was sent yet, else as the last
//!   line.
//!
//! One deviation: a body that is not a valid request on a streaming route (Watch,
//! LeaseKeepAlive) is a 400 here; etcd's gateway passes the decoder's plain error on and
//! answers 500.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Code, Status};

/// The HTTP status grpc-gateway v1's `runtime.HTTPStatusFromCode` gives a gRPC code (the
/// version etcd 3.4 ships: FAILED_PRECONDITION is 400, not 412; RESOURCE_EXHAUSTED is 429).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// grpc-gateway's unary error body (`runtime.errorBody`: error, code, message; no details).
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: i32,
    message: &'a str,
}

/// grpc-gateway's stream error (`internal.StreamError`), sent as `{"error": …}`.
#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

#[derive(Serialize)]
struct StreamErrorChunk<'a> {
    error: StreamError<'a>,
}

/// One streamed reply, `{"result": <message>}`.
#[derive(Serialize)]
struct ResultChunk<'a, T> {
    result: &'a T,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A unary error, as grpc-gateway sends it. The gRPC code travels in the response's
/// extensions too, so the HTTP edge can label its metrics.
pub fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        code: status.code() as i32,
        message: status.message(),
    };
    // Three plain fields: serialising cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    json_response(http_status(status.code()), bytes)
}

/// A successful unary reply: the message in protobuf JSON.
pub fn message_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(e) => error_response(&Status::internal(format!(
            "synod: cannot encode the reply as JSON: {e}"
        ))),
    }
}

/// One `{"result": …}` line of a stream.
pub fn result_line<T: Serialize>(message: &T) -> Result<Bytes, Status> {
    let mut bytes = serde_json::to_vec(&ResultChunk { result: message })
        .map_err(|e| Status::internal(format!("synod: cannot encode the reply as JSON: {e}")))?;
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

/// The `{"error": {…}}` line that ends a stream.
pub fn stream_error_line(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let chunk = StreamErrorChunk {
        error: StreamError {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or(""),
        },
    };
    let mut bytes = serde_json::to_vec(&chunk).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A stream that failed before its first reply: the error line is the whole body.
pub fn stream_error_response(status: &Status) -> Response {
    json_response(
        http_status(status.code()),
        stream_error_line(status).to_vec(),
    )
}

/// A streamed reply: `lines` (each a complete line) as one HTTP chunk each, so a client that
/// parses chunk by chunk (PyPI etcd3gw does) sees exactly one JSON object per chunk.
pub fn stream_response(
    lines: impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
) -> Response {
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Reads the whole request body, refusing more than `bytes_max`.
pub async fn read_body(body: Body, bytes_max: usize) -> Result<Bytes, Status> {
    match Limited::new(body, bytes_max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Status::invalid_argument(format!(
                "{}: the JSON body is over {bytes_max} bytes",
                crate::error::REQUEST_TOO_LARGE
            )))
        }
        Err(e) => Err(Status::invalid_argument(format!(
            "synod: cannot read the request body: {e}"
        ))),
    }
}

/// The proto name of a generated message type, for error messages (`PutRequest`).
fn message_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

fn invalid_body<T>(e: &serde_json::Error) -> Status {
    Status::invalid_argument(format!(
        "synod: the request body is not a valid JSON {}: {e}",
        message_name::<T>()
    ))
}

/// Decodes a unary request. An empty body is the empty message, as in grpc-gateway.
pub fn decode_one<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| invalid_body::<T>(&e))
}

/// Decodes the requests of a client stream: the body is a sequence of JSON objects (one
/// normally; whitespace or newlines between several), each one stream message.
pub fn decode_many<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, Status> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .map(|r| r.map_err(|e| invalid_body::<T>(&e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb as pb;

    #[test]
    fn grpc_gateway_status_mapping() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn decoding_accepts_both_names_strings_numbers_and_enum_forms() {
        let a: pb::RangeRequest = decode_one(
            br#"{"key":"Zm9v","range_end":"Zm9w","limit":"2","sort_order":"DESCEND","keysOnly":true}"#,
        )
        .expect("snake, string int64, enum name, camel");
        let b: pb::RangeRequest = decode_one(
            br#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":2,"sortOrder":2,"keys_only":true}"#,
        )
        .expect("camel, number int64, enum number, snake");
        assert_eq!(a, b);
        assert_eq!(a.key, b"foo");
        assert_eq!(a.limit, 2);
        assert_eq!(a.sort_order, pb::range_request::SortOrder::Descend as i32);
        // Unknown fields are skipped, as grpc-gateway v1's decoder does.
        let c: pb::PutRequest = decode_one(br#"{"key":"YQ==","future_field":1}"#).expect("put");
        assert_eq!(c.key, b"a");
        let empty: pb::StatusRequest = decode_one(b" \n").expect("empty body");
        assert_eq!(empty, pb::StatusRequest::default());
    }

    #[test]
    fn decoding_errors_name_the_message() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"key\":5}",
            b"{\"limit\":\"x\"}",
            b"{} {}",
        ] {
            let e = decode_one::<pb::RangeRequest>(bad).expect_err("invalid");
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains("RangeRequest"), "{}", e.message());
        }
        let two = decode_many::<pb::WatchRequest>(b"{} \n {\"progress_request\":{}}").expect("two");
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn encoding_is_etcd_gateway_json() {
        let r = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            kvs: vec![crate::pb::mvccpb::KeyValue {
                key: b"foo".to_vec(),
                value: b"bar".to_vec(),
                create_revision: 7,
                mod_revision: 7,
                version: 1,
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        let json = String::from_utf8(serde_json::to_vec(&r).expect("json")).expect("utf8");
        assert_eq!(
            json,
            r#"{"header":{"revision":"7"},"kvs":[{"key":"Zm9v","create_revision":"7","mod_revision":"7","version":"1","value":"YmFy"}],"count":"1"}"#
        );
        let e = crate::pb::mvccpb::Event {
            r#type: crate::pb::mvccpb::event::EventType::Delete as i32,
            kv: None,
            prev_kv: None,
        };
        assert_eq!(
            serde_json::to_string(&e).expect("json"),
            r#"{"type":"DELETE"}"#
        );
        let err = stream_error_line(&Status::out_of_range("gone"));
        assert_eq!(
            &err[..],
            &b"{\"error\":{\"grpc_code\":11,\"http_code\":400,\"message\":\"gone\",\"http_status\":\"Bad Request\"}}\n"[..]
        );
    }
}
