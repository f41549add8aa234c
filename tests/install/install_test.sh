#!/usr/bin/env bash
# Installs the build into a temporary prefix (cmake --install) and unpacks
# the .deb that cpack builds into another folder, and serves the bundled
# model from each: the binary must find it relative to itself
# (../share/pensieve), with no source tree or PENSIEVE_HOME to help.
# Usage: install_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
work=$(mktemp -d /tmp/pensieve-install-XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# serve_from BIN: starts BIN serve on a free port from an unrelated folder,
# checks /health and one answer, stops it (exit code 0 expected).
serve_from() {
  local bin=$1 out=$work/serve.out err=$work/serve.err port=
  (cd "$work" && exec env -u PENSIEVE_HOME -u PENSIEVE_MODEL -u PENSIEVE_API_KEY \
      "$bin" serve --port 0 >"$out" 2>"$err") &
  pid=$!
  for _ in $(seq 1 300); do
    port=$(sed -n 's/.*serving .* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "$bin serve exited: $(cat "$err")"
    sleep 0.1
  done
  [ -n "$port" ] || fail "$bin serve did not start: $(cat "$err")"
  local health
  health=$(curl -sf "http://127.0.0.1:$port/health") || fail "GET /health of $bin"
  grep -q '"status":"ok"' <<<"$health" || fail "/health of $bin: $health"
  local answer
  answer=$(curl -sf "http://127.0.0.1:$port/v1/messages" -H 'content-type: application/json' \
    -d '{"model":"claude-m","max_tokens":8,"messages":[{"role":"user","content":"Hello"}]}') ||
    fail "POST /v1/messages to $bin"
  grep -q '"type":"message"' <<<"$answer" || fail "answer of $bin: $answer"
  kill "$pid"
  wait "$pid" || fail "$bin serve exited with $? after SIGTERM"
  pid=
  grep -q "serving the bundled stories260K model" "$err" || fail "log of $bin: $(cat "$err")"
  echo "ok: $bin served the bundled model"
}

# 1. cmake --install into a prefix.
cmake --install "$build" --prefix "$work/prefix" >/dev/null
[ -x "$work/prefix/bin/pensieve" ] || fail "no bin/pensieve in the prefix"
[ -f "$work/prefix/share/pensieve/models/stories260K/model.safetensors" ] ||
  fail "no bundled model under share/pensieve in the prefix"
serve_from "$work/prefix/bin/pensieve"

# 2. The .deb, unpacked as dpkg would install it (under /usr).
(cd "$work" && cpack -G DEB -B "$work/deb" --config "$build/CPackConfig.cmake" >/dev/null) ||
  fail "cpack -G DEB"
deb=$(ls "$work"/deb/*.deb)
info=$(dpkg-deb -I "$deb")
grep -q "Package: pensieve" <<<"$info" || fail "the .deb has no package name: $info"
grep -q "Depends: .*libcurl" <<<"$info" || fail "the .deb lists no library dependencies: $info"
dpkg-deb -x "$deb" "$work/root"
[ -f "$work/root/usr/share/pensieve/models/stories260K/config.json" ] ||
  fail "the .deb has no /usr/share/pensieve/models/stories260K"
for unit in pensieve.service pensieve.socket; do
  [ -f "$work/root/usr/lib/systemd/user/$unit" ] || fail "the .deb has no /usr/lib/systemd/user/$unit"
done
if command -v systemd-analyze >/dev/null; then
  # The units as systemd reads them (ExecStart's bare name is looked up on
  # systemd's own PATH; the unpacked binary is not there, so only syntax).
  systemd-analyze verify --man=no "$work/root/usr/lib/systemd/user/pensieve.socket" 2>&1 |
    grep -v "Command pensieve is not executable\|not found\|pensieve.service" && fail "systemd-analyze verify" || true
fi
serve_from "$work/root/usr/bin/pensieve"
