//! Back-pressure end to end: 16 MiB of terminal output through a deliberately slow
//! WebSocket reader arrives intact, the program is held back while the reader pauses,
//! and the agent's memory does not grow with the output.
//!
//! A file of its own, so its process (whose RSS is measured; the agent runs in it)
//! runs nothing else at the same time.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{within, Server, STEP};
use tokio_tungstenite::tungstenite::Message;

const LEN: usize = 16 << 20;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Bytes `pid` has written so far (`wchar` of /proc/PID/io).
fn written_by(pid: u64) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_else(|e| {
        panic!("cat (pid {pid}) is gone ({e}): it wrote everything while nobody read")
    });
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wchar")
}

fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_through_a_slow_reader_arrive_intact_with_bounded_memory() {
    let server = Server::start().await;
    let file = server.path("data.bin");
    let expected = {
        let data = payload(LEN);
        std::fs::write(&file, &data).unwrap();
        format!("{:x}", Sha256::digest(&data))
    };
    // Raw mode: the terminal passes every byte through unchanged (no \n → \r\n).
    let script = format!("stty raw -echo && exec cat {}", file.display());
    let id = server.create(json!({"argv": ["sh", "-c", script]})).await;
    let (_, info) = server.session(&id).await;
    let pid = info["pid"].as_u64().unwrap();
    let mut client = server.attach(&id).await;

    let baseline = rss();
    let mut peak = baseline;
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let mut since_nap = 0usize;
    let mut paused = false;
    let mut status = None;
    let close = loop {
        let msg = within(STEP, "the next message", client.ws.next())
            .await
            .expect("the connection ended early")
            .expect("a message");
        match msg {
            Message::Binary(data) => match data.first() {
                Some(1) => {
                    hasher.update(&data[1..]);
                    received += data.len() - 1;
                    since_nap += data.len() - 1;
                }
                Some(3) => {
                    status = Some(serde_json::from_slice::<serde_json::Value>(&data[1..]).unwrap())
                }
                other => panic!("unexpected channel {other:?}"),
            },
            Message::Close(frame) => break frame,
            _ => continue,
        }
        // A slow reader: about 8 MiB/s.
        if since_nap >= 256 * 1024 {
            since_nap = 0;
            peak = peak.max(rss());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // Once, a full stop: the program must stop too, a bounded distance ahead.
        if !paused && received >= 4 << 20 {
            paused = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let first = written_by(pid);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let second = written_by(pid);
            assert_eq!(first, second, "cat kept writing while nobody read");
            let ahead = second as usize - received;
            assert!(
                ahead < 2 << 20,
                "{ahead} bytes written but not yet received: buffering is not bounded"
            );
            peak = peak.max(rss());
        }
    };
    assert!(paused, "the pause never happened (received {received})");
    assert_eq!(received, LEN, "every byte arrives");
    assert_eq!(format!("{:x}", hasher.finalize()), expected, "and intact");
    let status = status.expect("a status before the close");
    assert_eq!(status["status"], "Success", "{status}");
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1000));
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 8 << 20,
        "RSS grew by {growth} bytes while 16 MiB went through"
    );
}
