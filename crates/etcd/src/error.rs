//! How Synod's API errors become gRPC statuses that etcd clients understand.
//!
//! etcd's Go client (`clientv3`/`rpctypes`) recognises server errors by their exact message
//! ("etcdserver: request is too large", "etcdserver: key is not provided", …), so where Synod
//! refuses something etcd also refuses, the message is etcd's verbatim. Where the refusal is
//! Synod's own (a feature it does not have), the message says "not supported by synod".

use synod_core::EngineError;
use synod_node::ApiError;
use tonic::{Code, Status};

/// etcd's `ErrGRPCRequestTooLarge` message.
pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's `ErrGRPCEmptyKey` message.
pub const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
/// etcd's `ErrGRPCTooManyOps` message.
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
/// etcd's `ErrGRPCTooManyRequests` message.
pub const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
/// etcd's `ErrGRPCLeaseProvided` message.
pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
/// etcd's `ErrGRPCNoSpace` message (RESOURCE_EXHAUSTED): the NOSPACE alarm is raised.
pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// Maps an error from [`synod_node::NodeHandle::execute`] to the status an etcd client
/// expects.
pub fn api_error_to_status(e: &ApiError) -> Status {
    match e {
        // etcd has one "too large" error for key, value and request alike; the detail goes
        // to the log, not the message, so clients can still match it exactly.
        ApiError::TooLarge { what, bytes, max } => {
            tracing::debug!(what, bytes, max, "grpc request refused: too large");
            Status::invalid_argument(REQUEST_TOO_LARGE)
        }
        ApiError::Invalid(s) if s == "key is empty" => Status::invalid_argument(KEY_NOT_PROVIDED),
        ApiError::Invalid(s) if s == synod_node::handle::LEASE_PROVIDED => {
            Status::invalid_argument(LEASE_PROVIDED)
        }
        ApiError::Invalid(s) if s.starts_with("too many operations in txn request") => {
            Status::invalid_argument(TOO_MANY_OPS)
        }
        ApiError::Invalid(s) => Status::invalid_argument(format!("synod: invalid request: {s}")),
        ApiError::Unavailable(s) => Status::unavailable(format!("synod: {s}")),
        ApiError::NoSpace => Status::resource_exhausted(NO_SPACE),
        // Exactly etcd's text: clients map it to their ErrNoLeader and retry elsewhere.
        ApiError::NoLeader => Status::unavailable(synod_node::handle::NO_LEADER),
        // etcd's ErrGRPCCorrupt: DATA_LOSS with exactly this text.
        ApiError::Corrupt => Status::data_loss(synod_node::backup::ERR_CORRUPT),
        ApiError::Engine(e) => engine_error_to_status(e),
    }
}

fn engine_error_to_status(e: &EngineError) -> Status {
    match e {
        EngineError::Unsupported { engine, what } => {
            Status::unimplemented(format!("{what} not supported by synod's {engine} engine"))
        }
        EngineError::Busy => Status::resource_exhausted(TOO_MANY_REQUESTS),
        EngineError::Timeout => Status::unavailable(format!("synod: {e}")),
        EngineError::SessionExpired => Status::failed_precondition(format!("synod: {e}")),
        EngineError::InvalidRequest(s) => {
            Status::invalid_argument(format!("synod: invalid request: {s}"))
        }
        // etcd answers both with OUT_OF_RANGE and these exact texts (rpctypes).
        EngineError::Compacted { .. } => Status::out_of_range(synod_core::ERR_COMPACTED),
        EngineError::FutureRevision { .. } => Status::out_of_range(synod_core::ERR_FUTURE_REV),
        // etcd's codes for its lease errors (rpctypes): clients match code and text.
        EngineError::LeaseNotFound => Status::not_found(synod_core::ERR_LEASE_NOT_FOUND),
        EngineError::LeaseExists => Status::failed_precondition(synod_core::ERR_LEASE_EXISTS),
        EngineError::LeaseTtlTooLarge => Status::out_of_range(synod_core::ERR_LEASE_TTL_TOO_LARGE),
        EngineError::KeyNotFound => Status::invalid_argument(synod_core::ERR_KEY_NOT_FOUND),
        // etcd's codes for its membership errors (rpctypes): NotFound for an unknown member,
        // FailedPrecondition for the rest.
        EngineError::Membership(m) if m == synod_core::membership::ERR_MEMBER_NOT_FOUND => {
            Status::not_found(m.clone())
        }
        EngineError::Membership(m) => Status::failed_precondition(m.clone()),
        EngineError::Auth(a) => auth_error_to_status(*a),
        // Retryable: the keys moved to a new group (a split) while the request was in flight.
        EngineError::WrongGroup { .. } => Status::unavailable(synod_core::ERR_WRONG_GROUP),
    }
}

/// etcd's codes for its auth errors (rpctypes), with their exact texts.
pub fn auth_error_to_status(e: synod_core::auth::AuthError) -> Status {
    use synod_core::auth::AuthError as A;
    let code = match e {
        A::UserEmpty | A::RoleEmpty | A::AuthFailed | A::InvalidAuthManagement => {
            Code::InvalidArgument
        }
        A::PermissionDenied => Code::PermissionDenied,
        A::InvalidAuthToken => Code::Unauthenticated,
        A::TooLarge => Code::InvalidArgument,
        A::UserAlreadyExists
        | A::UserNotFound
        | A::RoleAlreadyExists
        | A::RoleNotFound
        | A::RoleNotGranted
        | A::PermissionNotGranted
        | A::RootUserNotExist
        | A::RootRoleNotExist
        | A::AuthNotEnabled => Code::FailedPrecondition,
    };
    Status::new(code, e.message())
}

/// The answer for every RPC Synod does not implement: immediate, and naming the method.
pub fn unsupported(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not supported by synod"))
}

/// The metrics `outcome` label for a result: "ok" or the gRPC code in snake case.
pub fn outcome_label<T>(r: &Result<T, Status>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(s) => match s.code() {
            Code::Ok => "ok",
            Code::Cancelled => "cancelled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_messages_for_errors_etcd_also_has() {
        let s = api_error_to_status(&ApiError::TooLarge {
            what: "value",
            bytes: 10,
            max: 5,
        });
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, REQUEST_TOO_LARGE)
        );
        let s = api_error_to_status(&ApiError::Invalid("key is empty".into()));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, KEY_NOT_PROVIDED)
        );
        let s = api_error_to_status(&ApiError::Invalid(
            "too many operations in txn request: 200, at most 128".into(),
        ));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, TOO_MANY_OPS)
        );
        let s = api_error_to_status(&ApiError::NoSpace);
        assert_eq!((s.code(), s.message()), (Code::ResourceExhausted, NO_SPACE));
        let s = api_error_to_status(&ApiError::Engine(EngineError::Busy));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s = api_error_to_status(&ApiError::Unavailable("no quorum".into()));
        assert_eq!(s.code(), Code::Unavailable);
        // etcd clients recognise "no leader" by exactly this message.
        let s = api_error_to_status(&ApiError::NoLeader);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: no leader")
        );
        let s = api_error_to_status(&ApiError::Engine(EngineError::Unsupported {
            engine: "caspaxos".into(),
            what: "range and prefix requests".into(),
        }));
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(
            s.message().contains("not supported by synod"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn outcome_labels() {
        assert_eq!(outcome_label::<()>(&Ok(())), "ok");
        assert_eq!(
            outcome_label::<()>(&Err(Status::unavailable("x"))),
            "unavailable"
        );
    }
}
