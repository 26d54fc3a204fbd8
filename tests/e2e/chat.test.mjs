// The chat page as a person uses it, in a real browser against the real server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import {
  closeLeader, eventually, join, launchBrowser, metric, openTabs, post, roles, roomTexts, say, startServer,
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

test('the page loads with no failed request and no console error (its icon included)', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await browser.newPage();
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page: ${e.message}`));
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`); });
    page.on('requestfailed', (r) => {
      if (!r.url().includes('/events')) problems.push(`failed ${r.url()}`);  // the stream closes at the end
    });
    await page.goto(server.url, { waitUntil: 'networkidle' }).catch(() => {});
    await eventually(async () => (await page.evaluate(() => document.readyState)) === 'complete', 'loaded');
    const icon = await page.evaluate(async () => (await fetch('favicon.svg')).status);
    assert.equal(icon, 200);
    assert.deepEqual(problems, []);
    await page.close();
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

test('ids issued again after the server lost its data: every tab shows exactly what the server has', async () => {
  const data = tempDir();
  const args = ['--post-rate', '0', '--data-dir', data, '--retry', '2000'];
  let server = await startServer(args);
  const port = server.port;
  try {
    // Two tabs: the leader gets the reset from the stream, the other has it relayed.
    const tabs = await openTabs(await browser.newContext(), server.url, 2, 'watcher');
    for (let i = 1; i <= 5; i++) assert.equal(await post(server.url, 'curl', `old ${i}`), 201);
    for (const t of tabs) await eventually(async () => (await texts(t)).length === 5, 'the first five');
    // Like a power failure before anything reached the disk: the server comes back with nothing
    // and issues ids 1, 2, … again.
    const loseEverything = async () => {
      await stopServer(server, 'SIGKILL');
      for (const f of readdirSync(data)) rmSync(joinPath(data, f), { recursive: true });
      server = await startServer([...args, '--listen', `127.0.0.1:${port}`]);
    };
    await loseEverything();
    // The stream resumes from id 5, newer than anything the server has: `reset`, and the page
    // drops what the server no longer has.
    for (const t of tabs) {
      await eventually(async () => (await texts(t)).length === 0 && await t.isVisible('#notice'), 'the lost messages gone');
      assert.match(await t.textContent('#notice'), /#general/);
      assert.doesNotMatch(await t.textContent('#notice'), /\d+–\d+/, 'no range of ids the server does not keep');
    }
    const fresh = [1, 2, 3, 4, 5, 6, 7].map((i) => `new ${i}`);
    for (const t of fresh) assert.equal(await post(server.url, 'curl', t), 201);
    for (const t of tabs) await eventually(async () => (await texts(t)).join('|') === fresh.join('|'), 'the seven new ones');
    assert.deepEqual(await roomTexts(server.url, 'general'), fresh);
    // A tab opened now, and the tabs after a later message, agree with the server.
    const late = await join(tabs[0].context(), server.url, 'watcher');
    assert.equal(await post(server.url, 'curl', 'new 8'), 201);
    const all = [...tabs, late];
    for (const t of all) await eventually(async () => (await texts(t)).join('|') === [...fresh, 'new 8'].join('|'), 'new 8');

    // Again, and this time ids 1 and 2 name new messages before the page is back (it retries
    // after 2 s): what it held with those ids is gone too.
    await loseEverything();
    for (const t of ['again 1', 'again 2']) assert.equal(await post(server.url, 'curl', t), 201);
    for (const t of all) {
      await eventually(async () => (await texts(t)).join('|') === 'again 1|again 2', 'only what the server has');
      assert.match(await t.textContent('#notice'), /server lost the (latest )?messages of #general/);
    }
    assert.equal(await post(server.url, 'curl', 'again 3'), 201);
    for (const t of all) await eventually(async () => (await texts(t)).join('|') === 'again 1|again 2|again 3', 'again 3');
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

test('a message a proxy answered 502 is retried with the same nonce and arrives once', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'proxied');
    const bodies = [];
    // As nginx answers when the node it sent the POST to closed the connection (a rolling restart).
    await page.route('**/messages', async (route) => {
      if (route.request().method() !== 'POST') return route.continue();
      bodies.push(route.request().postData());
      if (bodies.length === 1) return route.fulfill({ status: 502, contentType: 'text/html', body: '<html>502 Bad Gateway</html>' });
      return route.continue();
    });
    await say(page, 'through a restart');
    await eventually(async () => (await texts(page)).includes('through a restart'), 'the retried message');
    assert.equal(bodies.length, 2);
    assert.equal(JSON.parse(bodies[0]).nonce, JSON.parse(bodies[1]).nonce);
    assert.deepEqual(await roomTexts(server.url, 'general'), ['through a restart']);
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

test('names and texts in any script: the author, the time and the text keep their order', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'watcher');
    // A right-to-left name, a name ending in RIGHT-TO-LEFT OVERRIDE, a right-to-left text.
    const sent = [['שרה', 'hello'], ['evil\u202E', 'hi'], ['alice', 'שלום!']];
    for (const [user, text] of sent) assert.equal(await post(server.url, user, text), 201);
    await eventually(async () => (await texts(page)).length === 3, 'the three messages');
    const lines = await page.$$eval('#messages .message', (items) => items.map((li) => {
      // Where each character of an element's text is drawn, in logical order.
      const xs = (el) => {
        const node = el.firstChild;
        const range = document.createRange();
        return [...node.data].map((_, i) => {
          range.setStart(node, i);
          range.setEnd(node, i + 1);
          return range.getBoundingClientRect().left;
        });
      };
      const author = li.querySelector('.author').getBoundingClientRect();
      const time = li.querySelector('time');
      const text = li.querySelector('.text');
      return {
        nameBeforeTime: author.right <= time.getBoundingClientRect().left + 0.5,
        time: xs(time).filter((_, i) => /\S/.test(time.textContent[i])),
        textDir: text.getAttribute('dir'),
        text: xs(text),
      };
    }));
    for (const [i, line] of lines.entries()) {
      assert.ok(line.nameBeforeTime, `the name of ${sent[i][0]} comes before the time`);
      assert.ok(line.time.every((x, j) => j === 0 || x > line.time[j - 1]), `the time after ${sent[i][0]} reads left to right`);
      assert.equal(line.textDir, 'auto');
    }
    // A right-to-left text reads right to left: its "!" is drawn leftmost.
    assert.equal(Math.min(...lines[2].text), lines[2].text.at(-1));
  } finally {
    await stopServer(server);
  }
});

// Half of an emoji in a nickname (a broken paste) cannot be sent, nor put in the stream's URL:
// refused as it is typed, and one an older page kept is asked for again, not used.
test('a nickname with half a character in it is refused, and one kept from before is asked for again', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(server.url);
    await page.waitForSelector('#join:not([hidden])');
    // Made in the page: a lone surrogate sent over the protocol arrives as U+FFFD.
    await page.evaluate(() => { document.getElementById('name').value = 'ann' + String.fromCharCode(0xD83D); });
    await page.click('#join button[type=submit]');
    await page.waitForSelector('#name-error:not([hidden])');
    assert.match(await page.textContent('#name-error'), /half a character/);
    assert.equal(await page.isVisible('#composer'), false);

    await page.evaluate(() => localStorage.setItem('sse-chat-name', 'bob' + String.fromCharCode(0xDE00)));
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.reload();
    await page.waitForSelector('#join:not([hidden])');
    await eventually(async () => (await page.textContent('#status')) === 'connected', 'the stream');
    assert.equal(await post(server.url, 'carl', 'hello'), 201);
    await eventually(async () => JSON.stringify(await texts(page)) === '["hello"]', 'the message, live');
    assert.deepEqual(errors, []);
  } finally {
    await stopServer(server);
  }
});

test('names and texts are counted in characters as the server counts them, never cut short', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(server.url);
    await page.waitForSelector('#join:not([hidden])');
    // Emoji are two UTF-16 units but one character: 32 of them are a valid name, 33 are not.
    await page.fill('#name', '🙂'.repeat(33));
    await page.click('#join button[type=submit]');
    await page.waitForSelector('#name-error:not([hidden])');
    assert.match(await page.textContent('#name-error'), /at most 32 characters/);
    assert.equal(await page.isVisible('#composer'), false);
    const name = '🙂'.repeat(32);
    await page.fill('#name', name);
    await page.click('#join button[type=submit]');
    await page.waitForSelector('#composer:not([hidden])');
    assert.equal(await page.isVisible('#name-error'), false);

    const text = '🎉'.repeat(1500);
    await say(page, text);
    await eventually(async () => (await texts(page)).length === 1, 'the message');
    const [stored] = await (await fetch(server.url + '/messages?room=general')).json();
    assert.equal([...stored.text].length, 1500, 'all 1500 characters sent');
    assert.equal(stored.user, name);
    assert.equal(await page.inputValue('#text'), '');

    // Half of an emoji (a broken paste) has no UTF-8 form: said so, nothing sent.
    await page.evaluate(() => { document.getElementById('text').value = 'broken ' + String.fromCharCode(0xD83D); });
    await page.press('#text', 'Enter');
    await page.waitForSelector('#error:not([hidden])');
    assert.match(await page.textContent('#error'), /half a character/);
    assert.equal((await roomTexts(server.url, 'general')).length, 1);

    // Over the server's 2000 characters: said so, nothing sent, and the text is kept.
    const long = '🎉'.repeat(2001);
    await say(page, long);
    await page.waitForSelector('#error:not([hidden])');
    assert.match(await page.textContent('#error'), /at most 2000 characters/);
    assert.equal(await page.inputValue('#text'), long);
    assert.equal((await roomTexts(server.url, 'general')).length, 1);
    // Exactly 2000 is fine, and clears the error.
    await say(page, '🎉'.repeat(2000));
    await eventually(async () => (await roomTexts(server.url, 'general')).length === 2, 'the 2000-character message');
    assert.equal([...(await roomTexts(server.url, 'general'))[1]].length, 2000);
    await eventually(async () => !(await page.isVisible('#error')), 'the error cleared');
  } finally {
    await stopServer(server);
  }
});
