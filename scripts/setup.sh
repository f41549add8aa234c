#!/usr/bin/env bash
# Installs the Debian packages Pensieve builds with, then builds it (Release).
# Safe to run again: it only installs what is missing and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git
  nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libspdlog-dev libfmt-dev
  libpcre2-dev libtomlplusplus-dev libcurl4-openssl-dev libssl-dev libsystemd-dev
  libgtest-dev libgmock-dev
  libicu-dev zlib1g-dev libxxhash-dev
  curl dpkg-dev  # the install test: cpack's .deb (dpkg-shlibdeps), serving from it
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the end-to-end tests with the real clients (tests/e2e).
# Any node >= 18 will do (Debian 12 ships 18), so only install it when absent.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The pinned npm clients (@anthropic-ai/sdk, @anthropic-ai/claude-code), again
# only when package-lock.json changed since the last install. Without network
# this fails and the e2e tests are skipped, not failed. --ignore-scripts: the
# tests run Claude Code's native binary straight from its platform package,
# so its postinstall (copying that binary over a placeholder) is not needed.
e2e=tests/e2e
if ! cmp -s "$e2e/package-lock.json" "$e2e/node_modules/.pensieve-installed-lock" 2>/dev/null; then
  echo "setup: installing the npm clients for the end-to-end tests (npm ci in $e2e)"
  if (cd "$e2e" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error); then
    cp "$e2e/package-lock.json" "$e2e/node_modules/.pensieve-installed-lock"
  else
    echo "setup: WARNING: npm ci failed in $e2e; the e2e tests will be skipped" >&2
  fi
fi

preset="${PENSIEVE_PRESET:-release}"
# The CUDA backend is compiled wherever nvcc is (it runs only where a GPU
# is; elsewhere the binary serves on the CPU). PENSIEVE_CUDA=OFF skips it.
cuda="${PENSIEVE_CUDA:-}"
if [ -z "$cuda" ]; then
  if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; else cuda=OFF; fi
fi
[ "$cuda" = ON ] && ! command -v nvcc >/dev/null && export PATH="/usr/local/cuda/bin:$PATH"
cmake --preset "$preset" -DPENSIEVE_CUDA="$cuda" >/dev/null
cmake --build --preset "$preset"
