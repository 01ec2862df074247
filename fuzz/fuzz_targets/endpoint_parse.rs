//! Endpoint parsing and its canonical display: see `pipegate_transport::fuzzing::endpoint_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipegate_transport::fuzzing::endpoint_parse(data));
