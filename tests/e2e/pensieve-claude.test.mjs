// `pensieve claude ARGS...` with the real Claude Code binary on PATH:
// - with no server running it starts one (a free loopback port, a random
//   key), runs Claude Code against it, stops it when Claude Code exits, and
//   exits with Claude Code's code;
// - with a server running where the config file says, it uses that one and
//   leaves it running;
// - a server that cannot start (a broken config) is one error line saying why;
// - with no `claude` on PATH it says how to install it and starts nothing.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { claudeBinary, run } from './support/claude.mjs';
import { pensieveBinary, startServer } from './support/server.mjs';

const bin = claudeBinary();
const hello = ['--bare', '--tools', '', '--system-prompt', 'You tell short stories.', '-p', 'Say hello'];

// A user's environment: HOME and caches in a fresh folder, `claude` on PATH
// (or not), no Anthropic or Pensieve variables.
function userEnv(home, { withClaude = true, extra = {} } = {}) {
  const dirs = ['/usr/local/bin', '/usr/bin', '/bin'];
  return {
    PATH: (withClaude ? [path.dirname(bin), ...dirs] : dirs).join(':'),
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, '.config'),
    XDG_CACHE_HOME: path.join(home, '.cache'),
    TMPDIR: os.tmpdir(),
    LANG: 'C.UTF-8',
    TERM: 'dumb',
    ...extra,
  };
}

function connects(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

describe('pensieve claude', { skip: bin ? false : 'the Claude Code native binary is not installed (npm ci in tests/e2e)' }, () => {
  let home;
  before(() => { home = mkdtempSync(path.join(os.tmpdir(), 'pensieve-claude-')); });
  after(() => { if (home) rmSync(home, { recursive: true, force: true }); });

  it('starts a server for the session, runs Claude Code on it and stops it', { timeout: 180_000 }, async () => {
    const r = await run(pensieveBinary(), ['claude', ...hello], { env: userEnv(home), cwd: home, timeoutMs: 150_000 });
    const log = path.join(home, '.cache/pensieve/claude-serve.log');
    const serverLog = existsSync(log) ? readFileSync(log, 'utf8') : '(no log)';
    const what = `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nserver log:\n${serverLog.slice(-3000)}`;
    assert.equal(r.code, 0, what);
    assert.ok(r.stdout.trim().length > 0, `the model wrote something\n${what}`);
    assert.match(r.stderr, /starting a server for this session/, what);
    const url = /serving stories260K on (http:\/\/127\.0\.0\.1:(\d+))/.exec(r.stderr);
    assert.ok(url, what);
    // Claude Code's request reached the server with its random key, for the served model.
    assert.match(serverLog, /\(API key required\)/, what);
    assert.match(serverLog, /POST \/v1\/messages|prompt tokens/, what);
    assert.doesNotMatch(r.stdout + r.stderr, /Not logged in|Invalid API key|doesn't recognize the model/, what);
    // Stopped with Claude Code: nothing listens on its port, and it said so.
    assert.equal(await connects(Number(url[2])), false, 'the session server still listens');
    assert.match(serverLog, /shutting down/, what);
  });

  it("exits with Claude Code's code", { timeout: 120_000 }, async () => {
    const direct = await run(bin, ['--no-such-option'], { env: userEnv(home), cwd: home, timeoutMs: 60_000 });
    assert.notEqual(direct.code, 0);
    const r = await run(pensieveBinary(), ['claude', '--no-such-option'], { env: userEnv(home), cwd: home, timeoutMs: 100_000 });
    assert.equal(r.code, direct.code, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  });

  it('uses the server the config file names, and leaves it running', { timeout: 180_000 }, async () => {
    const key = 'config-file-key';
    const server = await startServer(['--api-key', key]);
    try {
      const config = path.join(home, 'pensieve.toml');
      writeFileSync(config, `port = ${server.port}\napi-key = "${key}"\n`);
      const logBefore = server.log.length;
      const r = await run(pensieveBinary(), ['claude', ...hello], {
        env: userEnv(home, { extra: { PENSIEVE_CONFIG: config } }), cwd: home, timeoutMs: 150_000,
      });
      const what = `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nserver:\n${server.log.slice(-2000)}`;
      assert.equal(r.code, 0, what);
      assert.match(r.stderr, new RegExp(`using the server at http://127\\.0\\.0\\.1:${server.port}`), what);
      assert.doesNotMatch(r.stderr, /starting a server/, what);
      assert.match(server.log.slice(logBefore), /prompt tokens/, what);
      assert.equal(await connects(server.port), true, 'the configured server was stopped');
    } finally {
      const { code } = await server.stop();
      assert.equal(code, 0, server.log);
    }
  });

  it('says in one line why the server it started did not come up', { timeout: 60_000 }, async () => {
    const broken = mkdtempSync(path.join(os.tmpdir(), 'pensieve-claude-broken-'));
    try {
      const config = path.join(broken, 'config.toml');
      writeFileSync(config, 'model = "/no/such/model"\n');
      const r = await run(pensieveBinary(), ['claude', '-p', 'hi'], {
        env: userEnv(broken, { extra: { PENSIEVE_CONFIG: config } }), cwd: broken, timeoutMs: 30_000,
      });
      assert.equal(r.code, 1, r.stderr);
      const errors = r.stderr.split('\n').filter((l) => l.startsWith('error: '));
      assert.equal(errors.length, 1, r.stderr);
      assert.match(errors[0], /the server did not start \(exit 1\).*--model \/no\/such\/model: no such folder \(from .*config\.toml:1\)/);
    } finally {
      rmSync(broken, { recursive: true, force: true });
    }
  });

  it('says how to install Claude Code when it is not on PATH, and starts nothing', { timeout: 60_000 }, async () => {
    const bare = mkdtempSync(path.join(os.tmpdir(), 'pensieve-claude-none-'));
    try {
      const r = await run(pensieveBinary(), ['claude', '-p', 'hi'], { env: userEnv(bare, { withClaude: false }), cwd: bare, timeoutMs: 30_000 });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /^error: Claude Code \(`claude`\) is not on PATH: install it with `npm install -g @anthropic-ai\/claude-code`/);
      assert.equal(existsSync(path.join(bare, '.cache/pensieve/claude-serve.log')), false, 'a server was started');
    } finally {
      rmSync(bare, { recursive: true, force: true });
    }
  });
});
