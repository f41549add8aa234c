// @anthropic-ai/sdk against the real `pensieve serve` with the bundled
// stories260K model: create (plain and streaming), tools, count_tokens, models.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { startServer } from './support/server.mjs';
import { replayStream } from './support/sse.mjs';

let server;
let client;

before(async () => {
  server = await startServer();
  client = new Anthropic({ baseURL: server.url, apiKey: 'e2e-key', maxRetries: 0, timeout: 60_000 });
});

after(async () => {
  const { code, signal } = await server.stop();
  assert.equal(code, 0, `pensieve serve should exit cleanly on SIGTERM (signal ${signal}):\n${server.log}`);
});

// Greedy, so that the same request always gets the same answer.
const story = (extra = {}) => ({
  model: 'claude-e2e-model',
  max_tokens: 40,
  temperature: 0,
  messages: [{ role: 'user', content: 'Tell me a story about a little dog.' }],
  ...extra,
});

function text(message) {
  return message.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
}

// What the prompt costs, whether read from the prefix cache or not.
function promptTokens(usage) {
  return usage.input_tokens + (usage.cache_read_input_tokens ?? 0) + (usage.cache_creation_input_tokens ?? 0);
}

describe('messages.create', () => {
  it('answers a plain request with a message object', async () => {
    const { data: message, response } = await client.messages.create(story()).withResponse();
    assert.match(response.headers.get('request-id'), /^req_/);
    assert.equal(message.type, 'message');
    assert.equal(message.role, 'assistant');
    assert.match(message.id, /^msg_/);
    assert.equal(message.model, 'claude-e2e-model', 'the requested model name is echoed');
    assert.ok(['end_turn', 'max_tokens'].includes(message.stop_reason), message.stop_reason);
    assert.equal(message.stop_sequence, null);
    assert.equal(message.content.length, 1);
    assert.equal(message.content[0].type, 'text');
    assert.ok(message.content[0].text.trim().length > 0, 'the model wrote something');
    assert.ok(message.usage.output_tokens > 0 && message.usage.output_tokens <= 40, JSON.stringify(message.usage));
    const { input_tokens } = await client.messages.countTokens({ model: 'x', messages: story().messages });
    assert.equal(promptTokens(message.usage), input_tokens, 'usage counts exactly the prompt count_tokens measures');
  });

  it('is deterministic at temperature 0', async () => {
    const a = await client.messages.create(story());
    const b = await client.messages.create(story());
    assert.equal(text(a), text(b));
    assert.equal(a.usage.output_tokens, b.usage.output_tokens);
    assert.notEqual(a.id, b.id);
  });

  it('stops at max_tokens', async () => {
    const m = await client.messages.create(story({ max_tokens: 3 }));
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(m.usage.output_tokens, 3);
  });

  it('clamps a huge max_tokens instead of refusing it', async () => {
    const m = await client.messages.create(story({ max_tokens: 1_000_000, stop_sequences: ['.'] }));
    assert.ok(['stop_sequence', 'end_turn'].includes(m.stop_reason), m.stop_reason);
  });

  it('honours stop_sequences found in the generated text', async () => {
    const full = text(await client.messages.create(story({ max_tokens: 60 })));
    // A word from the middle of the greedy answer: asking again with it as a
    // stop sequence must cut the same answer just before it.
    const words = full.split(/\s+/).filter((w) => w.length >= 3);
    assert.ok(words.length >= 3, `need a few words to pick from: ${JSON.stringify(full)}`);
    const stop = words[Math.floor(words.length / 2)];
    const m = await client.messages.create(story({ max_tokens: 60, stop_sequences: ['zzzz-never', stop] }));
    assert.equal(m.stop_reason, 'stop_sequence');
    assert.equal(m.stop_sequence, stop);
    // Cut exactly where the stop sequence first starts; nothing from it on reaches the client.
    assert.equal(text(m), full.slice(0, full.indexOf(stop)));
  });

  it('accepts system prompts, multi-turn history, metadata and unknown fields', async () => {
    const m = await client.messages.create({
      ...story(),
      system: [{ type: 'text', text: 'You tell stories.', cache_control: { type: 'ephemeral' } }],
      metadata: { user_id: 'e2e' },
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'Hi' }] },
        { role: 'assistant', content: 'Hello! Want a story?' },
        { role: 'user', content: 'Yes please.' },
      ],
      thinking: { type: 'disabled' },
      top_k: 5,
      top_p: 0.9,
      some_future_field: { anything: true },
    });
    assert.equal(m.type, 'message');
    assert.ok(m.usage.output_tokens > 0);
  });
});

describe('messages.stream', () => {
  it('streams events in order and the deltas add up to the final message', async () => {
    const stream = client.messages.stream(story());
    const events = [];
    let deltas = '';
    stream.on('streamEvent', (e) => events.push(structuredClone(e)));  // the SDK mutates its snapshot
    stream.on('text', (delta) => { deltas += delta; });
    const final = await stream.finalMessage();
    assert.match(stream.request_id, /^req_/);
    const rebuilt = replayStream(events);  // order, indices, delta types
    assert.deepEqual(rebuilt.content, final.content);
    assert.equal(rebuilt.stop_reason, final.stop_reason);
    assert.equal(deltas, text(final));
    assert.ok(events.filter((e) => e.type === 'content_block_delta').length > 1, 'text arrives in several deltas');
    // Streaming and non-streaming answers come from the same generation path.
    const plain = await client.messages.create(story());
    assert.equal(text(final), text(plain));
    assert.equal(final.usage.output_tokens, plain.usage.output_tokens);
    assert.equal(promptTokens(final.usage), promptTokens(plain.usage));
    assert.equal(final.model, 'claude-e2e-model');
  });

  it('works with create({stream: true}) as an async iterator', async () => {
    const events = [];
    for await (const e of await client.messages.create({ ...story({ max_tokens: 8 }), stream: true })) events.push(e);
    const m = replayStream(events);
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(m.usage.output_tokens, 8);
  });

  it('stops generating when the client aborts mid-stream, and keeps serving', async () => {
    const stream = client.messages.stream(story({ max_tokens: 100_000, temperature: 1 }));
    await new Promise((resolve) => stream.on('text', resolve));
    stream.abort();
    await assert.rejects(stream.finalMessage());
    // The generation's slot is released once the server notices the disconnect.
    const deadline = Date.now() + 5_000;
    let inflight;
    do {
      inflight = (await (await fetch(`${server.url}/health`)).json()).n_inflight;
      if (inflight === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < deadline);
    assert.equal(inflight, 0, 'the aborted generation was cancelled');
    assert.equal((await client.messages.create(story({ max_tokens: 2 }))).usage.output_tokens, 2);
  });
});
