// ferret-ws.js: the browser client for a ferret-ws hub (docs/PROTOCOL.md, version 2).
//
// A dependency-free ES module. One `FerretClient` keeps one WebSocket to `/ws` alive:
//
// * it remembers the `event_id` of the last *stream* frame (events and heartbeats; control
//   frames have a null id and never move it) and resumes with `?last_event_id=` on every
//   reconnect, so the hub replays what was missed or says `resync_required`; the first
//   connect can start from the `X-Event-Head` of the page's state fetch (`eventHead()`), so
//   nothing published between that fetch and the connect is missed;
// * it checks continuity itself: on a connection that takes every event, event seqs follow
//   each other and a heartbeat names the last event received, so a hole that no
//   `resync_required` explained raises `resync` (reason `gap`); an in-band `resync_required`
//   raises `resync` without reconnecting;
// * it reconnects with exponential backoff and full jitter (base 500 ms, cap 30 s), and
//   forgets the backoff once a connection has stayed up for `stableAfterMs`;
// * a watchdog compares wall-clock times (`now()`, `Date.now` by default) on a coarse check
//   timer, so a browser that throttles timers in a background tab cannot fool it: when no
//   frame arrived for heartbeat interval + grace, the socket is dropped and replaced;
// * `online` and `visibilitychange` (to visible) trigger an immediate retry or check;
// * close codes that retrying cannot fix (4400 bad parameter, 4401 bad token) stop it in
//   the `failed` state; everything else (4008 slow consumer, 4408, 1001, 1006, ...) retries.
//
// Theory of operation, as a transition table (`state` events report each change):
//
//   closed       --connect()-------------------------------> connecting
//   connecting   --socket open---------------------------------> open
//   connecting   --socket closed / connect timeout-------------> reconnecting (or failed)
//   open         --socket closed / watchdog / reconnect()------> reconnecting (or failed)
//   reconnecting --backoff elapsed / online / visible----------> connecting
//   any          --close()---------------------------------------> closed
//   any          --close code in fatalCodes / maxAttempts hit----> failed
//
// A socket that is given up (watchdog, timeout, reconnect(), close()) is *abandoned*: its
// handlers are detached before it is closed, so a late event from it can never touch the
// state of its successor.

/**
 * One frame as the hub sends it (PROTOCOL.md §1).
 * @typedef {object} Frame
 * @property {string} type
 * @property {Record<string, unknown>} payload
 * @property {string|null} correlation_id
 * @property {string} timestamp
 * @property {string|null} event_id
 */

/**
 * @typedef {'closed'|'connecting'|'open'|'reconnecting'|'failed'} ConnectionState
 */

/**
 * Detail of a `state` event.
 * @typedef {object} StateDetail
 * @property {ConnectionState} state     the new state
 * @property {ConnectionState} previous  the state before
 * @property {number|null} code          close code that caused the change, if any
 * @property {string} reason             close reason (may be empty)
 * @property {string|null} cause         why: 'close', 'watchdog', 'connect-timeout', 'manual',
 *                                       'online', 'visible', 'fatal-code', 'max-attempts', ...
 * @property {number} attempt            reconnect attempts since the last stable connection
 * @property {number|null} delayMs       backoff delay before the next attempt (reconnecting)
 */

/**
 * Timer functions, injectable for tests.
 * @typedef {object} Timers
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(id: unknown) => void} clearTimeout
 * @property {(fn: () => void, ms: number) => unknown} setInterval
 * @property {(id: unknown) => void} clearInterval
 */

/**
 * @typedef {object} FerretClientOptions
 * @property {string|URL} [url]              WebSocket URL; default `/ws` on the page's own host
 *                                           (`ws:` or `wss:` after the page's scheme). A
 *                                           relative or `http(s):` URL is resolved and mapped.
 * @property {string} [token]                access token, sent as the `token` query parameter
 * @property {string[]} [types]              initial type filter (exact names or `prefix*`)
 * @property {string} [subscribeToken]       client identity, 32 lowercase hex chars
 * @property {string|null} [lastEventId]     start from this anchor (e.g. saved across reloads)
 * @property {number} [heartbeatIntervalMs]  the hub's heartbeat interval (default 30000)
 * @property {number} [watchdogGraceMs]      extra silence tolerated after a missed heartbeat
 *                                           (default max(2000, heartbeatIntervalMs / 2))
 * @property {number} [watchdogCheckMs]      period of the coarse check timer (default 1000)
 * @property {number} [connectTimeoutMs]     give up a handshake after this long (default 10000)
 * @property {number} [backoffBaseMs]        default 500
 * @property {number} [backoffCapMs]         default 30000
 * @property {number} [stableAfterMs]        a connection up this long resets the backoff
 *                                           (default 10000)
 * @property {number} [maxAttempts]          give up (state `failed`) after this many attempts
 *                                           in a row without a stable connection (default ∞)
 * @property {number[]} [fatalCodes]         close codes that stop the client (default
 *                                           [4400, 4401])
 * @property {() => number} [random]         uniform in [0, 1); default Math.random
 * @property {() => number} [now]            wall clock in ms; default Date.now
 * @property {Partial<Timers>} [timers]      default: the global timer functions
 * @property {any} [WebSocket]               WebSocket constructor; default globalThis.WebSocket
 * @property {any} [window]                  where `online` is listened for (default
 *                                           globalThis.window; null to disable)
 * @property {any} [document]                where `visibilitychange` is listened for (default
 *                                           globalThis.document; null to disable)
 */

/**
 * The `X-Event-Head` of a `fetch` response: the newest event the server had sequenced when it
 * made the response. Pass it as `lastEventId` to connect right after rendering that
 * response's state, and no event in between is missed (PROTOCOL.md §3).
 *
 * @param {{headers: {get(name: string): string|null}}} response
 * @returns {string|null}
 */
export function eventHead(response) {
  const head = response?.headers?.get('x-event-head');
  return head && /^[0-9a-f]{8}-(0|[1-9][0-9]*)$/.test(head) ? head : null;
}

/**
 * Splits an `event_id` into its epoch and seq, or null.
 * @param {string} id
 * @returns {{epoch: string, seq: number}|null}
 */
function parseId(id) {
  const m = /^([0-9a-f]{8})-(0|[1-9][0-9]*)$/.exec(id);
  return m ? { epoch: m[1], seq: Number(m[2]) } : null;
}

/** Control frames: sent to one client, not part of the stream, `event_id` null. */
export const CONTROL_TYPES = Object.freeze(['pong', 'subscribed', 'error', 'resync_required']);

/** Close codes that a retry cannot fix (PROTOCOL.md §2): bad handshake parameter, bad token. */
export const DEFAULT_FATAL_CODES = Object.freeze([4400, 4401]);

/** WebSocket readyState values (the constants are not on every fake). */
const CONNECTING = 0;
const OPEN = 1;

/** A filter item: `*`, an exact event name, or a name prefix ending in `*` (PROTOCOL.md §5). */
const FILTER_ITEM = /^(?:\*|[a-z][a-z0-9_.]{0,63}\*?)$/;

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(cap, base * 2^attempt)).
 *
 * `attempt` counts from 0 (the first retry after a drop). Pure; `random` must return a
 * number in [0, 1).
 *
 * @param {number} attempt
 * @param {{baseMs?: number, capMs?: number, random?: () => number}} [options]
 * @returns {number} delay in whole milliseconds
 */
export function backoffDelay(attempt, { baseMs = 500, capMs = 30000, random = Math.random } = {}) {
  const exp = Math.min(Math.max(0, attempt), 30); // 2^30 * base is far past any cap
  const ceiling = Math.min(capMs, baseMs * 2 ** exp);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.min(Math.floor(r * ceiling), Math.max(0, ceiling - 1));
}

/**
 * Checks and normalises a type filter: an array (or comma-separated string) of `*`,
 * exact names and `prefix*` items. Empty means "everything".
 *
 * @param {string[]|string} types
 * @returns {string[]}
 * @throws {TypeError} naming the first invalid item
 */
export function normalizeTypes(types) {
  const list = typeof types === 'string'
    ? types.split(/[\s,]+/).filter((t) => t !== '')
    : Array.from(types ?? [], (t) => String(t).trim());
  for (const item of list) {
    if (!FILTER_ITEM.test(item)) {
      throw new TypeError(`invalid type filter item ${JSON.stringify(item)}: use an event ` +
        'name like scan_started, a prefix like render_* or preview.*, or *');
    }
  }
  return list;
}

/**
 * The ferret-ws client. Events (all `CustomEvent`s, data in `detail`):
 *
 * | event              | detail                               | when                          |
 * |--------------------|--------------------------------------|-------------------------------|
 * | `state`            | {@link StateDetail}                  | every connection state change |
 * | `open`             | `{url}`                              | a socket opened               |
 * | `event`            | {@link Frame}                        | a stream event (not heartbeat)|
 * | `event:<type>`     | {@link Frame}                        | the same, per event type      |
 * | `heartbeat`        | {@link Frame}                        | a heartbeat                   |
 * | `frame`            | {@link Frame}                        | every parsed frame            |
 * | `resync`           | `{reason, last_event_id}`            | events may be missing: refetch|
 * | `subscribed`       | `{types}`                            | a filter is in force          |
 * | `pong`             | {@link Frame}                        | answer to `ping()`            |
 * | `servererror`      | `{code, detail}`                     | the hub's `error` frame       |
 * | `invalidframe`     | `{data, error}`                      | a frame that is not JSON      |
 */
export class FerretClient extends EventTarget {
  /** @param {FerretClientOptions} [options] */
  constructor(options = {}) {
    super();
    /** @type {ConnectionState} */
    this.state = 'closed';
    /** Anchor: `event_id` of the last stream frame received, or null. */
    this.lastEventId = options.lastEventId || null;
    /** The type filter kept for reconnects (empty: everything). */
    this.types = normalizeTypes(options.types ?? []);
    /** Reconnect attempts since the last stable connection. */
    this.attempt = 0;
    /** Counters, handy for pages and tests. */
    this.stats = { connects: 0, opens: 0, frames: 0, resyncs: 0, watchdogReconnects: 0 };
    /** Close code and reason of the last socket close seen (or null). */
    this.lastClose = null;

    this._options = options;
    this._token = options.token ?? null;
    this._subscribeToken = options.subscribeToken ?? null;
    this._random = options.random ?? Math.random;
    this._now = options.now ?? (() => Date.now());
    const t = options.timers ?? {};
    this._timers = {
      setTimeout: t.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
      clearTimeout: t.clearTimeout ?? ((/** @type {any} */ id) => globalThis.clearTimeout(id)),
      setInterval: t.setInterval ?? ((fn, ms) => globalThis.setInterval(fn, ms)),
      clearInterval: t.clearInterval ?? ((/** @type {any} */ id) => globalThis.clearInterval(id)),
    };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._window = options.window !== undefined ? options.window : globalThis.window;
    this._document = options.document !== undefined ? options.document : globalThis.document;
    this._fatalCodes = new Set(options.fatalCodes ?? DEFAULT_FATAL_CODES);
    this._baseUrl = resolveWsUrl(options.url);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffCapMs = options.backoffCapMs ?? 30000;
    this.stableAfterMs = options.stableAfterMs ?? 10000;
    this.maxAttempts = options.maxAttempts ?? Infinity;
    // Set for real by setHeartbeatInterval below.
    this.heartbeatIntervalMs = 30000;
    this.watchdogGraceMs = 15000;
    this.watchdogCheckMs = 1000;
    /** @type {unknown} */
    this._checkTimer = null;
    this.setHeartbeatInterval(options.heartbeatIntervalMs ?? 30000, options.watchdogGraceMs);

    /** @type {any} */
    this._ws = null;
    this._socketStartedAt = 0;    // when the current socket was created
    this._openedAt = null;        // when the current socket opened (null: not open)
    this._lastFrameAt = 0;        // wall-clock time of the last frame (or open)
    this._retryAt = null;         // wall-clock time of the next attempt (reconnecting)
    /** @type {unknown} */
    this._retryTimer = null;
    /** @type {{resolve: (f: Frame) => void, reject: (e: Error) => void}[]} */
    this._pendingPings = [];
    /** A `resync_required` arrived since the last stream frame: the next one may jump. */
    this._resyncSeen = false;
    this._listening = false;
    this._onOnline = () => this._wake('online');
    this._onVisibility = () => {
      if (this._document && this._document.visibilityState === 'visible') this._wake('visible');
    };
  }

  /**
   * Sets the heartbeat interval the watchdog expects (from `GET /health/ready`'s
   * `heartbeat_interval_ms`) and, optionally, the grace added to it.
   * @param {number} intervalMs
   * @param {number} [graceMs]
   */
  setHeartbeatInterval(intervalMs, graceMs) {
    const o = this._options;
    this.heartbeatIntervalMs = intervalMs;
    this.watchdogGraceMs = graceMs ?? o.watchdogGraceMs ?? Math.max(2000, intervalMs / 2);
    this.watchdogCheckMs = o.watchdogCheckMs ?? Math.min(1000, Math.max(50, intervalMs / 2));
    if (this._checkTimer !== null) {
      this._stopChecks();
      this._startChecks();
    }
  }

  /** Silence after which the watchdog gives up on an open socket, in ms. */
  get watchdogTimeoutMs() {
    return this.heartbeatIntervalMs + this.watchdogGraceMs;
  }

  /** True while a socket is open. */
  get connected() {
    return this.state === 'open';
  }

  /**
   * Starts connecting (from `closed` or `failed`); a no-op otherwise.
   * @returns {this}
   */
  connect() {
    if (this.state !== 'closed' && this.state !== 'failed') return this;
    this.attempt = 0;
    this._listen(true);
    this._startChecks();
    this._openSocket('connect');
    return this;
  }

  /**
   * Closes the connection for good (code 1000) and stops every timer. `connect()` starts
   * again, keeping the anchor.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = 'client closed') {
    this._clearRetry();
    this._stopChecks();
    this._listen(false);
    this._abandonSocket(code, reason);
    this._setState('closed', { code, reason, cause: 'manual' });
  }

  /**
   * Drops the current socket (if any) and connects again after `delayMs` (default 0, i.e.
   * now), resuming from the anchor. Useful for a "reconnect now" button and for tests that
   * need a disconnect. Ignored when closed or failed.
   * @param {{delayMs?: number, cause?: string}} [options]
   */
  reconnect({ delayMs = 0, cause = 'manual' } = {}) {
    if (this.state === 'closed' || this.state === 'failed') return;
    this._abandonSocket(1000, 'client reconnecting');
    this._scheduleRetry({ code: null, reason: '', cause }, delayMs);
  }

  /**
   * Replaces the type filter. Sent at once when open (`subscribe` message, answered by
   * `subscribed`) and used as the `types` query parameter on every later connect.
   * @param {string[]|string} types empty: everything
   * @returns {boolean} whether it was sent now (false: it applies at the next connect)
   */
  subscribe(types) {
    this.types = normalizeTypes(types);
    return this.send({ type: 'subscribe', payload: { types: this.types } });
  }

  /**
   * Sends `{"type":"ping"}`. The promise resolves with the hub's `pong` frame; once it has,
   * every event sequenced afterwards is delivered to this client (PROTOCOL.md §5). Rejects
   * when not open, or when the socket goes away first.
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<Frame>}
   */
  ping({ timeoutMs = 10000 } = {}) {
    return new Promise((resolve, reject) => {
      if (!this.send({ type: 'ping' })) {
        reject(new Error('not connected'));
        return;
      }
      const entry = {
        resolve: (/** @type {Frame} */ f) => { this._timers.clearTimeout(timer); resolve(f); },
        reject: (/** @type {Error} */ e) => { this._timers.clearTimeout(timer); reject(e); },
      };
      const timer = this._timers.setTimeout(() => {
        const i = this._pendingPings.indexOf(entry);
        if (i >= 0) this._pendingPings.splice(i, 1);
        reject(new Error('no pong within ' + timeoutMs + ' ms'));
      }, timeoutMs);
      this._pendingPings.push(entry);
    });
  }

  /**
   * Sends one JSON message if a socket is open.
   * @param {object} message
   * @returns {boolean} whether it was handed to the socket
   */
  send(message) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN || this.state !== 'open') return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  /**
   * The URL the next connect will use (anchor, filter and token as query parameters).
   * @returns {string}
   */
  connectUrl() {
    const url = new URL(this._baseUrl);
    if (this.lastEventId) url.searchParams.set('last_event_id', this.lastEventId);
    if (this.types.length > 0) url.searchParams.set('types', this.types.join(','));
    if (this._subscribeToken) url.searchParams.set('subscribe_token', this._subscribeToken);
    if (this._token) url.searchParams.set('token', this._token);
    return url.toString();
  }

  // ---- helpers -----------------------------------------------------------------------------

  /** @param {string} cause */
  _openSocket(cause) {
    this._clearRetry();
    const url = this.connectUrl();
    this.stats.connects += 1;
    this._socketStartedAt = this._now();
    this._openedAt = null;
    this._setState('connecting', { cause });
    let ws;
    try {
      this._resyncSeen = false; // a new socket: the hub replays from the anchor or says so
      ws = new this._WebSocket(url);
    } catch (err) {
      // A URL the constructor refuses will not get better by retrying.
      this._setState('failed', { reason: String(err instanceof Error ? err.message : err), cause: 'invalid-url' });
      this._stopChecks();
      this._listen(false);
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._openedAt = this._now();
      this._lastFrameAt = this._openedAt;
      this.stats.opens += 1;
      this._setState('open', { cause });
      this.dispatchEvent(new CustomEvent('open', { detail: { url } }));
    };
    ws.onmessage = (/** @type {{data: unknown}} */ ev) => {
      if (this._ws !== ws) return;
      this._onMessage(ev.data);
    };
    ws.onerror = () => { /* a close event follows; it carries what we need */ };
    ws.onclose = (/** @type {{code: number, reason: string}} */ ev) => {
      if (this._ws !== ws) return;
      this._detach(ws);
      this._ws = null;
      this._onSocketClosed(ev.code, ev.reason || '');
    };
  }

  /** @param {unknown} data */
  _onMessage(data) {
    this._lastFrameAt = this._now();
    if (typeof data !== 'string') return; // the hub only sends text frames
    /** @type {Frame} */
    let frame;
    try {
      frame = JSON.parse(data);
      if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') {
        throw new Error('not a frame object');
      }
    } catch (error) {
      this.dispatchEvent(new CustomEvent('invalidframe', { detail: { data, error } }));
      return;
    }
    this.stats.frames += 1;
    // Only stream frames (non-null event_id) move the anchor; control frames never do.
    if (typeof frame.event_id === 'string' && frame.event_id !== '') {
      this._checkContinuity(frame);
      this.lastEventId = frame.event_id;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    const payload = frame.payload ?? {};
    switch (frame.type) {
      case 'pong': {
        const pending = this._pendingPings.shift();
        if (pending) pending.resolve(frame);
        this.dispatchEvent(new CustomEvent('pong', { detail: frame }));
        return;
      }
      case 'subscribed':
        if (Array.isArray(payload.types)) this.types = payload.types.map(String);
        this.dispatchEvent(new CustomEvent('subscribed', { detail: { types: this.types } }));
        return;
      case 'error':
        this.dispatchEvent(new CustomEvent('servererror', {
          detail: { code: payload.code ?? null, detail: payload.detail ?? null, frame },
        }));
        return;
      case 'resync_required':
        this._resyncSeen = true;
        this.stats.resyncs += 1;
        this.dispatchEvent(new CustomEvent('resync', {
          detail: { reason: payload.reason ?? null, last_event_id: payload.last_event_id ?? null },
        }));
        return;
      case 'heartbeat':
        this.dispatchEvent(new CustomEvent('heartbeat', { detail: frame }));
        return;
      default:
        this.dispatchEvent(new CustomEvent('event', { detail: frame }));
        this.dispatchEvent(new CustomEvent('event:' + frame.type, { detail: frame }));
    }
  }

  /**
   * The client's own proof that it missed nothing (PROTOCOL.md §1): on a connection that takes
   * every event, event seqs follow each other and a heartbeat names the last event received.
   * A hole that no `resync_required` explained is reported as a `resync` (reason `gap`).
   * @param {Frame} frame
   */
  _checkContinuity(frame) {
    const prev = this.lastEventId ? parseId(this.lastEventId) : null;
    const next = parseId(/** @type {string} */ (frame.event_id));
    const explained = this._resyncSeen;
    this._resyncSeen = false;
    const everything = this.types.length === 0 || this.types.includes('*');
    if (!prev || !next || explained || !everything) return;
    const heartbeat = frame.type === 'heartbeat' || frame.type === 'health_status';
    const continuous = prev.epoch === next.epoch &&
      (heartbeat ? next.seq === prev.seq : next.seq === prev.seq + 1);
    if (continuous) return;
    this.stats.resyncs += 1;
    this.dispatchEvent(new CustomEvent('resync', {
      detail: { reason: 'gap', last_event_id: this.lastEventId, next_event_id: frame.event_id },
    }));
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  _onSocketClosed(code, reason) {
    this.lastClose = { code, reason };
    this._rejectPings(new Error(`connection closed (${code})`));
    if (this._fatalCodes.has(code)) {
      this._stopChecks();
      this._listen(false);
      this._clearRetry();
      this._setState('failed', { code, reason, cause: 'fatal-code' });
      return;
    }
    this._scheduleRetry({ code, reason, cause: 'close' });
  }

  /**
   * Moves to `reconnecting` and arms the next attempt.
   * @param {{code: number|null, reason: string, cause: string}} why
   * @param {number} [delayMs] fixed delay instead of the backoff
   */
  _scheduleRetry(why, delayMs) {
    const now = this._now();
    // A connection that stayed up long enough proves the path works: start the backoff over.
    if (this._openedAt !== null && now - this._openedAt >= this.stableAfterMs) this.attempt = 0;
    this._openedAt = null;
    if (this.attempt >= this.maxAttempts) {
      this._stopChecks();
      this._listen(false);
      this._clearRetry();
      this._setState('failed', { code: why.code, reason: why.reason, cause: 'max-attempts' });
      return;
    }
    let delay = delayMs;
    if (delay === undefined) {
      // Only failures count towards the backoff; a requested reconnect does not.
      delay = backoffDelay(this.attempt, {
        baseMs: this.backoffBaseMs, capMs: this.backoffCapMs, random: this._random,
      });
      this.attempt += 1;
    }
    this._clearRetry();
    this._retryAt = now + delay;
    this._setState('reconnecting', { ...why, delayMs: delay });
    this._retryTimer = this._timers.setTimeout(() => {
      this._retryTimer = null;
      if (this.state === 'reconnecting') this._openSocket('retry');
    }, delay);
  }

  /** The coarse check timer: wall-clock deadlines for watchdog, handshake and retry. */
  _check() {
    const now = this._now();
    if (this.state === 'open') {
      if (now - this._lastFrameAt > this.watchdogTimeoutMs) {
        this.stats.watchdogReconnects += 1;
        this._abandonSocket(4000, 'watchdog: no frame');
        this._scheduleRetry({
          code: null,
          reason: `no frame for ${now - this._lastFrameAt} ms`,
          cause: 'watchdog',
        });
      }
    } else if (this.state === 'connecting') {
      if (now - this._socketStartedAt > this.connectTimeoutMs) {
        this._abandonSocket(4000, 'connect timeout');
        this._scheduleRetry({ code: null, reason: 'handshake timed out', cause: 'connect-timeout' });
      }
    } else if (this.state === 'reconnecting') {
      // A throttled setTimeout may fire late; the wall clock says when it is due.
      if (this._retryAt !== null && now >= this._retryAt) this._openSocket('retry');
    }
  }

  /**
   * `online` or the page became visible: retry at once if waiting, check liveness if open.
   * @param {string} cause
   */
  _wake(cause) {
    if (this.state === 'reconnecting') {
      this._openSocket(cause);
    } else if (this.state === 'open') {
      this._check();
    }
  }

  /**
   * Forgets the current socket: detaches its handlers, then closes it.
   * @param {number} code
   * @param {string} reason
   */
  _abandonSocket(code, reason) {
    const ws = this._ws;
    this._ws = null;
    this._rejectPings(new Error('connection dropped'));
    if (!ws) return;
    this._detach(ws);
    try {
      if (ws.readyState === CONNECTING || ws.readyState === OPEN) {
        // Browsers accept only 1000 and 3000-4999 here.
        ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
      }
    } catch {
      // Nothing useful to do: the socket is gone either way.
    }
  }

  /** @param {any} ws */
  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
  }

  /** @param {Error} err */
  _rejectPings(err) {
    const pending = this._pendingPings.splice(0);
    for (const p of pending) p.reject(err);
  }

  _clearRetry() {
    if (this._retryTimer !== null) this._timers.clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._retryAt = null;
  }

  _startChecks() {
    if (this._checkTimer !== null) return;
    this._checkTimer = this._timers.setInterval(() => this._check(), this.watchdogCheckMs);
  }

  _stopChecks() {
    if (this._checkTimer !== null) {
      this._timers.clearInterval(this._checkTimer);
    }
    this._checkTimer = null;
  }

  /** @param {boolean} on */
  _listen(on) {
    if (on === this._listening) return;
    this._listening = on;
    const method = on ? 'addEventListener' : 'removeEventListener';
    if (this._window && typeof this._window[method] === 'function') {
      this._window[method]('online', this._onOnline);
    }
    if (this._document && typeof this._document[method] === 'function') {
      this._document[method]('visibilitychange', this._onVisibility);
    }
  }

  /**
   * @param {ConnectionState} state
   * @param {{code?: number|null, reason?: string, cause?: string|null, delayMs?: number}} info
   */
  _setState(state, info = {}) {
    const previous = this.state;
    this.state = state;
    /** @type {StateDetail} */
    const detail = {
      state,
      previous,
      code: info.code ?? null,
      reason: info.reason ?? '',
      cause: info.cause ?? null,
      attempt: this.attempt,
      delayMs: info.delayMs ?? null,
    };
    this.dispatchEvent(new CustomEvent('state', { detail }));
  }
}

/**
 * Resolves the WebSocket URL: default `/ws` on the current page's host; `http(s):` becomes
 * `ws(s):`.
 * @param {string|URL|undefined} url
 * @returns {string}
 */
function resolveWsUrl(url) {
  const base = globalThis.location && globalThis.location.href;
  let resolved;
  if (url === undefined || url === null || url === '') {
    if (!base) throw new TypeError('FerretClient: no url given and no page location to derive it');
    resolved = new URL('/ws', base);
  } else {
    resolved = base ? new URL(String(url), base) : new URL(String(url));
  }
  if (resolved.protocol === 'http:') resolved.protocol = 'ws:';
  if (resolved.protocol === 'https:') resolved.protocol = 'wss:';
  if (resolved.protocol !== 'ws:' && resolved.protocol !== 'wss:') {
    throw new TypeError(`FerretClient: unsupported URL scheme ${resolved.protocol}`);
  }
  resolved.hash = '';
  return resolved.toString();
}

export default FerretClient;
