#!/usr/bin/env python3
"""An HTTP/1.1 upstream for the fault and leak tests: a real process the tests kill and
restart. Standard library only (asyncio), keep-alive, one event line per happening on
stderr (flushed), so a test can wait for it.

Usage: upstream.py unix:/path/to.sock | tcp:127.0.0.1:PORT   (PORT 0: the OS picks)

Routes:
  GET  /hello            200 "hello from upstream\\n" (Content-Length)
  POST /echo             200 with the request body back (Content-Length)
  GET  /stream           200, chunked: "tick N\\n" every 50 ms until the client goes
  GET  /stream?length=N  200, Content-Length N, 1000 bytes every 50 ms
  POST /upload           reads the body (Content-Length), 200 "got N\\n" once complete
  GET  /ws (Upgrade)     101 Switching Protocols, then every byte echoed until EOF
  anything else          404

Events on stderr:
  listening unix:/path | listening tcp:127.0.0.1:PORT
  stream-started
  upload-progress RECEIVED of EXPECTED      (the first bytes of an upload arrived)
  upload-complete RECEIVED
  upload-aborted RECEIVED of EXPECTED       (the connection ended before the body did)
"""

import asyncio
import base64
import hashlib
import os
import sys

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


def event(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def response(status, reason, body=b"", extra=()):
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    head.extend(extra)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def stream(writer, target):
    event("stream-started")
    if "length=" in target:
        length = int(target.split("length=", 1)[1])
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
        sent = 0
        while sent < length:
            piece = min(1000, length - sent)
            writer.write(b"x" * piece)
            await writer.drain()
            sent += piece
            await asyncio.sleep(0.05)
        return
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    n = 0
    while True:
        data = f"tick {n}\n".encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
        n += 1
        await asyncio.sleep(0.05)


async def upload(reader, writer, headers):
    expected = int(headers.get("content-length", "0"))
    received = 0
    reported = False
    while received < expected:
        data = await reader.read(min(65536, expected - received))
        if not data:
            event(f"upload-aborted {received} of {expected}")
            return False
        received += len(data)
        if not reported:
            event(f"upload-progress {received} of {expected}")
            reported = True
    event(f"upload-complete {received}")
    writer.write(response(200, "OK", f"got {received}\n".encode()))
    return True


async def websocket(reader, writer, headers):
    key = headers.get("sec-websocket-key", "").encode()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()


async def serve(reader, writer):
    try:
        while True:
            try:
                method, target, headers = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            path = target.split("?", 1)[0]
            if headers.get("upgrade", "").lower() == "websocket":
                await websocket(reader, writer, headers)
                return
            if method == "GET" and path == "/hello":
                writer.write(response(200, "OK", b"hello from upstream\n"))
            elif method == "POST" and path == "/echo":
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                writer.write(response(200, "OK", body))
            elif method == "GET" and path == "/stream":
                await stream(writer, target)
                return
            elif method == "POST" and path == "/upload":
                if not await upload(reader, writer, headers):
                    return
            else:
                writer.write(response(404, "Not Found", b"no such route\n"))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    where = sys.argv[1]
    if where.startswith("unix:"):
        path = where[len("unix:"):]
        # A socket left by a killed predecessor: nobody listens on it any more.
        if os.path.exists(path):
            os.unlink(path)
        server = await asyncio.start_unix_server(serve, path, backlog=4096)
        os.chmod(path, 0o600)
        event(f"listening unix:{path}")
    else:
        host, port = where[len("tcp:"):].rsplit(":", 1)
        server = await asyncio.start_server(serve, host, int(port), backlog=4096)
        port = server.sockets[0].getsockname()[1]
        event(f"listening tcp:{host}:{port}")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
