//! libFuzzer entry point of the `wal_segment` target; the harness is `synod_fuzz::wal_segment`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synod_fuzz::wal_segment::run(data));
