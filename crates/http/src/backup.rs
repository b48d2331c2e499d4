//! `GET /v1/snapshot`: a backup of the answering member's applied state, the same file
//! Maintenance.Snapshot streams (format in docs/backup.md), sent in chunks of at most
//! `synod_node::backup::BACKUP_CHUNK_BYTES_MAX`; the headers repeat what the file's header
//! says so a script can check it without parsing the body.

use crate::error::HttpError;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use synod_node::NodeHandle;
use synod_node::backup::BACKUP_CHUNK_BYTES_MAX;

pub async fn snapshot(State(handle): State<NodeHandle>) -> Response {
    // A backup holds every key: root only when auth is on (etcd's rule).
    if let Err(e) = handle.auth().require_root() {
        return HttpError::from(e).into_response();
    }
    let file = match handle.backup().await {
        Ok(f) => f,
        Err(e) => return HttpError::from(e).into_response(),
    };
    let h = file.header.clone();
    let total = file.bytes.len();
    let chunks = total.div_ceil(BACKUP_CHUNK_BYTES_MAX).max(1);
    // The file (and its slot among the member's concurrent backups) lives as long as the body.
    let body = futures::stream::iter((0..chunks).map(move |i| {
        let start = i * BACKUP_CHUNK_BYTES_MAX;
        let end = total.min(start + BACKUP_CHUNK_BYTES_MAX);
        Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(&file.bytes[start..end]))
    }));
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    headers.insert("x-synod-revision", HeaderValue::from(h.revision));
    headers.insert("x-synod-member", HeaderValue::from(h.member_id));
    headers.insert(
        "x-synod-engine",
        HeaderValue::from_str(&h.engine).unwrap_or(HeaderValue::from_static("unknown")),
    );
    response
}
