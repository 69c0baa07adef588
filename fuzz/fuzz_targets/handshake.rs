#![no_main]
// The harness starts its hub at this instant; only offsets from it matter, so any will do.
use std::time::Instant;
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferret_ws_testkit::fuzzing::handshake(data, Instant::now()));
