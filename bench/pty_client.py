#!/usr/bin/env python3
"""Clients for bench/pty.sh (Python 3 standard library only).

Three ways to reach a program on a pseudo-terminal, each measured the same way:

  local   the program on a local PTY (pty.fork), read from the master
  ws      the agent's API directly: POST /v1/sessions, then GET .../attach as a WebSocket
          (pipegate.pty.v1) over a Unix socket; keystrokes on channel 0, output on 1
  shell   `pipegate shell EP -- PROGRAM` itself, run on a local PTY (pty.fork), so the
          bytes cross the local PTY, pipegate shell, the socket, the agent and the remote PTY

Measurements (each prints one JSON object on stdout):

  pty_client.py latency PATH [--connect unix:SOCK | --pipegate BIN --endpoint EP]
                        --count N [--warmup W]
      Keystroke echo round trip. The program is `sh -c 'echo READY; exec cat'` on an
      80x24 terminal in its normal mode (canonical, echo on). One sample: write one byte
      ('a'), time until its echo (one byte, from the terminal's line discipline) comes
      back. Every LINE (50) keystrokes a carriage return submits the line (not timed) and
      the script reads the echoed CR LF and cat's copy of the line, so the terminal's
      line buffer never fills. Percentiles in microseconds.

  pty_client.py cat PATH [...] --file F
      Output throughput: `cat F` on the terminal, from start until the end of output (the
      status message, or EIO on the local master). Checks the byte count: the file plus
      one CR per LF (the terminal's output processing turns LF into CR LF). Reports
      child_cpu_s too: the CPU time of the local process (cat, or pipegate shell).
"""

import argparse
import base64
import json
import os
import pty
import socket
import struct
import sys
import time

LINE = 50
READY = b"READY"
ROWS, COLS = 24, 80
SUBPROTOCOL = "pipegate.pty.v1"
CH_STDIN, CH_STDOUT, CH_STDERR, CH_STATUS = 0, 1, 2, 3


def pct(sorted_values, p):
    """Nearest-rank percentile (as bench/loadgen.py)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_summary(samples_ns):
    us = sorted(s / 1000.0 for s in samples_ns)
    return {
        "count": len(us),
        "p50_us": pct(us, 50),
        "p90_us": pct(us, 90),
        "p99_us": pct(us, 99),
        "max_us": us[-1],
        "mean_us": sum(us) / len(us),
    }


# --------------------------------------------------------------------------- transports
class PtyPeer:
    """A program on a local PTY; `argv` is exec'd in the child."""

    def __init__(self, argv):
        pid, fd = pty.fork()
        if pid == 0:
            try:
                import fcntl
                import termios

                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.pending = bytearray()

    def send(self, data):
        os.write(self.fd, data)

    def recv_some(self):
        """Some output bytes, or b"" at the end (EIO once nothing holds the terminal)."""
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            return data
        try:
            return os.read(self.fd, 1 << 20)
        except OSError:
            return b""

    def finish(self):
        while self.recv_some():
            pass
        os.close(self.fd)
        _, status, usage = os.wait4(self.pid, 0)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        return os.waitstatus_to_exitcode(status)


def http_request(sock_path, method, path, body=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    s.sendall(head.encode() + data)
    answer = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    s.close()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


class WsPeer:
    """A session of the agent at a Unix socket, attached with pipegate.pty.v1."""

    def __init__(self, sock_path, argv):
        status, body = http_request(
            sock_path,
            "POST",
            "/v1/sessions",
            {"argv": argv, "tty": True, "size": {"Width": COLS, "Height": ROWS}},
        )
        if status != 201:
            raise SystemExit(f"create: {status} {body!r}")
        sid = json.loads(body)["id"]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET /v1/sessions/{sid}/attach HTTP/1.1\r\nHost: localhost\r\n"
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
            ).encode()
        )
        self.sock = s
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("attach: connection closed during the handshake")
            self.buf += chunk
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"attach: {head!r}")
        self.buf = bytearray(rest)
        self.status = None
        self.closed = False
        self.cpu_s = 0.0

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("the agent closed the connection")
            self.buf += chunk

    def _frame(self):
        """(opcode, payload) of the next frame (the server does not mask)."""
        self._fill(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._fill(4)
            n, off = struct.unpack_from(">H", self.buf, 2)[0], 4
        elif n == 127:
            self._fill(10)
            n, off = struct.unpack_from(">Q", self.buf, 2)[0], 10
        self._fill(off + n)
        payload = bytes(self.buf[off : off + n])
        del self.buf[: off + n]
        return b0 & 0x0F, payload

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, data):
        self._send_frame(0x2, bytes([CH_STDIN]) + data)

    def recv_some(self):
        """The next output bytes (channels 1 and 2), or b"" once the status arrived."""
        while True:
            if self.status is not None or self.closed:
                return b""
            opcode, payload = self._frame()
            if opcode == 0x2 and payload:
                ch = payload[0]
                if ch in (CH_STDOUT, CH_STDERR):
                    if len(payload) > 1:
                        return payload[1:]
                elif ch == CH_STATUS:
                    self.status = json.loads(payload[1:])
            elif opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
            elif opcode == 0x8:  # close
                self.closed = True

    def finish(self):
        while self.recv_some():
            pass
        try:
            self._send_frame(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()
        return (self.status or {}).get("exitCode", 0)


def peer(args, argv):
    if args.path == "local":
        return PtyPeer(argv)
    if args.path == "ws":
        if not args.connect or not args.connect.startswith("unix:"):
            raise SystemExit("ws needs --connect unix:/path/to/agent.sock")
        return WsPeer(args.connect[5:], argv)
    if args.path == "shell":
        if not args.pipegate or not args.endpoint:
            raise SystemExit("shell needs --pipegate BIN --endpoint EP")
        return PtyPeer([args.pipegate, "--log", "warn", "shell", args.endpoint, "--"] + argv)
    raise SystemExit(f"unknown path {args.path!r}")


def recv_exact(p, n):
    got = 0
    while got < n:
        data = p.recv_some()
        if not data:
            raise SystemExit(f"output ended after {got} of {n} expected bytes")
        got += len(data)
    if got != n:
        raise SystemExit(f"expected {n} bytes, got {got} (unexpected output)")


# --------------------------------------------------------------------------- measurements
def latency(args):
    sh = args.sh
    p = peer(args, [sh, "-c", "echo READY; exec cat"])
    seen = bytearray()
    while READY + b"\r\n" not in seen:
        data = p.recv_some()
        if not data:
            raise SystemExit(f"the program ended before READY: {bytes(seen)!r}")
        seen += data
    if not seen.endswith(READY + b"\r\n"):
        raise SystemExit(f"unexpected output after READY: {bytes(seen)!r}")
    samples = []
    typed = 0
    for i in range(args.warmup + args.count):
        t0 = time.perf_counter_ns()
        p.send(b"a")
        recv_exact(p, 1)
        t1 = time.perf_counter_ns()
        if i >= args.warmup:
            samples.append(t1 - t0)
        typed += 1
        if typed == LINE:
            p.send(b"\r")
            recv_exact(p, 2 + LINE + 2)  # echoed CR LF, then cat's line and CR LF
            typed = 0
    p.send(b"\x04" if typed == 0 else b"\r\x04")
    code = p.finish()
    print(json.dumps(dict(latency_summary(samples), exit=code)))


def cat(args):
    size = os.path.getsize(args.file)
    with open(args.file, "rb") as f:
        newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    expected = size + newlines
    t0 = time.perf_counter_ns()
    p = peer(args, [args.cat, args.file])
    got = 0
    while True:
        data = p.recv_some()
        if not data:
            break
        got += len(data)
    t1 = time.perf_counter_ns()
    code = p.finish()
    if got != expected:
        raise SystemExit(f"received {got} bytes, expected {expected} (exit {code})")
    seconds = (t1 - t0) / 1e9
    print(
        json.dumps(
            {
                "file_bytes": size,
                "received": got,
                "seconds": seconds,
                "mib_s": size / seconds / 1048576,
                "exit": code,
                # CPU time of the local process (cat itself, or pipegate shell); 0 for ws
                "child_cpu_s": p.cpu_s,
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("latency", "cat"):
        sp = sub.add_parser(name)
        sp.add_argument("path", choices=["local", "ws", "shell"])
        sp.add_argument("--connect", help="ws: unix:/path/to/agent.sock")
        sp.add_argument("--pipegate", help="shell: the pipegate binary")
        sp.add_argument("--endpoint", help="shell: the agent endpoint (unix:///...)")
        sp.add_argument("--sh", default="/bin/sh")
        sp.add_argument("--cat", default="/bin/cat")
        if name == "latency":
            sp.add_argument("--count", type=int, default=2000)
            sp.add_argument("--warmup", type=int, default=100)
        else:
            sp.add_argument("--file", required=True)
    args = ap.parse_args()
    {"latency": latency, "cat": cat}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
