#!/usr/bin/env python3
"""Replays Claude Code's recorded requests (tests/data/claude-code) against a
running `pensieve serve` and prints each one's time to first token, cold
(first time) and warm (again, its prefix cached), as JSON lines.

    python3 scripts/replay-claude-code.py [--port 8080] [--max-tokens 16]
        [--only print-mode-hello] [--runs cold,warm]

--runs names the passes over each request (labels only: each is the same
request again); after a restart on the same --prefix-cache-dir, "--runs
disk,warm" measures the prompt read back from disk, then from memory.

A benchmark helper for machines with Python (the GPU machine); Pensieve
itself needs none. Bodies are sent as recorded, but with stream on and
max_tokens capped, so a run measures the prompt, not a long answer.
"""
import argparse
import glob
import http.client
import json
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=8080)
ap.add_argument("--max-tokens", type=int, default=16)
ap.add_argument("--only", default="", help="replay only the requests whose file name contains this")
ap.add_argument("--runs", default="cold,warm", help="labels of the passes over each request")
ap.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "claude-code"))
args = ap.parse_args()


def replay(body):
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
    t0 = time.monotonic()
    conn.request("POST", "/v1/messages", body=json.dumps(body),
                 headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    resp = conn.getresponse()
    if resp.status != 200:
        return {"status": resp.status, "error": resp.read().decode()[:300]}
    first = None
    usage = {}
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        ev = json.loads(line[5:])
        if ev.get("type") == "content_block_delta" and first is None:
            first = time.monotonic() - t0
        if ev.get("type") == "message_start":
            usage = ev["message"].get("usage", {})
        if ev.get("type") == "message_stop":
            break
    total = time.monotonic() - t0
    conn.close()
    return {"status": 200, "ttft_s": round(first, 4) if first is not None else None,
            "total_s": round(total, 4), "input_tokens": usage.get("input_tokens"),
            "cache_read_input_tokens": usage.get("cache_read_input_tokens")}


for path in sorted(glob.glob(os.path.join(args.dir, "*.request.json"))):
    if args.only not in os.path.basename(path):
        continue
    rec = json.load(open(path))
    body = rec["body"] if "body" in rec else rec
    if isinstance(body, str):
        body = json.loads(body)
    body["stream"] = True
    body["max_tokens"] = min(int(body.get("max_tokens", args.max_tokens)), args.max_tokens)
    for run in args.runs.split(","):
        out = {"request": os.path.basename(path), "run": run}
        out.update(replay(body))
        print(json.dumps(out), flush=True)
