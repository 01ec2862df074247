// A Windows HTTP upstream on a named pipe: run by the Windows Node.js under Wine, reached
// through `pipegate serve --listen tcp://… --upstream npipe://NAME` (see windows.rs).
//
// Usage: node pipe_http_server.js PIPE_NAME READY_FILE [MAX_LIFETIME_MS]
//
// Listens on \\.\pipe\PIPE_NAME and, once listening, writes a JSON line to READY_FILE
// (Node under Wine cannot write to a Linux pipe). Exits by itself after MAX_LIFETIME_MS
// (default 300 s) in case nobody stops it. Routes:
//   GET  /hello     200 "hello from windows"
//   GET  /item/N    200 "item N from windows" (distinct per request, for concurrency)
//   POST /echo      200 with the request body echoed back
//   GET  /stats     200 JSON: requests seen in total and under /_pipegate/ (must be 0)
//   else            404
// Every response reports what the server saw: x-seen-via, x-seen-host, x-seen-hop (the
// value of X-Hop, a header the client names in Connection, so it must arrive empty),
// x-body-length and x-body-sha256 of the request body.
'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');

const [name, readyFile, lifetimeArg] = process.argv.slice(2);
if (!name || !readyFile) {
  process.stderr.write('usage: node pipe_http_server.js PIPE_NAME READY_FILE [MAX_LIFETIME_MS]\n');
  process.exit(2);
}
const pipePath = '\\\\.\\pipe\\' + name;
const lifetimeMs = Number(lifetimeArg || 300000);
const stats = { requests: 0, pipegate_paths: 0, max_concurrent: 0 };
let inFlight = 0;

const server = http.createServer((req, res) => {
  stats.requests++;
  if (req.url.startsWith('/_pipegate/')) stats.pipegate_paths++;
  inFlight++;
  stats.max_concurrent = Math.max(stats.max_concurrent, inFlight);
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    inFlight--;
    const received = Buffer.concat(chunks);
    const item = /^\/item\/(\d+)$/.exec(req.url);
    let status = 200;
    let body;
    if (req.method === 'GET' && req.url === '/hello') body = Buffer.from('hello from windows');
    else if (req.method === 'GET' && item) body = Buffer.from(`item ${item[1]} from windows`);
    else if (req.method === 'GET' && req.url === '/stats') body = Buffer.from(JSON.stringify(stats));
    else if (req.method === 'POST' && req.url === '/echo') body = received;
    else {
      status = 404;
      body = Buffer.from('not found');
    }
    res.writeHead(status, seen(req, received, body.length));
    res.end(body);
  });
});

function seen(req, received, contentLength) {
  return {
    'x-seen-via': req.headers.via || '',
    'x-seen-host': req.headers.host || '',
    'x-seen-hop': req.headers['x-hop'] || '',
    'x-body-length': String(received.length),
    'x-body-sha256': crypto.createHash('sha256').update(received).digest('hex'),
    'Content-Length': String(contentLength),
  };
}

server.on('error', (e) => {
  fs.writeFileSync(readyFile + '.error', String(e && e.stack || e) + '\n');
  process.exit(1);
});

server.listen(pipePath, () => {
  // Written whole, then renamed into place: the reader never sees half a line.
  fs.writeFileSync(readyFile + '.tmp', JSON.stringify({
    pipe: pipePath,
    node: process.version,
    platform: process.platform,
  }) + '\n');
  fs.renameSync(readyFile + '.tmp', readyFile);
});

setTimeout(() => process.exit(3), lifetimeMs).unref();
