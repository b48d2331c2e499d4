//! libFuzzer entry point of the `http_json` target; the harness is `synod_fuzz::http_json`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synod_fuzz::http_json::run(data));
