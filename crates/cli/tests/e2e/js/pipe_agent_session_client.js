// A PTY session of the agent, driven by a Windows client over a named pipe: run by the
// Windows Node.js under Wine (see windows.rs). The pipe is `pipegate.exe serve --upstream
// tcp://…` under Wine, which forwards to a Linux-native `pipegate serve` (the agent).
//
// Usage: node pipe_agent_session_client.js PIPE_NAME SUMMARY_FILE PROGRESS_FILE GO_FILE
// (NODE_PATH must point at a node_modules with ws)
//
// Over \\.\pipe\PIPE_NAME, in order:
//   1. GET /v1/info: the Linux agent answers (os linux, reached over tcp by the bridge).
//   2. POST /v1/sessions {argv: sh -c 'stty size; read x; stty size; sleep 1000',
//      tty: true, size 80x24} → 201 {id, pid}.
//   3. GET /v1/sessions/ID/attach as a WebSocket (the ws package, `createConnection`
//      opening the pipe) with subprotocol pipegate.pty.v1, which the agent must select.
//   4. "24 80" on channel 1; then a resize {"Width":100,"Height":40} on channel 4 and a
//      newline on channel 0; then "40 100" on channel 1.
//   5. Writes {"pid": PID} to PROGRESS_FILE and waits for GO_FILE (the test creates it once
//      `sleep` runs under that pid, so the signal cannot land while sh sets it up), then
//      {"Signal":"SIGINT"} on channel 5.
//   6. One status on channel 3 (Failure, ExitCode 130, Signal SIGINT), then close 1000.
//   7. GET /v1/sessions/ID: exited, {code: 130, signal: "SIGINT"}.
// Writes a JSON summary to SUMMARY_FILE (Node under Wine cannot write to a Linux pipe)
// and exits 0 only if every check passed.
'use strict';

const http = require('http');
const net = require('net');
const fs = require('fs');

const [name, summaryFile, progressFile, goFile] = process.argv.slice(2);
if (!name || !summaryFile || !progressFile || !goFile) {
  process.stderr.write('usage: node pipe_agent_session_client.js PIPE_NAME SUMMARY_FILE PROGRESS_FILE GO_FILE\n');
  process.exit(2);
}
const pipePath = '\\\\.\\pipe\\' + name;
const deadlineMs = Number(process.env.PIPEGATE_JS_TIMEOUT_MS || 150000);
const stepMs = Number(process.env.PIPEGATE_JS_STEP_MS || 60000);
const started = Date.now();

const CH = { STDIN: 0, STDOUT: 1, STDERR: 2, STATUS: 3, RESIZE: 4, SIGNAL: 5, CLOSE: 255 };
const COMMAND = 'stty size; read x; stty size; sleep 1000';

const checks = [];
const facts = { events: [] };
let finished = false;

function check(name, ok, detail) {
  checks.push({ name, ok: Boolean(ok), detail: detail === undefined ? null : detail });
  return Boolean(ok);
}

// A timeline of what happened, in ms since the start: for the summary and for debugging.
function event(what, detail) {
  facts.events.push(Object.assign({ t: Date.now() - started, what }, detail === undefined ? {} : { detail }));
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

// Rejects if `promise` takes longer than stepMs.
function bounded(what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${stepMs} ms`)), stepMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// One HTTP/1.1 request over the pipe with an optional JSON body; resolves
// { status, headers, text, json }.
function request(method, path, body) {
  return bounded(`${method} ${path}`, new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body), 'utf8');
    const headers = { Host: 'pipegate.test' };
    if (data) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(data.length);
    }
    const req = http.request({ socketPath: pipePath, method, path, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch (_) { /* not JSON: checks will say */ }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  }));
}

function frame(channel, payload) {
  return Buffer.concat([Buffer.from([channel]), Buffer.from(payload)]);
}

// Resolves once GO_FILE exists (polling: the test writes it from Linux).
function waitForGo() {
  return bounded('the go file', new Promise((resolve) => {
    const poll = () => (fs.existsSync(goFile) ? resolve() : setTimeout(poll, 25));
    poll();
  }));
}

function session(id, pid) {
  let WebSocket;
  try {
    WebSocket = require('ws');
    facts.ws_version = require('ws/package.json').version;
  } catch (e) {
    check('ws package loads', false, String(e && e.message || e));
    return Promise.resolve();
  }
  return bounded('the session', new Promise((resolve) => {
    let stdout = '';
    let stage = 'size'; // size → resized → signalled
    const statuses = [];
    let statusBeforeClose = false;
    let otherChannels = [];
    let textFrames = 0;
    const ws = new WebSocket(`ws://pipegate.test/v1/sessions/${id}/attach`, ['pipegate.pty.v1'], {
      // The pipe instead of TCP: ws hands this to http.request.
      createConnection: () => net.connect(pipePath),
      perMessageDeflate: false,
    });
    ws.on('upgrade', (res) => {
      facts.upgrade_via = res.headers.via || null;
    });
    ws.on('open', () => {
      event('open', ws.protocol);
      facts.subprotocol = ws.protocol;
    });
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        textFrames += 1;
        return;
      }
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (buf.length === 0) return;
      const channel = buf[0];
      const payload = buf.subarray(1);
      if (channel === CH.STDOUT) {
        if (payload.length === 0) return; // the "ready" frame
        stdout += payload.toString('utf8');
        if (stage === 'size' && /\b24 80\b/.test(stdout)) {
          stage = 'resized';
          event('saw 24 80');
          ws.send(frame(CH.RESIZE, JSON.stringify({ Width: 100, Height: 40 })));
          ws.send(frame(CH.STDIN, '\n'));
          event('sent resize and newline');
        } else if (stage === 'resized' && /\b40 100\b/.test(stdout)) {
          stage = 'signalled';
          event('saw 40 100');
          fs.writeFileSync(progressFile, JSON.stringify({ id, pid }) + '\n');
          waitForGo().then(() => {
            event('go');
            ws.send(frame(CH.SIGNAL, JSON.stringify({ Signal: 'SIGINT' })));
            event('sent SIGINT');
          }, (e) => {
            check('the test said go', false, String(e && e.message || e));
            ws.terminate();
          });
        }
      } else if (channel === CH.STATUS) {
        event('status');
        let status = null;
        try { status = JSON.parse(payload.toString('utf8')); } catch (e) { status = { unparsed: payload.toString('utf8') }; }
        statuses.push(status);
        statusBeforeClose = true;
      } else {
        otherChannels.push(channel);
      }
    });
    ws.on('error', (e) => {
      event('error', String(e && e.message || e));
      check('websocket error-free', false, String(e && e.message || e));
    });
    ws.on('close', (code, reason) => {
      event('close', code);
      facts.stdout = stdout;
      facts.status = statuses[0] || null;
      facts.close_code = code;
      facts.close_reason = reason.toString('utf8');
      check('subprotocol pipegate.pty.v1', facts.subprotocol === 'pipegate.pty.v1', facts.subprotocol || null);
      check('101 Via', facts.upgrade_via === '1.1 pipegate', facts.upgrade_via || null);
      check('stdout 24 80', /\b24 80\b/.test(stdout), stdout);
      check('stdout 40 100 after the resize', /\b24 80\b[\s\S]*\b40 100\b/.test(stdout), stdout);
      check('SIGINT was sent', stage === 'signalled', stage);
      check('one status', statuses.length === 1, statuses);
      check('status before close', statusBeforeClose, null);
      const status = statuses[0] || {};
      const causes = (status.details && status.details.causes) || [];
      const cause = (reason) => (causes.find((c) => c.reason === reason) || {}).message;
      check('status kind', status.kind === 'Status' && status.apiVersion === 'v1', status);
      check('status Failure', status.status === 'Failure', status.status || null);
      check('status reason NonZeroExitCode', status.reason === 'NonZeroExitCode', status.reason || null);
      check('status ExitCode 130', cause('ExitCode') === '130', cause('ExitCode') || null);
      check('status Signal SIGINT', cause('Signal') === 'SIGINT', cause('Signal') || null);
      check('close 1000', code === 1000, code);
      check('no text frames', textFrames === 0, textFrames);
      check('only channels 1 and 3', otherChannels.length === 0, otherChannels);
      resolve();
    });
  }));
}

(async () => {
  try {
    // 1. The agent behind the bridge.
    const info = await request('GET', '/v1/info');
    event('info', info.status);
    facts.info = info.json;
    check('info status 200', info.status === 200, info.status);
    check('info from the Linux agent', info.json && info.json.os === 'linux', info.text.slice(0, 500));
    check('info: the agent was reached over tcp', info.json && info.json.transport === 'tcp', info.text.slice(0, 500));
    check('info Via', info.headers.via === '1.1 pipegate', info.headers.via || null);

    // 2. A session on a terminal.
    const created = await request('POST', '/v1/sessions', {
      argv: ['sh', '-c', COMMAND],
      tty: true,
      size: { Width: 80, Height: 24 },
    });
    event('created', created.status);
    facts.created = created.json;
    if (!check('create status 201', created.status === 201, created.text.slice(0, 500)) ||
        !check('create id', created.json && typeof created.json.id === 'string' && created.json.id.length > 0, created.json) ||
        !check('create pid', created.json && Number.isInteger(created.json.pid) && created.json.pid > 0, created.json)) {
      throw new Error(`POST /v1/sessions: ${created.status} ${created.text.slice(0, 500)}`);
    }
    const { id, pid } = created.json;

    // 3-6. Attach, resize, signal, status, close.
    await session(id, pid);

    // 7. The agent's record of how it ended.
    const after = await request('GET', `/v1/sessions/${id}`);
    event('session info', after.status);
    facts.session = after.json;
    check('session info 200', after.status === 200, after.status);
    check('session exited', after.json && after.json.state === 'exited', after.json);
    check('session exit {130, SIGINT}', after.json && after.json.exit &&
      after.json.exit.code === 130 && after.json.exit.signal === 'SIGINT', after.json && after.json.exit);

    clearTimeout(overall);
    report({});
  } catch (e) {
    clearTimeout(overall);
    report({ error: String(e && e.stack || e) });
  }
})();
