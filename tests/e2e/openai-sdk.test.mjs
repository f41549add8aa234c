// The `openai` npm SDK against the real `pensieve serve` (bundled
// stories260K): POST /v1/chat/completions plain and streamed (with usage),
// a tool call round trip (forced, so that a story model makes one), a
// response_format json_schema answer, the model list, and errors in
// OpenAI's shape.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { startServer } from './support/server.mjs';

const KEY = 'e2e-openai-key';
let server;
let client;

before(async () => {
  // gpt-4o-mini is an alias of the served model (--aliases): OpenAI tools
  // that insist on their own model name reach it by that name.
  server = await startServer(['--api-key', KEY, '--aliases', 'gpt-4o-mini']);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60_000 });
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, server.log);
});

// Greedy: the same request always gets the same answer.
const story = (extra = {}) => ({
  model: 'gpt-4o-mini',
  temperature: 0,
  max_tokens: 30,
  messages: [
    { role: 'system', content: 'You tell short stories.' },
    { role: 'user', content: 'Tell me a story about a little dog.' },
  ],
  ...extra,
});

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

describe('OpenAI Chat Completions', () => {
  it('answers a plain request with a chat.completion and its usage', async () => {
    const r = await client.chat.completions.create(story());
    assert.equal(r.object, 'chat.completion');
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.choices.length, 1);
    const c = r.choices[0];
    assert.equal(c.message.role, 'assistant');
    assert.ok(c.message.content.length > 0);
    assert.ok(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
    assert.ok(r.usage.prompt_tokens > 0);
    assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 30);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  });

  it('streams the same answer in chunks, with usage last and [DONE]', async () => {
    const plain = await client.chat.completions.create(story());
    const stream = await client.chat.completions.create(story({ stream: true, stream_options: { include_usage: true } }));
    let text = '';
    let finish = null;
    let usage = null;
    let n = 0;
    for await (const chunk of stream) {
      ++n;
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? '';
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    assert.ok(n > 2, `${n} chunks`);
    assert.equal(text, plain.choices[0].message.content);
    assert.equal(finish, plain.choices[0].finish_reason);
    assert.ok(usage, 'stream_options.include_usage gives a usage chunk');
    assert.equal(usage.completion_tokens, plain.usage.completion_tokens);
    assert.equal(usage.prompt_tokens, plain.usage.prompt_tokens);
  });

  it('makes a tool call and answers its result (a round trip)', async () => {
    const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const first = await client.chat.completions.create({
      model: 'gpt-4o-mini', max_tokens: 200, temperature: 0, messages,
      tools: [weatherTool], tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    const c = first.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(first));
    assert.equal(c.message.tool_calls.length, 1);
    const call = c.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    const args = JSON.parse(call.function.arguments);
    assert.equal(typeof args.city, 'string');
    const second = await client.chat.completions.create({
      model: 'gpt-4o-mini', max_tokens: 30, temperature: 0, tools: [weatherTool],
      messages: [...messages, c.message, { role: 'tool', tool_call_id: call.id, content: 'Sunny, 21 C' }],
    });
    assert.equal(second.object, 'chat.completion');
    assert.ok(['stop', 'length', 'tool_calls'].includes(second.choices[0].finish_reason));
    assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens, 'the tool result is in the prompt');
  });

  it('streams a tool call as tool_calls deltas that add up to JSON arguments', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini', max_tokens: 200, temperature: 0, stream: true,
      messages: [{ role: 'user', content: 'Weather in Oslo?' }],
      tools: [weatherTool], tool_choice: 'required',
    });
    const calls = [];
    let finish = null;
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        for (const d of choice.delta.tool_calls ?? []) {
          calls[d.index] ??= { id: '', name: '', arguments: '' };
          if (d.id) calls[d.index].id = d.id;
          if (d.function?.name) calls[d.index].name = d.function.name;
          calls[d.index].arguments += d.function?.arguments ?? '';
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    assert.equal(finish, 'tool_calls');
    assert.ok(calls.length >= 1);
    assert.equal(calls[0].name, 'get_weather');
    assert.match(calls[0].id, /.+/);
    assert.equal(typeof JSON.parse(calls[0].arguments).city, 'string');
  });

  it('answers under a response_format json_schema', async () => {
    const r = await client.chat.completions.create({
      model: 'gpt-4o-mini', max_tokens: 300, temperature: 0,
      messages: [{ role: 'user', content: 'Name a dog.' }],
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'dog', schema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } },
      },
    });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'stop', JSON.stringify(r));
    assert.equal(c.message.tool_calls, undefined);
    assert.equal(typeof JSON.parse(c.message.content).name, 'string');
  });

  it('lists the model and its names in the shape the SDK reads', async () => {
    const ids = [];
    for await (const m of client.models.list()) {
      assert.equal(m.object, 'model');
      assert.equal(typeof m.created, 'number');
      ids.push(m.id);
    }
    const id = server.health.model;
    assert.deepEqual(ids, [id, 'gpt-4o-mini', `claude-${id.toLowerCase()}`]);
    const r = await client.chat.completions.create(story());
    assert.equal(r.model, id, 'the alias is answered by the model, under its own id');
  });

  it('answers an unknown model with a 404 model_not_found', async () => {
    await assert.rejects(client.chat.completions.create(story({ model: 'gpt-nothing' })), (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, String(e));
      assert.equal(e.code, 'model_not_found');
      assert.match(e.error.message, /^model: gpt-nothing/);
      return true;
    });
  });

  it('answers errors in OpenAI shape: a wrong key, n > 1, a bad message', async () => {
    const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-the-key', maxRetries: 0 });
    await assert.rejects(wrong.chat.completions.create(story()), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
      assert.equal(e.status, 401);
      assert.match(e.error.message, /invalid x-api-key/);
      return true;
    });
    await assert.rejects(client.chat.completions.create(story({ n: 2 })), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.match(e.error.message, /^n: only 1 is supported/);
      return true;
    });
    await assert.rejects(client.chat.completions.create(story({ messages: [{ role: 'robot', content: 'x' }] })), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.error.message, /messages\.0\.role: 'robot' is not a role/);
      return true;
    });
  });
});
