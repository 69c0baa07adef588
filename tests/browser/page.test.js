// Real-browser tests: Debian's Chromium opens the live event page served by the real ferret-ws
// binary, and the tests drive the server over HTTP and signals. Every wait is on a condition
// (waitForFunction, locator waits, polling) with a timeout; none sleeps to synchronise.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Redis, Server, launchBrowser, until, waitForState, waitUntilLive, waitForRow, rows,
} from './lib/harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(here, 'artifacts');
fs.mkdirSync(ARTIFACTS, { recursive: true });

/** @type {import('playwright-core').Browser} */
let browser;

before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/**
 * A fresh server, browser context and page for one test, torn down by the test's `after`.
 * @param {import('node:test').TestContext} t
 */
async function fixture(t, { args = [], query = '', beforeLoad = null } = {}) {
  const server = await Server.start({ args });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  if (beforeLoad) await beforeLoad(page, server);
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
  t.after(async () => {
    await context.close();
    await server.stop();
  });
  t.diagnostic?.(`server ${server.url} pid ${server.pid}`);
  await page.goto(`${server.url}/${query}`);
  return { server, page, context, consoleLines };
}

async function shot(page, name, { fullPage = false } = {}) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage });
}

/**
 * Submits one of the page's forms and waits for *its* response in the "Last HTTP response"
 * panel (not an earlier one). Returns the summary line and the X-Correlation-ID shown.
 */
async function submitForm(page, form) {
  const before = Number(await page.getAttribute('#http-response', 'data-seq'));
  await page.click(`${form} button[type="submit"]`);
  await page.waitForFunction(
    (n) => Number(document.getElementById('http-response').dataset.seq) > n, before,
  );
  return {
    summary: (await page.textContent('#http-summary')).trim(),
    cid: (await page.textContent('#http-correlation-id')).trim(),
  };
}

/** Page texts that tell why a wait failed. */
async function pageState(page) {
  return page.evaluate(() => ({
    state: document.getElementById('conn-state')?.textContent?.trim(),
    log: [...document.querySelectorAll('#state-log li')].map((li) => li.textContent).slice(0, 8),
  })).catch((e) => String(e));
}

test('the page loads and shows events caused over HTTP, with their correlation ids', { timeout: 90000 }, async (t) => {
  const { server, page, consoleLines } = await fixture(t);
  try {
    await waitUntilLive(page);
    // The page learnt the heartbeat interval from /health/ready.
    await page.waitForFunction(() => /every 30 s/.test(document.getElementById('heartbeat-info').textContent));

    // 1. From Node: create a project; the event appears with the request's correlation id.
    const created = await server.request('POST', '/api/v1/projects', { name: 'from node' });
    assert.equal(created.status, 201, created.text);
    assert.ok(created.cid, 'X-Correlation-ID on the response');
    await waitForRow(page, `[data-type="project_created"][data-correlation-id="${created.cid}"]`);
    const row = (await rows(page)).find((r) => r.correlationId === created.cid);
    assert.match(row.payload, new RegExp(created.json.id));
    assert.match(row.payload, /from node/);
    assert.match(row.eventId, /^[0-9a-f]{8}-[1-9][0-9]*$/);
    const shown = await page.locator(`#events li.event[data-correlation-id="${created.cid}"] .ev-cid`).textContent();
    assert.ok(shown.includes(created.cid), 'the correlation id is visible');

    // 2. From the page's own form: the HTTP response and its correlation id are shown, and
    // the event it caused is highlighted as "your request".
    await page.fill('#project-name', 'from the page');
    const project = await submitForm(page, '#form-project');
    assert.match(project.summary, /POST \/api\/v1\/projects → 201/);
    const pageCid = project.cid;
    assert.match(pageCid, /\S{8,}/);
    await waitForRow(page, `.mine[data-type="project_created"][data-correlation-id="${pageCid}"]`);
    assert.match(await page.textContent('#http-body'), /from the page/);

    // 3. Publish a custom event from the page's form.
    await page.fill('#publish-type', 'demo.browser_test');
    await page.fill('#publish-payload', '{"answer": 42}');
    const published = await submitForm(page, '#form-publish');
    assert.match(published.summary, /POST \/api\/v1\/events → 202/);
    await waitForRow(page, `.mine[data-type="demo.browser_test"][data-correlation-id="${published.cid}"]`);

    // 4. The filter box applies through subscribe: other types stop arriving. Events on one
    // connection arrive in order, so once the later event is here the earlier one would be.
    await page.fill('#filter-types', 'project_created, scan_*');
    await page.click('#form-filter button[type="submit"]');
    await page.waitForFunction(() => document.getElementById('filter-active').textContent
      .includes('In force: project_created, scan_*'));
    await server.publish('demo.filtered_out', { n: 1 });
    const after = await server.request('POST', '/api/v1/projects', { name: 'after filter' });
    await waitForRow(page, `[data-correlation-id="${after.cid}"]`);
    assert.equal(await page.locator('#events li.event[data-type="demo.filtered_out"]').count(), 0);

    await page.click('#filter-clear');
    await page.waitForFunction(() => document.getElementById('filter-active').textContent
      .includes('In force: everything'));
    await server.publish('demo.visible_again', { n: 2 });
    await waitForRow(page, '[data-type="demo.visible_again"]');

    // 5. A scan from the page: its events carry the request's correlation id.
    const scan = await submitForm(page, '#form-scan');
    assert.match(scan.summary, /POST \/api\/v1\/videos\/scan → 202/);
    await waitForRow(page, `[data-type="scan_started"][data-correlation-id="${scan.cid}"]`, 20000);
    await waitForRow(page, `[data-type="scan_completed"][data-correlation-id="${scan.cid}"]`, 20000);

    await shot(page, 'page.png', { fullPage: true });
    assert.deepEqual(consoleLines.filter((l) => l.startsWith('[pageerror]')), []);
  } catch (err) {
    await shot(page, 'failure-load.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${server.output()}`;
    throw err;
  }
});

test('the hub panel shows connections, events per second, queued bytes and resyncs', { timeout: 90000 }, async (t) => {
  const { server, page, context } = await fixture(t);
  /** The panel's number for `id` (its data-value), once it has one. */
  const panelValue = (id) => page.evaluate((i) => document.getElementById(i).dataset.value, id);
  /** Waits until the panel's number for `id` compares with `n` as `op` says (=, >, >=). */
  const waitPanel = (id, op, n, timeout = 10000) => page.waitForFunction(
    ([i, o, k]) => {
      const raw = document.getElementById(i).dataset.value;
      if (raw === undefined || raw === '') return false;
      const v = Number(raw);
      return o === '=' ? v === k : o === '>' ? v > k : v >= k;
    },
    [id, op, n], { timeout, polling: 100 },
  );
  try {
    await waitUntilLive(page);
    // The page's own socket is one open connection; a second page makes two, and closing it one.
    await waitPanel('hub-connections', '=', 1);
    const other = await context.newPage();
    await other.goto(`${server.url}/`);
    await waitUntilLive(other);
    await waitPanel('hub-connections', '=', 2);
    await other.close();
    await waitPanel('hub-connections', '=', 1);

    // A burst of events shows in the next one-second sample as a rate, and in the sparkline.
    for (let i = 0; i < 30; i++) await server.publish('test.rate', { i });
    await waitPanel('hub-events-rate', '>', 0);
    const points = await page.getAttribute('#hub-spark polyline', 'points');
    assert.ok(points.trim().length > 0, 'the sparkline has points');

    // A socket with an invalid anchor gets resync_required, which the hub counts.
    await waitPanel('hub-resyncs', '>=', 0);
    const before = Number(await panelValue('hub-resyncs'));
    const reason = await page.evaluate((url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws?last_event_id=not-an-anchor`);
      ws.onmessage = (m) => {
        const frame = JSON.parse(m.data);
        if (frame.type === 'resync_required') { ws.close(); resolve(frame.payload.reason); }
      };
      ws.onerror = () => reject(new Error('websocket error'));
    }), server.url);
    assert.equal(reason, 'invalid');
    await waitPanel('hub-resyncs', '>', before);

    // Bytes queued: a figure when the server reports ferret_ws_queued_bytes, else it says so.
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const queued = page.locator('#hub-queued-bytes');
    if (/^ferret_ws_queued_bytes /m.test(metrics)) {
      await waitPanel('hub-queued-bytes', '>=', 0);
      assert.match(await queued.textContent(), /^\d+(\.\d)? (B|KiB|MiB)$/);
    } else {
      assert.match(await queued.textContent(), /not reported/);
    }
    assert.match(await page.textContent('#hub-status'), /updated/);
    await shot(page, 'hub-panel.png');
  } catch (err) {
    await shot(page, 'failure-hub-panel.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${server.output()}`;
    throw err;
  }
});

test('the first connect continues from the state the page fetched (X-Event-Head)', { timeout: 90000 }, async (t) => {
  let between = null;
  // The page's first state fetch gets its real response, but only after an event has been
  // published: the event comes after the state the page renders and before its connect.
  const beforeLoad = async (page, server) => {
    await page.route('**/health/ready', async (route) => {
      const response = await route.fetch();
      between = await server.publish('test.between_fetch_and_connect', {});
      await route.fulfill({ response });
    }, { times: 1 });
  };
  const { server, page } = await fixture(t, { beforeLoad });
  try {
    await waitUntilLive(page);
    assert.ok(between, 'the event was published between the fetch and the connect');
    await waitForRow(page, `[data-event-id="${between}"]`);
    const after = await server.publish('test.after_connect', {});
    await waitForRow(page, `[data-event-id="${after}"]`);
    const seen = (await rows(page)).map((r) => r.eventId);
    assert.deepEqual(seen.filter((id) => id === between), [between], 'exactly once');
    assert.equal(Number(await page.locator('#resync-notice').getAttribute('data-count')), 0,
      'no resync: the head anchor resumed cleanly');
  } catch (err) {
    await shot(page, 'failure-event-head.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${server.output()}`;
    throw err;
  }
});

test('a forced disconnect loses and duplicates nothing', { timeout: 90000 }, async (t) => {
  const { server, page } = await fixture(t);
  try {
    await waitUntilLive(page);
    const published = []; // event ids in publication order
    let n = 0;
    const pub = async () => { published.push(await server.publish('test.seq', { n: n++ })); };

    for (let i = 0; i < 5; i++) await pub();

    // Drop the socket and stay away until the server has noticed; publish meanwhile.
    await page.evaluate(() => window.ferret.reconnect({ delayMs: 2000 }));
    await waitForState(page, 'reconnecting');
    await until(async () => (await server.ready()).connections === 0,
      { what: 'the server to drop the connection' });
    for (let i = 0; i < 10; i++) await pub();
    await waitForState(page, 'open');

    // Around reconnects: publish steadily while the page drops its socket twice.
    for (let i = 0; i < 30; i++) {
      if (i === 8 || i === 20) {
        await page.evaluate(() => window.ferret.reconnect({ delayMs: 0 }));
      }
      await pub();
    }
    const sentinel = await server.publish('test.done', {});
    await waitForRow(page, `[data-event-id="${sentinel}"]`, 20000);

    const seen = (await rows(page)).filter((r) => r.type === 'test.seq');
    const ids = seen.map((r) => r.eventId);
    assert.equal(new Set(ids).size, ids.length, `duplicates: ${ids}`);
    assert.deepEqual(ids, published, 'every event once, in order');
    assert.deepEqual(seen.map((r) => JSON.parse(r.payload).n), [...Array(45).keys()]);
    const connects = Number(await page.textContent('#stat-connects'));
    assert.ok(connects >= 4, `the page reconnected (${connects} connects)`);
  } catch (err) {
    await shot(page, 'failure-disconnect.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${server.output()}`;
    throw err;
  }
});

test('after a server restart on the same port the page shows the resync notice and goes on', { timeout: 90000 }, async (t) => {
  const { server: first, page } = await fixture(t);
  let second = null;
  t.after(async () => { await second?.stop(); });
  try {
    await waitUntilLive(page);
    const before = await first.publish('test.before_restart', {});
    await waitForRow(page, `[data-event-id="${before}"]`);
    const oldEpoch = before.split('-')[0];
    assert.equal(await page.locator('#resync-notice').isVisible(), false);

    await first.stop();
    await page.waitForFunction(() => document.getElementById('conn-state').dataset.state !== 'open');
    second = await startOnPort(first.port);

    await page.locator('#resync-notice').waitFor({ state: 'visible', timeout: 20000 });
    assert.equal(await page.getAttribute('#resync-notice', 'data-reason'), 'unknown_epoch');
    const anchor = (await page.textContent('#resync-anchor')).trim();
    assert.equal(anchor.split('-')[0], oldEpoch, 'the notice names the old anchor');
    await waitUntilLive(page);

    const afterId = await second.publish('test.after_restart', { ok: true });
    await waitForRow(page, `[data-event-id="${afterId}"]`);
    assert.notEqual(afterId.split('-')[0], oldEpoch, 'a new epoch');
    // The page refetched state: it shows the new hub's epoch.
    await page.waitForFunction((e) => document.getElementById('hub-epoch').textContent === e,
      afterId.split('-')[0]);
    assert.equal(await page.locator('#events li.marker').count(), 1);
    await shot(page, 'resync.png');
  } catch (err) {
    await shot(page, 'failure-restart.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${(second ?? first).output()}`;
    throw err;
  }
});

/** Starts a server on `port`, retrying briefly while the old socket is still being released. */
async function startOnPort(port) {
  const deadline = Date.now() + 15000;
  for (;;) {
    try {
      return await Server.start({ port });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

test('a wrong token stops retrying and shows 4401', { timeout: 60000 }, async (t) => {
  const { server, page, context } = await fixture(t, { args: ['--token', 'right'], query: '?token=wrong' });
  try {
    await waitForState(page, 'failed');
    assert.equal(await page.getAttribute('#conn-state', 'data-code'), '4401');
    await page.locator('#fatal-notice').waitFor({ state: 'visible' });
    assert.equal((await page.textContent('#fatal-code')).trim(), '4401');
    assert.match(await page.textContent('#conn-state-text'), /4401/);

    // It stays failed: no second attempt within several first-backoff periods (0.5 s each).
    // This is an observation window for an absence, not a synchronisation sleep.
    const retried = await page.waitForFunction(
      () => Number(document.getElementById('stat-connects').textContent) > 1,
      null, { timeout: 3000 },
    ).then(() => true, () => false);
    assert.equal(retried, false, 'the client must not retry after 4401');
    assert.equal(await page.evaluate(() => window.ferret.state), 'failed');

    // The page's HTTP calls carry the same (wrong) token: 401 is shown.
    const refused = await submitForm(page, '#form-project');
    assert.match(refused.summary, /→ 401/);

    // With the right token the same page works end to end.
    const good = await context.newPage();
    await good.goto(`${server.url}/?token=right`);
    await waitUntilLive(good);
    const ok = await submitForm(good, '#form-project');
    assert.match(ok.summary, /→ 201/);
    await waitForRow(good, `[data-correlation-id="${ok.cid}"]`);
  } catch (err) {
    await shot(page, 'failure-token.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${server.output()}`;
    throw err;
  }
});

test('the watchdog reconnects when the server stops sending', { timeout: 90000 }, async (t) => {
  const { server, page } = await fixture(t, {
    args: ['--heartbeat-interval', '1s', '--liveness-timeout', '30s'],
  });
  try {
    await waitUntilLive(page);
    await page.waitForFunction(() => /every 1 s/.test(document.getElementById('heartbeat-info').textContent));
    await page.waitForFunction(() => document.getElementById('last-heartbeat').textContent !== '–');

    server.signal('SIGSTOP');
    await page.waitForFunction(
      () => Number(document.getElementById('stat-watchdog').textContent) >= 1 &&
        document.querySelector('#state-log li[data-state="reconnecting"][data-cause="watchdog"]'),
      null, { timeout: 20000, polling: 100 },
    );
    const state = await page.getAttribute('#conn-state', 'data-state');
    assert.notEqual(state, 'open');
    server.signal('SIGCONT');

    await waitUntilLive(page, 30000);
    const id = await server.publish('test.after_watchdog', {});
    await waitForRow(page, `[data-event-id="${id}"]`);
  } catch (err) {
    server.signal('SIGCONT');
    await shot(page, 'failure-watchdog.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${server.output()}`;
    throw err;
  }
});

test('cluster mode: a lost stream is an in-band resync on the open page, then events flow', { timeout: 90000 }, async (t) => {
  const redis = await Redis.start();
  if (!redis) {
    t.skip('no redis-server (run.sh installs it)');
    return;
  }
  t.after(() => redis.stop());
  const { server, page } = await fixture(t, {
    args: ['--redis', redis.url, '--heartbeat-interval', '500ms', '--liveness-timeout', '10s'],
  });
  try {
    await waitUntilLive(page);
    const before = await server.publish('test.before_flush', {});
    await waitForRow(page, `[data-event-id="${before}"]`);
    const connects = Number(await page.textContent('#stat-connects'));
    await redis.flushAll(); // Redis lost the stream: the node starts a new epoch
    await page.waitForFunction(
      () => Number(document.getElementById('resync-notice').dataset.count) > 0, null,
      { timeout: 15000 },
    );
    assert.equal(await page.getAttribute('#resync-notice', 'data-reason'), 'unknown_epoch');
    const after = await server.publish('test.after_flush', {});
    assert.notEqual(after.split('-')[0], before.split('-')[0], 'a new epoch');
    await waitForRow(page, `[data-event-id="${after}"]`);
    assert.equal(Number(await page.textContent('#stat-connects')), connects, 'no reconnect');
    assert.equal(await page.evaluate(() => window.ferret.state), 'open');
    await shot(page, 'cluster-resync.png');
  } catch (err) {
    await shot(page, 'failure-cluster-resync.png').catch(() => {});
    err.message += `\npage: ${JSON.stringify(await pageState(page))}\nserver:\n${server.output()}`;
    throw err;
  }
});
