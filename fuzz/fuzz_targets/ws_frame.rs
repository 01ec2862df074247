//! WebSocket channel messages, as one message and as raw frames: see `pipegate_agent::fuzzing::ws_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipegate_agent::fuzzing::ws_frame(data));
