// The page under load and when things go wrong: bursts of messages, crowded rooms, lost answers,
// a busy server, and names chosen to trip it up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import {
  clickRoom, eventually, join, launchBrowser, people, post, roomTexts, say, startServer, stopServer, texts, unread,
  viewing,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser.close(); });

// Posts `count` messages to general as fast as it can: `parallel` at a time over 32 keep-alive
// connections (fetch would be several times slower, and a slow burst is no burst).
async function postMany(url, count, parallel = 200) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const one = (i) => new Promise((resolve, reject) => {
    const body = JSON.stringify({ user: 'u' + (i % 7), text: 'burst ' + i });
    const req = http.request(url + '/messages', { method: 'POST', agent, headers: { 'Content-Type': 'application/json' } },
      (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
    req.end(body);
  });
  for (let i = 0; i < count; i += parallel) {
    const codes = await Promise.all(Array.from({ length: Math.min(parallel, count - i) }, (_, k) => one(i + k)));
    assert.ok(codes.every((c) => c === 201), 'every POST stored');
  }
  agent.destroy();
}

// A TCP proxy in front of the server whose stream connections can be made to go silent while
// staying open, as when a NAT or Wi-Fi change drops the path: nothing arrives, nothing fails.
function freezingProxy(port) {
  const pairs = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    const pair = { client, upstream, stream: false, frozen: false };
    pairs.push(pair);
    client.on('data', (d) => {
      // A stream may come on a connection that carried other requests first.
      if (d.toString('latin1').includes('GET /events')) pair.stream = true;
      if (!pair.frozen) upstream.write(d);
    });
    upstream.on('data', (d) => { if (!pair.frozen) client.write(d); });
    const end = () => { client.destroy(); upstream.destroy(); };
    for (const s of [client, upstream]) { s.on('error', end); s.on('close', end); }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${server.address().port}`,
    freezeStreams: () => {
      const open = pairs.filter((p) => p.stream && !p.client.destroyed);
      for (const p of open) p.frozen = true;
      return open.length;
    },
    close: () => { for (const p of pairs) { p.client.destroy(); p.upstream.destroy(); } server.close(); },
  })));
}

// Counts the insertions into the message list (DOM mutations that add nodes).
function countInsertions(page) {
  return page.evaluate(() => {
    window.insertions = 0;
    new MutationObserver((records) => { for (const r of records) if (r.addedNodes.length) window.insertions++; })
      .observe(document.getElementById('messages'), { childList: true });
  });
}

// The ids the page shows, top to bottom.
function shownIds(page) {
  return page.$$eval('#messages li', (els) => els.map((e) => Number(e.dataset.id)));
}

// Whether the message list is scrolled to its end (as the page decides it, within 40 px).
function atBottom(page) {
  return page.$eval('#messages', (l) => l.scrollHeight - l.scrollTop - l.clientHeight < 40);
}

test('a burst of thousands of messages: drawn in batches, in order, and the page keeps answering', async (t) => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'reader');
    await page.waitForSelector('#status.connected');
    await countInsertions(page);
    const count = 5000;
    let posted = false;
    const posting = postMany(server.url, count).then(() => { posted = true; });
    // While the burst comes in, the page answers: some look finds part of it drawn, not the end.
    const looks = [];
    while (!posted) {
      looks.push(await page.evaluate(() => document.querySelector('#messages li:last-child')?.dataset.id));
    }
    await posting;
    const kept = (await (await fetch(server.url + '/messages?limit=1000')).json()).map((m) => m.id);
    assert.equal(kept.length, 1000);
    assert.ok(looks.some((id) => id !== undefined && id !== String(kept.at(-1))), 'a look while the burst was drawn');
    // The page keeps a room's newest 1,000: exactly those, in id order, none twice.
    await eventually(async () => (await shownIds(page)).at(-1) === kept.at(-1), 'the last message');
    assert.deepEqual(await shownIds(page), kept);
    // Many messages at a time (one layout for each batch), not one message at a time (one or two each).
    const insertions = await page.evaluate(() => window.insertions);
    t.diagnostic(`${count} messages drawn in ${insertions} insertions`);
    assert.ok(insertions < count / 10, `${count} messages drawn in ${insertions} insertions`);
    assert.ok(await atBottom(page), 'a reader at the bottom stays there');
    assert.equal(await page.isVisible('#new-messages'), false);
    // A reader who scrolled up stays where they are, told that new messages came.
    await page.$eval('#messages', (l) => { l.scrollTop = 0; });
    assert.equal(await post(server.url, 'u1', 'after the burst'), 201);
    await eventually(async () => (await texts(page)).at(-1) === 'after the burst', 'the next message');
    assert.equal(await page.$eval('#messages', (l) => l.scrollTop), 0);
    assert.equal(await page.isVisible('#new-messages'), true);
    assert.equal((await shownIds(page)).length, 1000);
  } finally {
    await stopServer(server);
  }
});

// Opens the page with a clock the test can move forward (the stream check runs at each 30 s poll
// of GET /rooms, then waits 5 s): `poll()` runs one such check to its end.
async function joinWithClock(context, url, name) {
  const page = await context.newPage();
  await page.clock.install();
  await page.goto(url + '/');
  await page.fill('#name', name);
  await page.click('#join button[type=submit]');
  await page.waitForSelector('#composer:not([hidden])');
  await eventually(async () => (await page.textContent('#status')) === 'connected', 'the stream');
  const poll = async () => {
    const polled = page.waitForResponse((r) => r.url().includes('/rooms?limit=50'));
    await page.clock.fastForward(30000);
    await polled;
    await page.clock.fastForward(6000);
  };
  return { page, poll };
}

// The page checks its stream against GET /rooms, which it polls anyway: a message the stream has
// not delivered 5 s after the server named it reopens the stream from its last id.
test('a stream whose connection went silent is noticed and reopened, and nothing is lost', async () => {
  const server = await startServer(['--post-rate', '0']);
  const proxy = await freezingProxy(server.port);
  try {
    const { page, poll } = await joinWithClock(await browser.newContext(), proxy.url, 'wanderer');
    assert.equal(await post(server.url, 'bob', 'before'), 201);
    await eventually(async () => (await texts(page)).includes('before'), 'the first message');
    assert.equal(proxy.freezeStreams(), 1);
    assert.equal(await post(server.url, 'bob', 'while the path was gone'), 201);
    await poll();
    await eventually(async () => JSON.stringify(await texts(page)) === JSON.stringify(['before', 'while the path was gone']),
      'the message, through a new stream');
    assert.equal(await page.textContent('#status'), 'connected');
  } finally {
    proxy.close();
    await stopServer(server);
  }
});

// A room keeping no messages may have a last id all the same (one made again after --max-rooms
// forgot it keeps the one it had): no message of it is owed, and a healthy stream is left alone.
test('a quiet stream carrying a room with a last id but no messages is not reopened', async () => {
  const server = await startServer(['--post-rate', '0', '--max-rooms', '3']);
  try {
    const { page, poll } = await joinWithClock(await browser.newContext(), server.url, 'alice');
    for (const room of ['x', 'y', 'z']) assert.equal(await post(server.url, 'bob', 'hi', { room }), 201);
    const rooms = await (await fetch(server.url + '/rooms')).json();
    assert.ok(!rooms.some((d) => d.room === 'x'), 'x was forgotten');
    await page.fill('#room-name', 'x');
    await page.press('#room-name', 'Enter');
    await eventually(async () => {
      const x = (await (await fetch(server.url + '/rooms')).json()).find((d) => d.room === 'x');
      return x && x.messages === 0 && x.last_id > 0;
    }, 'x made again, with its last id and no messages');
    const opened = [];
    page.on('request', (r) => { if (r.url().includes('/events?')) opened.push(r.url()); });
    await eventually(async () => (await page.textContent('#status')) === 'connected', 'the stream');
    const before = opened.length;
    await poll();
    await poll();
    assert.equal(opened.length, before, 'the stream was reopened');
  } finally {
    await stopServer(server);
  }
});

test('a room with a hundred named readers still shows its messages and the composer', async () => {
  const server = await startServer(['--post-rate', '0', '--subscribe-rate', '0', '--max-streams-per-ip', '0',
    '--max-connections-per-ip', '0']);
  const readers = new AbortController();
  try {
    for (let i = 0; i < 99; i++) {  // and the tester: the 100 names presence lists at most
      const name = encodeURIComponent(`reader${i}-`.padEnd(32, 'x'));  // the longest name allowed
      await fetch(`${server.url}/events?user=${name}`, { signal: readers.signal });
    }
    for (const viewport of [{ width: 1280, height: 720 }, { width: 375, height: 700 }]) {
      const page = await join(await browser.newContext({ viewport }), server.url, 'tester');
      await eventually(async () => (await people(page)).length === 100, 'all 100 readers listed');
      await say(page, 'can you see me');
      await eventually(async () => (await texts(page)).includes('can you see me'), 'the message');
      const fits = await page.evaluate(() => {
        const box = (id) => document.getElementById(id).getBoundingClientRect();
        const names = document.getElementById('people');
        return {
          composer: box('composer').top >= 0 && box('composer').bottom <= innerHeight,
          messages: box('messages').height / innerHeight,
          namesScroll: names.scrollHeight > names.clientHeight,
        };
      });
      assert.ok(fits.composer, `the composer is on screen at ${viewport.width}px`);
      assert.ok(fits.messages > 0.4, `the messages have ${Math.round(fits.messages * 100)}% of the height at ${viewport.width}px`);
      assert.ok(fits.namesScroll, 'the names that do not fit scroll');
      assert.ok(await page.isVisible('#messages li:last-child'));
      await page.context().close();
    }
  } finally {
    readers.abort();
    await stopServer(server);
  }
});

// Lets each POST reach the server but loses its answer, as a reset connection or a proxy would.
async function loseAnswers(page, nonces) {
  const state = { lose: true };
  await page.route('**/messages', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    nonces.push(JSON.parse(route.request().postData()).nonce);
    if (!state.lose) return route.continue();
    await route.fetch();  // stored, and answered...
    await route.abort('connectionreset');  // ...but the answer never reaches the page
  });
  return state;
}

test('a message whose answers were all lost says it may not have been sent, and sending again posts it once', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'tester');
    const nonces = [];
    const answers = await loseAnswers(page, nonces);
    await say(page, 'important message');
    await page.waitForSelector('#error:not([hidden])', { timeout: 30000 });
    assert.match(await page.textContent('#error'), /may not have been sent.*will not be posted twice/);
    assert.equal(await page.inputValue('#text'), 'important message');
    answers.lose = false;
    await page.press('#text', 'Enter');  // as the page suggests
    await eventually(async () => (await page.inputValue('#text')) === '' && !(await page.isVisible('#error')), 'sent');
    assert.deepEqual(await roomTexts(server.url, 'general'), ['important message']);
    assert.ok(nonces.length > 2 && new Set(nonces).size === 1, 'every attempt, the resend too, had one nonce');
    await eventually(async () => (await texts(page)).length === 1, 'the message shown');
    assert.deepEqual(await texts(page), ['important message']);
    // Once it went through, the same text sent again is a message of its own.
    await say(page, 'important message');
    await eventually(async () => (await roomTexts(server.url, 'general')).length === 2, 'the second message');
    assert.equal(new Set(nonces).size, 2);
  } finally {
    await stopServer(server);
  }
});

test('while a busy server is retried the page says so, and the message then arrives once', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'patient');
    const nonces = [];
    await page.route('**/messages', async (route) => {
      if (route.request().method() !== 'POST') return route.continue();
      nonces.push(JSON.parse(route.request().postData()).nonce);
      if (nonces.length > 2) return route.continue();
      // As the server answers while its storage fails.
      return route.fulfill({ status: 503, headers: { 'Retry-After': '1' }, contentType: 'application/json',
        body: JSON.stringify({ error: 'storage failing: disk full' }) });
    });
    await say(page, 'sent while busy');
    await page.waitForSelector('#send-status:not([hidden])');
    assert.match(await page.textContent('#send-status'), /busy.*disk full.*retrying/);
    assert.equal(await page.isDisabled('#text'), true);
    await eventually(async () => (await texts(page)).includes('sent while busy'), 'the retried message');
    await eventually(async () => !(await page.isVisible('#send-status')), 'the retry note gone');
    assert.equal(await page.isVisible('#error'), false);
    assert.equal(await page.inputValue('#text'), '');
    assert.equal(nonces.length, 3);
    assert.equal(new Set(nonces).size, 1);
    assert.deepEqual(await roomTexts(server.url, 'general'), ['sent while busy']);
  } finally {
    await stopServer(server);
  }
});

test('the room "__proto__" remembers how far it was read, like any other', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    let page = await join(context, server.url, 'alice', '/#__proto__');
    assert.equal(await viewing(page), '#__proto__');
    assert.equal(await post(server.url, 'bob', 'seen', { room: '__proto__' }), 201);
    await eventually(async () => (await texts(page)).join('|') === 'seen', 'the message seen');
    await clickRoom(page, 'general');
    await eventually(() => page.evaluate(() => {
      const seen = JSON.parse(localStorage.getItem('sse-chat-seen') || '{}');
      return Object.hasOwn(seen, '__proto__') && seen.__proto__ > 0;
    }), 'how far __proto__ was read, saved');
    await page.close();
    for (const t of ['while', 'away']) assert.equal(await post(server.url, 'bob', t, { room: '__proto__' }), 201);
    page = await context.newPage();
    await page.goto(server.url + '/');
    await eventually(async () => await unread(page, '__proto__') === 2, 'two unread in __proto__');
    await clickRoom(page, '__proto__');
    await eventually(async () => (await texts(page)).join('|') === 'seen|while|away', 'all of __proto__');
  } finally {
    await stopServer(server);
  }
});

test('a room name from a link is isolated in the error it gets, so bidi controls cannot reorder it', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'alice');
    // A right-to-left override; and one after a U+2069 that would end an isolate made of characters.
    for (const name of ['\u202Enoitcennoc-ruoy-yfirev', '\u2069\u202Eesaelp']) {
      await page.goto(server.url + '/#' + encodeURIComponent(name));
      await page.waitForSelector('#room-error:not([hidden])');
      const parts = await page.$eval('#room-error', (el) => [...el.childNodes].map((n) => [n.nodeName, n.textContent]));
      assert.deepEqual(parts[1], ['BDI', name]);
      assert.deepEqual(parts[0], ['#text', '“']);
      assert.match(parts[2][1], /^” is not a room name/);
      assert.equal(parts.length, 3);
      assert.equal(await viewing(page), '#general');
    }
  } finally {
    await stopServer(server);
  }
});
