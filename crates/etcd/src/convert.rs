//! Translation between etcd's protobuf messages and Synod's KV commands and replies.
//!
//! Everything here is pure, so the refusals (what Synod does not support, what is malformed)
//! are unit-tested without a server. A refusal is always an explicit status: an etcd option
//! Synod cannot honour must never be silently ignored, because the client would then get a
//! wrong answer (an unsorted list it asked sorted, a current value it asked historical).

use crate::error::KEY_NOT_PROVIDED;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use synod_core::kv;
use tonic::Status;

/// etcd encodes revisions, versions and counts as int64; Synod's are u64 and far below
/// 2^63, so saturation is unreachable in practice and only guards against a corrupt store.
fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn not_supported(what: &str) -> Status {
    Status::unimplemented(format!("{what} not supported by synod"))
}

/// A Range as a Synod command. Every option etcd has is honoured: a past `revision`, sort
/// order and target, and min/max mod/create revision filters. etcd treats a revision or a
/// bound of 0 or below as "none", and so does Synod.
pub fn range_request(r: pb::RangeRequest) -> Result<kv::RangeRequest, Status> {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    if r.key.is_empty() {
        return Err(Status::invalid_argument(KEY_NOT_PROVIDED));
    }
    let sort_order = match O::try_from(r.sort_order) {
        Ok(O::None) => kv::SortOrder::None,
        Ok(O::Ascend) => kv::SortOrder::Ascend,
        Ok(O::Descend) => kv::SortOrder::Descend,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown sort_order {}",
                r.sort_order
            )));
        }
    };
    let sort_target = match T::try_from(r.sort_target) {
        Ok(T::Key) => kv::SortTarget::Key,
        Ok(T::Version) => kv::SortTarget::Version,
        Ok(T::Create) => kv::SortTarget::Create,
        Ok(T::Mod) => kv::SortTarget::Mod,
        Ok(T::Value) => kv::SortTarget::Value,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown sort_target {}",
                r.sort_target
            )));
        }
    };
    let limit = u64::try_from(r.limit)
        .map_err(|_| Status::invalid_argument(format!("negative limit {}", r.limit)))?;
    let bound = |x: i64| u64::try_from(x).unwrap_or(0);
    Ok(kv::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit,
        keys_only: r.keys_only,
        count_only: r.count_only,
        revision: bound(r.revision),
        sort_order,
        sort_target,
        min_mod_revision: bound(r.min_mod_revision),
        max_mod_revision: bound(r.max_mod_revision),
        min_create_revision: bound(r.min_create_revision),
        max_create_revision: bound(r.max_create_revision),
    })
}

pub fn put_request(p: pb::PutRequest) -> Result<kv::PutRequest, Status> {
    if p.key.is_empty() {
        return Err(Status::invalid_argument(KEY_NOT_PROVIDED));
    }
    if p.lease < 0 {
        return Err(Status::invalid_argument(format!(
            "synod: invalid request: negative lease id {}",
            p.lease
        )));
    }
    Ok(kv::PutRequest {
        key: p.key,
        value: p.value,
        prev_kv: p.prev_kv,
        lease: p.lease,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

pub fn delete_range_request(d: pb::DeleteRangeRequest) -> Result<kv::DeleteRangeRequest, Status> {
    if d.key.is_empty() {
        return Err(Status::invalid_argument(KEY_NOT_PROVIDED));
    }
    Ok(kv::DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    })
}

fn compare(c: pb::Compare) -> Result<kv::Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    if c.key.is_empty() {
        return Err(Status::invalid_argument(KEY_NOT_PROVIDED));
    }
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => kv::CompareResult::Equal,
        Ok(R::NotEqual) => kv::CompareResult::NotEqual,
        Ok(R::Greater) => kv::CompareResult::Greater,
        Ok(R::Less) => kv::CompareResult::Less,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare result {}",
                c.result
            )));
        }
    };
    // etcd's Go code reads the union field matching `target`; a proto3 oneof holding the
    // zero value may be omitted on the wire, so an absent union means zero / empty.
    let number = |n: Option<i64>, what: &str| -> Result<u64, Status> {
        u64::try_from(n.unwrap_or(0))
            .map_err(|_| Status::invalid_argument(format!("negative {what} in compare")))
    };
    let mismatch = || {
        Status::invalid_argument(format!(
            "compare target {} does not match the value given",
            c.target
        ))
    };
    let target = match (T::try_from(c.target), c.target_union) {
        (Ok(T::Value), None) => kv::CompareTarget::Value(Vec::new()),
        (Ok(T::Value), Some(U::Value(v))) => kv::CompareTarget::Value(v),
        (Ok(T::Version), None) => kv::CompareTarget::Version(0),
        (Ok(T::Version), Some(U::Version(n))) => {
            kv::CompareTarget::Version(number(Some(n), "version")?)
        }
        (Ok(T::Create), None) => kv::CompareTarget::CreateRevision(0),
        (Ok(T::Create), Some(U::CreateRevision(n))) => {
            kv::CompareTarget::CreateRevision(number(Some(n), "create_revision")?)
        }
        (Ok(T::Mod), None) => kv::CompareTarget::ModRevision(0),
        (Ok(T::Mod), Some(U::ModRevision(n))) => {
            kv::CompareTarget::ModRevision(number(Some(n), "mod_revision")?)
        }
        (Ok(T::Lease), None) => kv::CompareTarget::Lease(0),
        (Ok(T::Lease), Some(U::Lease(n))) => kv::CompareTarget::Lease(n),
        (Ok(_), Some(_)) => return Err(mismatch()),
        (Err(_), _) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare target {}",
                c.target
            )));
        }
    };
    Ok(kv::Compare {
        key: c.key,
        range_end: c.range_end,
        target,
        result,
    })
}

fn request_op(op: pb::RequestOp) -> Result<kv::TxnOp, Status> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => Ok(kv::TxnOp::Range(range_request(r)?)),
        Some(Request::RequestPut(p)) => Ok(kv::TxnOp::Put(put_request(p)?)),
        Some(Request::RequestDeleteRange(d)) => {
            Ok(kv::TxnOp::DeleteRange(delete_range_request(d)?))
        }
        Some(Request::RequestTxn(_)) => Err(not_supported("nested txn")),
        None => Err(Status::invalid_argument(
            "txn request op with no request set",
        )),
    }
}

pub fn txn_request(t: pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    Ok(kv::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

pub fn key_value(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: to_i64(kv.create_revision),
        mod_revision: to_i64(kv.mod_revision),
        version: to_i64(kv.version),
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_response(r: kv::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: to_i64(r.count),
    }
}

pub fn put_response(r: kv::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_range_response(
    r: kv::DeleteRangeResponse,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: to_i64(r.deleted),
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// A Txn reply. Each branch response carries the same header as the Txn itself, as in etcd
/// (one revision for the whole transaction).
pub fn txn_response(
    r: kv::TxnResponse,
    header: pb::ResponseHeader,
) -> Result<pb::TxnResponse, Status> {
    use pb::response_op::Response as R;
    let responses = r
        .responses
        .into_iter()
        .map(|body| {
            let h = header;
            let response = match body {
                kv::ResponseBody::Range(x) => R::ResponseRange(range_response(x, h)),
                kv::ResponseBody::Put(x) => R::ResponsePut(put_response(x, h)),
                kv::ResponseBody::DeleteRange(x) => {
                    R::ResponseDeleteRange(delete_range_response(x, h))
                }
                other => {
                    return Err(Status::internal(format!(
                        "synod: unexpected reply inside a txn: {other:?}"
                    )));
                }
            };
            Ok(pb::ResponseOp {
                response: Some(response),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(pb::TxnResponse {
        header: Some(header),
        succeeded: r.succeeded,
        responses,
    })
}

/// Builds a response header; `revision` is the store revision the reply reflects.
pub fn header(cluster_id: u64, member_id: u64, revision: u64, term: u64) -> pb::ResponseHeader {
    pb::ResponseHeader {
        cluster_id,
        member_id,
        revision: to_i64(revision),
        raft_term: term,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    use tonic::Code;

    fn range(key: &str) -> pb::RangeRequest {
        pb::RangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_range_option_is_carried_over() {
        let mut r = range("a");
        r.revision = 3;
        r.sort_order = pb::range_request::SortOrder::Descend as i32;
        r.sort_target = pb::range_request::SortTarget::Create as i32;
        r.min_mod_revision = 2;
        r.max_create_revision = 9;
        r.limit = 5;
        let k = range_request(r).unwrap();
        assert_eq!((k.revision, k.limit), (3, 5));
        assert_eq!(
            (k.sort_order, k.sort_target),
            (kv::SortOrder::Descend, kv::SortTarget::Create)
        );
        assert_eq!((k.min_mod_revision, k.max_create_revision), (2, 9));
        // etcd reads "revision <= 0" as the current revision.
        let mut r = range("a");
        r.revision = -1;
        assert_eq!(range_request(r).unwrap().revision, 0);
        let mut r = range("a");
        r.limit = -1;
        assert_eq!(range_request(r).unwrap_err().code(), Code::InvalidArgument);
        let mut r = range("a");
        r.sort_target = 42;
        assert_eq!(range_request(r).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(
            range_request(range("")).unwrap_err().message(),
            KEY_NOT_PROVIDED
        );
    }

    #[test]
    fn put_lease_options_are_carried_over() {
        let p = put_request(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
            ignore_value: true,
            ignore_lease: true,
            prev_kv: true,
        })
        .unwrap();
        assert_eq!(
            (p.lease, p.ignore_value, p.ignore_lease, p.prev_kv),
            (7, true, true, true)
        );
        let negative = pb::PutRequest {
            key: b"k".to_vec(),
            lease: -1,
            ..Default::default()
        };
        assert_eq!(
            put_request(negative).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    fn cmp(target: T, result: R, union: Option<U>) -> pb::Compare {
        pb::Compare {
            result: result as i32,
            target: target as i32,
            key: b"k".to_vec(),
            target_union: union,
            range_end: Vec::new(),
        }
    }

    #[test]
    fn compares_translate_every_target_and_result() {
        let c = compare(cmp(T::Value, R::NotEqual, Some(U::Value(b"v".to_vec())))).unwrap();
        assert_eq!(c.target, kv::CompareTarget::Value(b"v".to_vec()));
        assert_eq!(c.result, kv::CompareResult::NotEqual);
        let c = compare(cmp(T::Version, R::Greater, Some(U::Version(2)))).unwrap();
        assert_eq!(c.target, kv::CompareTarget::Version(2));
        let c = compare(cmp(T::Create, R::Less, Some(U::CreateRevision(3)))).unwrap();
        assert_eq!(c.target, kv::CompareTarget::CreateRevision(3));
        let c = compare(cmp(T::Mod, R::Equal, None)).unwrap();
        assert_eq!(c.target, kv::CompareTarget::ModRevision(0));
        let c = compare(cmp(T::Lease, R::Equal, Some(U::Lease(1)))).unwrap();
        assert_eq!(c.target, kv::CompareTarget::Lease(1));
        let e = compare(cmp(T::Version, R::Equal, Some(U::Value(b"x".to_vec())))).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = compare(cmp(T::Version, R::Equal, Some(U::Version(-1)))).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[test]
    fn nested_txn_is_refused() {
        let t = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(Default::default())),
            }],
            ..Default::default()
        };
        assert_eq!(txn_request(t).unwrap_err().code(), Code::Unimplemented);
        let t = pb::TxnRequest {
            failure: vec![pb::RequestOp { request: None }],
            ..Default::default()
        };
        assert_eq!(txn_request(t).unwrap_err().code(), Code::InvalidArgument);
    }
}
