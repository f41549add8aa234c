// Every error status and bad input, through @anthropic-ai/sdk (and raw HTTP
// where the SDK cannot send the request), against the real `pensieve serve`:
// each gets Anthropic's error envelope, and the server keeps serving.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { startServer } from './support/server.mjs';

// Small limits so that 413, 429 and 529 are reachable: a 1 MiB body limit,
// two generations at once, one per client (API key, else address); and the
// test hooks, to hold generations in flight.
let server;
// The same server with an API key required.
let keyed;

before(async () => {
  server = await startServer(['--max-body-mb', '1', '--max-queue', '2', '--max-per-client', '1', '--test-hooks']);
  keyed = await startServer(['--api-key', 'e2e-secret']);
});

after(async () => {
  for (const s of [server, keyed]) {
    if (!s) continue;
    const { code } = await s.stop();
    assert.equal(code, 0, `pensieve serve should exit cleanly:\n${s.log}`);
  }
});

const sdk = (s, opts = {}) => new Anthropic({ baseURL: s.url, apiKey: 'e2e-key', maxRetries: 0, timeout: 60_000, ...opts });

const hello = (extra = {}) => ({
  model: 'claude-e2e-model',
  max_tokens: 8,
  temperature: 0,
  messages: [{ role: 'user', content: 'Hello' }],
  ...extra,
});

// The server still answers health checks and real generations.
async function stillServing(s = server, opts = {}) {
  assert.ok(await s.alive(), `the server died:\n${s.log}`);
  const m = await sdk(s, opts).messages.create(hello({ max_tokens: 2 }));
  assert.equal(m.usage.output_tokens, 2);
}

// An SDK call that must fail with this status and error type; returns the message.
async function sdkError(promise, status, type, ErrorClass) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof Anthropic.APIError, `expected an APIError, got ${e}`);
    if (ErrorClass) assert.ok(e instanceof ErrorClass, `expected ${ErrorClass.name}, got ${e.constructor.name}`);
    assert.equal(e.status, status, JSON.stringify(e.error));
    assert.equal(e.error.type, 'error');
    assert.equal(e.error.error.type, type);
    assert.equal(typeof e.error.error.message, 'string');
    assert.ok(e.error.error.message.length > 0);
    assert.match(e.requestID, /^req_/);
    assert.equal(e.error.request_id, e.requestID, 'the envelope carries the request-id header');
    return e.error.error.message;
  }
  assert.fail(`expected a ${status} ${type}`);
}

// A raw request that must fail with this status and type; returns the message.
async function rawError(responsePromise, status, type) {
  const r = await responsePromise;
  const body = await r.text();
  assert.equal(r.status, status, body);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  const j = JSON.parse(body);
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, type);
  assert.match(r.headers.get('request-id'), /^req_/);
  assert.equal(j.request_id, r.headers.get('request-id'));
  return j.error.message;
}

const postRaw = (s, path, body, headers = {}) =>
  fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

describe('400 invalid_request_error', () => {
  const bad = [
    ['wrong type for max_tokens', hello({ max_tokens: 'ten' }), /max_tokens/],
    ['missing max_tokens', (({ max_tokens, ...r }) => r)(hello()), /max_tokens: Field required/],
    ['missing messages', (({ messages, ...r }) => r)(hello()), /messages/],
    ['missing model', (({ model, ...r }) => r)(hello()), /model/],
    ['empty messages', hello({ messages: [] }), /messages/],
    ['messages not a list', hello({ messages: 'Hello' }), /messages/],
    ['unknown role', hello({ messages: [{ role: 'robot', content: 'hi' }] }), /messages\.0\.role/],
    ['text block without text', hello({ messages: [{ role: 'user', content: [{ type: 'text' }] }] }), /messages\.0\.content\.0\.text/],
    ['max_tokens 0', hello({ max_tokens: 0 }), /max_tokens/],
    ['temperature out of range', hello({ temperature: 7 }), /temperature/],
    ['tool_result without a matching tool_use', hello({
      messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_nope', content: 'ok' }] }],
    }), /tool_use/],
    ['tool_choice naming an unknown tool', hello({
      tools: [{ name: 'get_weather', input_schema: { type: 'object' } }],
      tool_choice: { type: 'tool', name: 'launch_rockets' },
    }), /launch_rockets/],
    ['an image for a text-only model', hello({
      messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }],
    }), /image/],
  ];
  for (const [name, body, pattern] of bad) {
    it(`${name} (messages.create and countTokens)`, async () => {
      assert.match(await sdkError(sdk(server).messages.create(body), 400, 'invalid_request_error', Anthropic.BadRequestError), pattern);
      if (body.messages && body.model && body.max_tokens !== 0 && body.temperature === 0 && typeof body.max_tokens === 'number') {
        const { max_tokens, temperature, ...count } = body;
        assert.match(await sdkError(sdk(server).messages.countTokens(count), 400, 'invalid_request_error'), pattern);
      }
      assert.match(await sdkError(sdk(server).messages.create({ ...body, stream: true }), 400, 'invalid_request_error'), pattern);
    });
  }

  it('invalid JSON, a non-object body and invalid UTF-8', async () => {
    assert.match(await rawError(postRaw(server, '/v1/messages', '{"model": "x", "max_tokens": '), 400, 'invalid_request_error'), /JSON/);
    assert.match(await rawError(postRaw(server, '/v1/messages', '[1, 2, 3]'), 400, 'invalid_request_error'), /object/);
    assert.match(await rawError(postRaw(server, '/v1/messages', ''), 400, 'invalid_request_error'), /JSON/);
    const utf8 = Buffer.concat([Buffer.from('{"model":"x","max_tokens":5,"messages":[{"role":"user","content":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}]}')]);
    await rawError(postRaw(server, '/v1/messages', utf8), 400, 'invalid_request_error');
    await rawError(postRaw(server, '/v1/messages/count_tokens', '{"messages": 5'), 400, 'invalid_request_error');
    await stillServing();
  });

  it('absurdly nested JSON', async () => {
    const depth = 200_000;
    await rawError(postRaw(server, '/v1/messages', '['.repeat(depth) + ']'.repeat(depth)), 400, 'invalid_request_error');
    await rawError(postRaw(server, '/v1/messages', `{"model":"x","max_tokens":5,"messages":${'['.repeat(depth)}`), 400, 'invalid_request_error');
    await stillServing();
  });

  it('a prompt longer than the context, in the words Claude Code compacts on', async () => {
    const { context_size } = server.health;
    const long = 'the dog ran to the park. '.repeat(Math.ceil(context_size / 4));
    const message = await sdkError(sdk(server).messages.create(hello({ messages: [{ role: 'user', content: long }] })), 400, 'invalid_request_error');
    const m = /^prompt is too long: (\d+) tokens > (\d+) maximum$/.exec(message);
    assert.ok(m, message);
    assert.equal(Number(m[2]), context_size - 1);
    const { input_tokens } = await sdk(server).messages.countTokens({ model: 'claude-x', messages: [{ role: 'user', content: long }] });
    assert.equal(Number(m[1]), input_tokens, 'the count in the message is the prompt count_tokens measures');
    await stillServing();
  });
});

describe('401 authentication_error', () => {
  it('no key, a wrong key, then the right key as x-api-key and as Bearer', async () => {
    await rawError(postRaw(keyed, '/v1/messages', JSON.stringify(hello())), 401, 'authentication_error');
    await sdkError(sdk(keyed, { apiKey: 'wrong' }).messages.create(hello()), 401, 'authentication_error', Anthropic.AuthenticationError);
    await sdkError(sdk(keyed, { apiKey: 'e2e-secre' }).models.list(), 401, 'authentication_error');
    await sdkError(sdk(keyed, { apiKey: null, authToken: 'wrong' }).messages.countTokens({ model: 'claude-x', messages: hello().messages }), 401, 'authentication_error');
    await stillServing(keyed, { apiKey: 'e2e-secret' });
    await stillServing(keyed, { apiKey: null, authToken: 'e2e-secret' });
    assert.equal((await fetch(`${keyed.url}/health`)).status, 200, '/health needs no key');
  });
});

describe('404 not_found_error', () => {
  it('routes the server does not have, through the SDK and raw', async () => {
    await sdkError(sdk(server).messages.batches.create({ requests: [{ custom_id: 'a', params: hello() }] }), 404, 'not_found_error', Anthropic.NotFoundError);
    await sdkError(sdk(server).get('/v1/nothing/here'), 404, 'not_found_error', Anthropic.NotFoundError);
    await rawError(fetch(`${server.url}/v2/messages`, { method: 'POST', body: '{}' }), 404, 'not_found_error');
    await rawError(fetch(`${server.url}/v1/messages`), 404, 'not_found_error');
    await stillServing();
  });
});

describe('413 request_too_large', () => {
  it('a body over --max-body-mb', async () => {
    const big = 'x'.repeat(1_200_000);
    await sdkError(sdk(server).messages.create(hello({ messages: [{ role: 'user', content: big }] })), 413, 'request_too_large');
    await sdkError(sdk(server).messages.countTokens({ model: 'claude-x', messages: [{ role: 'user', content: big }] }), 413, 'request_too_large');
    await stillServing();
  });
});

describe('absurd headers', () => {
  it('one huge header line, and too many header bytes in total', async () => {
    const one = await fetch(`${server.url}/v1/messages`, { method: 'POST', headers: { 'x-junk': 'a'.repeat(20_000) }, body: JSON.stringify(hello()) });
    assert.ok(one.status === 400 || one.status === 431, `got ${one.status}`);
    assert.equal((await one.json()).type, 'error');
    const headers = {};
    for (let i = 0; i < 40; i++) headers[`x-junk-${i}`] = 'b'.repeat(4000);
    await rawError(fetch(`${server.url}/v1/messages`, { method: 'POST', headers, body: JSON.stringify(hello()) }), 431, 'invalid_request_error');
    await stillServing();
  });
});

describe('stalled clients', () => {
  it('a client that stops halfway through its request does not block others', async () => {
    const socket = net.connect(server.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"model":');
    try {
      await stillServing();
    } finally {
      socket.destroy();
    }
  });
});

// Holds the engine (the server's --test-hooks): requests then stay in flight
// until release(), whatever the model would have answered and however fast.
const hook = async (s, what) => {
  const r = await fetch(`${s.url}/test/${what}`, { method: 'POST' });
  assert.equal(r.status, 200, await r.text());
};

// Opens a stream (the engine is held, so it stays in flight) and resolves
// once the server counts it. Abort it with stream.abort().
async function busyStream(apiKey, n_inflight) {
  const stream = sdk(server, { apiKey }).messages.stream(hello({
    max_tokens: 5000,
    messages: [{ role: 'user', content: 'Tell me a story about a little dog.' }],
  }));
  stream.on('error', () => {});
  stream.finalMessage().catch(() => {});
  assert.equal(await waitInflight(n_inflight), n_inflight);
  return stream;
}

// Waits until the server counts n generations in flight (a minute at most,
// for a loaded machine); returns the last count seen.
async function waitInflight(n) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const h = await (await fetch(`${server.url}/health`)).json();
    if (h.n_inflight === n || Date.now() > deadline) return h.n_inflight;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('429 rate_limit_error and 529 overloaded_error', () => {
  it('a second generation from one client is 429; one past --max-queue is 529', async () => {
    await hook(server, 'hold');
    let a, b;
    try {
      a = await busyStream('client-a', 1);
      await sdkError(sdk(server, { apiKey: 'client-a' }).messages.create(hello()), 429, 'rate_limit_error', Anthropic.RateLimitError);
      b = await busyStream('client-b', 2);
      await sdkError(sdk(server, { apiKey: 'client-c' }).messages.create(hello()), 529, 'overloaded_error');
      await sdkError(sdk(server, { apiKey: 'client-c' }).messages.create({ ...hello(), stream: true }), 529, 'overloaded_error');
    } finally {
      await hook(server, 'release');
      a?.abort();
      b?.abort();
    }
    // Aborting the streams cancels their generations and frees the slots.
    assert.equal(await waitInflight(0), 0);
    await stillServing(server, { apiKey: 'client-a' });
  });

  it('the test hooks exist only with --test-hooks', async () => {
    const r = await fetch(`${keyed.url}/test/hold`, { method: 'POST', headers: { 'x-api-key': 'e2e-secret' } });
    assert.equal(r.status, 404);
  });
});
