// Test harness: starts the real ferret-ws binary on 127.0.0.1, talks HTTP to it, and launches
// Debian's Chromium through playwright-core.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The server binary: $FERRET_WS_BIN, else target/debug/ferret-ws of this repo. */
export const SERVER_BIN = path.resolve(
  path.join(here, '..'),
  process.env.FERRET_WS_BIN || '../../target/debug/ferret-ws',
);

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

// Flags that keep Chromium from reaching for the network on this offline machine.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60000 });
}

/**
 * A running server process.
 */
export class Server {
  /**
   * Starts the binary with `--bind 127.0.0.1:PORT` (0: a free port) plus `args` and waits for
   * its `listening on http://...` line.
   * @param {{port?: number, args?: string[], timeoutMs?: number}} [options]
   * @returns {Promise<Server>}
   */
  static async start({ port = 0, args = [], timeoutMs = 30000 } = {}) {
    const proc = spawn(SERVER_BIN, ['--bind', `127.0.0.1:${port}`, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    const server = new Server(proc);
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no "listening on" line within ${timeoutMs} ms; output:\n${server.output()}`));
      }, timeoutMs);
      proc.on('error', (err) => { clearTimeout(timer); reject(err); });
      proc.on('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code ?? signal}) before listening; output:\n${server.output()}`));
      });
      server._onLine = (line) => {
        const m = /listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(line);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      };
    });
    server.url = url;
    server.port = Number(new URL(url).port);
    return server;
  }

  /** @param {import('node:child_process').ChildProcess} proc */
  constructor(proc) {
    this.proc = proc;
    this.pid = proc.pid;
    this.url = '';
    this.port = 0;
    this.exited = once(proc, 'exit');
    this._log = [];
    this._onLine = (/** @type {string} */ _line) => {};
    let pending = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      pending += chunk;
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        this._remember('out', line);
        this._onLine(line);
      }
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => this._remember('err', chunk.trimEnd()));
  }

  _remember(stream, text) {
    this._log.push(`[${stream}] ${text}`);
    if (this._log.length > 200) this._log.splice(0, this._log.length - 200);
  }

  /** The last lines the server printed, for failure messages. */
  output() {
    return this._log.join('\n');
  }

  get running() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Sends a signal to the server's PID. */
  signal(sig) {
    if (this.running) process.kill(this.pid, sig);
  }

  /**
   * Stops the server by PID: SIGCONT (in case a test stopped it), SIGTERM, and SIGKILL if it
   * is still there after `graceMs`.
   */
  async stop({ graceMs = 8000 } = {}) {
    if (!this.running) return;
    this.signal('SIGCONT');
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /**
   * One JSON request. Returns status, X-Correlation-ID and the parsed body.
   * @param {string} method
   * @param {string} pathname
   * @param {unknown} [body]
   * @param {{token?: string}} [options]
   */
  async request(method, pathname, body, { token } = {}) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(this.url + pathname, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* keep text */ }
    return { status: res.status, cid: res.headers.get('x-correlation-id'), json, text };
  }

  /** Publishes one event through `POST /api/v1/events`; returns its event_id. */
  async publish(type, payload, options) {
    const r = await this.request('POST', '/api/v1/events', { type, payload }, options);
    if (r.status !== 202) throw new Error(`publish ${type}: ${r.status} ${r.text}`);
    return r.json.event_id;
  }

  async ready(options) {
    const r = await this.request('GET', '/health/ready', undefined, options);
    return r.json;
  }
}

/**
 * Polls `fn` until it returns a truthy value (which it returns), or throws after `timeoutMs`.
 * For conditions outside the browser (server state); inside the page use waitForFunction.
 */
export async function until(fn, { timeoutMs = 10000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// ---- page helpers ------------------------------------------------------------------------------

/** Waits until the page's connection indicator shows `state`. */
export async function waitForState(page, state, timeout = 15000) {
  await page.waitForFunction(
    (s) => document.getElementById('conn-state')?.dataset.state === s,
    state, { timeout, polling: 50 },
  );
}

/**
 * Waits for an open connection whose registration is proven: after the pong to a ping, every
 * event sequenced later reaches the page (PROTOCOL.md §5).
 */
export async function waitUntilLive(page, timeout = 15000) {
  await waitForState(page, 'open', timeout);
  await page.evaluate(() => window.ferret.ping());
}

/** Waits until an event row matching `selector` (within #events) is on the page. */
export async function waitForRow(page, selector, timeout = 10000) {
  await page.locator(`#events li.event${selector}`).first().waitFor({ state: 'attached', timeout });
}

/** Every event row on the page, oldest first. */
export async function rows(page) {
  const list = await page.$$eval('#events li.event', (lis) => lis.map((li) => ({
    index: Number(li.dataset.index),
    type: li.dataset.type,
    eventId: li.dataset.eventId,
    correlationId: li.dataset.correlationId,
    payload: li.querySelector('.ev-payload')?.textContent ?? '',
    mine: li.classList.contains('mine'),
  })));
  return list.sort((a, b) => a.index - b.index);
}

/**
 * A private `redis-server` on a free loopback port (no persistence), stopped by its PID;
 * `null` if there is none (run.sh installs Debian's).
 */
export class Redis {
  static async start() {
    const net = await import('node:net');
    const port = await new Promise((resolve, reject) => {
      const probe = net.createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address();
        probe.close(() => resolve(free));
      });
    });
    const proc = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    ], { stdio: 'ignore' });
    const failed = await Promise.race([
      once(proc, 'error').then(() => true),
      until(() => Redis.ping(port), { what: 'redis-server to answer', timeoutMs: 10000 })
        .then(() => false),
    ]);
    if (failed) return null;
    const redis = new Redis();
    redis.proc = proc;
    redis.port = port;
    redis.url = `redis://127.0.0.1:${port}/`;
    return redis;
  }

  /** Sends one inline command; resolves with the reply's first line. */
  static command(port, line) {
    return new Promise((resolve) => {
      import('node:net').then((net) => {
        const socket = net.createConnection({ port, host: '127.0.0.1' });
        socket.setEncoding('utf8');
        socket.once('error', () => resolve(null));
        socket.once('data', (data) => { resolve(data.split('\r\n')[0]); socket.end(); });
        socket.write(`${line}\r\n`);
      });
    });
  }

  static async ping(port) {
    return (await Redis.command(port, 'PING')) === '+PONG';
  }

  flushAll() {
    return Redis.command(this.port, 'FLUSHALL');
  }

  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGKILL');
    await once(this.proc, 'exit');
  }
}
