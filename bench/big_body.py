#!/usr/bin/env python3
# Usage: bench/big_body.py PATH/TO/pipegate   (release build recommended)
# 4 GiB upload and download through pipegate (http mode), sampling pipegate's RSS.
import http.server, socketserver, socket, sys, threading, time, os, subprocess
N = 4 << 30
CH = 1 << 20
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        n = int(self.headers["content-length"]); got = 0
        while got < n:
            b = self.rfile.read(min(CH, n - got))
            if not b: break
            got += len(b)
        body = str(got).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", str(N)); self.end_headers()
        z = b"\0" * CH
        for _ in range(N // CH): self.wfile.write(z)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
srv = S(("127.0.0.1", 0), H); up = srv.server_address[1]
threading.Thread(target=srv.serve_forever, daemon=True).start()
p = subprocess.Popen([sys.argv[1], "serve", "--no-discovery", "--no-auth", "--log", "warn", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up}"], stderr=subprocess.PIPE, text=True)
line = p.stderr.readline()
while "listening on" not in line: line = p.stderr.readline()
port = int(line.rsplit(":", 1)[1])
def rss(): 
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
peak = [0]; stop = [False]
def sample():
    while not stop[0]: peak[0] = max(peak[0], rss()); time.sleep(0.05)
base = rss(); threading.Thread(target=sample, daemon=True).start()
t = time.time()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {N}\r\n\r\n".encode())
z = b"\0" * CH
for _ in range(N // CH): s.sendall(z)
resp = s.recv(4096).decode(); up_s = time.time() - t
assert resp.endswith(str(N)), resp
t = time.time()
s.sendall(b"GET /down HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
buf = bytearray(CH); got = 0; head = b""
while b"\r\n\r\n" not in head: head += s.recv(4096)
got = len(head.split(b"\r\n\r\n", 1)[1])
while got < N:
    n = s.recv_into(buf)
    if n == 0: break
    got += n
down_s = time.time() - t
stop[0] = True; p.terminate()
print(f"upload 4 GiB ok in {up_s:.1f}s, download {got} bytes in {down_s:.1f}s; pipegate RSS baseline {base} KiB, peak {peak[0]} KiB")
