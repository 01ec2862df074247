// Echo check over a Windows named pipe, run by the Windows Node.js under Wine.
//
// Usage: node pipe_echo.js PIPE_NAME CONNECTIONS BYTES_PER_CONNECTION [SUMMARY_FILE]
// (set NODE_PATH to a node_modules with ws to have its version reported)
//
// Opens CONNECTIONS concurrent connections to \\.\pipe\PIPE_NAME, sends each its own
// random payload, reads the echo until it has as many bytes as it sent, and compares
// SHA-256 digests. Prints a JSON summary (to SUMMARY_FILE if given, else stdout) and exits
// 1 on any mismatch or error. Named pipes have no half-close, so the client knows the
// length rather than waiting for EOF.
'use strict';

const net = require('net');
const crypto = require('crypto');
const fs = require('fs');

const [name, connArg, bytesArg, summaryFile] = process.argv.slice(2);
if (!name) {
  process.stderr.write('usage: node pipe_echo.js PIPE_NAME CONNECTIONS BYTES [SUMMARY_FILE]\n');
  process.exit(2);
}
const connections = Number(connArg || 64);
const bytes = Number(bytesArg || 256 * 1024);
const path = '\\\\.\\pipe\\' + name;
const deadlineMs = Number(process.env.PIPE_ECHO_TIMEOUT_MS || 120000);

// The ws package (from NODE_PATH) is what later WebSocket checks use; report that it loads.
let wsVersion = null;
try {
  require('ws');
  wsVersion = require('ws/package.json').version;
} catch (e) {
  wsVersion = null;
}

function one(index) {
  return new Promise((resolve) => {
    const payload = crypto.randomBytes(bytes);
    const sent = crypto.createHash('sha256').update(payload).digest('hex');
    const got = crypto.createHash('sha256');
    let received = 0;
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(Object.assign({ index, sent: bytes, received }, result));
    };
    const socket = net.connect(path, () => {
      // Write in chunks so a pipe's buffers and the bridge's both get exercised.
      let offset = 0;
      const chunk = 16 * 1024;
      const pump = () => {
        while (offset < payload.length) {
          const end = Math.min(offset + chunk, payload.length);
          const ok = socket.write(payload.subarray(offset, end));
          offset = end;
          if (!ok) {
            socket.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    socket.on('data', (data) => {
      received += data.length;
      got.update(data);
      if (received > bytes) {
        finish({ ok: false, error: 'received more bytes than sent' });
      } else if (received === bytes) {
        const digest = got.digest('hex');
        finish(digest === sent ? { ok: true } : { ok: false, error: 'sha256 mismatch', sent_sha256: sent, got_sha256: digest });
      }
    });
    socket.on('error', (e) => finish({ ok: false, error: String(e && e.message || e) }));
    socket.on('close', () => finish({ ok: false, error: 'closed early' }));
  });
}

const started = Date.now();
const timer = setTimeout(() => {
  report({ ok: false, error: `timed out after ${deadlineMs} ms` }, []);
}, deadlineMs);

function report(summary, results) {
  const failures = results.filter((r) => !r.ok);
  const out = JSON.stringify(Object.assign({
    pipe: path,
    node: process.version,
    platform: process.platform,
    ws_version: wsVersion,
    connections,
    bytes_per_connection: bytes,
    ok_connections: results.length - failures.length,
    failures: failures.slice(0, 10),
    elapsed_ms: Date.now() - started,
  }, summary)) + '\n';
  if (summaryFile) fs.writeFileSync(summaryFile, out);
  else process.stdout.write(out);
  process.exit(summary.ok ? 0 : 1);
}

Promise.all(Array.from({ length: connections }, (_, i) => one(i))).then((results) => {
  clearTimeout(timer);
  const ok = results.every((r) => r.ok) && results.length === connections;
  report({ ok }, results);
});
