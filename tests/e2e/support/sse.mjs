// Parses a raw text/event-stream body and checks it against the grammar of
// Anthropic's Messages stream, rebuilding the message the events describe.
import assert from 'node:assert/strict';

export function parseSse(body) {
  assert.ok(body.endsWith('\n\n'), 'the stream must end with a complete event');
  const events = [];
  for (const chunk of body.slice(0, -2).split('\n\n')) {
    let name = null;
    let data = null;
    for (const line of chunk.split('\n')) {
      if (line.startsWith('event: ')) name = line.slice(7);
      else if (line.startsWith('data: ')) data = JSON.parse(line.slice(6));
      else assert.fail(`unexpected SSE line: ${JSON.stringify(line)}`);
    }
    assert.ok(name && data, `event without name or data: ${chunk}`);
    assert.equal(data.type, name, 'event name must equal data.type');
    events.push(data);
  }
  return events;
}

const STOP_REASONS = ['end_turn', 'max_tokens', 'stop_sequence', 'tool_use'];
const DELTA_FOR = { text: ['text_delta'], tool_use: ['input_json_delta'], thinking: ['thinking_delta', 'signature_delta'] };

function checkUsage(usage, where) {
  for (const k of ['input_tokens', 'output_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens']) {
    assert.ok(Number.isInteger(usage[k]) && usage[k] >= 0, `${where}: usage.${k} must be an integer >= 0, got ${usage[k]}`);
  }
}

// Checks event order, block indices and delta types; returns the message
// (content built from the deltas, stop_reason/usage from message_delta).
export function replayStream(events) {
  assert.ok(events.length >= 3, 'a stream has at least message_start, message_delta, message_stop');
  assert.equal(events[0].type, 'message_start');
  const message = structuredClone(events[0].message);
  assert.equal(message.type, 'message');
  assert.equal(message.role, 'assistant');
  assert.match(message.id, /^msg_/);
  assert.deepEqual(message.content, []);
  assert.equal(message.stop_reason, null);
  checkUsage(message.usage, 'message_start');
  assert.equal(message.usage.output_tokens, 0, 'message_start reports no output yet');
  let open = -1;
  let partialJson = '';
  let deltaSeen = false;
  let stopped = false;
  for (const e of events.slice(1)) {
    assert.ok(!stopped, `event after message_stop: ${e.type}`);
    switch (e.type) {
      case 'ping':
        break;
      case 'content_block_start':
        assert.equal(open, -1, 'a block started while another is open');
        assert.ok(!deltaSeen, 'content_block_start after message_delta');
        assert.equal(e.index, message.content.length, 'blocks are numbered 0, 1, 2, ...');
        assert.ok(e.content_block.type in DELTA_FOR, `unknown block type ${e.content_block.type}`);
        open = e.index;
        partialJson = '';
        message.content.push(structuredClone(e.content_block));
        break;
      case 'content_block_delta': {
        assert.equal(e.index, open, 'delta for a block that is not open');
        const block = message.content[open];
        assert.ok(DELTA_FOR[block.type].includes(e.delta.type), `${e.delta.type} in a ${block.type} block`);
        if (e.delta.type === 'text_delta') block.text += e.delta.text;
        else if (e.delta.type === 'thinking_delta') block.thinking += e.delta.thinking;
        else if (e.delta.type === 'signature_delta') block.signature = e.delta.signature;
        else partialJson += e.delta.partial_json;
        break;
      }
      case 'content_block_stop':
        assert.equal(e.index, open, 'stop for a block that is not open');
        if (message.content[open].type === 'tool_use') {
          assert.deepEqual(message.content[open].input, {}, 'tool_use starts with input {}');
          message.content[open].input = JSON.parse(partialJson || '{}');
        }
        open = -1;
        break;
      case 'message_delta':
        assert.equal(open, -1, 'message_delta while a block is open');
        assert.ok(!deltaSeen, 'two message_delta events');
        deltaSeen = true;
        assert.ok(STOP_REASONS.includes(e.delta.stop_reason), `stop_reason ${e.delta.stop_reason}`);
        message.stop_reason = e.delta.stop_reason;
        message.stop_sequence = e.delta.stop_sequence;
        checkUsage(e.usage, 'message_delta');
        message.usage = { ...message.usage, ...e.usage };
        break;
      case 'message_stop':
        assert.ok(deltaSeen, 'message_stop before message_delta');
        stopped = true;
        break;
      case 'error':
        assert.fail(`error event: ${JSON.stringify(e.error)}`);
        break;
      default:
        assert.fail(`unknown event ${e.type}`);
    }
  }
  assert.ok(stopped, 'the stream must end with message_stop');
  return message;
}
