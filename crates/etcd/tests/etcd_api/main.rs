//! The etcd API crate's end-to-end tests (gRPC services, the /v3 gateway, etcdctl, the server's listener).
//! One test binary for the crate's integration tests: each file below was a binary of its
//! own, and every one of them compiled and linked the same server generics again (the
//! largest share of a cold CI build).

#[path = "../common/mod.rs"]
mod common;

mod etcdctl;
mod gateway;
mod grpc;
mod lock;
mod server;
mod watch;
