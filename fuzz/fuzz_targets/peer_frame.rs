//! libFuzzer entry point of the `peer_frame` target; the harness is `synod_fuzz::peer_frame`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synod_fuzz::peer_frame::run(data));
