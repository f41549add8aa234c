// A new user's first minutes with Claude Code (the native binary, print
// mode) and `pensieve serve --api-key`:
// - the Claude Code line serve prints, pasted as it is, works: it carries
//   the key (as ANTHROPIC_AUTH_TOKEN: a base URL alone ends in "Not logged
//   in", and ANTHROPIC_API_KEY makes interactive Claude Code ask first), the
//   served model's name and its context, so Claude Code does not assume a
//   1M-token window for a model it does not know;
// - a wrong key fails at once ("Invalid API key"; "Not logged in" for a
//   token): the 401 says `x-should-retry: false`, where Claude Code used to
//   retry it for about three minutes before saying anything.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { claudeBinary, cleanEnv, run } from './support/claude.mjs';
import { startServer } from './support/server.mjs';

const KEY = 'e2e-first-use-key';

// NAME=VALUE words before `claude` in a shell line (values bare or in
// single quotes, as serve prints them).
export function parseEnvLine(line) {
  const words = [];
  const re = /\s*((?:[^\s']+|'[^']*')+)/g;
  for (let m; (m = re.exec(line)) !== null;) words.push(m[1].replace(/'([^']*)'/g, '$1'));
  const env = {};
  for (const w of words) {
    if (w === 'claude') return env;
    const eq = w.indexOf('=');
    assert.ok(eq > 0, `'${w}' in '${line}' is not NAME=VALUE`);
    env[w.slice(0, eq)] = w.slice(eq + 1);
  }
  assert.fail(`no 'claude' in '${line}'`);
}

const bin = claudeBinary();
let server;
let home;
let printed;

describe('the Claude Code line serve prints', { skip: bin ? false : 'the Claude Code native binary is not installed (npm ci in tests/e2e)' }, () => {
  before(async () => {
    server = await startServer(['--api-key', KEY]);
    home = mkdtempSync(path.join(os.tmpdir(), 'pensieve-first-use-'));
    const line = /^ {2}(ANTHROPIC_BASE_URL=.*)$/m.exec(server.log)?.[1];
    assert.ok(line, `serve printed no Claude Code line:\n${server.log}`);
    printed = parseEnvLine(line);
  });

  after(async () => {
    if (home) rmSync(home, { recursive: true, force: true });
    if (server) {
      const { code } = await server.stop();
      assert.equal(code, 0, server.log);
    }
  });

  const hello = ['--bare', '--tools', '', '--system-prompt', 'You tell short stories.', '-p', 'Say hello'];

  it('names the server, its key, the model and its context', () => {
    assert.equal(printed.ANTHROPIC_BASE_URL, server.url);
    assert.equal(printed.ANTHROPIC_AUTH_TOKEN, KEY);
    assert.equal(printed.ANTHROPIC_MODEL, server.health.model);
    assert.equal(printed.CLAUDE_CODE_MAX_CONTEXT_TOKENS, String(server.health.context_size));
  });

  it('runs Claude Code as pasted', { timeout: 120_000 }, async () => {
    const r = await run(bin, hello, { env: cleanEnv(home, printed), cwd: home, timeoutMs: 90_000 });
    assert.equal(r.code, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nserver:\n${server.log.slice(-2000)}`);
    assert.ok(r.stdout.trim().length > 0, 'the model wrote something');
    assert.doesNotMatch(r.stderr, /doesn't recognize the model/, 'the context window was given');
    assert.doesNotMatch(r.stdout + r.stderr, /Not logged in|Invalid API key/);
  });

  // As an API key (what the issue measured: seven retries of the 401 over
  // 40 s, then minutes of silence) and as the printed line's token.
  for (const [name, expected] of [['ANTHROPIC_API_KEY', /Invalid API key/], ['ANTHROPIC_AUTH_TOKEN', /Not logged in|Invalid API key/]]) {
    it(`fails at once with a wrong ${name}`, { timeout: 120_000 }, async () => {
      const { ANTHROPIC_AUTH_TOKEN, ...rest } = printed;
      const env = cleanEnv(home, { ...rest, [name]: 'not-the-key' });
      const logBefore = server.log.length;
      const r = await run(bin, hello, { env, cwd: home, timeoutMs: 90_000 });
      const said = (r.stdout + r.stderr).trim();
      console.log(`# a wrong ${name}: exit ${r.code ?? r.signal} after ${r.seconds.toFixed(1)} s: ${JSON.stringify(said.slice(0, 200))}`);
      assert.notEqual(r.code, 0);
      assert.match(said, expected);
      assert.ok(r.seconds < 15, `Claude Code took ${r.seconds.toFixed(1)} s to report the wrong key`);
      // One 401, not retried, and the server said why.
      const refused = server.log.slice(logBefore).match(/POST \/v1\/messages\S* -> 401 authentication_error: invalid x-api-key/g) ?? [];
      assert.equal(refused.length, 1, server.log.slice(logBefore));
    });
  }
});
