// Every request Claude Code really sent (tests/data/claude-code), replayed
// as-is (path with ?beta=true, recorded headers, body) against the real
// `pensieve serve` with the bundled model: each must get a valid SSE stream.
// They run in the order of a session, and turn 2 (turn 1's prompt + the
// tool call + its result) must read all of turn 1's full blocks from the
// prefix cache.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { repoRoot, startServer } from './support/server.mjs';
import { parseSse, replayStream } from './support/sse.mjs';

const dataDir = path.join(repoRoot, 'tests/data/claude-code');
// The session's order: a first request, then turn 1 of a tool use and turn 2
// with its result. Any other recording runs after them.
const TURN_1 = 'tool-turn-1.request.json';
const TURN_2 = 'tool-turn-2-with-result.request.json';
const SESSION = ['print-mode-hello.request.json', TURN_1, TURN_2];
const recorded = readdirSync(dataDir).filter((f) => f.endsWith('.request.json')).sort();
const fixtures = [...SESSION, ...recorded.filter((f) => !SESSION.includes(f))];
const KV_BLOCK_TOKENS = 16;  // kernels::kKvBlockTokens: only full blocks are shared
const results = new Map();  // fixture -> { input_tokens, usage }

// Headers that describe this connection and body, not the request: fetch sets them itself.
const HOP_BY_HOP = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive']);

let server;
before(async () => { server = await startServer(); });
after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, server.log);
});

describe('recorded Claude Code requests', () => {
  it('are all here', () => {
    for (const f of SESSION) assert.ok(recorded.includes(f), `${f} is missing from ${dataDir}`);
  });

  for (const file of fixtures) {
    it(`${file} gets a valid stream`, { timeout: 120_000 }, async () => {
      const recorded = JSON.parse(readFileSync(path.join(dataDir, file), 'utf8'));
      assert.equal(recorded.method, 'POST');
      const headers = Object.fromEntries(Object.entries(recorded.headers).filter(([k]) => !HOP_BY_HOP.has(k.toLowerCase())));
      const started = Date.now();
      const { max_tokens, stream, ...countBody } = recorded.body;
      const count = async () => {
        const c = await fetch(`${server.url}/v1/messages/count_tokens?beta=true`, { method: 'POST', headers, body: JSON.stringify(countBody) });
        assert.equal(c.status, 200);
        return (await c.json()).input_tokens;
      };
      // Give up (disconnecting, which cancels the generation) before the test's own timeout.
      const signal = AbortSignal.timeout(110_000);
      let r;
      let body = '';
      try {
        r = await fetch(`${server.url}${recorded.path}`, { method: 'POST', headers, body: JSON.stringify(recorded.body), signal });
        const decoder = new TextDecoder();
        for await (const chunk of r.body) body += decoder.decode(chunk, { stream: true });
      } catch (e) {
        if (e.name !== 'TimeoutError' && e.name !== 'AbortError') throw e;
        const events = body ? body.split('\n\n').filter((x) => x).map((x) => /^event: (\S+)/.exec(x)?.[1]) : [];
        assert.fail(`no complete answer within 110 s for a ${await count()}-token prompt; ` +
                    `events so far: ${events.slice(0, 3).join(', ')}${events.length > 3 ? ` ... (${events.length})` : ''}`);
      }
      const seconds = (Date.now() - started) / 1000;
      assert.equal(r.status, 200, body.slice(0, 500));
      assert.equal(r.headers.get('content-type'), 'text/event-stream');
      assert.equal(r.headers.get('content-encoding'), null, 'an event stream is never compressed');
      assert.match(r.headers.get('request-id'), /^req_/);
      const events = parseSse(body);
      assert.equal(events[1].type, 'ping', 'message_start is followed by a ping');
      const message = replayStream(events);
      assert.equal(message.model, server.health.model, `${recorded.body.model} is answered by the served model, under its id`);
      assert.ok(message.content.every((b) => b.type === 'text' || b.type === 'tool_use' || b.type === 'thinking'));
      // The recorded requests sample (temperature 1, no seed): the bundled
      // model may end its answer at once, which is a valid empty end_turn
      // (one run in four of the reliability work saw it); anything else
      // must have produced tokens.
      assert.ok(message.usage.output_tokens > 0 || message.stop_reason === 'end_turn',
                `the model generated something or ended its turn (${message.stop_reason})`);
      // The prompt tokens the stream reports are exactly what count_tokens says.
      const input_tokens = await count();
      const u = message.usage;
      assert.equal(u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens, input_tokens,
                   "input, cache read and cache creation tokens add up to the prompt");
      // max_tokens 128000 was clamped to what the context leaves, not refused.
      assert.ok(input_tokens + message.usage.output_tokens <= server.health.context_size);
      console.log(`# ${file}: ${input_tokens} prompt tokens (${u.cache_read_input_tokens} from the cache), ` +
                  `${message.usage.output_tokens} output tokens, ${message.stop_reason}, ${seconds.toFixed(1)} s`);
      results.set(file, { input_tokens, usage: u });
    });
  }

  it('turn 2 reads every full block of turn 1\'s prompt from the cache', () => {
    const turn1 = results.get(TURN_1), turn2 = results.get(TURN_2);
    assert.ok(turn1 && turn2, 'turns 1 and 2 both ran, in that order');
    // Turn 2's prompt starts with all of turn 1's (the conversation only
    // grew), and turn 1 left each full block of it in the cache.
    const shared = Math.floor(turn1.input_tokens / KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS;
    assert.ok(shared > 30_000, `turn 1 has ${turn1.input_tokens} prompt tokens`);
    assert.ok(turn2.usage.cache_read_input_tokens >= shared,
              `turn 2 read ${turn2.usage.cache_read_input_tokens} tokens from the cache, ` +
              `fewer than turn 1's ${shared} tokens of full blocks`);
  });
});
