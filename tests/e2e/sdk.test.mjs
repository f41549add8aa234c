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
  // --test-hooks: POST /test/hold keeps a generation in flight by construction.
  server = await startServer(['--test-hooks']);
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

async function health() {
  return (await fetch(`${server.url}/health`)).json();
}

// Polls GET /health until done(health) holds, a minute at most (a loaded
// machine is slow, never this slow); returns the last health seen.
async function waitHealth(done) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const h = await health();
    if (done(h) || Date.now() > deadline) return h;
    await new Promise((r) => setTimeout(r, 20));
  }
}

// The server's test hooks: 'hold' stops the engine between steps, 'release' lets it go on.
async function hook(what) {
  const r = await fetch(`${server.url}/test/${what}`, { method: 'POST' });
  assert.equal(r.status, 200, await r.text());
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
    assert.equal(message.model, server.health.model, 'answered by the served model, under its own id');
    assert.ok(['end_turn', 'max_tokens'].includes(message.stop_reason), message.stop_reason);
    assert.equal(message.stop_sequence, null);
    assert.equal(message.content.length, 1);
    assert.equal(message.content[0].type, 'text');
    assert.ok(message.content[0].text.trim().length > 0, 'the model wrote something');
    assert.ok(message.usage.output_tokens > 0 && message.usage.output_tokens <= 40, JSON.stringify(message.usage));
    const { input_tokens } = await client.messages.countTokens({ model: 'claude-x', messages: story().messages });
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
    assert.equal(final.model, server.health.model);
  });

  it('works with create({stream: true}) as an async iterator', async () => {
    const events = [];
    for await (const e of await client.messages.create({ ...story({ max_tokens: 8 }), stream: true })) events.push(e);
    const m = replayStream(events);
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(m.usage.output_tokens, 8);
  });

  // The engine is held the whole time the stream is open, so the generation
  // cannot end by itself (the bundled model's story is over in a blink):
  // only the abort can take it out of flight, and once released the engine
  // runs not one step for it.
  it('stops generating when the client aborts mid-stream, and keeps serving', async () => {
    await hook('hold');
    let stream;
    let steps;
    try {
      stream = client.messages.stream(story({ max_tokens: 100_000, temperature: 1 }));
      const started = new Promise((resolve, reject) => {
        stream.on('streamEvent', (e) => e.type === 'message_start' && resolve());
        stream.on('error', reject);
        setTimeout(() => reject(new Error('no message_start within a minute')), 60_000).unref();
      });
      stream.finalMessage().catch(() => {});
      await started;  // the server is streaming its answer
      assert.equal((await waitHealth((h) => h.n_inflight === 1)).n_inflight, 1, 'the stream is in flight');
      steps = (await health()).engine.n_steps;
      stream.abort();
      await assert.rejects(stream.finalMessage());
      // The server notices the disconnect and gives up the generation's slot
      // while the engine still stands still.
      assert.equal((await waitHealth((h) => h.n_inflight === 0)).n_inflight, 0, 'the aborted generation was cancelled');
    } finally {
      stream?.abort();
      await hook('release');
    }
    const idle = await waitHealth((h) => h.engine.n_running === 0 && h.engine.n_waiting === 0);
    assert.equal(idle.engine.n_running + idle.engine.n_waiting, 0, JSON.stringify(idle));
    assert.equal(idle.engine.n_steps, steps, 'no step ran for the cancelled generation');
    assert.equal((await client.messages.create(story({ max_tokens: 2 }))).usage.output_tokens, 2);
  });
});

describe('messages.countTokens', () => {
  const messages = [{ role: 'user', content: 'Tell me a story about a little dog.' }];
  it('counts the rendered prompt and grows with it', async () => {
    const a = await client.messages.countTokens({ model: 'claude-e2e-model', messages });
    assert.ok(Number.isInteger(a.input_tokens) && a.input_tokens > 5, JSON.stringify(a));
    const b = await client.messages.countTokens({ model: 'claude-e2e-model', messages, system: 'You are a storyteller who loves dogs.' });
    assert.ok(b.input_tokens > a.input_tokens);
    const longer = [{ role: 'user', content: 'Tell me a story about a little dog. '.repeat(10) }];
    assert.ok((await client.messages.countTokens({ model: 'claude-x', messages: longer })).input_tokens > a.input_tokens + 50);
    // The billing line Claude Code puts first in `system` changes with every
    // request and is not part of the prompt.
    const billed = await client.messages.countTokens({
      model: 'claude-x', messages,
      system: [{ type: 'text', text: 'x-anthropic-billing-header: cc_version=9.9.9; cch=12345;' }, { type: 'text', text: 'You are a storyteller who loves dogs.' }],
    });
    assert.equal(billed.input_tokens, b.input_tokens);
  });

  it('answers a burst of 50 at once', async () => {
    const started = Date.now();
    const counts = await Promise.all(Array.from({ length: 50 }, (_, i) =>
      client.messages.countTokens({ model: 'claude-x', messages: [{ role: 'user', content: `Story number ${i}` }] })));
    assert.equal(counts.length, 50);
    for (const c of counts) assert.ok(c.input_tokens > 0);
    assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
  });
});

describe('models', () => {
  // One model: its id, then claude-<id> for Claude Code's model picker
  // (which lists only ids starting with "claude").
  it('lists the served model and its claude- name, a page at a time', async () => {
    const page = await client.models.list();
    const id = server.health.model;
    const claudeId = `claude-${id.toLowerCase()}`;
    assert.deepEqual(page.data.map((m) => m.id), [id, claudeId]);
    const [m, alias] = page.data;
    assert.equal(m.type, 'model');
    assert.equal(typeof m.display_name, 'string');
    assert.ok(!Number.isNaN(Date.parse(m.created_at)), m.created_at);
    assert.equal(alias.alias_of, id);
    assert.equal(page.has_more, false);
    assert.equal(page.first_id, id);
    assert.equal(page.last_id, claudeId);
    const all = [];
    for await (const model of client.models.list({ limit: 1 })) all.push(model.id);
    assert.deepEqual(all, [id, claudeId], 'auto-pagination walks one id a page');
    const first = await client.models.list({ limit: 1 });
    assert.equal(first.has_more, true);
    assert.deepEqual((await client.models.list({ after_id: claudeId })).data, []);
    assert.deepEqual((await client.models.list({ before_id: claudeId })).data.map((x) => x.id), [id]);
  });

  it('retrieves served names and claude-* names; an unknown name is a 404', async () => {
    for (const id of [server.health.model, 'claude-opus-4-1', 'claude-haiku-9']) {
      const m = await client.models.retrieve(id);
      assert.equal(m.type, 'model');
      assert.equal(m.id, id);
      assert.ok(!Number.isNaN(Date.parse(m.created_at)));
    }
    await assert.rejects(client.models.retrieve('gpt-nothing'), (e) => e instanceof Anthropic.NotFoundError &&
      e.error.error.type === 'not_found_error' && /gpt-nothing/.test(e.error.error.message));
    await assert.rejects(client.messages.create({ ...story(), model: 'llama-nothing' }),
      (e) => e instanceof Anthropic.NotFoundError && /model: llama-nothing/.test(e.error.error.message));
  });
});

// stories260K has no chat template that knows tools, so tools go through the
// generic instruction block (docs/api-compatibility.md). A 260K-parameter
// story model cannot follow it and never writes a <tool_call> on its own; with
// tool_choice any/tool the server constrains decoding to one call whose input
// follows the tool's schema, so the model does make a real call here. Then
// the round trip: that tool_use and its tool_result (what a client sends on
// the second turn) are accepted, rendered, counted and answered.
describe('tool use round trip', () => {
  const weather = {
    name: 'get_weather',
    description: 'The current weather in a city',
    input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  };
  const ask = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const count = async (params) => (await client.messages.countTokens({ model: 'claude-e2e-model', ...params })).input_tokens;

  it('tools and tool_choice reach the prompt', async () => {
    const plain = await count({ messages: ask });
    const auto = await count({ messages: ask, tools: [weather] });
    assert.ok(auto > plain + 50, `the tool block adds tokens: ${plain} -> ${auto}`);
    const two = await count({ messages: ask, tools: [weather, { ...weather, name: 'get_time' }] });
    assert.ok(two > auto);
    assert.ok((await count({ messages: ask, tools: [weather], tool_choice: { type: 'any' } })) > auto, 'any adds its instruction');
    assert.ok((await count({ messages: ask, tools: [weather], tool_choice: { type: 'tool', name: 'get_weather' } })) > auto);
    assert.equal(await count({ messages: ask, tools: [weather], tool_choice: { type: 'none' } }), plain, 'none shows no tools');
  });

  let turn1Call;
  it('turn 1 with a forced tool: the model calls it, streamed and not', async () => {
    const params = { ...story(), max_tokens: 400, messages: ask, tools: [weather], tool_choice: { type: 'tool', name: 'get_weather' } };
    const m = await client.messages.create(params);
    assert.equal(m.stop_reason, 'tool_use', JSON.stringify(m.content));
    assert.equal(m.content.length, 1);
    const [call] = m.content;
    assert.equal(call.type, 'tool_use');
    assert.match(call.id, /^toolu_[0-9A-Za-z]{24}$/);
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(Object.keys(call.input), ['city']);
    assert.equal(typeof call.input.city, 'string');
    // The SDK's stream helper assembles the same input from input_json_delta events.
    const stream = client.messages.stream(params);
    const deltas = [];
    stream.on('inputJson', (partial) => deltas.push(partial));
    const streamed = await stream.finalMessage();
    assert.equal(streamed.stop_reason, 'tool_use');
    assert.deepEqual(streamed.content[0].input, call.input, 'greedy: the same call');
    assert.ok(deltas.length >= 1);
    turn1Call = call;
  });

  it('turn 2 carries the tool_use and its tool_result', async () => {
    const call = turn1Call ?? { type: 'tool_use', id: 'toolu_01E2eRoundTrip0000000000', name: 'get_weather', input: { city: 'Paris' } };
    const turn2 = (result) => [
      ...ask,
      { role: 'assistant', content: [{ type: 'text', text: 'Let me check.' }, call] },
      { role: 'user', content: [result] },
    ];
    const sunny = turn2({ type: 'tool_result', tool_use_id: call.id, content: 'Sunny, 21 degrees' });
    const n1 = await count({ messages: ask, tools: [weather] });
    const n2 = await count({ messages: sunny, tools: [weather] });
    assert.ok(n2 > n1 + 10, `the call and its result are in the prompt: ${n1} -> ${n2}`);
    const longer = turn2({ type: 'tool_result', tool_use_id: call.id, content: 'Sunny, 21 degrees, light wind from the west, no rain expected' });
    assert.ok((await count({ messages: longer, tools: [weather] })) > n2, 'the result text is rendered');
    const blocks = turn2({ type: 'tool_result', tool_use_id: call.id, content: [{ type: 'text', text: 'Sunny, 21 degrees' }] });
    assert.equal(await count({ messages: blocks, tools: [weather] }), n2, 'string and text-block results render the same');
    const failed = turn2({ type: 'tool_result', tool_use_id: call.id, content: 'Sunny, 21 degrees', is_error: true });
    assert.ok((await count({ messages: failed, tools: [weather] })) > n2, 'is_error is shown to the model');

    // Answered, streaming (SDK helpers) and not, with the same greedy text.
    const stream = client.messages.stream({ ...story(), messages: sunny, tools: [weather] });
    const final = await stream.finalMessage();
    assert.equal(final.type, 'message');
    assert.equal(promptTokens(final.usage), n2);
    const plain = await client.messages.create({ ...story(), messages: sunny, tools: [weather] });
    assert.deepEqual(plain.content, final.content);
    assert.equal(plain.stop_reason, final.stop_reason);

    // Without the assistant's tool_use, the same result is an orphan: 400.
    await assert.rejects(
      client.messages.create({ ...story(), messages: [ask[0], { role: 'assistant', content: 'Let me check.' }, sunny[2]], tools: [weather] }),
      (e) => e.status === 400 && /tool_use/.test(e.error.error.message));
  });
});
