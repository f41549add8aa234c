// The Claude Code native binary from tests/e2e/node_modules, and running it
// in a clean environment (no user config; updates, telemetry and other
// optional traffic off).
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);

// The native executable: the platform package's `claude`, else the wrapper's
// bin/claude.exe once its postinstall has copied the native binary over it.
export function claudeBinary() {
  const candidates = [];
  try {
    const dir = path.dirname(require.resolve(`@anthropic-ai/claude-code-${process.platform}-${process.arch}/package.json`));
    candidates.push(path.join(dir, process.platform === 'win32' ? 'claude.exe' : 'claude'));
  } catch { /* not installed for this platform */ }
  try {
    candidates.push(path.join(path.dirname(require.resolve('@anthropic-ai/claude-code/package.json')), 'bin', 'claude.exe'));
  } catch { /* not installed */ }
  // The wrapper's placeholder is a small script; the real binary is hundreds of MB.
  return candidates.find((p) => existsSync(p) && statSync(p).size > 10_000_000);
}

// The environment Claude Code runs in: nothing of the user's, nothing optional.
export function cleanEnv(home, extra = {}) {
  return {
    PATH: process.env.PATH,
    HOME: home,
    TMPDIR: os.tmpdir(),
    LANG: 'C.UTF-8',
    TERM: 'dumb',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_ERROR_REPORTING: '1',
    DISABLE_BUG_COMMAND: '1',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY: '1',
    ...extra,
  };
}

// Runs bin with args; resolves to {code, signal, stdout, stderr, seconds}.
export function run(bin, args, { env, cwd, timeoutMs }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, seconds: (Date.now() - started) / 1000 });
    });
  });
}
