// HTTP and WebSocket through `pipegate serve --listen npipe://NAME`, as a Windows client
// sees them: run by the Windows Node.js under Wine (see windows.rs).
//
// Usage: node pipe_http_ws_client.js PIPE_NAME SUMMARY_FILE [POST_BYTES] [WS_MESSAGES]
// (NODE_PATH must point at a node_modules with ws)
//
// Over \\.\pipe\PIPE_NAME, in order:
//   1. GET /hello with a hop-by-hop header (named in Connection) the upstream must not see;
//      the response must carry `Via: 1.1 pipegate` and no hop-by-hop header of the
//      upstream's.
//   2. POST /echo with POST_BYTES random bytes: the upstream echoes them with its own
//      SHA-256 of what it received; both must match ours.
//   3. GET /_pipegate/health: 204, answered by pipegate itself.
//   4. A WebSocket to /ws (the ws package, `createConnection` opening the pipe): the 101
//      carries Via; WS_MESSAGES messages of mixed sizes, text and binary, sent back to
//      back, must come back intact and in order; then "close-me" makes the upstream close
//      with code 4001 and reason "bye from linux", which must reach us.
// Writes a JSON summary to SUMMARY_FILE (Node under Wine cannot write to a Linux pipe)
// and exits 0 only if every check passed.
'use strict';

const http = require('http');
const net = require('net');
const crypto = require('crypto');
const fs = require('fs');

const [name, summaryFile, postBytesArg, wsMessagesArg] = process.argv.slice(2);
if (!name || !summaryFile) {
  process.stderr.write('usage: node pipe_http_ws_client.js PIPE_NAME SUMMARY_FILE [POST_BYTES] [WS_MESSAGES]\n');
  process.exit(2);
}
const pipePath = '\\\\.\\pipe\\' + name;
const postBytes = Number(postBytesArg || 1024 * 1024);
const wsMessages = Number(wsMessagesArg || 200);
const deadlineMs = Number(process.env.PIPEGATE_JS_TIMEOUT_MS || 150000);
const stepMs = Number(process.env.PIPEGATE_JS_STEP_MS || 60000);
const started = Date.now();

const checks = [];
const facts = {};
let finished = false;

function check(name, ok, detail) {
  checks.push({ name, ok: Boolean(ok), detail: detail === undefined ? null : detail });
  return Boolean(ok);
}

function report(extra) {
  if (finished) return;
  finished = true;
  const failed = checks.filter((c) => !c.ok);
  const ok = !extra.error && failed.length === 0 && checks.length > 0;
  const out = JSON.stringify(Object.assign({
    ok,
    pipe: pipePath,
    node: process.version,
    platform: process.platform,
    checks,
    failed: failed.map((c) => c.name),
    elapsed_ms: Date.now() - started,
  }, facts, extra)) + '\n';
  fs.writeFileSync(summaryFile, out);
  process.exit(ok ? 0 : 1);
}

const overall = setTimeout(() => report({ error: `timed out after ${deadlineMs} ms` }), deadlineMs);

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

// Rejects if `promise` takes longer than stepMs.
function bounded(what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${stepMs} ms`)), stepMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// One HTTP/1.1 request over the pipe; resolves { status, headers, body }.
function request(method, path, headers, body) {
  return bounded(`${method} ${path}`, new Promise((resolve, reject) => {
    const req = http.request({
      socketPath: pipePath,
      method,
      path,
      headers: Object.assign({ Host: 'pipegate.test' }, headers || {}),
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) {
      // In pieces, so the body streams through the pipe rather than in one write.
      const piece = 64 * 1024;
      for (let offset = 0; offset < body.length; offset += piece) {
        req.write(body.subarray(offset, Math.min(offset + piece, body.length)));
      }
    }
    req.end();
  }));
}

const HOP_HEADERS = ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'x-upstream-hop'];

async function httpChecks() {
  // 1. GET, with a header that Connection makes hop-by-hop.
  const get = await request('GET', '/hello', { Connection: 'keep-alive, X-Hop', 'X-Hop': 'must-not-pass' });
  check('get status 200', get.status === 200, get.status);
  check('get body', get.body.toString('utf8') === 'hello from linux', get.body.toString('utf8').slice(0, 200));
  check('get response Via', get.headers.via === '1.1 pipegate', get.headers.via || null);
  check('get upstream saw Via', get.headers['x-seen-via'] === '1.1 pipegate', get.headers['x-seen-via'] || null);
  check('get upstream did not see X-Hop', get.headers['x-seen-hop'] === '', get.headers['x-seen-hop']);
  check('get upstream saw Host', get.headers['x-seen-host'] === 'pipegate.test', get.headers['x-seen-host'] || null);
  check('get response lost the upstream hop header', get.headers['x-upstream-hop'] === undefined,
    get.headers['x-upstream-hop'] || null);

  // 2. POST a large body; the upstream's checksum and echo must both match ours.
  const payload = crypto.randomBytes(postBytes);
  const sent = sha256(payload);
  facts.post_sha256 = sent;
  facts.post_bytes = postBytes;
  const post = await request('POST', '/echo', {
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(payload.length),
    'X-Body-Sha256': sent,
  }, payload);
  check('post status 200', post.status === 200, post.status);
  check('post upstream length', post.headers['x-body-length'] === String(postBytes), post.headers['x-body-length'] || null);
  check('post upstream sha256', post.headers['x-body-sha256'] === sent, post.headers['x-body-sha256'] || null);
  check('post echo length', post.body.length === postBytes, post.body.length);
  check('post echo sha256', sha256(post.body) === sent, sha256(post.body));
  check('post response Via', post.headers.via === '1.1 pipegate', post.headers.via || null);

  // 3. pipegate's own health endpoint.
  const health = await request('GET', '/_pipegate/health');
  check('health status 204', health.status === 204, health.status);
  check('health body empty', health.body.length === 0, health.body.length);
}

// The i-th WebSocket message: mixed sizes across frame-length boundaries, text and binary.
const SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 65537, 100000];
function message(i) {
  const size = i % 50 === 49 ? 1024 * 1024 : (i % 3 === 0 ? SIZES[i % SIZES.length] : crypto.randomInt(0, 200000));
  if (i % 2 === 0) {
    return { binary: true, data: crypto.randomBytes(size) };
  }
  // Text with multi-byte characters; `size` counts characters of a repeated pattern.
  const unit = `msg ${i} héllo ✓ 🙂 `;
  const text = unit.repeat(Math.ceil(size / unit.length) + 1).slice(0, Math.max(1, size));
  return { binary: false, data: Buffer.from(text, 'utf8') };
}

function websocketChecks() {
  let WebSocket;
  try {
    WebSocket = require('ws');
    facts.ws_version = require('ws/package.json').version;
  } catch (e) {
    check('ws package loads', false, String(e && e.message || e));
    return Promise.resolve();
  }
  return bounded('websocket', new Promise((resolve) => {
    const expected = Array.from({ length: wsMessages }, (_, i) => message(i));
    facts.ws_messages = wsMessages;
    facts.ws_bytes = expected.reduce((n, m) => n + m.data.length, 0);
    let received = 0;
    let mismatch = null;
    let upgradeVia = null;
    const ws = new WebSocket('ws://pipegate.test/ws', {
      // The pipe instead of TCP: ws hands this to http.request.
      createConnection: () => net.connect(pipePath),
      perMessageDeflate: false,
      maxPayload: 64 * 1024 * 1024,
    });
    ws.on('upgrade', (res) => {
      upgradeVia = res.headers.via || null;
    });
    ws.on('open', () => {
      for (const m of expected) ws.send(m.data, { binary: m.binary });
    });
    ws.on('message', (data, isBinary) => {
      const i = received++;
      if (mismatch) return;
      const want = expected[i];
      if (!want) {
        mismatch = { index: i, error: 'more messages than sent' };
      } else if (want.binary !== isBinary) {
        mismatch = { index: i, error: `binary flag ${isBinary}, sent ${want.binary}` };
      } else if (!want.data.equals(data)) {
        mismatch = { index: i, error: 'payload differs', sent_len: want.data.length, got_len: data.length };
      }
      if (received === wsMessages) ws.send('close-me');
    });
    ws.on('error', (e) => {
      check('websocket error-free', false, String(e && e.message || e));
    });
    ws.on('close', (code, reason) => {
      check('websocket 101 Via', upgradeVia === '1.1 pipegate', upgradeVia);
      check('websocket echoes all messages', received === wsMessages, { received, sent: wsMessages });
      check('websocket echoes intact and in order', mismatch === null, mismatch);
      check('websocket close code from upstream', code === 4001, code);
      check('websocket close reason from upstream', reason.toString('utf8') === 'bye from linux', reason.toString('utf8'));
      resolve();
    });
  }));
}

(async () => {
  try {
    await httpChecks();
    await websocketChecks();
    clearTimeout(overall);
    report({});
  } catch (e) {
    clearTimeout(overall);
    report({ error: String(e && e.stack || e) });
  }
})();
