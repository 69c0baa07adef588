#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferret_ws_testkit::fuzzing::parse_message(data));
