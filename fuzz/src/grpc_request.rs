//! `grpc_request`: arbitrary protobuf bodies of the etcd KV requests.
//!
//! The input picks an RPC and carries the request message's bytes; they are decoded with
//! prost into the generated etcd type (as tonic does for a gRPC call) and handed to the real
//! [`EtcdService`] KV implementation: the conversion into a Synod operation (`convert.rs`,
//! refusing what Synod cannot honour), the node's validation (sizes, empty keys, txn limits,
//! capabilities), execution against `local_test_node` (an in-memory single-node stand-in,
//! holding key `a` first), and the conversion of the reply back to etcd's types.
//!
//! Asserted besides "no panic": a client's request is never answered INTERNAL or UNKNOWN
//! (both mean the server, not the request, is broken).
//!
//! Input layout: `selector | protobuf bytes…`; selector % 5 picks Range, Put, DeleteRange,
//! Txn or Compact, bit 7 a node without ranges or transactions (the CASPaxos capabilities).

use prost::Message;
use synod_core::kv::{Op, PutRequest};
use synod_core::{Capabilities, Consistency};
use synod_etcd::EtcdService;
use synod_etcd::pb::etcdserverpb as pb;
use synod_etcd::pb::etcdserverpb::kv_server::Kv;
use tonic::{Code, Request, Status};

/// The RPCs, in selector order.
pub const RPCS: [&str; 5] = ["range", "put", "delete_range", "txn", "compact"];

/// Builds an input for `rpc` (used by the corpus generator).
pub fn input(rpc: &str, message: &impl Message) -> Vec<u8> {
    let i = RPCS.iter().position(|x| *x == rpc).expect("a known rpc") as u8;
    let mut v = vec![i];
    v.extend(message.encode_to_vec());
    v
}

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let limited = selector & 0x80 != 0;
    let rpc = usize::from(selector & 0x7f) % RPCS.len();
    crate::runtime().block_on(async move {
        let capabilities = Capabilities {
            ranges: !limited,
            transactions: !limited,
            revisions: !limited,
            watch: !limited,
            leases: !limited,
        };
        let engine = if limited { "caspaxos" } else { "omnipaxos" };
        let handle = synod_node::handle::local_test_node(engine, capabilities);
        let put = Op::Put(PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            prev_kv: false,
            ..Default::default()
        });
        handle
            .execute(put, Consistency::Linearizable)
            .await
            .expect("the stand-in node takes a put");
        let svc = EtcdService::new(handle);
        let outcome: Option<Result<(), Status>> = match rpc {
            0 => call(body, |r| svc.range(r)).await,
            1 => call(body, |r| svc.put(r)).await,
            2 => call(body, |r| svc.delete_range(r)).await,
            3 => call(body, |r| svc.txn(r)).await,
            _ => call(body, |r| svc.compact(r)).await,
        };
        if let Some(Err(status)) = outcome {
            assert!(
                !matches!(status.code(), Code::Internal | Code::Unknown),
                "{} answered {:?}: {}",
                RPCS[rpc],
                status.code(),
                status.message()
            );
        }
    });
}

/// Decodes `body` as the RPC's request (`None` if it does not decode: tonic would refuse it
/// before the service) and calls it.
async fn call<T, R, F>(body: &[u8], rpc: impl FnOnce(Request<T>) -> F) -> Option<Result<(), Status>>
where
    T: Message + Default,
    F: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let request = T::decode(body).ok()?;
    Some(rpc(Request::new(request)).await.map(|_| ()))
}

/// Keeps the generated types used by the generator in one place.
pub use pb::{
    CompactionRequest, DeleteRangeRequest, PutRequest as EtcdPut, RangeRequest, TxnRequest,
};
