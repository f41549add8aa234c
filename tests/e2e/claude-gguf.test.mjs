// Claude Code against a GGUF file: `pensieve serve --model FILE.gguf` on
// stories260K as llama.cpp's converter wrote it (tests/data/gguf), the
// tokenizer and chat template from the file, and `claude -p` as users run
// it (its full system prompt and tools) must exit 0 and print what the
// model wrote.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { claudeBinary, cleanEnv, run } from './support/claude.mjs';
import { startServer } from './support/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const gguf = path.join(here, '..', 'data', 'gguf', 'stories260K-F16.gguf');
const bin = claudeBinary();
let server;
let home;

describe('claude -p on a GGUF model', { skip: bin ? false : 'the Claude Code native binary is not installed (npm ci in tests/e2e)' }, () => {
  before(async () => {
    // stories260K was trained on 512 positions: a 512-token window and at
    // most 512 tokens an answer, as the bundled copy is served (the GGUF
    // knows only </s> as its end; the bundled folder's generation_config
    // also stops at the <s> with which llama2.c's model starts a new story).
    server = await startServer(['--model', gguf, '--sliding-window', '512', '--ctx-size', '65536',
      '--max-output-tokens', '512']);
    home = mkdtempSync(path.join(os.tmpdir(), 'pensieve-claude-gguf-'));
  });

  after(async () => {
    if (home) rmSync(home, { recursive: true, force: true });
    if (server) {
      const { code } = await server.stop();
      assert.equal(code, 0, server.log);
    }
  });

  it('says hello', { timeout: 600_000 }, async () => {
    const models = await (await fetch(`${server.url}/v1/models`)).json();
    assert.equal(models.data[0].id, 'stories260K-F16');
    const env = cleanEnv(home, { ANTHROPIC_BASE_URL: server.url, ANTHROPIC_API_KEY: 'pensieve-e2e-key' });
    const r = await run(bin, ['-p', 'Say hello'], { env, cwd: home, timeoutMs: 120_000 });
    console.log(`# claude -p took ${r.seconds.toFixed(1)} s, exit ${r.code ?? r.signal}; printed ${JSON.stringify(r.stdout.trim().slice(0, 120))}`);
    assert.equal(r.signal, null, `killed after 120 s\nstderr:\n${r.stderr}\nserver:\n${server.log.slice(-3000)}`);
    assert.equal(r.code, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}\nserver:\n${server.log.slice(-3000)}`);
    assert.ok(r.stdout.trim().length > 0, 'Claude Code printed the model\'s answer');
    assert.match(server.log, /stories260K-F16/);
  });
});
