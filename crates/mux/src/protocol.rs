//! The stream header: how a client names the endpoint it wants, and how the mux answers.
//!
//! Every stream starts with one request from the opener and one answer from the mux,
//! then carries raw bytes both ways. All integers are big-endian.
//!
//! ```text
//! request: version (1 byte, = 1) | kind (1: 0 open, 1 hello) | connect timeout in ms (4, 0 = the mux's default)
//!          | length (2) | canonical endpoint URL (UTF-8; empty for hello)
//! answer:  status (1: 0 ok, 1 not allowed, 2 unreachable, 3 bad request)
//!          | flags (1: bit 0 = the upstream forwards half-close) | length (2) | message (UTF-8)
//! ```
//!
//! A hello is answered `ok` with the mux's version string and then closed; the client
//! uses it to check, at start-up, that its helper really is a `pipegate mux`.
//!
//! The opener need not wait for the answer: bytes it sends right after the request (in the
//! same frame, even) wait on the stream, within its flow-control window, until the mux has
//! dialed the endpoint, and are dropped with the stream if the answer is a refusal. That
//! saves a round trip across the helper's stdio per connection ("optimistic open").

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this build speaks.
pub(crate) const VERSION: u8 = 1;

/// Longest endpoint or message accepted, in bytes.
pub(crate) const MAX_TEXT: usize = 4096;

/// What the opener of a stream asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Dial this endpoint (canonical URL) within this timeout (`None`: the mux's default).
    Open {
        endpoint: String,
        timeout: Option<Duration>,
    },
    /// Who are you?
    Hello,
}

/// The mux's verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    NotAllowed,
    Unreachable,
    BadRequest,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NotAllowed => 1,
            Status::Unreachable => 2,
            Status::BadRequest => 3,
        }
    }

    fn from_code(code: u8) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::NotAllowed,
            2 => Status::Unreachable,
            3 => Status::BadRequest,
            _ => return None,
        })
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: Status,
    /// The upstream forwards a write shutdown as EOF while still sending.
    pub(crate) half_close: bool,
    /// Why not (or, for a hello, the mux's version).
    pub(crate) message: String,
}

/// Why a request could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The stream failed or ended.
    Io(io::Error),
    /// A request of another version; the answer to send says so.
    Version(u8),
    /// Not a request at all.
    Malformed(&'static str),
}

fn text_len(text: &str) -> io::Result<u16> {
    if text.len() > MAX_TEXT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} bytes is longer than the {MAX_TEXT} the protocol allows",
                text.len()
            ),
        ));
    }
    u16::try_from(text.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Writes `request` and flushes.
pub(crate) async fn write_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    request: &Request,
) -> io::Result<()> {
    w.write_all(&encode_request(request)?).await?;
    w.flush().await
}

/// `request` on the wire; `InvalidInput` for an endpoint longer than [`MAX_TEXT`].
pub(crate) fn encode_request(request: &Request) -> io::Result<Vec<u8>> {
    let (kind, timeout, text) = match request {
        Request::Open { endpoint, timeout } => (0u8, *timeout, endpoint.as_str()),
        Request::Hello => (1u8, None, ""),
    };
    let millis = timeout.map_or(0, |t| {
        u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1)
    });
    let mut buf = Vec::with_capacity(8 + text.len());
    buf.push(VERSION);
    buf.push(kind);
    buf.extend_from_slice(&millis.to_be_bytes());
    buf.extend_from_slice(&text_len(text)?.to_be_bytes());
    buf.extend_from_slice(text.as_bytes());
    Ok(buf)
}

/// Reads one request.
pub(crate) async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, ReadError> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await.map_err(ReadError::Io)?;
    if head[0] != VERSION {
        return Err(ReadError::Version(head[0]));
    }
    let millis = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
    let len = usize::from(u16::from_be_bytes([head[6], head[7]]));
    if len > MAX_TEXT {
        return Err(ReadError::Malformed("endpoint longer than 4096 bytes"));
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text).await.map_err(ReadError::Io)?;
    let text =
        String::from_utf8(text).map_err(|_| ReadError::Malformed("endpoint is not UTF-8"))?;
    match head[1] {
        0 => Ok(Request::Open {
            endpoint: text,
            timeout: (millis > 0).then(|| Duration::from_millis(u64::from(millis))),
        }),
        1 => Ok(Request::Hello),
        _ => Err(ReadError::Malformed("unknown request kind")),
    }
}

/// Writes `answer` and flushes.
pub(crate) async fn write_answer<W: AsyncWrite + Unpin>(
    w: &mut W,
    answer: &Answer,
) -> io::Result<()> {
    let mut message = answer.message.as_str();
    if message.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message = &message[..end];
    }
    let mut buf = Vec::with_capacity(4 + message.len());
    buf.push(answer.status.code());
    buf.push(u8::from(answer.half_close));
    buf.extend_from_slice(&text_len(message)?.to_be_bytes());
    buf.extend_from_slice(message.as_bytes());
    w.write_all(&buf).await?;
    w.flush().await
}

/// Bytes the answer starting `buf` needs in all: its head, then (once the head is there)
/// its message too.
pub(crate) fn answer_len(buf: &[u8]) -> usize {
    match buf {
        [_, _, hi, lo, ..] => 4 + usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 4,
    }
}

/// Parses the answer `buf` holds (exactly [`answer_len`] bytes once complete): `None`
/// while bytes are missing, `InvalidData` if it is not an answer.
pub(crate) fn parse_answer(buf: &[u8]) -> io::Result<Option<Answer>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let status = Status::from_code(head[0]).ok_or_else(|| invalid("unknown answer status"))?;
    let len = answer_len(buf) - 4;
    if len > MAX_TEXT {
        return Err(invalid("answer longer than 4096 bytes"));
    }
    let Some(message) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some(Answer {
        status,
        half_close: head[1] & 1 == 1,
        message: String::from_utf8(message.to_vec()).map_err(|_| invalid("answer is not UTF-8"))?,
    }))
}

/// Reads one answer; `InvalidData` if it is not one.
pub(crate) async fn read_answer<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Answer> {
    let mut buf = vec![0u8; 4];
    r.read_exact(&mut buf).await?;
    let len = answer_len(&buf);
    if len - 4 <= MAX_TEXT {
        buf.resize(len, 0);
        r.read_exact(&mut buf[4..]).await?;
    }
    parse_answer(&buf)?.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn requests_round_trip() {
        for request in [
            Request::Open {
                endpoint: "npipe://docker_engine".into(),
                timeout: Some(Duration::from_millis(1500)),
            },
            Request::Open {
                endpoint: "unix:///run/x.sock".into(),
                timeout: None,
            },
            Request::Hello,
        ] {
            let mut buf = Vec::new();
            write_request(&mut buf, &request).await.unwrap();
            let back = read_request(&mut buf.as_slice()).await.unwrap();
            assert_eq!(back, request);
        }
    }

    #[tokio::test]
    async fn answers_round_trip_and_long_messages_are_cut() {
        let answer = Answer {
            status: Status::NotAllowed,
            half_close: true,
            message: "é".repeat(3000),
        };
        let mut buf = Vec::new();
        write_answer(&mut buf, &answer).await.unwrap();
        let back = read_answer(&mut buf.as_slice()).await.unwrap();
        assert_eq!(back.status, Status::NotAllowed);
        assert!(back.half_close);
        assert!(back.message.len() <= MAX_TEXT && back.message.starts_with("éé"));
    }

    #[tokio::test]
    async fn answers_parse_piece_by_piece() {
        let answer = Answer {
            status: Status::Unreachable,
            half_close: false,
            message: "no pipe".into(),
        };
        let mut buf = Vec::new();
        write_answer(&mut buf, &answer).await.unwrap();
        let mut got = Vec::new();
        for byte in &buf {
            assert_eq!(parse_answer(&got).unwrap(), None);
            assert!(got.len() < answer_len(&got));
            got.push(*byte);
        }
        assert_eq!(answer_len(&got), buf.len());
        assert_eq!(parse_answer(&got).unwrap(), Some(answer));
    }

    #[tokio::test]
    async fn another_version_or_garbage_is_rejected() {
        let mut wrong = &[2u8, 0, 0, 0, 0, 0, 0, 0][..];
        assert!(matches!(
            read_request(&mut wrong).await,
            Err(ReadError::Version(2))
        ));
        let mut kind = &[1u8, 9, 0, 0, 0, 0, 0, 0][..];
        assert!(matches!(
            read_request(&mut kind).await,
            Err(ReadError::Malformed(_))
        ));
        let mut short = &[1u8, 0, 0][..];
        assert!(matches!(
            read_request(&mut short).await,
            Err(ReadError::Io(_))
        ));
        let mut status = &[9u8, 0, 0, 0][..];
        assert_eq!(
            read_answer(&mut status).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
