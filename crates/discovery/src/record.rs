//! [`Record`]: what a running `pipegate serve` writes about itself, and its JSON form.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pipegate_transport::Endpoint;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::token::Secret;

/// What an instance serves, as recorded in its `mode` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum InstanceMode {
    /// The built-in agent API (`pipegate serve` without `--upstream`).
    Agent,
    /// An HTTP-aware bridge to an upstream.
    Http,
    /// A byte relay to an upstream. It speaks no HTTP of its own, so its health is
    /// judged by a connect plus the pid's liveness rather than by the nonce.
    Raw,
    /// A mode this version does not know (a record from a newer pipegate).
    #[default]
    #[serde(other)]
    Unknown,
}

impl InstanceMode {
    /// `agent`, `http`, `raw` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceMode::Agent => "agent",
            InstanceMode::Http => "http",
            InstanceMode::Raw => "raw",
            InstanceMode::Unknown => "unknown",
        }
    }

    /// Whether the instance answers `GET /_pipegate/health` (everything but raw).
    pub fn speaks_http(self) -> bool {
        !matches!(self, InstanceMode::Raw)
    }
}

impl fmt::Display for InstanceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance record, `<state dir>/pipegate/instances/<name>.json`.
///
/// The JSON keys, in order: `url` (the canonical URL of the first listener), `pid`,
/// `nonce` (32 lowercase hex digits: 128 random bits), `started_at` (RFC 3339, UTC),
/// `mode`, `upstream` (absent for the agent), `listeners` (every listener, with the
/// ports the OS picked). Unknown keys are ignored when reading, so newer writers stay
/// readable.
///
/// # Examples
///
/// ```
/// use pipegate_discovery::{new_nonce, InstanceMode, Record};
/// use pipegate_transport::Endpoint;
///
/// let ep = Endpoint::parse("npipe://pipegate")?;
/// let record = Record::new(vec![ep.clone()], InstanceMode::Agent, None, new_nonce()?);
/// let json = record.to_json();
/// let back = Record::from_json(&json)?;
/// assert_eq!(back.url, ep);
/// assert_eq!(back.nonce.len(), 32);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// The first listener; what clients dial and what the health check probes.
    #[serde(with = "endpoint_text")]
    pub url: Endpoint,
    /// The serving process.
    pub pid: u32,
    /// The secret the instance answers its health check with (lowercase hex).
    pub nonce: String,
    /// When the instance started.
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// What it serves.
    #[serde(default)]
    pub mode: InstanceMode,
    /// Where a bridge forwards to; `None` for the agent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_endpoint_text"
    )]
    pub upstream: Option<Endpoint>,
    /// Every listener, `url` first.
    #[serde(default, with = "endpoint_list_text")]
    pub listeners: Vec<Endpoint>,
    /// The bearer token of the instance's TCP listeners: not part of the JSON; a
    /// [`Registry`](crate::Registry) fills it in from `<name>.token` next to the record.
    /// `Debug` shows it as `<redacted>`.
    #[serde(skip)]
    token: Option<Secret>,
}

impl Record {
    /// A record for this process, started now. `url` is the first of `listeners`;
    /// `nonce` is usually [`new_nonce`](crate::new_nonce)'s.
    ///
    /// # Panics
    ///
    /// If `listeners` is empty: an instance always listens somewhere.
    pub fn new(
        listeners: Vec<Endpoint>,
        mode: InstanceMode,
        upstream: Option<Endpoint>,
        nonce: String,
    ) -> Record {
        #[allow(clippy::expect_used)] // documented panic: a caller bug, not user input
        let url = listeners
            .first()
            .cloned()
            .expect("an instance record needs at least one listener");
        Record {
            url,
            pid: std::process::id(),
            nonce,
            started_at: SystemTime::now(),
            mode,
            upstream,
            listeners,
            token: None,
        }
    }

    /// The bearer token clients must present on the instance's TCP listeners, if it has
    /// one (see [`with_token`](Record::with_token)).
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.0.as_str())
    }

    /// The record with this token. [`Claim::register`](crate::Claim::register) writes it
    /// to `<name>.token`; [`Registry`](crate::Registry) reads fill it in.
    pub fn with_token(mut self, token: Option<String>) -> Record {
        self.token = token.map(Secret);
        self
    }

    /// The record as pretty JSON (two-space indent, trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses a record.
    ///
    /// # Errors
    ///
    /// The JSON error: bad syntax, a missing `url`/`pid`/`nonce`/`started_at`, an
    /// endpoint that does not parse, or a malformed timestamp.
    pub fn from_json(text: &str) -> Result<Record, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// [`started_at`](Record::started_at) as written in the record: RFC 3339 in UTC.
    pub fn started_at_rfc3339(&self) -> String {
        rfc3339::format(self.started_at)
    }

    /// How long the instance has been up (zero if its clock is ahead of ours).
    pub fn uptime(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.started_at)
            .unwrap_or_default()
    }
}

mod endpoint_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(ep: &Endpoint, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(ep)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Endpoint, D::Error> {
        let text = String::deserialize(d)?;
        Endpoint::parse(&text).map_err(serde::de::Error::custom)
    }
}

mod optional_endpoint_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(ep: &Option<Endpoint>, s: S) -> Result<S::Ok, S::Error> {
        match ep {
            Some(ep) => s.collect_str(ep),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Endpoint>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| Endpoint::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod endpoint_list_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(eps: &[Endpoint], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(eps.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Endpoint>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| Endpoint::parse(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// RFC 3339 timestamps in UTC (`2026-03-23T10:00:00.123456Z`), without a date library.
pub(crate) mod rfc3339 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not an RFC 3339 timestamp"))
        })
    }

    /// Formats `t` in UTC with the fraction's trailing zeros trimmed. Times before 1970
    /// are printed as the epoch.
    pub(crate) fn format(t: SystemTime) -> String {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let mut out = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        let nanos = since.subsec_nanos();
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.F]` followed by `Z` or `±HH:MM` (`t` and `z` too).
    pub(crate) fn parse(text: &str) -> Option<SystemTime> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=days_in_month(year, month)).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut rest = &text[19..];
        let mut nanos = 0u32;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let kept = &frac[..digits.min(9)];
            nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
            rest = &frac[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let hm = rest.get(1..)?;
                if hm.len() != 5 || hm.as_bytes()[2] != b':' {
                    return None;
                }
                let (h, m) = (hm[..2].parse::<i64>().ok()?, hm[3..].parse::<i64>().ok()?);
                if h > 23 || m > 59 {
                    return None;
                }
                sign * (h * 3600 + m * 60)
            }
        };
        let secs =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
                - offset;
        // Before 1970, or after the last second a four-digit year can write (an offset
        // can carry 9999-12-31 into year 10000, which `format` could not write back).
        let secs = u64::try_from(secs).ok().filter(|&s| s <= MAX_SECS)?;
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    /// 9999-12-31T23:59:59Z.
    const MAX_SECS: u64 = 253_402_300_799;

    fn is_leap(y: i64) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }

    fn days_in_month(y: i64, m: i64) -> i64 {
        match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant).
    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// (year, month, day) → days since 1970-01-01; the inverse of `civil_from_days`.
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_and_parse() {
        let t = UNIX_EPOCH + Duration::new(1_774_260_000, 123_456_000);
        assert_eq!(rfc3339::format(t), "2026-03-23T10:00:00.123456Z");
        assert_eq!(rfc3339::parse("2026-03-23T10:00:00.123456Z"), Some(t));
        assert_eq!(rfc3339::parse("2026-03-23T11:00:00.123456+01:00"), Some(t));
        assert_eq!(
            rfc3339::format(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(rfc3339::format(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        for bad in [
            "",
            "2026-03-23",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-03-23T10:00:00",
            "2026-03-23T10:00:00.Z",
            "2026-03-23T24:00:00Z",
            "2026-03-23 10:00:00Z",
            "2026-03-23T10:00:00+1:00",
            "1970-01-01T00:00:00+00:01",
            // Found by reading the instance_record fuzz target's invariant (the fuzzer
            // did not reach it in 10 minutes): year 10000 in UTC, which `format` writes
            // as a five-digit year that does not parse.
            "9999-12-31T23:00:00-01:00",
        ] {
            assert_eq!(rfc3339::parse(bad), None, "{bad:?}");
        }
        // The last instant that still formats as a four-digit year; in 100 ns steps, the
        // resolution of Windows' SystemTime.
        let last = "9999-12-31T23:59:59.9999999Z";
        let t = rfc3339::parse(last).unwrap();
        assert_eq!(rfc3339::format(t), last);
        assert_eq!(rfc3339::parse("9999-12-31T22:59:59.9999999-01:00"), Some(t));
    }

    #[test]
    fn timestamps_round_trip_over_four_centuries() {
        let mut secs = 0u64;
        while secs < 12_700_000_000 {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(rfc3339::parse(&rfc3339::format(t)), Some(t), "{secs}");
            secs += 86_400 * 37 + 3_607;
        }
    }

    #[test]
    fn json_has_the_documented_keys_in_order() {
        let mut r = Record::new(
            vec![
                Endpoint::parse("/run/p.sock").unwrap(),
                Endpoint::parse("127.0.0.1:4000").unwrap(),
            ],
            InstanceMode::Http,
            Some(Endpoint::parse("127.0.0.1:8080").unwrap()),
            "0123456789abcdef0123456789abcdef".into(),
        );
        r.pid = 4242;
        r.started_at = UNIX_EPOCH + Duration::from_secs(1_774_260_000);
        let json = r.to_json();
        let expected = r#"{
  "url": "unix:///run/p.sock",
  "pid": 4242,
  "nonce": "0123456789abcdef0123456789abcdef",
  "started_at": "2026-03-23T10:00:00Z",
  "mode": "http",
  "upstream": "tcp://127.0.0.1:8080",
  "listeners": [
    "unix:///run/p.sock",
    "tcp://127.0.0.1:4000"
  ]
}
"#;
        assert_eq!(json, expected);
        assert_eq!(Record::from_json(&json).unwrap(), r);
    }

    #[test]
    fn reading_is_lenient_about_extra_and_optional_keys() {
        let text = r#"{"url":"npipe://x","pid":7,"nonce":"ab","started_at":"2026-01-01T00:00:00Z","future":1}"#;
        let r = Record::from_json(text).unwrap();
        assert_eq!(r.mode, InstanceMode::Unknown);
        assert!(r.listeners.is_empty() && r.upstream.is_none());
        let r = Record::from_json(&text.replace("\"future\":1", "\"mode\":\"quantum\"")).unwrap();
        assert_eq!(r.mode, InstanceMode::Unknown);
    }

    #[test]
    fn bad_fields_are_errors() {
        for text in [
            r#"{"url":"ftp://x","pid":7,"nonce":"ab","started_at":"2026-01-01T00:00:00Z"}"#,
            r#"{"url":"npipe://x","pid":-1,"nonce":"ab","started_at":"2026-01-01T00:00:00Z"}"#,
            r#"{"url":"npipe://x","pid":7,"nonce":"ab","started_at":"yesterday"}"#,
            r#"{"url":"npipe://x","pid":7,"started_at":"2026-01-01T00:00:00Z"}"#,
            "{",
        ] {
            assert!(Record::from_json(text).is_err(), "{text}");
        }
    }
}
