// Unit tests of the browser client's logic, in plain Node: a fake WebSocket, a fake clock
// and fake timers are injected, so no browser and no server are needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FerretClient, backoffDelay, eventHead, normalizeTypes,
} from '../../server/static/ferret-ws.js';

// ---- fakes -------------------------------------------------------------------------------------

/** Manual clock and timers: time moves only through `advance`. */
class FakeTime {
  constructor(start = 1_000_000) {
    this.now = start;
    this.nextId = 1;
    /** @type {Map<number, {at: number, fn: () => void, every: number|null}>} */
    this.timers = new Map();
    this.api = {
      setTimeout: (fn, ms) => this._add(fn, ms, null),
      clearTimeout: (id) => this.timers.delete(id),
      setInterval: (fn, ms) => this._add(fn, ms, ms),
      clearInterval: (id) => this.timers.delete(id),
    };
  }

  _add(fn, ms, every) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + Math.max(0, ms), fn, every });
    return id;
  }

  /** Runs every timer due within `ms`, in deadline order, moving the clock as it goes. */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (next === null) break;
      const [id, t] = next;
      this.now = Math.max(this.now, t.at);
      if (t.every === null) this.timers.delete(id);
      else t.at += t.every;
      t.fn();
    }
    this.now = end;
  }

  /** A throttled background tab: the clock jumps, then the timers get one late chance. */
  jump(ms) {
    this.now += ms;
    for (const t of this.timers.values()) if (t.at < this.now) t.at = this.now;
    this.advance(0);
  }
}

/** Fake WebSocket that records instances; the test plays the server. */
function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code, reason) { this.closedWith = { code, reason }; this.readyState = 2; }
    // server side
    serverOpen() { this.readyState = 1; this.onopen?.({}); }
    serverSend(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
  }
  return { FakeWebSocket, sockets };
}

const EPOCH = '0badcafe';
let seq = 0;
// Protocol v2: events take consecutive seqs; a heartbeat names the newest event.
const ev = (type, payload = {}, cid = null) => ({
  type, payload, correlation_id: cid, timestamp: '2026-04-26T17:24:55.055181+00:00',
  event_id: type === 'heartbeat' ? `${EPOCH}-${seq}` : `${EPOCH}-${++seq}`,
});
const control = (type, payload = {}) => ({
  type, payload, correlation_id: null, timestamp: '2026-04-26T17:24:55.055181+00:00',
  event_id: null,
});

function setup(options = {}) {
  const time = new FakeTime();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const client = new FerretClient({
    url: 'ws://127.0.0.1:9/ws',
    WebSocket: FakeWebSocket,
    now: () => time.now,
    timers: time.api,
    random: () => 0.5,
    heartbeatIntervalMs: 1000,
    watchdogGraceMs: 2000,
    window: null,
    document: null,
    ...options,
  });
  const states = [];
  client.addEventListener('state', (e) => states.push(e.detail));
  const last = () => sockets[sockets.length - 1];
  const params = (s = last()) => new URL(s.url).searchParams;
  return { time, client, sockets, states, last, params };
}

// ---- backoff -----------------------------------------------------------------------------------

test('backoff: full jitter stays within [0, min(cap, base * 2^attempt))', () => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const ceiling = Math.min(30000, 500 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, { random: () => 0 }), 0);
    const hi = backoffDelay(attempt, { random: () => 0.9999999999 });
    assert.ok(hi < ceiling && hi >= ceiling - 1, `attempt ${attempt}: ${hi} vs ${ceiling}`);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(attempt);
      assert.ok(Number.isInteger(d) && d >= 0 && d < ceiling, `attempt ${attempt}: ${d}`);
    }
  }
  assert.equal(backoffDelay(0, { random: () => 0.5 }), 250);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000);
  assert.equal(backoffDelay(10, { random: () => 0.5 }), 15000);
  assert.equal(backoffDelay(5, { baseMs: 100, capMs: 1000, random: () => 0.5 }), 500);
  // A random source out of range cannot push the delay past the ceiling.
  assert.equal(backoffDelay(2, { random: () => 7 }), 1999);
});

test('backoff: the client uses the injected random source and resets after a stable connection', () => {
  const { time, client, sockets, states, last } = setup({ random: () => 0.5 });
  client.connect();
  const delays = [];
  for (let i = 0; i < 8; i++) {
    last().serverClose(1006);
    const s = states[states.length - 1];
    assert.equal(s.state, 'reconnecting');
    delays.push(s.delayMs);
    time.advance(s.delayMs);
    assert.equal(client.state, 'connecting');
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
  assert.equal(sockets.length, 9);

  // Up for less than stableAfterMs: the backoff keeps growing.
  last().serverOpen();
  time.advance(5000);
  last().serverClose(1001);
  assert.equal(states[states.length - 1].delayMs, 15000);
  time.advance(15000);

  // Up for longer: it starts over (heartbeats keep the watchdog quiet meanwhile).
  last().serverOpen();
  for (let i = 0; i < 11; i++) { time.advance(1000); last().serverSend(ev('heartbeat')); }
  last().serverClose(4008, 'slow consumer');
  assert.equal(states[states.length - 1].delayMs, 250);
  assert.equal(states[states.length - 1].code, 4008);
});

// ---- anchor ------------------------------------------------------------------------------------

test('anchor: only stream frames move it; control frames never do; reconnects resume from it', () => {
  const { time, client, last, params } = setup();
  client.connect();
  assert.equal(params().get('last_event_id'), null, 'no anchor at first connect');
  last().serverOpen();
  const e1 = ev('project_created', { project_id: 'p1', name: 'a' }, 'cid-1');
  last().serverSend(e1);
  assert.equal(client.lastEventId, e1.event_id);
  const hb = ev('heartbeat');
  last().serverSend(hb);
  assert.equal(client.lastEventId, hb.event_id, 'heartbeats are stream frames');

  for (const c of [
    control('pong'),
    control('subscribed', { types: ['scan_*'] }),
    control('error', { code: 'bad_message', detail: 'x' }),
    control('resync_required', { reason: 'evicted', last_event_id: 'ffffffff-1' }),
  ]) {
    last().serverSend(c);
    assert.equal(client.lastEventId, hb.event_id, `${c.type} must not move the anchor`);
  }
  // Missing event_id (not per contract, but harmless) does not move it either.
  last().serverSend({ type: 'odd', payload: {} });
  assert.equal(client.lastEventId, hb.event_id);

  last().serverClose(1006);
  time.advance(1000);
  assert.equal(params().get('last_event_id'), hb.event_id);

  last().serverOpen();
  const e2 = ev('scan_started', { path: '/x' });
  last().serverSend(e2);
  last().serverClose(4408, 'liveness timeout');
  time.advance(1000);
  assert.equal(params().get('last_event_id'), e2.event_id);
});

test('anchor: a starting anchor can be given, and event kinds are dispatched apart', () => {
  const { client, last, params } = setup({ lastEventId: `${EPOCH}-41` });
  const seen = { event: [], typed: [], heartbeat: [], resync: [], frame: 0 };
  client.addEventListener('event', (e) => seen.event.push(e.detail.type));
  client.addEventListener('event:project_created', (e) => seen.typed.push(e.detail.payload.name));
  client.addEventListener('heartbeat', (e) => seen.heartbeat.push(e.detail.event_id));
  client.addEventListener('resync', (e) => seen.resync.push(e.detail));
  client.addEventListener('frame', () => { seen.frame += 1; });
  client.connect();
  assert.equal(params().get('last_event_id'), `${EPOCH}-41`);
  last().serverOpen();
  last().serverSend(control('resync_required', { reason: 'unknown_epoch', last_event_id: `${EPOCH}-41` }));
  last().serverSend(ev('project_created', { name: 'n' }));
  last().serverSend(ev('heartbeat'));
  last().onmessage({ data: 'not json' });
  assert.deepEqual(seen.event, ['project_created']);
  assert.deepEqual(seen.typed, ['n']);
  assert.equal(seen.heartbeat.length, 1);
  assert.deepEqual(seen.resync, [{ reason: 'unknown_epoch', last_event_id: `${EPOCH}-41` }]);
  assert.equal(seen.frame, 3);
  assert.equal(client.stats.resyncs, 1);
});

test('continuity: a hole in event seqs that no resync_required explains is a resync (gap)', () => {
  const { client, last } = setup();
  const resyncs = [];
  client.addEventListener('resync', (e) => resyncs.push(e.detail));
  client.connect();
  last().serverOpen();
  const first = ev('a');
  last().serverSend(first);
  last().serverSend(ev('heartbeat'));
  last().serverSend(ev('b'));
  assert.deepEqual(resyncs, [], 'consecutive events and a heartbeat naming the last one');
  ev('lost'); // the hub never sent it
  const after = ev('c');
  last().serverSend(after);
  assert.equal(resyncs.length, 1);
  assert.equal(resyncs[0].reason, 'gap');
  assert.equal(resyncs[0].next_event_id, after.event_id);
  // A heartbeat naming an event never received is a hole too.
  ev('lost again');
  last().serverSend(ev('heartbeat'));
  assert.equal(resyncs.length, 2);
  // An in-band resync_required explains the next jump: one resync, not two, and no reconnect.
  ev('skipped');
  last().serverSend(control('resync_required', { reason: 'evicted', last_event_id: client.lastEventId }));
  last().serverSend(ev('d'));
  assert.deepEqual(resyncs.map((r) => r.reason), ['gap', 'gap', 'evicted']);
  assert.equal(client.state, 'open', 'an in-band resync keeps the connection');
});

test('continuity: a filtered connection does not judge holes (its filter makes them)', () => {
  const { client, last } = setup({ types: ['scan_*'] });
  const resyncs = [];
  client.addEventListener('resync', (e) => resyncs.push(e.detail));
  client.connect();
  last().serverOpen();
  last().serverSend(ev('scan_started'));
  ev('project_created'); // filtered out by the hub
  last().serverSend(ev('scan_completed'));
  last().serverSend(ev('heartbeat'));
  assert.deepEqual(resyncs, []);
});

test('eventHead: the X-Event-Head of a fetch response, if well-formed', () => {
  const response = (value) => ({ headers: { get: (name) => (name === 'x-event-head' ? value : null) } });
  assert.equal(eventHead(response(`${EPOCH}-0`)), `${EPOCH}-0`);
  assert.equal(eventHead(response(`${EPOCH}-42`)), `${EPOCH}-42`);
  assert.equal(eventHead(response(null)), null);
  assert.equal(eventHead(response(' 0000000a-1')), null);
  assert.equal(eventHead(response('garbage')), null);
});

// ---- close codes -------------------------------------------------------------------------------

for (const code of [4401, 4400]) {
  test(`close ${code}: no retry, state failed with the code`, () => {
    const { time, client, sockets, states, last } = setup();
    client.connect();
    last().serverOpen();
    last().serverClose(code, code === 4401 ? 'missing or wrong token' : 'invalid types');
    assert.equal(client.state, 'failed');
    const s = states[states.length - 1];
    assert.equal(s.state, 'failed');
    assert.equal(s.code, code);
    assert.equal(s.cause, 'fatal-code');
    time.advance(10 * 60 * 1000);
    assert.equal(sockets.length, 1, 'no new socket after ten minutes');
    assert.equal(time.timers.size, 0, 'no timer left running');
  });
}

test('4401 straight after the handshake (never opened) also stops', () => {
  const { time, client, sockets, last } = setup();
  client.connect();
  last().serverClose(4401, 'missing or wrong token');
  time.advance(60000);
  assert.equal(client.state, 'failed');
  assert.equal(sockets.length, 1);
});

for (const code of [4008, 4408, 1001, 1006, 1011, 4429]) {
  test(`close ${code}: reconnects with backoff`, () => {
    const { time, client, sockets, states, last } = setup();
    client.connect();
    last().serverOpen();
    last().serverClose(code);
    const s = states[states.length - 1];
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.code, code);
    time.advance(s.delayMs - 1);
    assert.equal(sockets.length, 1);
    time.advance(1);
    assert.equal(sockets.length, 2);
  });
}

test('maxAttempts: gives up in state failed', () => {
  const { time, client, sockets, last } = setup({ maxAttempts: 3 });
  client.connect();
  for (let i = 0; i < 3; i++) { last().serverClose(1006); time.advance(60000); }
  last().serverClose(1006);
  assert.equal(client.state, 'failed');
  time.advance(600000);
  assert.equal(sockets.length, 4);
});

test('close(): stops for good and detaches the socket', () => {
  const { time, client, sockets, last } = setup();
  client.connect();
  last().serverOpen();
  const ws = last();
  client.close();
  assert.equal(client.state, 'closed');
  assert.deepEqual(ws.closedWith, { code: 1000, reason: 'client closed' });
  ws.serverClose(1000); // late close event from the abandoned socket
  time.advance(600000);
  assert.equal(client.state, 'closed');
  assert.equal(sockets.length, 1);
  assert.equal(time.timers.size, 0);
});

// ---- watchdog ----------------------------------------------------------------------------------

test('watchdog: reconnects after heartbeat interval + grace of silence', () => {
  const { time, client, sockets, states, last } = setup();
  client.connect();
  last().serverOpen();
  // Heartbeats every second keep it open.
  for (let i = 0; i < 10; i++) { time.advance(1000); last().serverSend(ev('heartbeat')); }
  assert.equal(client.state, 'open');
  const ws = last();
  time.advance(3000); // exactly interval + grace: not yet
  assert.equal(client.state, 'open');
  time.advance(1000);
  assert.equal(client.stats.watchdogReconnects, 1);
  assert.ok(ws.closedWith, 'the silent socket is closed');
  assert.ok(states.some((s) => s.state === 'reconnecting' && s.cause === 'watchdog'));
  ws.serverClose(1006); // its late close must not disturb the next attempt
  time.advance(1000);
  assert.equal(sockets.length, 2);
  assert.equal(client.state, 'connecting');
});

test('watchdog: uses the wall clock, so a throttled check timer still catches silence', () => {
  const { time, client, states, last } = setup({ heartbeatIntervalMs: 30000, watchdogGraceMs: 15000 });
  client.connect();
  last().serverOpen();
  // A background tab: no timer ran for 5 minutes, then the check gets one late run.
  time.jump(5 * 60 * 1000);
  assert.ok(states.some((s) => s.cause === 'watchdog'), 'one late check is enough');
});

test('watchdog: a handshake that hangs is given up after connectTimeoutMs', () => {
  const { time, client, sockets, states } = setup({ connectTimeoutMs: 5000 });
  client.connect();
  time.advance(5000);
  assert.equal(sockets.length, 1);
  assert.equal(client.state, 'connecting');
  time.advance(500); // the next check past the deadline
  assert.ok(states.some((s) => s.state === 'reconnecting' && s.cause === 'connect-timeout'));
  assert.ok(sockets[0].closedWith, 'the hanging socket is closed');
  time.advance(500);
  assert.equal(sockets.length, 2, 'and replaced');
});

test('online and visibilitychange retry at once while waiting', () => {
  const win = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = 'hidden';
  const { client, sockets, last } = setup({ window: win, document: doc });
  client.connect();
  last().serverOpen();
  // Waiting a long time for the next attempt; online or visible cuts the wait short.
  client.reconnect({ delayMs: 60000 });
  assert.equal(client.state, 'reconnecting');
  const before = sockets.length;
  win.dispatchEvent(new Event('online'));
  assert.equal(sockets.length, before + 1, 'online: immediate attempt');
  client.reconnect({ delayMs: 60000 });
  doc.dispatchEvent(new Event('visibilitychange')); // still hidden: nothing
  assert.equal(sockets.length, before + 1);
  doc.visibilityState = 'visible';
  doc.dispatchEvent(new Event('visibilitychange'));
  assert.equal(sockets.length, before + 2, 'visible: immediate attempt');
  client.close();
  doc.dispatchEvent(new Event('visibilitychange'));
  win.dispatchEvent(new Event('online'));
  assert.equal(sockets.length, before + 2, 'listeners removed after close()');
});

// ---- filters, ping, url ------------------------------------------------------------------------

test('subscribe: sends the message when open and keeps the filter for reconnects', () => {
  const { time, client, last, params } = setup({ types: ['project_created'] });
  assert.equal(client.subscribe(['scan_*']), false, 'not open yet: applies at connect');
  client.connect();
  assert.equal(params().get('types'), 'scan_*');
  last().serverOpen();
  assert.equal(client.subscribe('preview.*, job_progress'), true);
  assert.deepEqual(last().sent.at(-1), {
    type: 'subscribe', payload: { types: ['preview.*', 'job_progress'] },
  });
  last().serverSend(control('subscribed', { types: ['preview.*', 'job_progress'] }));
  last().serverClose(1006);
  time.advance(1000);
  assert.equal(params().get('types'), 'preview.*,job_progress');
  assert.throws(() => client.subscribe(['Bad-Name']), TypeError);
  assert.throws(() => client.subscribe(['a', '']), TypeError);
  assert.deepEqual(client.types, ['preview.*', 'job_progress'], 'a rejected filter changes nothing');
  assert.deepEqual(normalizeTypes(''), []);
  assert.deepEqual(normalizeTypes(['*']), ['*']);
});

test('ping: sends {"type":"ping"} and resolves on the pong; rejects when not open', async () => {
  const { client, last } = setup();
  await assert.rejects(client.ping(), /not connected/);
  client.connect();
  last().serverOpen();
  const p = client.ping();
  assert.deepEqual(last().sent.at(-1), { type: 'ping' });
  last().serverSend(control('pong'));
  assert.equal((await p).type, 'pong');
  const p2 = client.ping();
  last().serverClose(1006);
  await assert.rejects(p2, /closed/);
});

test('url: token, anchor and types go in the query; http is mapped to ws', () => {
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const client = new FerretClient({
    url: 'https://example.test/base/ws#x', token: 's3cr+t&', types: ['a', 'b*'],
    lastEventId: 'deadbeef-7', WebSocket: FakeWebSocket, window: null, document: null,
  });
  const u = new URL(client.connectUrl());
  assert.equal(u.protocol, 'wss:');
  assert.equal(u.pathname, '/base/ws');
  assert.equal(u.hash, '');
  assert.equal(u.searchParams.get('token'), 's3cr+t&');
  assert.equal(u.searchParams.get('types'), 'a,b*');
  assert.equal(u.searchParams.get('last_event_id'), 'deadbeef-7');
  assert.throws(() => new FerretClient({ WebSocket: FakeWebSocket }), /no url/);
  assert.equal(sockets.length, 0, 'the constructor does not connect');
});

test('setHeartbeatInterval: the watchdog follows the hub interval given later', () => {
  const { time, client, states, last } = setup({ heartbeatIntervalMs: 30000, watchdogGraceMs: undefined });
  assert.equal(client.watchdogTimeoutMs, 45000);
  client.connect();
  last().serverOpen();
  client.setHeartbeatInterval(1000); // e.g. from GET /health/ready heartbeat_interval_ms
  assert.equal(client.watchdogTimeoutMs, 3000);
  time.advance(3500);
  assert.ok(states.some((s) => s.cause === 'watchdog'));
});

test('reconnect(): drops the socket, resumes from the anchor, and does not grow the backoff', () => {
  const { time, client, sockets, last, params } = setup();
  client.connect();
  last().serverOpen();
  const e = ev('demo.x');
  last().serverSend(e);
  const first = last();
  client.reconnect({ delayMs: 100 });
  assert.ok(first.closedWith);
  assert.equal(client.state, 'reconnecting');
  time.advance(100);
  assert.equal(sockets.length, 2);
  assert.equal(params().get('last_event_id'), e.event_id);
  assert.equal(client.attempt, 0);
});
