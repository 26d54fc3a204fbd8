// Signed tokens (--jwt-key) as a person meets them: signed in through the sse_chat_token cookie,
// not signed in, reading public or read-only rooms, and a sign-in that runs out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  clickRoom, contextWithToken, goRoom, eventually, joinedRooms, jwtKey, launchBrowser, makeToken, metric, openSigned,
  people, postAs, say, startServer, stopServer, texts, viewing,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser.close(); });

const sameList = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Every stream the pages of a context ask for: its rooms and the status it was answered with.
function watchStreams(context) {
  const streams = [];
  context.on('response', (r) => {
    const url = new URL(r.url());
    if (url.pathname === '/events') streams.push({ rooms: url.searchParams.getAll('room').sort(), status: r.status() });
  });
  return streams;
}

test('signed in: the name comes from the token, and messages go out under it', async () => {
  const key = jwtKey();
  const server = await startServer(['--post-rate', '0', '--jwt-key', key]);
  try {
    const signIn = async (sub, name) =>
      openSigned(await contextWithToken(browser, server.url, makeToken(key, { sub, name, rooms: ['*'] })), server.url);
    const alice = await signIn('alice', 'Alice');
    const bob = await signIn('bob', 'Bob');
    assert.equal(await alice.textContent('#who'), 'Signed in as Alice');
    for (const page of [alice, bob]) {
      assert.equal(await page.isVisible('#join'), false, 'no nickname box');
      assert.equal(await page.isVisible('#rename'), false);
      assert.equal(await page.isVisible('#auth-notice'), false);
      await page.waitForSelector('#composer:not([hidden])');
    }
    // Nobody typed a name: the server names the author after the token.
    await say(alice, 'hello from a token');
    await eventually(async () => sameList(await texts(bob), ['hello from a token']), "alice's message at bob's");
    assert.equal(await bob.textContent('#messages .author'), 'Alice · ');
    await eventually(async () => sameList(await texts(alice), ['hello from a token']), "alice's own message");
    assert.equal(await alice.$$eval('#messages .mine', (els) => els.length), 1);
    await say(bob, 'hi Alice');
    await eventually(async () => (await texts(alice)).includes('hi Alice'), "bob's answer");
    // Who is online goes by the tokens' names too.
    await eventually(async () => sameList(await people(alice), ['Alice', 'Bob']), 'Alice and Bob online');
    await goRoom(alice, 'team-a');
    await say(alice, 'in team-a');
    await eventually(async () => (await texts(alice)).includes('in team-a'), 'a message in another room');
  } finally {
    await stopServer(server);
  }
});

test('not signed in: the page says so, offers no composer and opens no stream', async () => {
  const key = jwtKey();
  const server = await startServer(['--post-rate', '0', '--jwt-key', key]);
  try {
    const context = await browser.newContext();
    const streams = watchStreams(context);
    const page = await openSigned(context, server.url);
    assert.match(await page.textContent('#auth-notice'), /^Sign-in needed: send a token/);
    assert.equal(await page.isVisible('#composer'), false);
    assert.equal(await page.isVisible('#join'), false);
    assert.equal(await page.isVisible('#who'), false);
    assert.match(await page.textContent('#composer-note'), /Sign in to read #general/);
    await eventually(async () => (await page.textContent('#status')) === 'not signed in', 'the status');
    // A room it may not read is not joined.
    await page.fill('#room-name', 'team-a');
    await page.press('#room-name', 'Enter');
    await page.waitForSelector('#room-error:not([hidden])');
    assert.match(await page.textContent('#room-error'), /Sign in to read #team-a/);
    assert.equal(await viewing(page), '#general');
    assert.deepEqual(await joinedRooms(page), ['general']);
    assert.deepEqual(streams, [], 'no stream the server would refuse');
    assert.equal(await metric(server.url, 'ssechat_rejected_total{reason="unauthorized"}') || 0, 0);

    // A token the server refuses: its reason is shown.
    const refused = await openSigned(await contextWithToken(browser, server.url, 'not-a-token'), server.url);
    assert.match(await refused.textContent('#auth-notice'), /^Sign-in needed: token is not a JWT/);
    assert.equal(await refused.isVisible('#composer'), false);
  } finally {
    await stopServer(server);
  }
});

test('public rooms are read without signing in, and only those are streamed', async () => {
  const key = jwtKey();
  const server = await startServer(['--post-rate', '0', '--jwt-key', key, '--public-rooms', 'lobby,pub-*']);
  const poster = makeToken(key, { sub: 'carol', name: 'Carol', rooms: ['*'] });
  try {
    assert.equal(await postAs(server.url, poster, 'earlier', { room: 'lobby' }), 201);
    const context = await browser.newContext();
    const streams = watchStreams(context);
    const page = await openSigned(context, server.url, '/#lobby');
    assert.match(await page.textContent('#auth-notice'), /Sign-in needed.*you may read #lobby, #pub-\*/);
    assert.equal(await viewing(page), '#lobby');
    await eventually(async () => sameList(await texts(page), ['earlier']), "lobby's history");
    assert.equal(await page.isVisible('#composer'), false);
    assert.match(await page.textContent('#composer-note'), /Sign in to post to #lobby/);
    await eventually(async () => (await page.textContent('#status')) === 'connected', 'the stream');
    assert.equal(await postAs(server.url, poster, 'live in the lobby', { room: 'lobby' }), 201);
    await eventually(async () => (await texts(page)).includes('live in the lobby'), 'the live message');
    await goRoom(page, 'pub-news');
    assert.equal(await postAs(server.url, poster, 'public news', { room: 'pub-news' }), 201);
    await eventually(async () => sameList(await texts(page), ['public news']), 'the other public room');
    // general is joined (it always is) but not public: shown as such, never streamed.
    await clickRoom(page, 'general');
    assert.match(await page.textContent('#composer-note'), /Sign in to read #general/);
    assert.ok(streams.length > 0);
    for (const s of streams) {
      assert.equal(s.status, 200);
      assert.ok(s.rooms.every((r) => r === 'lobby' || r.startsWith('pub-')), `only public rooms: ${s.rooms}`);
    }
  } finally {
    await stopServer(server);
  }
});

test('signing in while another tab holds the stream: every tab gets its rooms live', async () => {
  const key = jwtKey();
  const server = await startServer(['--post-rate', '0', '--jwt-key', key, '--public-rooms', 'lobby']);
  const token = makeToken(key, { sub: 'dana', name: 'Dana', rooms: ['*'] });
  try {
    const context = await browser.newContext();
    const first = await openSigned(context, server.url, '/#lobby');  // not signed in: the leader
    await eventually(async () => (await first.textContent('#status')) === 'connected', 'the lobby stream');
    await context.addCookies([{ name: 'sse_chat_token', value: token, url: server.url }]);
    const second = await openSigned(context, server.url, '/#team-a');  // signed in
    assert.equal(await second.textContent('#who'), 'Signed in as Dana');
    await eventually(async () => (await first.textContent('#who')) === 'Signed in as Dana', 'the first tab signed in too');
    // The leader's stream now carries team-a: a message there reaches the tab that shows it.
    await eventually(async () => {
      if (await postAs(server.url, token, 'live in team-a', { room: 'team-a' }) !== 201) return false;
      return (await texts(second)).includes('live in team-a');
    }, 'the live message in team-a');
  } finally {
    await stopServer(server);
  }
});

test('read-only rooms offer no composer; rooms the token cannot read are neither joined nor streamed', async () => {
  const key = jwtKey();
  const server = await startServer(['--post-rate', '0', '--jwt-key', key]);
  const editor = makeToken(key, { sub: 'ed', name: 'Ed', rooms: ['*'] });
  try {
    const context = await contextWithToken(browser, server.url,
      makeToken(key, { sub: 'dana', name: 'Dana', rooms: ['general'], read: ['news'] }));
    // A room joined in an earlier session that this token may not read.
    await context.addInitScript(() => {
      if (!sessionStorage.getItem('seeded')) {
        sessionStorage.setItem('seeded', '1');
        localStorage.setItem('sse-chat-rooms', JSON.stringify(['general', 'secret']));
      }
    });
    const streams = watchStreams(context);
    const page = await openSigned(context, server.url, '/#news');
    assert.equal(await page.textContent('#who'), 'Signed in as Dana');
    assert.equal(await viewing(page), '#news');
    assert.equal(await page.isVisible('#composer'), false);
    assert.match(await page.textContent('#composer-note'), /#news is read-only for you/);
    assert.equal(await postAs(server.url, editor, 'fresh news', { room: 'news' }), 201);
    await eventually(async () => (await texts(page)).includes('fresh news'), 'news in a read-only room');

    await clickRoom(page, 'general');
    await page.waitForSelector('#composer:not([hidden])');
    assert.equal(await page.isVisible('#composer-note'), false);
    await say(page, 'dana in general');
    await eventually(async () => (await texts(page)).includes('dana in general'), "dana's message");

    await clickRoom(page, 'secret');
    assert.equal(await page.isVisible('#composer'), false);
    assert.match(await page.textContent('#composer-note'), /You may not read #secret/);
    assert.equal(await page.$eval('#room-list li[data-room="secret"]', (li) => li.classList.contains('locked')), true);
    await clickRoom(page, 'general');
    await page.fill('#room-name', 'other');
    await page.press('#room-name', 'Enter');
    await page.waitForSelector('#room-error:not([hidden])');
    assert.match(await page.textContent('#room-error'), /You may not read #other/);
    assert.deepEqual(await joinedRooms(page), ['general', 'news', 'secret']);
    for (const s of streams) {
      assert.equal(s.status, 200);
      assert.deepEqual(s.rooms, ['general', 'news']);
    }
    assert.equal(await metric(server.url, 'ssechat_rejected_total{reason="forbidden"}') || 0, 0);
  } finally {
    await stopServer(server);
  }
});

test('a sign-in that runs out: every tab says so, and the stream is not reopened', async () => {
  const key = jwtKey();
  const server = await startServer(['--post-rate', '0', '--jwt-key', key]);
  try {
    const context = await contextWithToken(browser, server.url, makeToken(key, { sub: 'eve', name: 'Eve', rooms: ['*'], ttl: 6 }));
    const streams = watchStreams(context);
    const tabs = [await openSigned(context, server.url), await openSigned(context, server.url)];
    for (const t of tabs) assert.equal(await t.textContent('#who'), 'Signed in as Eve');
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 1, 'one stream');
    for (const t of tabs) {
      await t.waitForSelector('#auth-notice:not([hidden])', { timeout: 30000 });
      assert.match(await t.textContent('#auth-notice'), /^Your session expired — sign in again \(token expired\)/);
      assert.equal(await t.isVisible('#composer'), false);
      assert.equal(await t.isVisible('#who'), false);
      assert.deepEqual(await people(t), [], 'nobody shown online without a stream');
    }
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 0, 'the stream closed');
    // Longer than the page's own retry: no stream is asked for again.
    const asked = streams.length;
    await new Promise((r) => setTimeout(r, 4000));
    assert.equal(streams.length, asked, 'no stream reopened');
    assert.equal(await metric(server.url, 'ssechat_sse_clients'), 0);

    // Loaded again with the stale cookie, the page gives the server's reason.
    await tabs[0].reload();
    await tabs[0].waitForSelector('#auth-notice:not([hidden])');
    assert.match(await tabs[0].textContent('#auth-notice'), /^Sign-in needed: token expired/);
    assert.equal(await tabs[0].isVisible('#composer'), false);
  } finally {
    await stopServer(server);
  }
});
