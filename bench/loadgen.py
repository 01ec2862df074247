#!/usr/bin/env python3
"""Load generator and upstream server for bench/raw_relay.sh (Python 3 stdlib only).

Endpoints are written ``tcp:HOST:PORT`` or ``unix:/abs/path``.

  loadgen.py server  --listen tcp:127.0.0.1:0 [--port-file F]
      One upstream for both measurements. A connection's first byte picks its role:
      ``B`` = bulk sink (discard everything until EOF, then answer with the number of
      bytes received as 8 bytes big-endian); anything else = echo (send every byte
      back until EOF). Echo connections are served from one epoll loop (no thread or
      process per connection); a bulk connection gets its own thread doing blocking
      1 MiB ``recv_into``.

  loadgen.py bulk    --connect EP --bytes N
      Sends ``B`` then N zero bytes in 1 MiB ``sendall`` calls (TCP_NODELAY),
      half-closes, waits for the sink's byte count. Prints one JSON object.

  loadgen.py latency --connect EP --count N [--warmup W]
      N sequential new connections: connect, send 1 byte, receive the 1-byte echo,
      close. Prints one JSON object with percentiles in microseconds.

  loadgen.py freeport
      Prints a free loopback TCP port.
"""

import argparse
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time

CHUNK = 1 << 20  # 1 MiB


def parse_ep(text):
    if text.startswith("tcp:"):
        host, _, port = text[4:].rpartition(":")
        return socket.AF_INET, (host, int(port))
    if text.startswith("unix:"):
        return socket.AF_UNIX, text[5:]
    raise SystemExit(f"bad endpoint {text!r}: use tcp:HOST:PORT or unix:/path")


def dial(ep):
    family, addr = ep
    s = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect(addr)
    return s


# --------------------------------------------------------------------------- server


def sink(conn, first):
    """Bulk sink: discard until EOF, then report the count (excluding the 'B')."""
    try:
        conn.setblocking(True)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        total = len(first) - 1
        recv_into = conn.recv_into
        while True:
            n = recv_into(view, CHUNK)
            if n == 0:
                break
            total += n
        conn.sendall(struct.pack(">Q", total))
    except OSError:
        pass
    finally:
        conn.close()


def serve(args):
    family, addr = parse_ep(args.listen)
    lsock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(addr)
    lsock.listen(1024)
    lsock.setblocking(False)
    if family == socket.AF_INET:
        where = f"tcp:{lsock.getsockname()[0]}:{lsock.getsockname()[1]}"
    else:
        where = f"unix:{addr}"
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{lsock.getsockname()[1] if family == socket.AF_INET else addr}\n")
        os.rename(args.port_file + ".tmp", args.port_file)
    print(f"loadgen: serving on {where}", file=sys.stderr, flush=True)

    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    fresh = set()  # connections whose role is not known yet
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is lsock:
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    conn.setblocking(False)
                    if family == socket.AF_INET:
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    fresh.add(conn)
                    sel.register(conn, selectors.EVENT_READ, None)
                continue
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if sock in fresh:
                fresh.discard(sock)
                if data[:1] == b"B":
                    sel.unregister(sock)
                    threading.Thread(target=sink, args=(sock, data), daemon=True).start()
                    continue
            if not data:
                sel.unregister(sock)
                sock.close()
                continue
            try:
                # Echo replies are tiny; a blocking sendall keeps the loop simple.
                sock.setblocking(True)
                sock.sendall(data)
                sock.setblocking(False)
            except OSError:
                sel.unregister(sock)
                sock.close()


# --------------------------------------------------------------------------- clients


def bulk(args):
    ep = parse_ep(args.connect)
    total = args.bytes
    payload = memoryview(bytes(CHUNK))
    s = dial(ep)
    t0 = time.perf_counter()
    s.sendall(b"B")
    left = total
    sendall = s.sendall
    while left >= CHUNK:
        sendall(payload)
        left -= CHUNK
    if left:
        sendall(payload[:left])
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while len(reply) < 8:
        part = s.recv(8 - len(reply))
        if not part:
            break
        reply += part
    t1 = time.perf_counter()
    s.close()
    if len(reply) != 8:
        raise SystemExit(f"bulk: sink did not confirm (got {len(reply)} of 8 bytes)")
    got = struct.unpack(">Q", reply)[0]
    if got != total:
        raise SystemExit(f"bulk: sink received {got} bytes, sent {total}")
    secs = t1 - t0
    print(json.dumps({"bytes": total, "seconds": secs, "mib_s": total / secs / (1 << 20)}))


def pct(sorted_values, p):
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency(args):
    family, addr = parse_ep(args.connect)
    tcp = family == socket.AF_INET
    perf = time.perf_counter_ns
    samples = []
    for i in range(args.warmup + args.count):
        t0 = perf()
        s = socket.socket(family, socket.SOCK_STREAM)
        if tcp:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect(addr)
        s.sendall(b"x")
        got = s.recv(1)
        s.close()
        t1 = perf()
        if got != b"x":
            raise SystemExit(f"latency: connection {i}: expected an echo, got {got!r}")
        if i >= args.warmup:
            samples.append((t1 - t0) / 1000.0)
    samples.sort()
    print(
        json.dumps(
            {
                "count": len(samples),
                "p50_us": pct(samples, 50),
                "p90_us": pct(samples, 90),
                "p99_us": pct(samples, 99),
                "max_us": samples[-1],
                "mean_us": sum(samples) / len(samples),
            }
        )
    )


def freeport(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("server")
    a.add_argument("--listen", required=True)
    a.add_argument("--port-file")
    a.set_defaults(func=serve)
    a = sub.add_parser("bulk")
    a.add_argument("--connect", required=True)
    a.add_argument("--bytes", type=int, default=1 << 30)
    a.set_defaults(func=bulk)
    a = sub.add_parser("latency")
    a.add_argument("--connect", required=True)
    a.add_argument("--count", type=int, default=2000)
    a.add_argument("--warmup", type=int, default=50)
    a.set_defaults(func=latency)
    a = sub.add_parser("freeport")
    a.set_defaults(func=freeport)
    args = p.parse_args()
    try:
        args.func(args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
