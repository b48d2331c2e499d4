//! Every error the HTTP API can answer, and the one place where [`ApiError`] / [`EngineError`]
//! become an HTTP status and a stable code.
//!
//! The wire shape is always `{"error": {"code": "...", "message": "..."}}` (plus `"kv"` on a CAS
//! conflict), whatever went wrong: a handler's error, a rejected extractor, an unknown route
//! or a connection refused for overload. Clients (synodctl) branch on `code`, never on the
//! message text.

use crate::json::KvJson;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use synod_core::EngineError;
use synod_node::ApiError;

/// The stable error codes of the API contract. Each has exactly one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed JSON, empty key, bad query parameter.
    InvalidRequest,
    /// The key does not exist (GET / DELETE of one key).
    KeyNotFound,
    /// No such route.
    NotFound,
    /// A compare-and-swap whose expectation did not hold.
    CasConflict,
    /// Key, value or request body over its limit.
    TooLarge,
    /// The engine cannot do this (e.g. ranges on CASPaxos).
    Unsupported,
    /// No quorum / timeout: a write may still have been applied.
    Unavailable,
    /// The node is overloaded: the request was not applied; retry later.
    Busy,
    /// This member knows no leader or cannot reach it: not applied; retry here later or at
    /// another member.
    NoLeader,
    /// A bug or an answer the API did not expect.
    Internal,
    /// This member's disk is short of space (NOSPACE alarm): the write was not applied.
    /// Reads and deletes still work; the alarm clears by itself once space is freed.
    NoSpace,
    /// The revision asked for is below the store's compaction revision: its history is gone
    /// (re-list at the current revision, then watch from there).
    Compacted,
    /// The revision asked for is above the store's current revision.
    FutureRevision,
    /// A membership change named a member id the configuration does not have.
    MemberNotFound,
    /// A membership change the configuration refuses (an address already used, the last
    /// voter, a learner not in sync, promoting a voter); nothing changed.
    MembershipRefused,
    /// Auth is on and the request carries no valid token (none, expired, or issued by
    /// another member: authenticate again, at this member).
    Unauthenticated,
    /// Auth is on and the token's user lacks the permission (etcd's "permission denied"),
    /// or an auth change was refused.
    PermissionDenied,
}

impl ErrorCode {
    /// Every code, so tests (and the OpenAPI consistency test) can walk the whole mapping.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidRequest,
        ErrorCode::KeyNotFound,
        ErrorCode::NotFound,
        ErrorCode::CasConflict,
        ErrorCode::TooLarge,
        ErrorCode::Unsupported,
        ErrorCode::Unavailable,
        ErrorCode::Busy,
        ErrorCode::NoLeader,
        ErrorCode::Internal,
        ErrorCode::NoSpace,
        ErrorCode::Compacted,
        ErrorCode::FutureRevision,
        ErrorCode::MemberNotFound,
        ErrorCode::MembershipRefused,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::CasConflict => "cas_conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::Internal => "internal",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Compacted => "compacted",
            ErrorCode::FutureRevision => "future_revision",
            ErrorCode::MemberNotFound => "member_not_found",
            ErrorCode::MembershipRefused => "membership_refused",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::KeyNotFound | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::CasConflict => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Unavailable | ErrorCode::Busy | ErrorCode::NoLeader => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            // WebDAV's "Insufficient Storage": the server cannot store what the request needs.
            ErrorCode::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            // The history asked for existed once and is gone for good.
            ErrorCode::Compacted => StatusCode::GONE,
            ErrorCode::FutureRevision => StatusCode::BAD_REQUEST,
            ErrorCode::MemberNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MembershipRefused => StatusCode::CONFLICT,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error response. Handlers return `Result<_, HttpError>`; extractors reject with it.
#[derive(Clone, Debug)]
pub struct HttpError {
    pub code: ErrorCode,
    pub message: String,
    /// On a CAS conflict: the key as the CAS found it (`Some(None)` = absent), sent as the
    /// top-level `"kv"` beside `"error"`.
    conflict_kv: Option<Option<KvJson>>,
}

/// The wire shape; a struct (not a `serde_json::Value`) so fields keep the contract's order.
#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kv: Option<&'a Option<KvJson>>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
}

impl HttpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError {
            code,
            message: message.into(),
            conflict_kv: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// A CAS whose expectation failed; `current` is the key as the CAS found it.
    pub fn cas_conflict(message: impl Into<String>, current: Option<KvJson>) -> Self {
        let mut e = Self::new(ErrorCode::CasConflict, message);
        e.conflict_kv = Some(current);
        e
    }

    /// The JSON body, also used for the canned response written to refused connections.
    pub fn body(&self) -> String {
        let body = Body {
            error: Detail {
                code: self.code.as_str(),
                message: &self.message,
            },
            kv: self.conflict_kv.as_ref(),
        };
        // Strings and integers only: serialising cannot fail.
        serde_json::to_string(&body).unwrap_or_else(|e| {
            format!(
                r#"{{"error":{{"code":"internal","message":"encoding an error failed: {e}"}}}}"#
            )
        })
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<ApiError> for HttpError {
    /// The single mapping from node/engine errors to the API's codes.
    fn from(e: ApiError) -> Self {
        let mut message = e.to_string();
        // etcd's texts do not say which revisions; an HTTP user is better served if they do.
        match &e {
            ApiError::Engine(EngineError::Compacted { compact_revision }) => {
                message.push_str(&format!(" (compacted up to revision {compact_revision})"));
            }
            ApiError::Engine(EngineError::FutureRevision { revision }) => {
                message.push_str(&format!(" (revision {revision})"));
            }
            _ => {}
        }
        let code = match &e {
            ApiError::Invalid(_) => ErrorCode::InvalidRequest,
            ApiError::TooLarge { .. } => ErrorCode::TooLarge,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::NoSpace => ErrorCode::NoSpace,
            ApiError::NoLeader => ErrorCode::NoLeader,
            // Nothing is served from a member whose state diverged: go to another.
            ApiError::Corrupt => ErrorCode::Unavailable,
            ApiError::Engine(engine) => match engine {
                EngineError::Unsupported { .. } => ErrorCode::Unsupported,
                EngineError::Busy => ErrorCode::Busy,
                EngineError::Timeout => ErrorCode::Unavailable,
                EngineError::InvalidRequest(_) => ErrorCode::InvalidRequest,
                EngineError::Membership(m) if m == synod_core::membership::ERR_MEMBER_NOT_FOUND => {
                    ErrorCode::MemberNotFound
                }
                EngineError::Membership(_) => ErrorCode::MembershipRefused,
                // HTTP requests carry no client session, so the client table should never
                // refuse one; if it does, that is our bug, not the caller's.
                EngineError::SessionExpired => ErrorCode::Internal,
                EngineError::Compacted { .. } => ErrorCode::Compacted,
                EngineError::FutureRevision { .. } => ErrorCode::FutureRevision,
                EngineError::KeyNotFound => ErrorCode::KeyNotFound,
                EngineError::LeaseNotFound
                | EngineError::LeaseExists
                | EngineError::LeaseTtlTooLarge => ErrorCode::InvalidRequest,
                EngineError::Auth(a) => auth_code(*a),
                EngineError::WrongGroup { .. } => ErrorCode::Unavailable,
            },
        };
        HttpError::new(code, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body(),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 code is worth retrying; tell well-behaved clients not to hammer.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // The edge middleware reads the code back to label metrics and the log line.
        response.extensions_mut().insert(self.code);
        response
    }
}

/// The code for an auth refusal: no valid credentials, or not allowed.
fn auth_code(e: synod_core::auth::AuthError) -> ErrorCode {
    use synod_core::auth::AuthError as A;
    match e {
        A::UserEmpty | A::InvalidAuthToken | A::AuthFailed => ErrorCode::Unauthenticated,
        _ => ErrorCode::PermissionDenied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_has_a_fitting_status() {
        let unsupported = ApiError::Engine(EngineError::Unsupported {
            engine: "caspaxos".into(),
            what: "range and prefix requests".into(),
        });
        let e = HttpError::from(unsupported);
        assert_eq!(e.code.status(), StatusCode::NOT_IMPLEMENTED);
        assert!(e.message.contains("not supported by the caspaxos engine"));
        let cases = [
            (ApiError::Engine(EngineError::Busy), 503, "busy"),
            (ApiError::NoSpace, 507, "no_space"),
            (ApiError::NoLeader, 503, "no_leader"),
            (ApiError::Engine(EngineError::Timeout), 503, "unavailable"),
            (ApiError::Unavailable("x".into()), 503, "unavailable"),
            (ApiError::Invalid("x".into()), 400, "invalid_request"),
            (
                ApiError::TooLarge {
                    what: "value",
                    bytes: 2,
                    max: 1,
                },
                413,
                "too_large",
            ),
            (
                ApiError::Engine(EngineError::InvalidRequest("x".into())),
                400,
                "invalid_request",
            ),
            (
                ApiError::Engine(EngineError::SessionExpired),
                500,
                "internal",
            ),
            (
                ApiError::Engine(EngineError::Compacted {
                    compact_revision: 4,
                }),
                410,
                "compacted",
            ),
            (
                ApiError::Engine(EngineError::FutureRevision { revision: 9 }),
                400,
                "future_revision",
            ),
        ];
        for (api, status, code) in cases {
            let e = HttpError::from(api);
            assert_eq!(e.code.status().as_u16(), status);
            assert_eq!(e.code.as_str(), code);
        }
        let e = HttpError::from(ApiError::Engine(EngineError::Compacted {
            compact_revision: 4,
        }));
        assert!(
            e.message.starts_with(synod_core::ERR_COMPACTED) && e.message.ends_with("revision 4)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn conflict_body_carries_the_current_kv() {
        let e = HttpError::cas_conflict("nope", None);
        assert_eq!(
            e.body(),
            r#"{"error":{"code":"cas_conflict","message":"nope"},"kv":null}"#
        );
        let e = HttpError::new(ErrorCode::Busy, "later");
        assert_eq!(e.body(), r#"{"error":{"code":"busy","message":"later"}}"#);
    }
}
