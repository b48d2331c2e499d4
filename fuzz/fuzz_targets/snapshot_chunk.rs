//! libFuzzer entry point of the `snapshot_chunk` target; the harness is `synod_fuzz::snapshot_chunk`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synod_fuzz::snapshot_chunk::run(data));
