//! Text conversions for a console that only speaks UTF-16 (the Windows console): what
//! it reads becomes UTF-8 bytes, and what is written to it must be valid UTF-8. Both
//! keep state across calls, because a character may be split between two reads or two
//! output messages. Plain data and no I/O, so they are tested on every platform.
// Used by `windows.rs` only.
#![cfg_attr(not(windows), allow(dead_code))]

/// UTF-16 code units (as `ReadConsoleW` returns them) to UTF-8 bytes. A surrogate pair
/// split between two reads is joined; an unpaired surrogate becomes U+FFFD.
#[derive(Debug, Default)]
pub(crate) struct Utf16ToUtf8 {
    /// A high surrogate that ended the previous read.
    high: Option<u16>,
}

impl Utf16ToUtf8 {
    /// Appends the UTF-8 of `units` to `out`.
    pub(crate) fn push(&mut self, units: &[u16], out: &mut Vec<u8>) {
        let mut all: Vec<u16> = self.high.take().into_iter().collect();
        all.extend_from_slice(units);
        if let Some(&last) = all.last() {
            if (0xD800..0xDC00).contains(&last) {
                self.high = all.pop();
            }
        }
        let mut buf = [0u8; 4];
        for c in char::decode_utf16(all) {
            let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Bytes to valid UTF-8, for a console that rejects anything else: an invalid sequence
/// becomes U+FFFD; an incomplete one at the end waits for the next call.
#[derive(Debug, Default)]
pub(crate) struct LossyUtf8 {
    /// The start of a sequence that ended the previous call (at most 3 bytes).
    carry: Vec<u8>,
}

impl LossyUtf8 {
    /// The text of `data`, after what was carried over.
    pub(crate) fn push(&mut self, data: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(data);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            self.carry = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str) -> Vec<u16> {
        text.encode_utf16().collect()
    }

    #[test]
    fn console_input_to_utf8() {
        let mut d = Utf16ToUtf8::default();
        let mut out = Vec::new();
        // Control bytes pass as they are: Ctrl-C, Ctrl-Z, ESC [ A (arrow up).
        d.push(&utf16("a\u{3}\u{1a}\u{1b}[A"), &mut out);
        assert_eq!(out, b"a\x03\x1a\x1b[A");
        // A surrogate pair split between two reads.
        let pair = utf16("😀");
        out.clear();
        d.push(&[u16::from(b'x'), pair[0]], &mut out);
        assert_eq!(out, b"x");
        d.push(&[pair[1], u16::from(b'y')], &mut out);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), "x😀y");
        // Unpaired surrogates.
        out.clear();
        d.push(&[0xDC00, u16::from(b'z')], &mut out);
        d.push(&[0xD800], &mut out);
        d.push(&[u16::from(b'!')], &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\u{FFFD}z\u{FFFD}!");
    }

    #[test]
    fn output_to_valid_utf8() {
        let mut e = LossyUtf8::default();
        assert_eq!(
            e.push(b"plain \x1b[1mbold\x1b[0m"),
            "plain \x1b[1mbold\x1b[0m"
        );
        // "é" (C3 A9) and "€" (E2 82 AC) split between messages.
        assert_eq!(e.push(b"caf\xC3"), "caf");
        assert_eq!(e.push(b"\xA9 \xE2"), "é ");
        assert_eq!(e.push(b"\x82"), "");
        assert_eq!(e.push(b"\xAC!"), "€!");
        // Invalid bytes: each bad sequence is one replacement character.
        assert_eq!(e.push(b"a\xFFb\xC3(c"), "a\u{FFFD}b\u{FFFD}(c");
        assert_eq!(e.push(b"\xE2\x82("), "\u{FFFD}(");
    }
}
