// Rooms as people use them, in a real browser against the real server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import {
  clickRoom, closeLeader, eventually, goRoom, join, joinedRooms, launchBrowser, metric, openTabs, people,
  post, roles, roomTexts, say, startServer, stopServer, tempDir, texts, unread, viewing,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser.close(); });

const sameList = (a, b) => JSON.stringify(a) === JSON.stringify(b);

test('two people in two rooms: a room shows only its own messages', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const alice = await join(await browser.newContext(), server.url, 'alice');
    const bob = await join(await browser.newContext(), server.url, 'bob');
    // Both are in general and team-a; alice looks at general, bob at team-a.
    await goRoom(alice, 'team-a');
    await clickRoom(alice, 'general');
    await goRoom(bob, 'team-a');
    assert.equal(new URL(bob.url()).hash, '#team-a');

    await say(bob, 'plans for team-a');
    await eventually(async () => sameList(await texts(bob), ['plans for team-a']), "bob's message in team-a");
    await say(alice, 'hello general');
    // Each stream carries both rooms: the other room's message arrives (it is counted as unread)
    // but is not shown in the room in view.
    await eventually(async () => await unread(alice, 'team-a') === 1, "team-a's message reaching alice");
    await eventually(async () => await unread(bob, 'general') === 1, "general's message reaching bob");
    // (A page draws what arrives once per frame, a hidden one once a second at most: eventually.)
    await eventually(async () => sameList(await texts(alice), ['hello general']), "alice's view");
    await eventually(async () => sameList(await texts(bob), ['plans for team-a']), "bob's view");
    // The page posted each message to the room in view.
    assert.deepEqual(await roomTexts(server.url, 'team-a'), ['plans for team-a']);
    assert.deepEqual(await roomTexts(server.url, 'general'), ['hello general']);

    // Switching rooms shows the other room's messages, and only those.
    await clickRoom(alice, 'team-a');
    await eventually(async () => sameList(await texts(alice), ['plans for team-a']), 'team-a in alice\'s view');
    assert.equal(new URL(alice.url()).hash, '#team-a');
    await clickRoom(bob, 'general');
    await eventually(async () => sameList(await texts(bob), ['hello general']), 'general in bob\'s view');
    // A room that has never been in view loads its history from the server.
    const carol = await join(await browser.newContext(), server.url, 'carol');
    await eventually(async () => sameList(await texts(carol), ['hello general']), "general's history");
    await goRoom(carol, 'team-a');
    await eventually(async () => sameList(await texts(carol), ['plans for team-a']), "team-a's history");
  } finally {
    await stopServer(server);
  }
});

test('messages in the other rooms are counted as unread until the room is opened', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const alice = await join(await browser.newContext(), server.url, 'alice');
    await goRoom(alice, 'team-b');
    await clickRoom(alice, 'general');
    for (const t of ['one', 'two', 'three']) assert.equal(await post(server.url, 'bob', t, { room: 'team-b' }), 201);
    await eventually(async () => await unread(alice, 'team-b') === 3, 'three unread in team-b');
    assert.equal(await unread(alice, 'general'), 0);
    assert.match(await alice.title(), /^\(3\) /);
    assert.deepEqual(await texts(alice), []);

    await clickRoom(alice, 'team-b');
    await eventually(async () => sameList(await texts(alice), ['one', 'two', 'three']), 'the unread messages');
    assert.equal(await unread(alice, 'team-b'), 0);
    assert.doesNotMatch(await alice.title(), /^\(/);
    // Now general is the other room.
    assert.equal(await post(server.url, 'bob', 'over here', { room: 'general' }), 201);
    await eventually(async () => await unread(alice, 'general') === 1, 'one unread in general');
    // One's own messages are not unread.
    assert.equal(await post(server.url, 'alice', 'from my phone', { room: 'general' }), 201);
    assert.equal(await post(server.url, 'bob', 'and more', { room: 'team-b' }), 201);
    await eventually(async () => (await texts(alice)).includes('and more'), 'the next team-b message');
    assert.equal(await unread(alice, 'general'), 1);
  } finally {
    await stopServer(server);
  }
});

test('a room read while it was empty counts what came while the page was closed', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    let alice = await join(context, server.url, 'alice', '/#team-e');
    await clickRoom(alice, 'general');
    assert.equal(await post(server.url, 'bob', 'one', { room: 'team-e' }), 201);
    await eventually(async () => await unread(alice, 'team-e') === 1, 'one unread in team-e');
    const saved = () => alice.evaluate(() => JSON.parse(localStorage.getItem('sse-chat-seen') || '{}'));
    await eventually(async () => 'team-e' in await saved(), 'how far team-e was read is saved');
    await alice.close();
    assert.equal(await post(server.url, 'bob', 'two', { room: 'team-e' }), 201);
    alice = await context.newPage();
    await alice.goto(server.url + '/');
    await eventually(async () => await unread(alice, 'team-e') === 2, 'two unread in team-e');
  } finally {
    await stopServer(server);
  }
});

// More than a page came while the page was closed: the room opens with its newest 100, as any
// room does, and older ones a click away, with no hole between; the count says "100+".
test('more than a page came while the page was closed: 100+ unread, then every message without a hole', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    let alice = await join(context, server.url, 'alice', '/#many');
    for (let i = 0; i < 20; i++) assert.equal(await post(server.url, 'bob', `m${i}`, { room: 'many' }), 201);
    await eventually(async () => (await texts(alice)).length === 20, 'the first 20 read');
    await clickRoom(alice, 'general');
    await alice.close();  // saves how far each room was read as it goes
    for (let i = 20; i < 320; i++) assert.equal(await post(server.url, 'bob', `m${i}`, { room: 'many' }), 201);
    alice = await context.newPage();
    await alice.goto(server.url + '/');
    await eventually(async () => await unread(alice, 'many') === '100+', '100+ unread in many');
    assert.equal(await alice.title(), '(100+) #general · sse-chat');
    // Read in another tab: counted exactly again from there.
    const other = await join(context, server.url, 'alice', '/#many');
    await eventually(async () => await unread(alice, 'many') === 0, 'read in the other tab');
    await clickRoom(other, 'general');
    await other.close();
    assert.equal(await post(server.url, 'bob', 'm320', { room: 'many' }), 201);
    await eventually(async () => await unread(alice, 'many') === 1, 'one unread, exactly');
    await clickRoom(alice, 'many');
    const all = await roomTexts(server.url, 'many');
    assert.equal(all.length, 321);
    // The newest 100 it loaded, and the one that came live since: a tail of the room, no hole.
    await eventually(async () => sameList(await texts(alice), all.slice(-101)), 'the newest 101');
    for (const shown of [201, 301]) {
      await alice.click('#older');
      await eventually(async () => sameList(await texts(alice), all.slice(-shown)), `the newest ${shown}`);
    }
  } finally {
    await stopServer(server);
  }
});

// A tab closed right after a room was read (before the page's once-a-second save) keeps it read.
test('a room read just before its tab closes stays read', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    let alice = await join(context, server.url, 'alice', '/#qb');
    await goRoom(alice, 'qa');
    await clickRoom(alice, 'general');
    // qa last: the page counts the most recently active room first, so once qb's count shows,
    // qa's is final.
    for (const t of ['1', '2']) assert.equal(await post(server.url, 'bob', t, { room: 'qb' }), 201);
    for (const t of ['1', '2', '3']) assert.equal(await post(server.url, 'bob', t, { room: 'qa' }), 201);
    await eventually(async () => await unread(alice, 'qa') === 3 && await unread(alice, 'qb') === 2, 'unread in qa and qb');
    await new Promise((r) => setTimeout(r, 1500));  // saved as they came
    await clickRoom(alice, 'qa');
    await clickRoom(alice, 'general');
    const closed = new Promise((r) => alice.once('close', r));
    await alice.close({ runBeforeUnload: true });  // as a person closes a tab: the page hides
    await closed;
    alice = await context.newPage();
    await alice.goto(server.url + '/');
    await eventually(async () => await unread(alice, 'qb') === 2, 'qb still unread');
    assert.equal(await unread(alice, 'qa'), 0);
  } finally {
    await stopServer(server);
  }
});

test('a room read in one tab is read in the others', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    const [first, second] = await openTabs(context, server.url, 2, 'alice');
    for (const tab of [first, second]) {
      await goRoom(tab, 'team-b');
      await clickRoom(tab, 'general');
    }
    for (const t of ['one', 'two']) assert.equal(await post(server.url, 'bob', t, { room: 'team-b' }), 201);
    for (const tab of [first, second]) await eventually(async () => await unread(tab, 'team-b') === 2, 'two unread in team-b');
    await clickRoom(first, 'team-b');
    await eventually(async () => sameList(await texts(first), ['one', 'two']), 'team-b in the first tab');
    await eventually(async () => await unread(second, 'team-b') === 0, 'team-b read in the second tab too');
    assert.doesNotMatch(await second.title(), /^\(/);
    // What comes later while no tab looks at team-b is unread again (with the first tab still on
    // it, the second's count would fall back to 0 once the first saved how far it read).
    await clickRoom(first, 'general');
    assert.equal(await post(server.url, 'bob', 'three', { room: 'team-b' }), 201);
    for (const tab of [first, second]) await eventually(async () => await unread(tab, 'team-b') === 1, 'the next one unread');
  } finally {
    await stopServer(server);
  }
});

test('what came while the page was closed is unread when it opens again', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    let alice = await join(context, server.url, 'alice', '/#Team-C');  // names are lowercase
    assert.equal(await viewing(alice), '#team-c');
    assert.equal(new URL(alice.url()).hash, '#team-c');
    assert.equal(await post(server.url, 'bob', 'seen', { room: 'team-c' }), 201);
    await eventually(async () => sameList(await texts(alice), ['seen']), 'the message seen');
    await clickRoom(alice, 'general');
    await new Promise((r) => setTimeout(r, 1500));  // how far each room was read is saved
    await alice.close();
    for (const t of ['while', 'away']) assert.equal(await post(server.url, 'bob', t, { room: 'team-c' }), 201);
    assert.equal(await post(server.url, 'alice', 'mine from elsewhere', { room: 'team-c' }), 201);
    alice = await context.newPage();
    await alice.goto(server.url + '/');
    await eventually(async () => await unread(alice, 'team-c') === 2, 'two unread in team-c');
    await clickRoom(alice, 'team-c');
    await eventually(async () => sameList(await texts(alice), ['seen', 'while', 'away', 'mine from elsewhere']), 'all of team-c');
  } finally {
    await stopServer(server);
  }
});

test('older messages than the newest 100 are a click away', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    for (let i = 0; i < 130; i++) assert.equal(await post(server.url, 'bob', `m${i}`, { room: 'busy' }), 201);
    const page = await join(await browser.newContext(), server.url, 'carol', '/#busy');
    await eventually(async () => (await texts(page)).length === 100, 'the newest 100');
    assert.equal((await texts(page))[0], 'm30');
    await page.click('#older');
    await eventually(async () => (await texts(page)).length === 130, 'all 130');
    assert.deepEqual((await texts(page)).slice(0, 2), ['m0', 'm1']);
    assert.equal(await page.isVisible('#older'), false);  // nothing older is kept
    assert.equal(await page.isVisible('#new-messages'), false);
  } finally {
    await stopServer(server);
  }
});

// Joining reopens the stream from its last id, which replays all the new room kept since: the
// room still opens with its newest 100, as it does at a page's first load (it drew them all).
test('a room joined while the page is open shows its newest 100 too', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const page = await join(await browser.newContext(), server.url, 'carol');
    assert.equal(await post(server.url, 'bob', 'hello'), 201);
    await eventually(async () => (await texts(page)).includes('hello'), 'hello');
    for (let i = 0; i < 130; i++) assert.equal(await post(server.url, 'bob', `m${i}`, { room: 'busy' }), 201);
    await goRoom(page, 'busy');
    await eventually(async () => (await texts(page)).at(-1) === 'm129', 'the newest of busy');
    await new Promise((resolve) => setTimeout(resolve, 300));  // any replay still arriving
    assert.equal((await texts(page)).length, 100);
    assert.equal((await texts(page))[0], 'm30');
    await page.click('#older');
    await eventually(async () => (await texts(page)).length === 130, 'all 130');
    assert.equal(await page.isVisible('#older'), false);
    assert.equal(await post(server.url, 'bob', 'after', { room: 'busy' }), 201);
    await eventually(async () => (await texts(page)).length === 131, 'a new message besides them');
    assert.deepEqual((await texts(page)).slice(0, 1), ['m0']);
  } finally {
    await stopServer(server);
  }
});

test('a link to /#room opens that room, and joined rooms are remembered', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    assert.equal(await post(server.url, 'bob', 'welcome to team-c', { room: 'team-c' }), 201);
    assert.equal(await post(server.url, 'bob', 'general chatter', { room: 'general' }), 201);
    const context = await browser.newContext();
    const page = await join(context, server.url, 'dave', '/#team-c');
    assert.equal(await viewing(page), '#team-c');
    await eventually(async () => sameList(await texts(page), ['welcome to team-c']), "team-c's history");
    assert.deepEqual(await joinedRooms(page), ['general', 'team-c']);
    // Live messages of the linked room arrive too.
    assert.equal(await post(server.url, 'bob', 'glad you came', { room: 'team-c' }), 201);
    await eventually(async () => sameList(await texts(page), ['welcome to team-c', 'glad you came']), 'the live message');

    // The joined rooms outlive the page: after a reload, and in a tab opened once it is closed.
    await page.reload();
    await page.waitForSelector('#composer:not([hidden])');
    assert.equal(await viewing(page), '#team-c');
    await eventually(async () => (await texts(page)).length === 2, 'team-c after the reload');
    await page.close();
    const plain = await join(context, server.url, 'dave');
    assert.equal(await viewing(plain), '#general');
    assert.deepEqual(await joinedRooms(plain), ['general', 'team-c']);
    await eventually(async () => sameList(await texts(plain), ['general chatter']), "general's history");

    // A name that is not a room name is refused with a reason, from a link or from the form.
    const bad = await join(await browser.newContext(), server.url, 'eve', '/#Team%20C');
    assert.equal(await viewing(bad), '#general');
    assert.match(await bad.textContent('#room-error'), /not a room name/);
    assert.deepEqual(await joinedRooms(bad), ['general']);
    for (const name of ['Team:A', 'team a', 'x'.repeat(65), 'café']) {
      await bad.fill('#room-name', name);
      await bad.press('#room-name', 'Enter');
      await bad.waitForSelector('#room-error:not([hidden])');
      assert.match(await bad.textContent('#room-error'), /not a room name/, name);
      assert.equal(await viewing(bad), '#general');
    }
    assert.deepEqual(await joinedRooms(bad), ['general']);
    await goRoom(bad, 'a.b_c-1');  // every allowed kind of character
    assert.equal(await bad.isVisible('#room-error'), false);
    // A room someone else is in is listed, and opens with a click.
    await eventually(async () => (await bad.$$eval('#other-rooms li', (els) => els.map((e) => e.dataset.room))).includes('team-c'),
      'team-c among the other rooms', 45000);
    await bad.click('#other-rooms li[data-room="team-c"] .room-link');
    await eventually(async () => sameList(await texts(bad), ['welcome to team-c', 'glad you came']), 'team-c from the list');
    assert.deepEqual(await joinedRooms(bad), ['general', 'a.b_c-1', 'team-c']);
  } finally {
    await stopServer(server);
  }
});

test('a page joins no more rooms than the server lets one stream carry', async () => {
  const server = await startServer(['--post-rate', '0', '--max-rooms-per-stream', '3']);
  try {
    // Rooms joined on a server that allowed more: the page keeps what fits and says what it left.
    const context = await browser.newContext();
    await context.addInitScript(() => {
      if (!localStorage.getItem('sse-chat-rooms')) {
        localStorage.setItem('sse-chat-rooms', JSON.stringify(['general', 'r1', 'r2', 'r3', 'r4']));
      }
    });
    const page = await join(context, server.url, 'dave', '/#r3');
    assert.equal(await viewing(page), '#r3');
    assert.deepEqual(await joinedRooms(page), ['general', 'r1', 'r3']);
    assert.match(await page.textContent('#room-error'), /at most 3 rooms.*#r2, #r4/);
    // The stream carries the rooms kept, so their messages arrive.
    assert.equal(await post(server.url, 'bob', 'in r3', { room: 'r3' }), 201);
    await eventually(async () => sameList(await texts(page), ['in r3']), 'the live message in r3');
    assert.equal(await post(server.url, 'bob', 'in r1', { room: 'r1' }), 201);
    await eventually(async () => await unread(page, 'r1') === 1, "r1's message");
    // A fourth room is refused with the server's number, and nothing stops.
    await page.fill('#room-name', 'r5');
    await page.press('#room-name', 'Enter');
    await eventually(async () => /You are in 3 rooms/.test(await page.textContent('#room-error')), 'the refusal');
    assert.deepEqual(await joinedRooms(page), ['general', 'r1', 'r3']);
    assert.equal(await post(server.url, 'bob', 'still here', { room: 'r3' }), 201);
    await eventually(async () => sameList(await texts(page), ['in r3', 'still here']), 'the stream still live');
  } finally {
    await stopServer(server);
  }
});

test('three tabs in three rooms still share one stream', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext();
    const tabs = await openTabs(context, server.url, 3, 'tabby');
    await goRoom(tabs[0], 'team-a');
    await goRoom(tabs[1], 'team-b');
    const rooms = ['team-a', 'team-b', 'general'];  // the room each tab looks at
    for (const t of tabs) {
      await eventually(async () => sameList(await joinedRooms(t), ['general', 'team-a', 'team-b']), 'every tab in every room');
    }
    assert.equal((await roles(tabs)).filter((r) => r === 'leader').length, 1);
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 1, 'one stream');

    // A message to each room: every tab shows the one of the room it looks at and has the other
    // two (another tab shows each, so none stays unread: read in one tab is read in all).
    const kept = (t, room) => t.evaluate((r) => [...(rooms.get(r)?.messages.values() || [])].map((m) => m.text), room);
    const everyRoomReachesEveryTab = async (tag, live) => {
      for (const room of rooms) assert.equal(await post(server.url, 'curl', `${tag} in ${room}`, { room }), 201);
      for (const t of live) {
        const mine = rooms[tabs.indexOf(t)];
        await eventually(async () => (await texts(t)).includes(`${tag} in ${mine}`), `${tag} in the room in view`);
        for (const other of rooms) {
          if (other === mine) continue;
          await eventually(async () => (await kept(t, other)).includes(`${tag} in ${other}`), `${tag} reaching ${other}`);
          if (live.some((v) => rooms[tabs.indexOf(v)] === other)) {
            await eventually(async () => await unread(t, other) === 0, `${tag} in ${other} read in another tab`);
          }
        }
        const shown = await texts(t);
        assert.ok(shown.every((text) => text.endsWith(` in ${mine}`)), `only ${mine} is shown: ${shown}`);
      }
    };
    await everyRoomReachesEveryTab('first', tabs);
    assert.equal(await metric(server.url, 'ssechat_sse_clients'), 1, 'still one stream, not three');

    // When the leader closes, another tab takes over the stream with every room.
    const rest = await closeLeader(tabs);
    await everyRoomReachesEveryTab('second', rest);
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 1, 'one stream after handover');

    // Leaving a room in one tab leaves it in all of them; a tab looking at it goes back to general.
    const inTeamA = rest.find((t) => rooms[tabs.indexOf(t)] === 'team-a') || rest[0];
    const other = rest.find((t) => t !== inTeamA);
    if (await viewing(inTeamA) !== '#team-a') await clickRoom(inTeamA, 'team-a');
    await other.click('#room-list li[data-room="team-a"] .leave');
    for (const t of rest) await eventually(async () => sameList(await joinedRooms(t), ['general', 'team-b']), 'team-a left');
    await eventually(async () => await viewing(inTeamA) === '#general', 'the tab in team-a back in general');
    assert.deepEqual(await inTeamA.evaluate(() => JSON.parse(localStorage.getItem('sse-chat-rooms')).sort()), ['general', 'team-b']);
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 1, 'one stream after leaving');
  } finally {
    await stopServer(server);
  }
});

test('who is online in the room in view, by name', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const alice = await join(await browser.newContext(), server.url, 'alice');
    const bob = await join(await browser.newContext(), server.url, 'bob');
    await goRoom(alice, 'team-p');
    await goRoom(bob, 'team-p');
    await eventually(async () => sameList(await people(alice), ['alice', 'bob']), 'alice and bob in team-p');
    assert.match(await alice.textContent('#online'), /^2 online$/);
    assert.equal(await alice.$eval('#people li.me', (el) => el.textContent), 'alice');
    // general has them too; a third person only there shows in general, not in team-p.
    await join(await browser.newContext(), server.url, 'carol');
    await clickRoom(bob, 'general');
    await eventually(async () => sameList(await people(bob), ['alice', 'bob', 'carol']), 'three in general');
    await eventually(async () => sameList(await people(alice), ['alice', 'bob']), 'still two in team-p');

    // A new nickname reaches presence (the stream is reopened with it).
    await bob.click('#rename');
    await bob.fill('#name', 'robert');
    await bob.click('#join button[type=submit]');
    await eventually(async () => sameList(await people(alice), ['alice', 'robert']), 'the new name');
    // Leaving the room takes the person out of it.
    await bob.click('#room-list li[data-room="team-p"] .leave');
    await eventually(async () => sameList(await people(alice), ['alice']), 'robert gone from team-p');
    assert.match(await alice.textContent('#online'), /^1 online$/);
    assert.deepEqual(await joinedRooms(bob), ['general']);
  } finally {
    await stopServer(server);
  }
});

test('joining and leaving rooms reopens the stream from the last id: nothing lost, nothing twice', async () => {
  const server = await startServer(['--post-rate', '0']);
  let posting = true;
  let poster = null;
  try {
    const page = await join(await browser.newContext(), server.url, 'hopper');
    const streams = [];
    page.on('request', (r) => { if (new URL(r.url()).pathname === '/events') streams.push(new URL(r.url())); });
    const sent = [];
    poster = (async () => {
      for (let i = 1; posting || i <= 10; i++) {
        assert.equal(await post(server.url, 'ticker', `tick ${i}`), 201);
        sent.push(`tick ${i}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await eventually(async () => (await texts(page)).length > 0, 'the first ticks');
    for (const room of ['team-x', 'team-y', 'team-z']) await goRoom(page, room);
    await page.click('#room-list li[data-room="team-y"] .leave');
    await eventually(async () => await viewing(page) !== '#team-y', 'left team-y');
    await clickRoom(page, 'general');
    await eventually(async () => streams.some((u) => !u.searchParams.getAll('room').includes('team-y') &&
      u.searchParams.getAll('room').includes('team-z')), 'the stream without team-y');
    posting = false;
    await poster;
    await eventually(async () => (await texts(page)).length >= sent.length, 'every tick');
    assert.deepEqual(await texts(page), sent);

    // Each join and the leave reopened the one stream with the rooms and the last id it had.
    const last = streams.at(-1);
    assert.deepEqual(last.searchParams.getAll('room').sort(), ['general', 'team-x', 'team-z']);
    assert.equal(last.searchParams.get('user'), 'hopper');
    assert.ok(streams.length >= 4, `a stream per change of rooms (${streams.length})`);
    assert.ok(streams.every((u) => Number(u.searchParams.get('lastEventId')) > 0), 'resumed, not restarted');
    await eventually(async () => await metric(server.url, 'ssechat_sse_clients') === 1, 'one stream');
  } finally {
    posting = false;
    await poster?.catch(() => {});
    await stopServer(server);
  }
});

test('joining a busy room loses nothing and counts nothing; a reset notice names the room that lost messages', async () => {
  const data = tempDir();
  const args = ['--post-rate', '0', '--history', '5', '--retry', '3000', '--data-dir', data];
  let server = await startServer(args);
  const port = server.port;
  try {
    const context = await browser.newContext();
    const reader = await join(context, server.url, 'reader');
    const other = await join(context, server.url, 'reader');  // a second tab, looking at general
    assert.equal(await post(server.url, 'bob', 'hello'), 201);
    for (const t of [reader, other]) await eventually(async () => (await texts(t)).includes('hello'), 'hello');
    // team-r gets more than it keeps while nobody here is in it.
    const r = (i) => `r${i}`;
    for (let i = 1; i <= 12; i++) assert.equal(await post(server.url, 'bob', r(i), { room: 'team-r' }), 201);
    await goRoom(reader, 'team-r');
    // The stream resumes from 'hello', before what team-r still keeps: that is no loss to this page.
    await eventually(async () => sameList(await texts(reader), [8, 9, 10, 11, 12].map(r)), 'what team-r keeps');
    // Neither tab reads team-r when the news comes (a room read in one tab is read in all, so a
    // tab looking at it would clear the other's count: a race for this check to lose).
    await clickRoom(reader, 'general');
    assert.equal(await post(server.url, 'bob', 'news', { room: 'team-r' }), 201);
    // Both count only what came after the join, not the replay of what team-r kept.
    for (const t of [reader, other]) await eventually(async () => await unread(t, 'team-r') === 1, 'one unread in team-r');
    await clickRoom(reader, 'team-r');
    await eventually(async () => (await texts(reader)).includes('news'), 'the news');
    assert.equal(await reader.isVisible('#notice'), false);
    assert.equal(await other.isVisible('#notice'), false);

    // A real loss: the server restarts and team-r gets more than it keeps before the page is back.
    await stopServer(server);
    await eventually(async () => (await reader.textContent('#status')) !== 'connected', 'the page to notice');
    server = await startServer([...args, '--listen', `127.0.0.1:${port}`]);
    for (let i = 13; i <= 19; i++) assert.equal(await post(server.url, 'bob', r(i), { room: 'team-r' }), 201);
    await eventually(async () => (await texts(reader)).includes('r19'), 'the messages after the restart');
    await reader.waitForSelector('#notice:not([hidden])');
    assert.match(await reader.textContent('#notice'), /#team-r.*no longer available/);
    assert.deepEqual(await texts(reader), [...[8, 9, 10, 11, 12].map(r), 'news', ...[15, 16, 17, 18, 19].map(r)]);
    await clickRoom(reader, 'general');
    assert.equal(await reader.isVisible('#notice'), false, 'the notice is about team-r only');
  } finally {
    await stopServer(server);
  }
});

test('the room list fits a phone', async () => {
  const server = await startServer(['--post-rate', '0']);
  try {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const page = await join(context, server.url, 'pat');
    for (const room of ['team-a', 'backend-oncall', 'a-rather-long-room-name-for-a-small-screen']) await goRoom(page, room);
    await clickRoom(page, 'team-a');
    await say(page, 'from my phone');
    await eventually(async () => (await texts(page)).includes('from my phone'), 'the message');
    await page.fill('#room-name', 'Not A Room');
    await page.press('#room-name', 'Enter');
    await page.waitForSelector('#room-error:not([hidden])');
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no horizontal scrolling at phone width (page is ${width}px wide)`);
    // The rooms scroll sideways in their own strip, which is as tall as a room in it, and the
    // messages keep most of the screen.
    const strip = await page.$eval('.room-scroll', (el) => ({
      scrolls: el.scrollWidth > el.clientWidth, height: el.clientHeight, item: el.querySelector('li').offsetHeight,
    }));
    assert.ok(strip.scrolls, 'the room strip scrolls');
    assert.ok(strip.height >= strip.item, `the strip (${strip.height}px) shows its rooms (${strip.item}px)`);
    const messages = await page.$eval('#messages', (el) => el.clientHeight);
    assert.ok(messages >= 400, `the messages get most of the screen (${messages}px)`);
    const dir = process.env.SCREENSHOT_DIR || 'build-test';
    mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: joinPath(dir, 'phone-rooms.png') });
  } finally {
    await stopServer(server);
  }
});
