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
use synod_core::kv::{Expect, KeyValue};

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

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistency: ConsistencyParam,
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
