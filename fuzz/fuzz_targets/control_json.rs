//! JSON control messages: session create, resize, signal, status: see `pipegate_agent::fuzzing::control_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipegate_agent::fuzzing::control_json(data));
