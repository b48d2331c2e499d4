//! libFuzzer entry point of the `grpc_request` target; the harness is `synod_fuzz::grpc_request`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synod_fuzz::grpc_request::run(data));
