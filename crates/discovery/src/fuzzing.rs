//! Fuzz target bodies (`fuzz/` at the repository root), not part of the API.
//!
//! Each function takes the fuzzer's bytes and panics if an invariant breaks; the seed
//! corpus in `fuzz/corpus/<target>/` also runs through it in this crate's tests, so a
//! change that breaks an invariant on a seed fails `cargo test` without cargo-fuzz.

use crate::record::rfc3339;
use crate::{validate_name, Record};

/// `instance_record`: the bytes as a record file (which is read as UTF-8 text), as a
/// timestamp and as an instance name. A record that reads writes back to JSON that reads
/// as the same record; a timestamp that parses prints as one that parses to the same
/// time; a valid name is a plain file name.
pub fn instance_record(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(record) = Record::from_json(text) {
        let json = record.to_json();
        let again = Record::from_json(&json)
            .unwrap_or_else(|e| panic!("{record:?} writes {json:?}, which does not read: {e}"));
        assert_eq!(again, record, "{json}");
        assert_eq!(again.to_json(), json, "writing is deterministic");
        assert_eq!(
            rfc3339::parse(&record.started_at_rfc3339()),
            Some(record.started_at)
        );
    }
    if let Some(time) = rfc3339::parse(text) {
        let shown = rfc3339::format(time);
        assert_eq!(rfc3339::parse(&shown), Some(time), "{text:?} → {shown:?}");
    }
    if validate_name(text).is_ok() {
        assert!(!text.is_empty() && !text.starts_with('.'));
        assert!(!text.contains(['/', '\\', ':', '\0']), "{text:?}");
    }
}

#[cfg(test)]
mod tests {
    use pipegate_transport::fuzzing::replay_seeds;

    #[test]
    fn instance_record_seeds() {
        replay_seeds("instance_record", super::instance_record);
    }
}
