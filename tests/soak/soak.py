#!/usr/bin/env python3
"""Soak test: many concurrent streaming clients against `pensieve serve`.

Starts the server on the bundled stories260K model (or --model), runs
--clients threads for --duration seconds, and on past it until
--min-requests requests have finished (a slow or loaded machine gets the
same amount of work checked; --max-duration caps it). Each client loops: POST
/v1/messages with stream=true, prompts sharing a long system prompt (so the
prefix cache is exercised), random max_tokens and sampling; some clients hang
up mid-stream at random. Checks:
  - every completed stream is a valid Anthropic event sequence
    (message_start, content blocks opened/closed in order, message_delta,
    message_stop; usage fields add up to the prompt; stop_reason known),
  - when idle, GET /health reports no KV block in use
    (engine.kv_blocks_free + kv_blocks_cached == kv_blocks_total),
  - RSS stays flat: once --rss-warmup-requests requests have finished (every
    code path, the KV pool and the prefix cache have been touched), it grows
    by less than --rss-slack-mib. Counted in requests, not seconds, so a slow
    or loaded machine warms up just as far before the baseline is taken.
Exit status 0 when all hold; prints a JSON summary either way.

  python3 tests/soak/soak.py --binary build/release/bin/pensieve --duration 300
"""
import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get_json(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, json.loads(body)


def check_stream(events, n_prompt_expected=None):
    """Raises AssertionError when the event sequence is not a valid message."""
    assert events, "no events"
    types = [t for t, _ in events if t != "ping"]
    assert types[0] == "message_start", f"first event {types[0]}"
    assert types[-1] == "message_stop", f"last event {types[-1]}"
    assert types[-2] == "message_delta", f"event before message_stop is {types[-2]}"
    start = events[0][1]["message"]
    open_index = None
    n_blocks = 0
    text = ""
    for t, d in events:
        if t == "content_block_start":
            assert open_index is None, "block opened while another is open"
            assert d["index"] == n_blocks, f"block index {d['index']} != {n_blocks}"
            open_index = d["index"]
            n_blocks += 1
        elif t == "content_block_delta":
            assert d["index"] == open_index, "delta for a block that is not open"
            if d["delta"]["type"] == "text_delta":
                text += d["delta"]["text"]
        elif t == "content_block_stop":
            assert d["index"] == open_index, "stop for a block that is not open"
            open_index = None
        elif t == "error":
            raise AssertionError(f"error event: {d}")
    assert open_index is None, "a block was left open"
    delta = [d for t, d in events if t == "message_delta"][0]
    reason = delta["delta"]["stop_reason"]
    assert reason in STOP_REASONS, f"stop_reason {reason}"
    usage = delta["usage"]
    for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
              "output_tokens"):
        assert isinstance(usage.get(k), int) and usage[k] >= 0, f"usage.{k} = {usage.get(k)}"
    total_in = (usage["input_tokens"] + usage["cache_creation_input_tokens"]
                + usage["cache_read_input_tokens"])
    su = start["usage"]
    start_total = su["input_tokens"] + su["cache_creation_input_tokens"] + su["cache_read_input_tokens"]
    assert total_in == start_total, f"prompt tokens {total_in} at the end, {start_total} at the start"
    assert usage["output_tokens"] >= 1 or reason == "end_turn", "no output tokens"
    return reason, usage, text


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.completed = 0
        self.disconnected = 0
        self.overloaded = 0
        self.failures = []
        self.cache_read = 0
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.reasons = {}

    def fail(self, msg):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(msg)


def client_loop(cid, port, keep_going, stats, system_prompt, seed):
    rng = random.Random(seed)
    while keep_going():
        hang_up_after = rng.randint(1, 12) if rng.random() < 0.25 else None
        body = {
            "model": "stories260K",
            "max_tokens": rng.randint(1, 160),
            "stream": True,
            "system": system_prompt,
            "messages": [{"role": "user", "content": f"Client {cid} asks for story {rng.randint(0, 5)}."}],
            "temperature": rng.choice([0.0, 0.7, 1.0]),
        }
        if rng.random() < 0.3:
            body["top_k"] = rng.randint(1, 40)
        if rng.random() < 0.3:
            body["stop_sequences"] = ["the end", "."]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("POST", "/v1/messages", json.dumps(body),
                         {"content-type": "application/json", "anthropic-version": "2023-06-01"})
            r = conn.getresponse()
            if r.status == 529:
                r.read()
                conn.close()
                with stats.lock:
                    stats.overloaded += 1
                time.sleep(0.05)
                continue
            if r.status != 200:
                stats.fail(f"HTTP {r.status}: {r.read()[:300]!r}")
                conn.close()
                continue
            events = []
            event_type = None
            n_read = 0
            hung_up = False
            while True:
                line = r.fp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    event_type = line[7:]
                elif line.startswith("data: "):
                    events.append((event_type, json.loads(line[6:])))
                    n_read += 1
                    if hang_up_after is not None and n_read >= hang_up_after:
                        hung_up = True
                        break
                    if event_type == "message_stop":
                        break
            if hung_up:
                # Close the socket mid-stream: the server must cancel the generation.
                sock = conn.sock
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
                r.close()
                conn.close()
                with stats.lock:
                    stats.disconnected += 1
                continue
            conn.close()
            try:
                reason, usage, _ = check_stream(events)
            except AssertionError as e:
                stats.fail(f"invalid stream: {e}; events: {json.dumps(events)[:600]}")
                continue
            with stats.lock:
                stats.completed += 1
                stats.reasons[reason] = stats.reasons.get(reason, 0) + 1
                stats.cache_read += usage["cache_read_input_tokens"]
                stats.prompt_tokens += (usage["input_tokens"] + usage["cache_read_input_tokens"]
                                        + usage["cache_creation_input_tokens"])
                stats.output_tokens += usage["output_tokens"]
        except (OSError, http.client.HTTPException, ValueError) as e:
            stats.fail(f"client {cid}: {type(e).__name__}: {e}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(here, "..", "..", "build", "release", "bin", "pensieve"))
    ap.add_argument("--model", default=None, help="model directory (default: the bundled stories260K)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    ap.add_argument("--min-requests", type=int, default=300,
                    help="finished requests the load goes on for past --duration")
    ap.add_argument("--max-duration", type=float, default=120.0,
                    help="seconds after which the load stops even short of --min-requests "
                         "(never before --duration)")
    ap.add_argument("--threads", type=int, default=2, help="server compute threads")
    ap.add_argument("--rss-slack-mib", type=float, default=24.0)
    ap.add_argument("--rss-warmup-requests", type=int, default=100,
                    help="finished requests before the RSS baseline is taken")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    port = free_port()
    cmd = [args.binary, "serve", "--port", str(port), "--threads", str(args.threads),
           "--parallel", "8", "--max-queue", str(args.clients * 2), "--ctx-size", "2048",
           "--kv-memory", "0.003"]  # a small pool: preemption and eviction happen
    if args.model:
        cmd += ["--model", args.model]
    env = dict(os.environ, PENSIEVE_HOME=os.path.join(here, "..", ".."))
    log = open(os.environ.get("SOAK_SERVER_LOG", os.devnull), "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    summary = {"clients": args.clients, "duration_s": args.duration}
    ok = True
    try:
        up_by = time.monotonic() + 60
        while True:
            try:
                status, health = get_json(port, "/health", timeout=10)
                if status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                print(json.dumps({"error": f"server exited with {server.returncode}"}))
                return 1
            if time.monotonic() > up_by:
                print(json.dumps({"error": "server did not come up within 60 s"}))
                return 1
            time.sleep(0.1)

        system_prompt = ("You are a storyteller. " * 40).strip()
        stats = Stats()
        started = time.monotonic()
        end_by = started + max(args.duration, args.max_duration)

        def keep_going():
            now = time.monotonic()
            if now >= end_by:
                return False
            if now < started + args.duration:
                return True
            with stats.lock:
                return stats.completed + stats.disconnected < args.min_requests
        threads = [threading.Thread(target=client_loop,
                                    args=(i, port, keep_going, stats, system_prompt, args.seed * 1000 + i))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        # (requests finished so far, RSS) every quarter second.
        rss_samples = []
        while any(t.is_alive() for t in threads):
            with stats.lock:
                n_finished = stats.completed + stats.disconnected
            rss_samples.append((n_finished, rss_kib(server.pid)))
            time.sleep(0.25)
        for t in threads:
            t.join()
        summary["load_s"] = round(time.monotonic() - started, 1)

        # Idle: every block back (free, or cached for the prefix cache). The
        # cancellations of the last hang-ups may take a moment; 30 s is ample
        # even on a loaded machine.
        health = None
        idle_by = time.monotonic() + 30
        while True:
            _, health = get_json(port, "/health")
            e = health.get("engine", {})
            if (health.get("n_inflight") == 0 and e.get("kv_blocks_used") == 0
                    and e.get("n_running") == 0 and e.get("n_waiting") == 0):
                break
            if time.monotonic() > idle_by:
                break
            time.sleep(0.1)
        e = health.get("engine", {})
        blocks_ok = (e.get("kv_blocks_used") == 0 and
                     e.get("kv_blocks_free", -1) + e.get("kv_blocks_cached", -1) == e.get("kv_blocks_total"))

        warm = [kib for n, kib in rss_samples if n >= args.rss_warmup_requests]
        rss_start = warm[0] if warm else 0
        rss_end = rss_samples[-1][1] if rss_samples else 0
        rss_max = max(warm) if warm else 0
        # Too few requests to warm up is a failure, not a pass without a check.
        rss_ok = bool(warm) and (rss_max - rss_start) / 1024.0 < args.rss_slack_mib

        summary.update({
            "completed": stats.completed, "disconnected": stats.disconnected,
            "overloaded_529": stats.overloaded, "stop_reasons": stats.reasons,
            "prompt_tokens": stats.prompt_tokens, "cache_read_tokens": stats.cache_read,
            "output_tokens": stats.output_tokens, "failures": stats.failures,
            "health_when_idle": health, "blocks_back": blocks_ok,
            "rss_kib": {"after_warmup": rss_start, "max_after_warmup": rss_max, "end": rss_end,
                        "warmup_requests": args.rss_warmup_requests},
            "rss_flat": rss_ok,
        })
        ok = (not stats.failures and blocks_ok and rss_ok and stats.completed > 0
              and stats.disconnected > 0 and stats.cache_read > 0)
        summary["ok"] = ok
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(summary, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
