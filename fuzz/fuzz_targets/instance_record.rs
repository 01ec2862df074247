//! Instance records, timestamps and names: see `pipegate_discovery::fuzzing::instance_record`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pipegate_discovery::fuzzing::instance_record(data));
