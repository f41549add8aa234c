#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ from the fixtures
in tests/data (small files only) and hand-written cases. Rerun after adding
a target; the seeds are committed, so fuzzing needs no Python."""
import glob
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
D = os.path.join(ROOT, 'tests', 'data')
SEP = '\n####\n'
os.chdir(os.path.join(HERE, 'corpus'))


def w(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb' if isinstance(data, bytes) else 'w', encoding=None if isinstance(data, bytes) else 'utf-8') as f:
        f.write(data)


def rd(p):
    return open(p, encoding='utf-8').read()


# messages: request bodies
reqs = [
    {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]},
    {"model": "m", "max_tokens": 16, "system": [{"type": "text", "text": "Be brief."}], "stream": True,
     "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stop_sequences": ["\n\n"],
     "messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
                  {"role": "assistant", "content": "It is"}]},
    {"model": "m", "max_tokens": 64,
     "tools": [{"name": "get_weather", "description": "Weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                                 "required": ["city"]}}],
     "tool_choice": {"type": "any"},
     "messages": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                     "input": {"city": "Paris"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                "content": [{"type": "text", "text": "sunny"}], "is_error": False}]}]},
    {"model": "m", "max_tokens": 32, "thinking": {"type": "enabled", "budget_tokens": 1024},
     "messages": [{"role": "user", "content": "Think."}]},
    {"model": "m", "messages": [{"role": "user", "content": "count me"}]},
    {"model": "m", "max_tokens": 8, "tool_choice": {"type": "tool", "name": "t"},
     "tools": [{"name": "t", "input_schema": {"type": "object", "properties": {"a": {"enum": [1, 2]}}}}],
     "messages": [{"role": "user", "content": "x"}]},
]
for i, r in enumerate(reqs):
    w(f'messages/seed{i}.json', json.dumps(r))
w('messages/seed-bad-utf8.json', b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"\xff\xfe"}]}')
w('messages/seed-surrogate.json', '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"\\ud800"}]}')
w('messages/seed-huge.json', '{"model":"m","max_tokens":1e999,"messages":[{"role":"user","content":"x"}]}')

# tool_grammar: SCHEMA #### BYTES
schemas = [
    ({"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}}, "required": ["city", "n"]},
     '<tool_call>\n{"name": "fuzz_tool", "arguments": {"city":"Paris","n":3}}\n</tool_call>'),
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}, "ok": {"type": "boolean"},
                                       "x": {"type": "number"}, "z": {"type": "null"}}, "required": ["tags", "ok", "x", "z"]},
     '<tool_call>\n{"name": "fuzz_tool", "arguments": {"tags":["a","b"],"ok":true,"x":-1.5e3,"z":null}}\n</tool_call>'),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]},
     '<tool_call>\n{"name": "other", "arguments": {"k":[1,{"a":"b"}]}}\n</tool_call>'),
    ({"enum": ["a", "ab", 1, None]}, '<tool_call>\n{"name": "fuzz_tool", "arguments": "ab"}\n</tool_call>'),
    ({"type": ["object", "null"], "properties": {"c": {"const": "x"}}, "required": ["c"]},
     '<tool_call>\n{"name": "fuzz_tool", "arguments": {"c":"x"}}\n</tool_call>'),
]
for i, (s, b) in enumerate(schemas):
    w(f'tool_grammar/seed{i}', json.dumps(s) + SEP + b)


# safetensors: FILE, or INDEX #### SHARD1 #### SHARD2
def st(tensors, meta=None, lie=None):
    hdr, data = {}, b''
    for name, (dt, shape, payload) in tensors.items():
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if meta:
        hdr["__metadata__"] = meta
    if lie:
        lie(hdr)
    h = json.dumps(hdr).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + data


t = {"a": ("F32", [2, 2], struct.pack('<4f', 1, 2, 3, 4)), "b": ("BF16", [3], b'\x80\x3f' * 3),
     "c": ("U8", [1, 2, 3], bytes(range(6)))}
w('safetensors/seed-ok.safetensors', st(t, {"format": "pt"}))
w('safetensors/seed-f16.safetensors',
  st({"w": ("F16", [4], b'\x00\x3c' * 4), "q": ("U32", [2], b'\1\0\0\0\2\0\0\0'), "s": ("I64", [1], b'\0' * 8)}))
w('safetensors/seed-truncated.safetensors', st(t)[:-5])
w('safetensors/seed-lying-offsets.safetensors', st(t, lie=lambda h: h["a"].update(data_offsets=[0, 1000])))
w('safetensors/seed-lying-shape.safetensors', st(t, lie=lambda h: h["a"].update(shape=[2, 3])))
w('safetensors/seed-lying-dtype.safetensors', st(t, lie=lambda h: h["b"].update(dtype="F64")))
idx = json.dumps({"metadata": {"total_size": 22}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                 "b": "model-00002-of-00002.safetensors"}})
w('safetensors/seed-sharded', idx.encode() + SEP.encode() + st({"a": t["a"]}) + SEP.encode() + st({"b": t["b"]}))

# model_config: CONFIG #### GENERATION_CONFIG #### TOKENIZER_CONFIG
for p in sorted(glob.glob(D + '/models/*/config.json')):
    m = os.path.basename(os.path.dirname(p))
    g = os.path.join(os.path.dirname(p), 'generation_config.json')
    w(f'model_config/{m}', rd(p) + SEP + (rd(g) if os.path.exists(g) else '') + SEP +
      rd(D + '/tokenizers/tok512/tokenizer_config.json'))
w('model_config/phi3-template', rd(D + '/models/phi3-tiny/config.json') + SEP + '{"eos_token_id":[1,2]}' + SEP +
  rd(D + '/tokenizers/phi3/tokenizer_config.json'))
w('model_config/qwen3-template', rd(D + '/models/qwen3-tiny/config.json') + SEP + '' + SEP +
  rd(D + '/tokenizers/qwen3/tokenizer_config.json'))

# tokenizer: TOKENIZER_JSON #### TOKENIZER_CONFIG #### TEXT
w('tokenizer/tok512', rd(D + '/tokenizers/tok512/tokenizer.json') + SEP + rd(D + '/tokenizers/tok512/tokenizer_config.json') +
  SEP + 'Once upon a time, there was a little girl named Lily. ü 😀 \t\n')
w('tokenizer/stories', rd(ROOT + '/models/stories260K/tokenizer.json') + SEP +
  rd(ROOT + '/models/stories260K/tokenizer_config.json') + SEP + 'Hello <s> world</s>  x')
bpe = {"version": "1.0",
       "added_tokens": [{"id": 5, "content": "<|end|>", "special": True, "single_word": False, "lstrip": False,
                         "rstrip": False, "normalized": False}],
       "normalizer": {"type": "NFC"},
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
       "decoder": {"type": "ByteLevel"},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                 "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4}, "merges": ["a b", "Ġ ab"]}}
w('tokenizer/bytelevel', json.dumps(bpe) + SEP + '{"bos_token":"<|end|>"}' + SEP + 'ab ab<|end|>ba')

# chat_template: TEMPLATE #### CONTEXT_JSON
conv = json.dumps({"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "yo",
                                 "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
                                {"role": "tool", "content": "r"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                   "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": False})
for name in ['qwen3', 'phi3', 'tok512']:
    c = json.load(open(D + f'/tokenizers/{name}/tokenizer_config.json'))
    tpl = c.get('chat_template')
    if isinstance(tpl, list):
        tpl = tpl[0]['template']
    if tpl:
        w(f'chat_template/{name}', tpl + SEP + conv)
w('chat_template/features',
  "{% set ns = namespace(x=0) %}{% for m in messages %}{{ loop.index }}:{{ m['role']|upper }}"
  "{% if m.content is string %}{{ m.content|trim|replace('a','b') }}{% endif %}{% set ns.x = ns.x + 1 %}{% endfor %}"
  "{{ ns.x }}{{ tools|tojson }}{% macro f(a, b=2) %}{{ a ~ b }}{% endmacro %}{{ f(1) }}{{ 'x' * 3 }}{{ [1,2,3][1:] }}"
  "{{ {'a':1}.items()|list }}{% if not add_generation_prompt %}{{ raise_exception('no') }}{% endif %}" + SEP + conv)

# hub_cache: REPO_REF #### REFS_MAIN #### INDEX_JSON #### INCOMPLETE_BYTES #### HEADER
w('hub_cache/seed0', 'org/name@main' + SEP + '0123456789abcdef0123456789abcdef01234567\n' + SEP +
  json.dumps({"metadata": {"total_size": 1}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                            "b": "../escape.safetensors"}}) +
  SEP + 'partial bytes' + SEP + 'W/"abc123"')
w('hub_cache/seed1', 'mlx-community/Phi-3-mini-128k-instruct-4bit@0123456789abcdef0123456789abcdef01234567' + SEP +
  'main' + SEP + '{"weight_map": []}' + SEP + '' + SEP + '1234567890')

# http: raw bytes a client sends
H = 'POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
body = json.dumps(reqs[0])
w('http/post', H + f'Content-Length: {len(body)}\r\n\r\n' + body)
w('http/chunked', 'POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
  + f'{len(body):x}\r\n{body}\r\n0\r\n\r\n')
w('http/get-keepalive', 'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n')
w('http/huge-length', H + 'Content-Length: 2147483648\r\n\r\n{')
w('http/auth', 'GET /v1/models/x HTTP/1.1\r\nx-api-key: wrong\r\nAuthorization: Bearer k\r\n\r\n')

# gguf: small GGUF files (llama metadata, one Q8_0 and one F32 tensor), and damaged ones.
def gguf(kvs, tensors, version=3, alignment=32):
    def s(x):
        b = x.encode('utf-8')
        return struct.pack('<Q', len(b)) + b
    out = b'GGUF' + struct.pack('<IQQ', version, len(tensors), len(kvs))
    for key, typ, val in kvs:
        out += s(key) + struct.pack('<I', typ)
        if typ == 8:
            out += s(val)
        elif typ == 9:
            et, items = val
            out += struct.pack('<IQ', et, len(items))
            for it in items:
                out += s(it) if et == 8 else struct.pack({4: '<I', 5: '<i', 6: '<f'}[et], it)
        else:
            out += struct.pack({4: '<I', 5: '<i', 6: '<f', 7: '<?'}[typ], val)
    offset = 0
    data = b''
    for name, typ, ne, nbytes in tensors:
        out += s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne)
        out += struct.pack('<IQ', typ, offset)
        data += bytes(range(256)) * (nbytes // 256) + bytes(nbytes % 256)
        pad = (-len(data)) % alignment
        data += bytes(pad)
        offset = len(data)
    out += bytes((-len(out)) % alignment)
    return out + data

llama_kv = [('general.architecture', 8, 'llama'), ('llama.block_count', 4, 1), ('llama.embedding_length', 4, 64),
            ('llama.feed_forward_length', 4, 128), ('llama.attention.head_count', 4, 2),
            ('llama.attention.head_count_kv', 4, 1), ('llama.rope.freq_base', 6, 10000.0),
            ('tokenizer.ggml.model', 8, 'llama'), ('tokenizer.ggml.tokens', 9, (8, ['<unk>', '<s>', '</s>', 'a'])),
            ('tokenizer.ggml.scores', 9, (6, [0.0, 0.0, 0.0, -1.0])), ('tokenizer.ggml.bos_token_id', 4, 1)]
tens = [('token_embd.weight', 8, [64, 4], 4 * 2 * 34), ('output_norm.weight', 0, [64], 256)]
good = gguf(llama_kv, tens)
w('gguf/llama-q8', good)
w('gguf/version2', gguf(llama_kv, tens, version=2))
w('gguf/truncated', good[:len(good) - 100])
w('gguf/phi3-keys', gguf([('general.architecture', 8, 'phi3'), ('phi3.block_count', 4, 2),
                          ('phi3.embedding_length', 4, 96), ('phi3.feed_forward_length', 4, 256),
                          ('phi3.attention.head_count', 4, 3), ('phi3.rope.dimension_count', 4, 32),
                          ('phi3.rope.scaling.original_context_length', 4, 4096),
                          ('general.alignment', 4, 64)], tens, alignment=64))
w('gguf/qk-types', gguf(llama_kv, [('a', 12, [256, 2], 2 * 144), ('b', 14, [256, 1], 210), ('c', 30, [8], 16)]))
