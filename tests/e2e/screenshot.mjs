// Makes docs/screenshot.png: the page as carol sees it, in #deploy with alice and bob, unread
// messages in #general and another room in the list. Not a test (node --test does not pick it up):
//   SSE_CHAT_BIN=build/sse-chat node tests/e2e/screenshot.mjs [out.png]
import { eventually, goRoom, join, launchBrowser, people, post, startServer, stopServer, texts, unread } from './harness.mjs';

const out = process.argv[2] || 'docs/screenshot.png';
const server = await startServer(['--post-rate', '0']);
const browser = await launchBrowser();
try {
  const open = async (name, room) => {
    const page = await join(await browser.newContext({ viewport: { width: 900, height: 560 } }), server.url, name);
    if (room) await goRoom(page, room);
    return page;
  };
  await open('alice', 'deploy');
  await open('bob', 'deploy');
  await open('dave', 'design');
  const say = async (user, text, room) => {
    if (await post(server.url, user, text, { room }) !== 201) throw new Error('post failed');
  };
  await say('dave', 'First mockups of the room list are up.', 'design');
  await say('alice', 'Morning! Is the deploy still on for 10?', 'deploy');

  const carol = await open('carol', 'deploy');
  await say('bob', 'Yes, once CI is green.', 'deploy');
  await say('bob', 'Journal fsync is on "always" for this one.', 'deploy');
  await say('carol', 'Great, I will watch /metrics while it rolls out.', 'deploy');
  await say('erin', 'Lunch at 12:30, anyone?', 'general');
  await say('frank', 'Count me in.', 'general');
  await say('alice', 'Thanks carol!', 'deploy');

  await eventually(async () => (await texts(carol)).length === 5, 'the conversation');
  await eventually(async () => await unread(carol, 'general') === 2, 'unread in general');
  await eventually(async () => (await people(carol)).join() === 'alice,bob,carol', 'who is online');
  await eventually(async () => await carol.isVisible('#other-rooms li[data-room="design"]'), 'the other room');
  await carol.evaluate(() => document.activeElement?.blur());
  await carol.screenshot({ path: out });
  console.log('wrote ' + out);
} finally {
  await browser.close();
  await stopServer(server);
}
