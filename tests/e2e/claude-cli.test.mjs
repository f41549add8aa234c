// Claude Code itself (the native binary shipped in @anthropic-ai/claude-code's
// platform package) in print mode against the real `pensieve serve` with the
// bundled model: `claude -p "Say hello"` must exit 0 within 60 s and print the
// text the model generated.
//
// Claude Code talks to the server through a pass-through proxy in this
// process that records each exchange, so the test can compare what Claude
// Code printed with what the server actually streamed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { claudeBinary, cleanEnv, run } from './support/claude.mjs';
import { startServer } from './support/server.mjs';
import { parseSse, replayStream } from './support/sse.mjs';

// Forwards every request to `target` unchanged and keeps a copy of each
// request and response body.
function recordingProxy(targetPort) {
  const exchanges = [];
  const proxy = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const ex = { method: req.method, path: req.url, request: Buffer.concat(chunks).toString('utf8'), status: 0, response: '' };
      exchanges.push(ex);
      const up = http.request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (r) => {
        ex.status = r.statusCode;
        ex.contentType = r.headers['content-type'];
        res.writeHead(r.statusCode, r.headers);
        r.on('data', (c) => { ex.response += c.toString('utf8'); res.write(c); });
        r.on('end', () => res.end());
      });
      up.on('error', (e) => { ex.error = String(e); res.destroy(); });
      // A client that goes away cancels the generation upstream too.
      res.on('close', () => { if (!res.writableFinished) up.destroy(); });
      up.end(Buffer.concat(chunks));
    });
  });
  return new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve({ proxy, exchanges, port: proxy.address().port })));
}

const bin = claudeBinary();
let server;
let recorder;
let home;

describe('claude -p', { skip: bin ? false : 'the Claude Code native binary is not installed (npm ci in tests/e2e)' }, () => {
  before(async () => {
    server = await startServer();
    recorder = await recordingProxy(server.port);
    home = mkdtempSync(path.join(os.tmpdir(), 'pensieve-claude-home-'));
  });

  after(async () => {
    recorder?.proxy.close();
    if (home) rmSync(home, { recursive: true, force: true });
    if (server) {
      const { code } = await server.stop();
      assert.equal(code, 0, server.log);
    }
  });

  async function sayHello(args) {
    recorder.exchanges.length = 0;
    // A clean environment: no user config, no network but the proxy, nothing
    // optional (updates, telemetry, error reports, feedback surveys).
    const env = cleanEnv(home, {
      ANTHROPIC_BASE_URL: `http://127.0.0.1:${recorder.port}`,
      ANTHROPIC_API_KEY: 'pensieve-e2e-key',
    });
    // PENSIEVE_E2E_CLAUDE_WAIT_S lets a slow run finish (to see whether it
    // works at all and how long it takes); the 60 s limit is asserted anyway.
    const waitS = Math.max(60, Number(process.env.PENSIEVE_E2E_CLAUDE_WAIT_S) || 0);
    const r = await run(bin, [...args, '-p', 'Say hello'], { env, cwd: home, timeoutMs: waitS * 1000 });
    // What each generation cost, for the log and for diagnosing a timeout.
    for (const e of recorder.exchanges) {
      if (e.method !== 'POST' || !/^\/v1\/messages(\?|$)/.test(e.path)) continue;
      const { max_tokens, stream, ...body } = JSON.parse(e.request);
      const c = await fetch(`${server.url}/v1/messages/count_tokens`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      e.promptTokens = (await c.json()).input_tokens;
      if (e.contentType === 'text/event-stream') {
        try {
          const m = replayStream(parseSse(e.response));
          e.outcome = `${m.usage.output_tokens} tokens, ${m.stop_reason}`;
        } catch (err) { e.outcome = `unreadable stream: ${err.message}`; }
      }
    }
    const summary = recorder.exchanges.map((e) => `${e.method} ${e.path} -> ${e.status}` +
      `${e.promptTokens ? ` (${e.promptTokens} prompt tokens)` : ''}${e.outcome ? ` -> ${e.outcome}` : ''}${e.error ? ` (${e.error})` : ''}`).join('\n');
    console.log(`# claude -p took ${r.seconds.toFixed(1)} s, exit ${r.code ?? r.signal}; requests:\n# ${summary.replaceAll('\n', '\n# ')}`);
    assert.equal(r.signal, null, `claude -p was killed after ${waitS} s.\nrequests:\n${summary}\nstderr:\n${r.stderr}\nserver:\n${server.log.slice(-3000)}`);
    assert.equal(r.code, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nrequests:\n${summary}`);

    // The generations Claude Code asked for, as the server streamed them.
    const generations = recorder.exchanges.filter((e) => e.method === 'POST' && /^\/v1\/messages(\?|$)/.test(e.path));
    assert.ok(generations.length >= 1, summary);
    for (const g of generations) assert.equal(g.status, 200, `${g.path}: ${g.response.slice(0, 500)}`);
    const last = generations.at(-1);
    assert.equal(last.contentType, 'text/event-stream');
    const message = replayStream(parseSse(last.response));
    const text = message.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
    assert.ok(text.trim().length > 0, 'the model wrote something');
    console.log(`# printed: ${JSON.stringify(r.stdout.trim().slice(0, 160))}... (${message.usage.output_tokens} tokens, ${message.stop_reason})`);
    assert.equal(r.stdout.trim(), text.trim(), 'Claude Code printed exactly what the model wrote');
    const prompt = JSON.parse(last.request);
    assert.ok(JSON.stringify(prompt.messages).includes('Say hello'));
    assert.ok(r.seconds < 60, `claude -p took ${r.seconds.toFixed(1)} s (limit 60 s)`);
    return prompt;
  }

  // The same path with a small prompt (no tools, a one-line system prompt),
  // so the client/server plumbing is checked apart from long-prompt speed.
  it('says hello with --bare --tools "" --system-prompt', { timeout: 3_600_000 }, async () => {
    const prompt = await sayHello(['--bare', '--tools', '', '--system-prompt', 'You tell short stories.']);
    assert.ok(!prompt.tools?.length, 'no tools were sent');
  });

  // The real thing: Claude Code's own system prompt and tools (about 32k
  // stories260K tokens). The server reads all of them; the bundled model,
  // trained on 512 positions, is served with a 512-position sliding window so
  // that after such a prompt it still writes a story and ends it.
  it('says hello through the bundled model within 60 s', {
    timeout: 3_600_000,
  }, async () => {
    const prompt = await sayHello([]);
    assert.ok(prompt.tools.length > 5, 'Claude Code sent its tools');
  });
});
