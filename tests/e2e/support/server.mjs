// Starts the real `pensieve serve` on 127.0.0.1 (a free port picked by the
// server itself) and stops it again. The port comes from the line serve
// prints once it listens; readiness is then confirmed with GET /health.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function pensieveBinary() {
  const bin = process.env.PENSIEVE_BINARY || path.join(repoRoot, 'build/release/bin/pensieve');
  if (!existsSync(bin)) throw new Error(`pensieve binary not found at ${bin} (build it, or set PENSIEVE_BINARY)`);
  return bin;
}

// Servers still running when the test process exits (a failed hook, a
// cancelled test) are killed rather than left behind.
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export class PensieveServer {
  constructor(args = [], env = {}) {
    this.args = args;
    this.env = env;
    this.log = '';  // stdout + stderr, shown when something fails
    this.port = 0;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(timeoutMs = 60_000) {
    const args = ['serve', '--host', '127.0.0.1', '--port', '0', ...this.args];
    this.child = spawn(pensieveBinary(), args, {
      cwd: repoRoot,
      env: { ...process.env, PENSIEVE_API_KEY: '', ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const child = this.child;
    running.add(child);
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }));
    this.child.stderr.on('data', (d) => { this.log += d; });
    try {
      this.port = await this.#waitForPort(timeoutMs);
    } catch (e) {
      this.child.kill('SIGKILL');
      throw e;
    }
    const health = await fetch(`${this.url}/health`);
    if (health.status !== 200) throw new Error(`GET /health answered ${health.status}`);
    this.health = await health.json();
    return this;
  }

  #waitForPort(timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`pensieve serve did not report its port within ${timeoutMs} ms:\n${this.log}`)), timeoutMs);
      let out = '';
      this.child.stdout.on('data', (d) => {
        out += d;
        this.log += d;
        const m = /serving \S+ on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`pensieve serve exited (${code ?? signal}) before listening:\n${this.log}`));
      });
    });
  }

  // True while the process runs and answers GET /health.
  async alive() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return false;
    try {
      const r = await fetch(`${this.url}/health`);
      return r.status === 200 && (await r.json()).status === 'ok';
    } catch {
      return false;
    }
  }

  // SIGTERM, then SIGKILL if it has not exited within timeoutMs. Resolves to
  // {code, signal} of the exit. A minute: a clean exit on a loaded machine
  // must not turn into a SIGKILL that fails the after() hooks asserting it.
  async stop(timeoutMs = 60_000) {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

export async function startServer(args = [], env = {}) {
  return new PensieveServer(args, env).start();
}
