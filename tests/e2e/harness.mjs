// Test harness: the real sse-chat binary on a free port, Debian's chromium through playwright-core.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.SSE_CHAT_BIN || 'build/sse-chat';
const STATIC = process.env.SSE_CHAT_STATIC || 'static';

export function tempDir() {
  return mkdtempSync(joinPath(tmpdir(), 'sse-chat-e2e-'));
}

// Starts the server; resolves once it prints the address it listens on.
export function startServer(args = []) {
  const all = ['--static-dir', STATIC, ...args];
  if (!args.includes('--listen')) all.push('--listen', '127.0.0.1:0');
  if (!args.includes('--data-dir')) all.push('--no-journal');
  const child = spawn(BIN, all, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+)\//);
      if (m) resolve({ url: m[1], port: Number(m[1].split(':').pop()), child, log: () => log });
    });
    child.on('exit', (code) => reject(new Error(`server exited ${code}: ${log}`)));
  });
}

export function stopServer(server, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    if (server.child.exitCode !== null) return resolve(server.child.exitCode);
    server.child.once('exit', (code) => resolve(code));
    server.child.kill(signal);
  });
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

export async function post(url, user, text, extra = {}) {
  const res = await fetch(url + '/messages', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, text, ...extra }),
  });
  return res.status;
}

export async function metric(url, name) {
  const body = await (await fetch(url + '/metrics')).text();
  const m = body.match(new RegExp('^' + name + ' (\\S+)$', 'm'));
  return m ? Number(m[1]) : NaN;
}

// Polls `fn` until it returns true (a guard against hanging, not a timing assertion).
export async function eventually(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Opens the page (at `path`, e.g. '/#team-a') and joins with a nickname.
export async function join(context, url, name, path = '/') {
  const page = await context.newPage();
  await page.goto(url + path);
  await page.waitForSelector('#join:not([hidden]), #composer:not([hidden])');
  if (await page.isVisible('#join')) {  // a tab of a browser that joined before skips this
    await page.fill('#name', name);
    await page.click('#join button[type=submit]');
    await page.waitForSelector('#composer:not([hidden])');
  }
  return page;
}

// Opens `n` tabs of one browser, each joined as `name`.
export async function openTabs(context, url, n, name) {
  const tabs = [];
  for (let i = 0; i < n; i++) tabs.push(await join(context, url, name));
  return tabs;
}

// Each tab's part in sharing the one stream: 'leader' (it holds the EventSource) or ''.
export function roles(tabs) {
  return Promise.all(tabs.map((t) => t.evaluate(() => document.documentElement.dataset.role || '')));
}

// Closes the tab holding the stream and waits until another takes it over; the tabs left.
export async function closeLeader(tabs) {
  const leader = tabs[(await roles(tabs)).indexOf('leader')];
  const rest = tabs.filter((t) => t !== leader);
  await leader.close();
  await eventually(async () => (await roles(rest)).includes('leader'), 'a new leader');
  return rest;
}

export async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

export function texts(page) {
  return page.$$eval('#messages .text', (els) => els.map((e) => e.textContent));
}

// Rooms. A room is joined or created by typing its name; the title says which room is in view.
export async function goRoom(page, room) {
  await page.fill('#room-name', room);
  await page.press('#room-name', 'Enter');
  await page.waitForFunction((r) => document.getElementById('room-title').textContent === '#' + r, room);
}

export async function clickRoom(page, room) {
  await page.click(`#room-list li[data-room="${room}"] .room-link`);
  await page.waitForFunction((r) => document.getElementById('room-title').textContent === '#' + r, room);
}

export function viewing(page) {
  return page.textContent('#room-title');
}

// The rooms in the list of joined rooms, in order.
export function joinedRooms(page) {
  return page.$$eval('#room-list li', (els) => els.map((e) => e.dataset.room));
}

// The unread count shown on a joined room (0 when its badge is hidden; a string such as "100+"
// when the count is a lower bound).
export function unread(page, room) {
  return page.$eval(`#room-list li[data-room="${room}"] .unread`,
    (el) => (el.hidden ? 0 : /^\d+$/.test(el.textContent) ? Number(el.textContent) : el.textContent));
}

// Who the page says is online in the room in view.
export function people(page) {
  return page.$$eval('#people li', (els) => els.map((e) => e.textContent));
}

// A room's texts as the server keeps them.
export async function roomTexts(url, room) {
  const res = await fetch(`${url}/messages?room=${room}&limit=1000`);
  return (await res.json()).map((m) => m.text);
}

// Signed tokens (--jwt-key). A fresh 48-byte HS256 secret in a file of its own.
export function jwtKey() {
  const file = joinPath(tempDir(), 'jwt.key');
  writeFileSync(file, randomBytes(48), { mode: 0o600 });
  return file;
}

// A token from the binary's `token` subcommand; `rooms` and `read` are lists of room patterns.
export function makeToken(keyFile, { sub, name, rooms = [], read = [], ttl } = {}) {
  const args = ['token', '--jwt-key', keyFile, '--sub', sub];
  if (name) args.push('--name', name);
  if (rooms.length) args.push('--rooms', rooms.join(','));
  if (read.length) args.push('--read', read.join(','));
  if (ttl) args.push('--ttl', String(ttl));
  return execFileSync(BIN, args, { encoding: 'utf8' }).trim();
}

// A browser context that presents `token` as the page does: the sse_chat_token cookie.
export async function contextWithToken(browser, url, token, options = {}) {
  const context = await browser.newContext(options);
  if (token) await context.addCookies([{ name: 'sse_chat_token', value: token, url }]);
  return context;
}

// Opens the page on a server with tokens on; ready once it knows whether it is signed in.
export async function openSigned(context, url, path = '/') {
  const page = await context.newPage();
  await page.goto(url + path);
  await page.waitForSelector('#who:not([hidden]), #auth-notice:not([hidden])');
  return page;
}

// POST /messages with `Authorization: Bearer token` (none when token is empty); the status.
export async function postAs(url, token, text, extra = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const res = await fetch(url + '/messages', { method: 'POST', headers, body: JSON.stringify({ text, ...extra }) });
  return res.status;
}
