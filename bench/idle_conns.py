#!/usr/bin/env python3
"""Open N kept-alive HTTP/1.1 client connections and leave them idle.

Used by bench/http_proxy.sh to measure a proxy's memory per idle client connection:
each connection sends one keep-alive GET, reads the whole response (Content-Length
framing), and then stays open and silent. When all are established, a line

    ready <established> <failed>

is printed on stdout (and written to --ready-file if given); the client then holds the
connections until SIGTERM/SIGINT arrives or --hold seconds pass.
Standard library only.
"""

import argparse
import asyncio
import os
import signal
import sys


async def one(host, port, path, host_header, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: idle_conns.py\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode()
        writer.write(req)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            if name.strip().lower() == "connection" and value.strip().lower() == "close":
                raise RuntimeError("server asked to close the connection")
        if length is None:
            raise RuntimeError("response without Content-Length")
        if length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
        if status != 200:
            raise RuntimeError(f"status {status}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/small")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=256, help="connections being set up at once")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-connection setup deadline (s)")
    ap.add_argument("--hold", type=float, default=300.0, help="hold the connections at most this long (s)")
    ap.add_argument("--ready-file")
    args = ap.parse_args()

    host_header = f"{args.host}:{args.port}"
    sem = asyncio.Semaphore(args.concurrency)
    conns = []
    errors = {}

    async def guarded():
        async with sem:
            try:
                conns.append(await one(args.host, args.port, args.path, host_header, args.timeout))
            except Exception as e:  # noqa: BLE001 - reported as a count by kind
                key = f"{type(e).__name__}: {e}"[:120]
                errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(guarded() for _ in range(args.count)))
    # A connection the server closed after its response would read EOF here: count only
    # the ones still open after a short pause.
    await asyncio.sleep(0.5)
    alive = [c for c in conns if not c[0].at_eof()]
    line = f"ready {len(alive)} {args.count - len(alive)}"
    print(line, flush=True)
    for k, v in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"error x{v}: {k}", file=sys.stderr, flush=True)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, args.ready_file)

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    try:
        await asyncio.wait_for(done.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    for _, w in alive:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
