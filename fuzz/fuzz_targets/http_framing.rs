//! The request-smuggling check in front of hyper: see `pipegate_proxy::fuzzing::http_framing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipegate_proxy::fuzzing::http_framing(data));
