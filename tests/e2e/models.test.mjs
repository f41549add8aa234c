// Several models in one server, through the real Anthropic SDK: the model
// list with every name and auto-pagination, a request per name answered by
// the model it names (a Haiku name by the haiku model, loaded on first use),
// and a 404 for a name that matches nothing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { repoRoot, startServer } from './support/server.mjs';

let server;
let client;
let dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pensieve-models-'));
  const stories = path.join(repoRoot, 'models/stories260K');
  const config = path.join(dir, 'config.toml');
  fs.writeFileSync(config, [
    'haiku-model = "teller-b"',
    '[models.teller-a]', `model = "${stories}"`, 'aliases = ["storyteller"]', 'ctx-size = 2048', 'max-output-tokens = 20',
    '[models.teller-b]', `model = "${stories}"`, 'ctx-size = 2048', 'max-output-tokens = 20',
  ].join('\n'));
  server = await startServer(['--config', config]);
  client = new Anthropic({ baseURL: server.url, apiKey: 'any', maxRetries: 0, timeout: 60_000 });
});

after(async () => {
  const { code } = await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(code, 0, server.log);
});

const story = (model) => ({
  model, max_tokens: 10, temperature: 0,
  messages: [{ role: 'user', content: 'Once upon a time' }],
});

describe('several models', () => {
  it('lists every name, a page at a time', async () => {
    const all = [];
    for await (const m of client.models.list({ limit: 2 })) all.push([m.id, m.alias_of ?? null, m.loaded]);
    assert.deepEqual(all, [
      ['teller-a', null, true], ['storyteller', 'teller-a', true], ['claude-teller-a', 'teller-a', true],
      ['teller-b', null, false], ['claude-teller-b', 'teller-b', false],
    ]);
    assert.equal(server.health.default_model, 'teller-a');
    assert.equal(server.health.claude_families.haiku, 'teller-b');
  });

  it('answers each name with the model it names', async () => {
    assert.equal((await client.messages.create(story('storyteller'))).model, 'teller-a');
    assert.equal((await client.messages.create(story('claude-sonnet-4-5'))).model, 'teller-a');
    // The Haiku name Claude Code's background requests use loads teller-b.
    const haiku = await client.messages.create(story('claude-3-5-haiku-20241022'));
    assert.equal(haiku.model, 'teller-b');
    assert.equal((await client.models.retrieve('teller-b')).loaded, true);
    const streamed = await client.messages.stream(story('claude-teller-b')).finalMessage();
    assert.equal(streamed.model, 'teller-b');
    assert.equal(streamed.content[0].text, haiku.content[0].text, 'the same model, the same greedy text');
  });

  it('answers a name that matches nothing with a 404', async () => {
    await assert.rejects(client.messages.create(story('llama-3-70b')), (e) => {
      assert.ok(e instanceof Anthropic.NotFoundError, String(e));
      assert.equal(e.error.error.type, 'not_found_error');
      assert.match(e.error.error.message, /^model: llama-3-70b \(this server serves teller-a, teller-b/);
      return true;
    });
  });
});
