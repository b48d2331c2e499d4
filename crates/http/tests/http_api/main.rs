//! The HTTP API crate's end-to-end tests (the /v1 API, history, OpenAPI document, robustness, watch).
//! One test binary for the crate's integration tests: each file below was a binary of its
//! own, and every one of them compiled and linked the same server generics again (the
//! largest share of a cold CI build).

#[path = "../common/mod.rs"]
mod common;

mod api;
mod history;
mod openapi;
mod robustness;
mod watch;
