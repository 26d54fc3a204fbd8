// The chat page as a person uses it, in a real browser against the real server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import {
  closeLeader, eventually, join, launchBrowser, metric, openTabs, post, roles, say, startServer,
  stopServer, tempDir, texts,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser.close(); });

test('two people chat both ways', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const alice = await join(await browser.newContext(), server.url, 'alice');
    const bob = await join(await browser.newContext(), server.url, 'bob');
    await say(alice, 'hi bob');
    await say(bob, 'hello alice');
    for (const page of [alice, bob]) {
      await eventually(async () => (await texts(page)).join('|') === 'hi bob|hello alice', 'both messages');
    }
    // Own messages are set apart; Shift+Enter makes a newline rather than sending.
    assert.equal(await alice.$$eval('#messages .mine', (els) => els.length), 1);
    await alice.fill('#text', 'line one');
    await alice.press('#text', 'Shift+Enter');
    await alice.type('#text', 'line two');
    await alice.press('#text', 'Enter');
    await eventually(async () => (await texts(bob)).includes('line one\nline two'), 'the two-line message');
  } finally {
    await stopServer(server);
  }
});

test('message text is shown literally, never as markup', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'mallory');
    let dialogs = 0;
    page.on('dialog', async (d) => { dialogs++; await d.dismiss(); });
    const evil = ['<img src=x onerror=alert(1)>', '</script><script>alert(2)</script>'];
    for (const t of evil) await say(page, t);
    await eventually(async () => (await texts(page)).length === 2, 'both messages');
    assert.deepEqual(await texts(page), evil);
    assert.equal(await page.$$eval('#messages img, #messages script', (els) => els.length), 0);
    assert.equal(dialogs, 0);
  } finally {
    await stopServer(server);
  }
});

test('a restart loses nothing: messages posted during the outage appear exactly once', async () => {
  const data = tempDir();
  let server = await startServer(['--post-rate', '0', '--data-dir', data, '--retry', '3000']);
  const port = server.port;
  try {
    const page = await join(await browser.newContext(), server.url, 'watcher');
    assert.equal(await post(server.url, 'curl', 'before'), 201);
    await eventually(async () => (await texts(page)).includes('before'), 'the first message');
    await stopServer(server);
    await eventually(async () => (await page.textContent('#status')) !== 'connected', 'the page to notice');
    server = await startServer(['--post-rate', '0', '--data-dir', data, '--retry', '3000', '--listen', `127.0.0.1:${port}`]);
    for (const t of ['during 1', 'during 2', 'during 3']) assert.equal(await post(server.url, 'curl', t), 201);
    await eventually(async () => (await texts(page)).length === 4, 'the messages from the outage');
    assert.deepEqual(await texts(page), ['before', 'during 1', 'during 2', 'during 3']);
    await eventually(async () => (await page.textContent('#status')) === 'connected', 'the reconnect');
  } finally {
    await stopServer(server);
  }
});

test('a message sent while storage fails is retried and arrives once', async () => {
  const data = joinPath(tempDir(), 'data');
  const server = await startServer(['--post-rate', '0', '--data-dir', data]);
  try {
    const page = await join(await browser.newContext(), server.url, 'patient');
    await say(page, 'stored');
    await eventually(async () => (await texts(page)).includes('stored'), 'the first message');
    // A file where the data directory was: POSTs get 503 until it is gone (the server would
    // otherwise rebuild a removed directory within a second, maybe before the POST arrives).
    rmSync(data, { recursive: true });
    writeFileSync(data, 'not a directory');
    await say(page, 'sent during the failure');
    await eventually(async () => (await metric(server.url, 'ssechat_rejected_total{reason="storage_unavailable"}')) >= 1,
      'the first attempt refused');
    rmSync(data);  // the server recovers; the page's retry, with the same nonce, gets through
    await eventually(async () => (await texts(page)).includes('sent during the failure'), 'the retried message');
    assert.deepEqual(await texts(page), ['stored', 'sent during the failure']);
    assert.equal(await page.isVisible('#error'), false);
  } finally {
    await stopServer(server);
  }
});

test('a plain EventSource refused for now comes back by itself', async () => {
  const server = await startServer(['--max-streams-per-ip', '1', '--post-rate', '0']);
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(server.url + '/healthz');
    await page.evaluate(() => {
      window.log = { closedForGood: false, messages: [] };
      window.first = new EventSource('/events');
      window.second = new EventSource('/events');  // over the cap: refused for now
      window.second.onmessage = (e) => window.log.messages.push(JSON.parse(e.data).text);
      window.second.onerror = () => {
        if (window.second.readyState === EventSource.CLOSED) window.log.closedForGood = true;
      };
    });
    await eventually(async () => (await metric(server.url, 'ssechat_rejected_total{reason="streams_per_ip"}')) >= 1,
      'the refusal');
    await page.evaluate(() => window.first.close());
    // It comes back by itself after its retry time; a live stream gets what is posted from then on.
    await eventually(async () => {
      assert.equal(await post(server.url, 'curl', 'you are back'), 201);
      return (await page.evaluate(() => window.log.messages)).includes('you are back');
    }, 'a message on the second stream', 40000);
    assert.equal(await page.evaluate(() => window.log.closedForGood), false);
  } finally {
    await stopServer(server);
  }
});

test('three tabs share one stream, and another tab takes over when the leader closes', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    const tabs = await openTabs(context, server.url, 3, 'tabby');
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 1, 'one stream');
    assert.equal((await roles(tabs)).filter((r) => r === 'leader').length, 1);
    assert.equal(await post(server.url, 'curl', 'to every tab'), 201);
    for (const t of tabs) await eventually(async () => (await texts(t)).includes('to every tab'), 'relay');
    // The server still sees exactly one stream, not three.
    assert.equal(await metric(server.url, 'ssechat_sse_clients'), 1);

    const rest = await closeLeader(tabs);
    assert.equal(await post(server.url, 'curl', 'after handover'), 201);
    for (const t of rest) await eventually(async () => (await texts(t)).includes('after handover'), 'relay after handover');
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 1, 'one stream after handover');
  } finally {
    await stopServer(server);
  }
});

test('a 429 reaches the person, and the page fits a phone', async () => {
  const server = await startServer(['--post-rate', '0.2', '--post-burst', '1']);
  try {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const page = await join(context, server.url, 'speedy');
    await say(page, 'first');
    await eventually(async () => (await texts(page)).includes('first'), 'the first message');
    await say(page, 'second, too soon');
    await page.waitForSelector('#error:not([hidden])');
    const error = await page.textContent('#error');
    assert.match(error, /too fast/);
    assert.match(error, /try again in \d+s/);
    assert.equal(await page.inputValue('#text'), 'second, too soon');  // kept for another try
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no horizontal scrolling at phone width (page is ${width}px wide)`);
    const dir = process.env.SCREENSHOT_DIR || 'build-test';
    mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: joinPath(dir, 'phone.png') });
  } finally {
    await stopServer(server);
  }
});
