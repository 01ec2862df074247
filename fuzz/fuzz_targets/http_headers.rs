//! Hop-by-hop stripping and Via on forwarded requests and responses: see `pipegate_proxy::fuzzing::http_headers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipegate_proxy::fuzzing::http_headers(data));
