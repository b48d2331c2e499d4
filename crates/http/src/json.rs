//! The JSON shapes of the API contract (request bodies, query strings, KV objects) and the
//! extractors that turn every malformed input into an [`HttpError`] instead of axum's plain
//! text rejections.
//!
//! Keys and values are bytes in the store but strings on this API. Bytes that are not UTF-8
//! (written through the etcd gRPC API) are shown with U+FFFD replacement characters: lossy,
//! but never a failed request.

use crate::error::{ErrorCode, HttpError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use synod_core::Consistency;
use synod_core::kv::{EventKind, Expect, KeyValue, SortOrder, SortTarget, WatchEvent};

/// A key with its metadata, as the contract's "KV object".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvJson {
    pub key: String,
    pub value: String,
    pub version: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
}

impl From<&KeyValue> for KvJson {
    fn from(kv: &KeyValue) -> Self {
        KvJson {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: String::from_utf8_lossy(&kv.value).into_owned(),
            version: kv.version,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

/// `PUT /v1/kv/{key}` body. Unknown fields are refused so a typo is an error, not a no-op.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    pub value: String,
}

/// `POST /v1/kv/{key}/cas` body. Unknown fields are refused: a misspelt `"value"` would
/// otherwise read as "missing", which means *delete*.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasBody {
    pub expect: Value,
    /// `None` (null or missing) = delete the key if the expectation holds.
    #[serde(default)]
    pub value: Option<String>,
}

impl CasBody {
    /// `"absent"`, `{"version": N}` or `{"value": "v"}`, checked by hand so the error says
    /// which of the three shapes was expected.
    pub fn expectation(&self) -> Result<Expect, HttpError> {
        const SHAPES: &str = r#"expect must be "absent", {"version": N} or {"value": "v"}"#;
        match &self.expect {
            Value::String(s) if s == "absent" => Ok(Expect::Absent),
            Value::Object(m) if m.len() == 1 => match (m.get("version"), m.get("value")) {
                (Some(v), None) => v.as_u64().map(Expect::Version).ok_or_else(|| {
                    HttpError::invalid(format!("{SHAPES}; version must be a non-negative integer"))
                }),
                (None, Some(Value::String(s))) => Ok(Expect::Value(s.as_bytes().to_vec())),
                _ => Err(HttpError::invalid(SHAPES)),
            },
            _ => Err(HttpError::invalid(SHAPES)),
        }
    }
}

/// `consistency=` on reads.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyParam {
    #[default]
    Linearizable,
    Sequential,
}

impl From<ConsistencyParam> for Consistency {
    fn from(c: ConsistencyParam) -> Self {
        match c {
            ConsistencyParam::Linearizable => Consistency::Linearizable,
            ConsistencyParam::Sequential => Consistency::Sequential,
        }
    }
}

/// `sort_order=` on lists (etcd's names). Absent = key order, unless `sort_target` names
/// something else, which is then sorted ascending (etcd's rule).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SortOrderParam {
    Ascend,
    Descend,
}

impl SortOrderParam {
    /// The store's order for an optional `sort_order=`.
    pub fn order(param: Option<SortOrderParam>) -> SortOrder {
        match param {
            None => SortOrder::None,
            Some(SortOrderParam::Ascend) => SortOrder::Ascend,
            Some(SortOrderParam::Descend) => SortOrder::Descend,
        }
    }
}

/// `sort_target=` on lists (etcd's names: `create` and `mod` are the revisions).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SortTargetParam {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

impl From<SortTargetParam> for SortTarget {
    fn from(t: SortTargetParam) -> Self {
        match t {
            SortTargetParam::Key => SortTarget::Key,
            SortTargetParam::Version => SortTarget::Version,
            SortTargetParam::Create => SortTarget::Create,
            SortTargetParam::Mod => SortTarget::Mod,
            SortTargetParam::Value => SortTarget::Value,
        }
    }
}

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistency: ConsistencyParam,
    /// Read the key as it was at this revision; 0 = now.
    #[serde(default)]
    pub revision: u64,
}

/// Query of `GET /v1/kv` (list).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    /// 0 = no limit.
    #[serde(default)]
    pub limit: u64,
    #[serde(default)]
    pub keys_only: bool,
    #[serde(default)]
    pub count_only: bool,
    #[serde(default)]
    pub consistency: ConsistencyParam,
    /// List the keys as they were at this revision; 0 = now.
    #[serde(default)]
    pub revision: u64,
    pub sort_order: Option<SortOrderParam>,
    #[serde(default)]
    pub sort_target: SortTargetParam,
    /// Keep only keys whose mod / create revision lies in `[min, max]`; 0 = no bound.
    #[serde(default)]
    pub min_mod_revision: u64,
    #[serde(default)]
    pub max_mod_revision: u64,
    #[serde(default)]
    pub min_create_revision: u64,
    #[serde(default)]
    pub max_create_revision: u64,
}

/// `POST /v1/compact` body (etcd's CompactionRequest). `physical` is accepted for etcd
/// compatibility and changes nothing: Synod's compaction is complete when it is applied.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactBody {
    pub revision: u64,
    #[serde(default)]
    pub physical: bool,
}

/// Query of `GET /v1/watch`. Which keys: `key` (one key), `key` + `end` (`[key, end)`) or
/// `prefix` (empty = every key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    pub key: Option<String>,
    pub prefix: Option<String>,
    pub end: Option<String>,
    /// First revision to report; 0 = the next one applied after the stream starts.
    #[serde(default)]
    pub start_revision: u64,
    #[serde(default)]
    pub prev_kv: bool,
    /// Comma-separated event kinds to leave out: `noput`, `nodelete` (etcd's filter names).
    #[serde(default)]
    pub filters: String,
    /// `None` (absent) differs from `false`: `progress_notify_ms` alone turns progress on.
    pub progress_notify: Option<bool>,
    pub progress_notify_ms: Option<u64>,
}

/// The first line of a watch stream: the stream is open, `revision` is the member's applied
/// revision when it opened and `start_revision` the first revision it will report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCreated {
    pub created: bool,
    pub revision: u64,
    pub start_revision: u64,
}

/// One revision's events that the watch selects, in the order the revision made them. A
/// revision is never split across lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRevision {
    pub revision: u64,
    pub events: Vec<WatchEventJson>,
}

/// One change to one key. For a delete, `kv` carries the key and the deleting revision as
/// `mod_revision` (value empty, version and create_revision 0), as etcd reports it;
/// `prev_kv` is the key before the change, when asked for (`prev_kv=true`) and it existed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEventJson {
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    pub kv: KvJson,
    pub prev_kv: Option<KvJson>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventType {
    Put,
    Delete,
}

impl From<&WatchEvent> for WatchEventJson {
    fn from(e: &WatchEvent) -> Self {
        WatchEventJson {
            kind: match e.kind {
                EventKind::Put => WatchEventType::Put,
                EventKind::Delete => WatchEventType::Delete,
            },
            kv: (&e.kv).into(),
            prev_kv: e.prev_kv.as_ref().map(KvJson::from),
        }
    }
}

/// Sent by a caught-up stream that has sent nothing for a progress interval: every event up
/// to `progress_revision` has been reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchProgress {
    pub progress_revision: u64,
}

/// The last line of a stream the server ended. `compact_revision` is set when the history the
/// stream still needed was compacted (re-list, then watch from the list's revision + 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchCanceled {
    pub canceled: bool,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_revision: Option<u64>,
}

/// A key taken from the URL path (percent-decoded). Empty keys never reach here (the route
/// needs a non-empty segment); the fallback answers them with `invalid_request`.
pub struct KeyPath(pub Vec<u8>);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Path(key) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::invalid(format!("bad key in path: {}", e.body_text())))?;
        Ok(KeyPath(key.into_bytes()))
    }
}

/// One path segment as text (percent-decoded), e.g. a member id; a segment that is not UTF-8
/// is a JSON `invalid_request` rather than axum's plain-text 400.
pub struct SegmentPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SegmentPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Path(segment) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::invalid(format!("bad path segment: {}", e.body_text())))?;
        Ok(SegmentPath(segment))
    }
}

/// `Query<T>` whose rejection is a JSON `invalid_request`.
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Query(q) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::invalid(format!("bad query string: {}", e.body_text())))?;
        Ok(ValidQuery(q))
    }
}

/// A JSON body. Unlike `axum::Json` it does not insist on a `content-type` (plain `curl -d`
/// sends `application/x-www-form-urlencoded`), and every rejection is a JSON error: an
/// over-limit body (see `DefaultBodyLimit` in the router) is `too_large`, the rest
/// `invalid_request`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == ErrorCode::TooLarge.status() {
                HttpError::new(
                    ErrorCode::TooLarge,
                    format!("request body too large: {}", e.body_text()),
                )
            } else {
                HttpError::invalid(format!(
                    "could not read the request body: {}",
                    e.body_text()
                ))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| HttpError::invalid(format!("malformed JSON body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(json: &str) -> Result<Expect, HttpError> {
        let body: CasBody =
            serde_json::from_str(json).map_err(|e| HttpError::invalid(e.to_string()))?;
        body.expectation()
    }

    #[test]
    fn cas_expectations_parse_in_all_three_shapes() {
        assert_eq!(
            expect(r#"{"expect":"absent","value":"x"}"#).ok(),
            Some(Expect::Absent)
        );
        assert_eq!(
            expect(r#"{"expect":{"version":3}}"#).ok(),
            Some(Expect::Version(3))
        );
        assert_eq!(
            expect(r#"{"expect":{"value":"old"},"value":null}"#).ok(),
            Some(Expect::Value(b"old".to_vec()))
        );
        for bad in [
            r#"{"expect":"present"}"#,
            r#"{"expect":{"version":-1}}"#,
            r#"{"expect":{"version":1,"value":"a"}}"#,
            r#"{"expect":{"value":3}}"#,
            r#"{"expect":"absent","vlaue":"typo"}"#,
            r#"{"value":"x"}"#,
        ] {
            let e = expect(bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
        }
    }
}
