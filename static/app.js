// sse-chat page: rooms over one stream per browser. The room in view loads its history and the
// stream resumes from the last id it delivered, so nothing falls between. Text is only ever set
// with textContent.
'use strict';

const $ = (id) => document.getElementById(id);
const list = $('messages');
const narrow = window.matchMedia('(max-width: 640px)');

// Room names follow the server's rule (src/room_name.h). `general` is where a request naming no
// room goes; it cannot be left.
const ROOM_NAME = /^[a-z0-9._-]{1,64}$/;
const DEFAULT_ROOM = 'general';
const SAVED_ROOMS = 1024;      // the most joined rooms read back from localStorage
const KEEP_PER_ROOM = 1000;    // messages kept in memory per room
const PAGE = 100;              // messages a room opens with, and a "Load older messages" adds
const DIRECTORY_POLL_MS = 30000;  // GET /rooms again (the other rooms; a check the stream lives)
const STREAM_GRACE_MS = 5000;  // a message the server has and the stream not: dead after this
const ROOMS_KEY = 'sse-chat-rooms';
const NAME_KEY = 'sse-chat-name';
const SEEN_KEY = 'sse-chat-seen';  // per room, the newest id this browser has shown
// The server's limits (src/message.h), in characters (code points), as it counts them: not in
// UTF-16 units as maxlength would, which would cut a text of emoji at half the limit.
const MAX_NAME_CHARS = 32;
const MAX_TEXT_CHARS = 2000;
// A lone UTF-16 surrogate (half of an emoji, say) has no UTF-8 form: the server refuses it, and
// encodeURIComponent throws on it.
const HALF_CHARACTER = /\p{Cs}/u;
const HALF_NOTE = 'delete the character it is next to and type it again.';

// Per room: its messages by id, unread count (of messages after `seenThrough`), latest presence,
// reset notice, and whether its history was loaded while the stream already carried it (then
// nothing can be missing).
const rooms = new Map();
let maxRooms = 32;             // the most rooms one stream may carry: the server's, from /me
let joined = readJoined();     // rooms this browser is in, shared by its tabs through localStorage
let current = DEFAULT_ROOM;    // the room in view (the URL fragment)
let me = localStorage.getItem(NAME_KEY) || '';  // checked at start: an older page kept any
let streamId = 0;              // highest id the stream has delivered: where a (re)opened one resumes
let knownNewest = 0;           // highest id of any room this tab has heard of
let streamRooms = new Set();   // rooms the open stream carries, as its owner last said
let directory = [];            // GET /rooms: [{room, online, last_id}], most recently active first
let status = { text: 'connecting…', cls: '' };
// GET /me: { on: false } with tokens off (everyone may read and post everywhere, under the
// nickname typed here). With tokens on, either signed in ({ on, name, rooms, read, public }: room
// patterns) or not ({ on, name: '', reason, public, expired }), when only the public rooms may be
// read (none if the browser sends a token the server refuses: it refuses everything then).
let auth = { on: false };

// How far each room was read, kept across visits: what came since is unread when the page opens.
const seenAtLoad = readSeen();
let seenSaveTimer = 0;

// A Map, not the parsed object: every valid room name must work as a key, "__proto__" too (on a
// plain object, assigning it sets the prototype and stores nothing).
function readSeen() {
  const seen = new Map();
  try {
    const saved = JSON.parse(localStorage.getItem(SEEN_KEY) || '{}');
    if (saved && typeof saved === 'object') for (const [name, id] of Object.entries(saved)) seen.set(name, Number(id) || 0);
  } catch (_) { /* start over */ }
  return seen;
}

// At most once a second while messages come; at once when the tab goes (closed, reloaded).
function saveSeenSoon() {
  if (!seenSaveTimer) seenSaveTimer = setTimeout(saveSeen, 1000);
}

function saveSeen() {
  clearTimeout(seenSaveTimer);
  seenSaveTimer = 0;
  const seen = readSeen();  // another tab's rooms too
  // Only rooms this browser has shown: one shown while empty is read through 0 (all that comes is
  // unread), one never shown has no entry (what it kept from before is not).
  for (const [name, r] of rooms) {
    if (joined.has(name) && (r.shown || seen.has(name))) seen.set(name, Math.max(seen.get(name) || 0, r.seenThrough));
  }
  for (const name of seen.keys()) if (!joined.has(name)) seen.delete(name);
  // fromEntries defines "__proto__" as a key of its own, which JSON.stringify then writes.
  localStorage.setItem(SEEN_KEY, JSON.stringify(Object.fromEntries(seen)));
}

// The joined rooms that got messages since this browser last showed them (as GET /rooms says):
// their newest PAGE is loaded, as a room opens with, so what the stream adds follows on without a
// hole; what came after the room was read counts as unread, "100+" when the page is all unread.
async function loadUnread() {
  for (const d of directory) {
    if (!seenAtLoad.has(d.room)) continue;  // never shown here
    const seen = seenAtLoad.get(d.room);
    if (!joined.has(d.room) || d.room === current || !(Number(d.last_id) > seen) || !mayRead(d.room)) continue;
    const res = await fetch(`/messages?room=${encodeURIComponent(d.room)}&limit=${PAGE}`, { cache: 'no-store' });
    if (!res.ok) continue;
    const page = await res.json();
    for (const msg of page) receive({ ...msg, room: msg.room || d.room }, false);
    const r = room(d.room);
    markSeen(r, seen);
    r.unreadMore = r.unread > 0 && page.length === PAGE && page.every((m) => m.id > seen);
  }
  renderRooms();
}

function room(name) {
  let r = rooms.get(name);
  if (!r) {
    r = { messages: new Map(), unread: 0, unreadMore: false, seenThrough: 0, shown: false, presence: null, notice: '', synced: false,
      capped: false, capThrough: Infinity };
    rooms.set(name, r);
  }
  return r;
}

// A server without rooms sends messages and events without one: they are general's.
const roomOf = (data) => (data && typeof data.room === 'string' ? data.room : DEFAULT_ROOM);

// Why `name` is no room name, or null: a string, or parts for showRoomError when it quotes the name.
function roomError(name) {
  if (name === '') return 'Type a room name.';
  if (!ROOM_NAME.test(name)) {
    const chars = [...name];
    const shown = chars.length > 70 ? chars.slice(0, 64).join('') + '…' : name;
    return ['“', isolated(shown), '” is not a room name: use 1–64 characters, lowercase letters a–z, digits, “-”, “_” or “.”.'];
  }
  return null;
}

// Text someone else chose (a link's fragment), in an element of its own: bidi controls in it
// cannot reorder the sentence around it. An element, not U+2068…U+2069, since a U+2069 in the text
// would end that isolate early.
function isolated(text) {
  const el = document.createElement('bdi');
  el.textContent = text;
  return el;
}

// Room patterns as the server reads them (src/access.h): a room, a prefix ending in `*`, or `*`.
const matches = (patterns, name) => patterns.some((p) => (p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : name === p));
const mayRead = (name) => !auth.on || [auth.rooms, auth.read, auth.public].some((p) => matches(p, name));
const mayPost = (name) => !auth.on || matches(auth.rooms, name);
const patternList = (value) => (Array.isArray(value) ? value.filter((p) => typeof p === 'string') : []);

function signedIn(body) {
  return { on: true, name: body.name, rooms: patternList(body.rooms), read: patternList(body.read), public: patternList(body.public) };
}

// `presented`: the browser sent a token and it was refused; then even public rooms are refused.
function signedOut(reason, publicRooms, presented, expired = false) {
  return { on: true, name: '', rooms: [], read: [], public: presented ? [] : patternList(publicRooms), reason, presented, expired };
}

// Asks GET /me who this browser is: null when it cannot tell (out of reach, or a server without
// /me, which the page then treats as one with tokens off).
async function fetchMe() {
  let res;
  try { res = await fetch('/me', { cache: 'no-store' }); } catch (_) { return null; }
  let body = {};
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (Number.isInteger(body.max_rooms_per_stream) && body.max_rooms_per_stream > 0) maxRooms = body.max_rooms_per_stream;
  if (res.ok && body.auth === true && typeof body.name === 'string') return signedIn(body);
  if (res.status !== 401) return res.ok && body.auth === false ? { on: false } : null;
  const presented = /invalid_token/.test(res.headers.get('WWW-Authenticate') || '');
  return signedOut(typeof body.error === 'string' ? body.error : 'sign-in needed', body.public, presented);
}

const notReadable = (name) => (auth.name
  ? `You may not read #${name}: your sign-in does not include it.`
  : `Sign in to read #${name}.`);

const tooMany = () => `You are in ${maxRooms} rooms, the most one stream can carry here: leave one first.`;

function readJoined() {
  let names = [];
  try { names = JSON.parse(localStorage.getItem(ROOMS_KEY) || '[]'); } catch (_) { /* start over */ }
  const set = new Set([DEFAULT_ROOM]);
  for (const name of Array.isArray(names) ? names : []) {
    if (typeof name === 'string' && ROOM_NAME.test(name) && set.size < SAVED_ROOMS) set.add(name);
  }
  return set;
}

// Leaves the joined rooms one stream here cannot carry (a server that allows fewer than this
// browser joined elsewhere, which would refuse the whole stream): general and `keep` stay, then the
// others in the order they were joined. Returns the rooms left.
function fitJoined(keep) {
  if (joined.size <= maxRooms) return [];
  const order = [DEFAULT_ROOM, ...(joined.has(keep) ? [keep] : []), ...joined];
  const fits = new Set(order.filter((name, i) => order.indexOf(name) === i).slice(0, maxRooms));
  const left = [...joined].filter((name) => !fits.has(name));
  joined = fits;
  saveJoined();
  return left;
}

function saveJoined() {
  localStorage.setItem(ROOMS_KEY, JSON.stringify([...joined]));
}

// ---- rendering ----------------------------------------------------------------------------------

function setStatus(text, cls) {
  const el = $('status');
  el.textContent = text;
  el.className = 'status ' + cls;
}

function atBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function groupWithPrevious(li) {
  const prev = li.previousElementSibling;
  li.classList.toggle('grouped', Boolean(prev) && prev.dataset.user === li.dataset.user);
}

const timeFormat = new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit' });  // made once: costly

function messageItem(msg) {
  const li = document.createElement('li');
  li.className = 'message' + (msg.user === me ? ' mine' : '');
  li.dataset.id = String(msg.id);
  li.dataset.user = msg.user;
  const meta = document.createElement('span');
  meta.className = 'meta';
  // The name is isolated, and the text takes its direction from its first strong character, so
  // a right-to-left name or text (or one with bidi controls) cannot reorder the rest of the line.
  const author = document.createElement('span');
  author.className = 'author';
  const name = document.createElement('bdi');
  name.textContent = msg.user;
  author.append(name, ' · ');
  const time = document.createElement('time');
  const when = new Date(msg.ts);
  time.dateTime = when.toISOString();
  time.textContent = timeFormat.format(when);
  meta.append(author, time);
  const text = document.createElement('span');
  text.className = 'text';
  text.dir = 'auto';
  text.textContent = msg.text;
  li.append(meta, text);
  return li;
}

// The first item of the list with an id above `id` (null: none).
function firstAfter(id) {
  let later = null;
  for (let el = list.lastElementChild; el && Number(el.dataset.id) > id; el = el.previousElementSibling) later = el;
  return later;
}

// Puts `batch` (sorted by id) in the list, which stays sorted by id: what is newer than all it
// shows is appended in one fragment; history and relayed messages can come out of order and are
// inserted where they belong. Touches no layout. Returns whether any was appended at the end.
function placeMessages(batch) {
  const newest = list.lastElementChild ? Number(list.lastElementChild.dataset.id) : -Infinity;
  const tail = document.createDocumentFragment();
  const items = batch.map((msg) => {
    const li = messageItem(msg);
    if (msg.id > newest) tail.append(li);
    else list.insertBefore(li, firstAfter(msg.id));
    return li;
  });
  const appended = tail.childElementCount > 0;
  list.append(tail);
  for (const li of items) {
    groupWithPrevious(li);
    if (li.nextElementSibling) groupWithPrevious(li.nextElementSibling);
  }
  return appended;
}

// Messages of the room in view are drawn together once per frame, not one by one: reading the
// scroll position after each append forced a layout per message, and a burst of thousands froze
// the tab. Layout is read once per batch.
let unrendered = [];           // messages of the room in view not drawn yet

function renderSoon(msg) {
  unrendered.push(msg);
  onceSoon(renderPending);
}

function renderPending() {
  const r = room(current);
  // Only what the room in view still keeps: a reset, a room change or the cap may have dropped some.
  const batch = unrendered.filter((msg) => r.messages.get(msg.id) === msg).sort((a, b) => a.id - b.id);
  unrendered = [];
  if (!batch.length && !evicted(r, list.firstElementChild)) return;
  const stick = atBottom();  // before anything changes: was the reader at the bottom?
  dropEvicted(r);
  const appended = placeMessages(batch);
  if (stick) list.scrollTop = list.scrollHeight;
  else if (appended) $('new-messages').hidden = false;
}

const evicted = (r, li) => Boolean(li) && !r.messages.has(Number(li.dataset.id));

// Removes the items of messages the room no longer keeps (KEEP_PER_ROOM): the oldest, at the top.
function dropEvicted(r) {
  if (!evicted(r, list.firstElementChild)) return;
  while (evicted(r, list.firstElementChild)) list.firstElementChild.remove();
  if (list.firstElementChild) groupWithPrevious(list.firstElementChild);
}

// Runs `fn` once at the next frame, however often it is asked for meanwhile; a hidden tab gets no
// frames, so a timer stands in for it there.
const scheduled = new Set();

function onceSoon(fn) {
  if (scheduled.has(fn)) return;
  scheduled.add(fn);
  const run = () => { if (scheduled.delete(fn)) fn(); };
  requestAnimationFrame(run);
  setTimeout(run, 250);
}

function showNotice(text) {
  $('notice').textContent = text;
  $('notice').hidden = !text;
}

// Who is signed in, or why nobody is. With tokens on there is no nickname to choose: the server
// names a message's author after the token.
function renderAuth() {
  $('who').hidden = !auth.name;
  if (auth.name) {
    const name = document.createElement('strong');
    name.textContent = auth.name;
    $('who').replaceChildren('Signed in as ', name);
  }
  let notice = '';
  if (auth.on && !auth.name) {
    const reason = auth.reason.replace(/^sign-in needed:\s*/i, '');
    if (auth.expired) notice = `Your session expired — sign in again (${reason}).`;
    else notice = `Sign-in needed: ${reason}` + (/[.!?]$/.test(reason) ? '' : '.');
    if (auth.public.length) notice += ` Without signing in you may read ${auth.public.map((p) => '#' + p).join(', ')}.`;
  }
  $('auth-notice').textContent = notice;
  $('auth-notice').hidden = !notice;
  if (auth.on) {
    $('join').hidden = true;
    $('rename').hidden = true;
  }
  renderComposer();
}

// With tokens on the composer is offered only in a room the token may post to; elsewhere a line
// says why not. (With tokens off the nickname box decides: setName, rename.)
function renderComposer() {
  if (!auth.on) return;
  let why = '';
  if (!auth.name) why = mayRead(current) ? `Sign in to post to #${current}.` : `Sign in to read #${current}.`;
  else if (!mayRead(current)) why = notReadable(current);
  else if (!mayPost(current)) why = `#${current} is read-only for you: you may read it but not post to it.`;
  $('composer').hidden = Boolean(why);
  $('composer-note').textContent = why;
  $('composer-note').hidden = !why;
}

function renderPresence() {
  const p = room(current).presence;
  $('online').textContent = p ? `${p.online} online` : '';
  const users = p && Array.isArray(p.users) ? p.users : [];
  $('people').replaceChildren(...users.map((user) => {
    const li = document.createElement('li');
    li.textContent = user;
    if (user === me) li.className = 'me';
    return li;
  }));
}

function roomLink(name) {
  const a = document.createElement('a');
  a.className = 'room-link';
  a.href = '#' + name;
  a.textContent = '#' + name;
  return a;
}

function joinedInOrder() {
  const rest = [...joined].filter((n) => n !== DEFAULT_ROOM).sort();
  return [DEFAULT_ROOM, ...rest];
}

// A room in a list: its link, then a badge (unread count, or how many are online).
function roomItem(name, badgeClass) {
  const li = document.createElement('li');
  li.className = 'room-item';
  li.dataset.room = name;
  const badge = document.createElement('span');
  badge.className = badgeClass;
  li.append(roomLink(name), badge);
  return li;
}

function joinedItem(name) {
  const li = roomItem(name, 'unread');
  if (name !== DEFAULT_ROOM) {
    const leave = document.createElement('button');
    leave.type = 'button';
    leave.className = 'leave';
    leave.textContent = '×';
    leave.title = `Leave #${name}`;
    leave.setAttribute('aria-label', `Leave #${name}`);
    leave.addEventListener('click', () => leaveRoom(name));
    li.append(leave);
  }
  return li;
}

function otherItem(name) {
  return roomItem(name, 'count');
}

// Updates `ul` to hold one item per name, in order, reusing the items it has (so a button being
// clicked is not replaced under the pointer when an unread count changes).
function reconcile(ul, names, create) {
  const have = new Map([...ul.children].map((li) => [li.dataset.room, li]));
  const items = names.map((name) => have.get(name) || create(name));
  if (items.length !== ul.children.length || items.some((li, i) => ul.children[i] !== li)) ul.replaceChildren(...items);
  return items;
}

function renderRooms() {
  let unreadTotal = 0;
  let unreadMore = false;  // some counts are at least what they say
  for (const li of reconcile($('room-list'), joinedInOrder(), joinedItem)) {
    const name = li.dataset.room;
    const r = rooms.get(name);
    const unread = r ? r.unread : 0;
    const more = Boolean(r && r.unreadMore && unread > 0);
    unreadTotal += unread;
    unreadMore ||= more;
    li.classList.toggle('current', name === current);
    li.classList.toggle('locked', !mayRead(name));  // joined before, but not readable now: not streamed
    const link = li.querySelector('.room-link');
    if (name === current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
    const badge = li.querySelector('.unread');
    badge.textContent = `${unread}${more ? '+' : ''}`;
    badge.title = `${unread}${more ? ' or more' : ''} unread`;
    badge.hidden = unread === 0;
  }
  const others = directory.filter((d) => !joined.has(d.room));
  const online = new Map(others.map((d) => [d.room, Number(d.online) || 0]));
  for (const li of reconcile($('other-rooms'), others.map((d) => d.room), otherItem)) {
    li.querySelector('.count').textContent = `${online.get(li.dataset.room)} online`;
  }
  $('other-heading').hidden = others.length === 0;
  document.title = (unreadTotal ? `(${unreadTotal}${unreadMore ? '+' : ''}) ` : '') + `#${current} · sse-chat`;
}

// Shows the room in view: its messages, notice, who is online, and the room list.
function showRoom() {
  const r = room(current);
  r.unread = 0;
  r.unreadMore = false;
  r.shown = true;
  for (const id of r.messages.keys()) r.seenThrough = Math.max(r.seenThrough, id);
  saveSeenSoon();
  list.replaceChildren();
  unrendered = [];  // all of them are drawn now
  placeMessages([...r.messages.values()].sort((a, b) => a.id - b.id));
  list.scrollTop = list.scrollHeight;
  $('new-messages').hidden = true;
  $('room-title').textContent = '#' + current;
  $('text').placeholder = `Message #${current}` + (narrow.matches ? '' : ' (Enter to send, Shift+Enter for a new line)');
  showNotice(r.notice);
  renderPresence();
  renderRooms();
  renderComposer();
  renderOlder();
}

// "Load older messages": the page shows a room's newest 100 and pages back from its oldest, as
// far as the room keeps and this tab holds (KEEP_PER_ROOM).
function renderOlder() {
  const r = room(current);
  $('older').hidden = r.olderDone || r.messages.size === 0 || r.messages.size + PAGE > KEEP_PER_ROOM;
}

async function loadOlder() {
  const name = current;
  const r = room(name);
  const oldest = oldestId(r);
  if (!Number.isFinite(oldest)) return;
  r.capped = false;  // asked for: older messages stay
  const res = await fetch(`/messages?room=${encodeURIComponent(name)}&before=${oldest}&limit=${PAGE}`, { cache: 'no-store' });
  if (!res.ok) return;
  const page = await res.json();
  if (name !== current) return;
  const pillHidden = $('new-messages').hidden;
  const fromBottom = list.scrollHeight - list.scrollTop;  // keeps what was in view where it was
  for (const msg of page) receive({ ...msg, room: msg.room || name }, false);
  renderPending();  // now, not at the next frame: the view is put back where it was below
  list.scrollTop = list.scrollHeight - fromBottom;
  $('new-messages').hidden = pillHidden;  // older messages are not new ones
  r.olderDone = page.length < PAGE;
  renderOlder();
}

// `problem`: a string, or the parts roomError gives (with the name isolated).
function showRoomError(problem) {
  $('room-error').replaceChildren(...(Array.isArray(problem) ? problem : [problem || '']));
  $('room-error').hidden = !problem;
}

// ---- messages and events -----------------------------------------------------------------------

// A room's events are taken while this browser is in it, or while the stream still carries it
// (the leader may relay a room's messages before another tab's join reaches this one).
const wanted = (name) => joined.has(name) || streamRooms.has(name) || name === current;

function receive(msg, live) {
  const name = roomOf(msg);
  knownNewest = Math.max(knownNewest, msg.id);
  if (!wanted(name)) return;
  const r = room(name);
  if (r.messages.has(msg.id)) return;  // a replay, a relay and a history page may overlap
  r.messages.set(msg.id, msg);
  if (r.messages.size > KEEP_PER_ROOM) r.messages.delete(oldestId(r));  // its item goes at the next frame
  if (r.capped) keepNewestPage(r, name, msg.id);
  if (name === current) {
    r.seenThrough = Math.max(r.seenThrough, msg.id);
    saveSeenSoon();
    renderSoon(msg);
  } else if (live && msg.id > r.seenThrough && msg.user !== me) {
    // What a room kept from before it was joined is replayed when the stream adds it: not unread.
    r.unread++;
    onceSoon(renderRooms);  // once per frame, however many come
  }
}

// A room joined while the page is open is replayed from the stream's last id, which may be far
// behind in that room: like a room opened afresh, it shows the newest PAGE of what it had when it
// was joined, the older ones a click away. What it had: ids up to `capThrough`, the room's last id
// from GET /rooms (until it answers, every id counts; if it fails, the cap ends there). The replay
// comes in id order before anything new, so an id past it ends the cap.
function keepNewestPage(r, name, id) {
  if (id > r.capThrough) {
    r.capped = false;
  } else if (r.messages.size > PAGE) {
    r.messages.delete(oldestId(r));
    r.olderDone = false;
    if (name === current) onceSoon(renderOlder);
  }
}

function oldestId(r) {
  let oldest = Infinity;
  for (const id of r.messages.keys()) if (id < oldest) oldest = id;
  return oldest;
}

// The stream says the server no longer has all of a room from where the stream resumed: of that
// room it keeps messages `oldest`–`newest` (none when oldest > newest). Usually older messages fell
// out of its history. But a server that lost its latest messages (a power failure, README
// "Delivery guarantee") issues their ids again, so this page may hold ids above `newest` that the
// server no longer has, and ids up to it that now name other messages. Then the room's messages
// are all dropped: the stream replays what the server keeps and the history is loaded again, so
// the room shows what the server has and then every new message.
function onReset(data) {
  const name = roomOf(data);
  if (!wanted(name)) return;
  const r = room(name);
  const oldest = Number(data.oldest) || 0;
  const newest = Number(data.newest) || 0;
  const keepsNone = oldest > newest;
  if (newest < Math.max(0, ...r.messages.keys())) {
    r.messages.clear();
    r.unread = 0;
    r.unreadMore = false;
    r.seenThrough = Math.min(r.seenThrough, newest);
    r.synced = false;
    // A (re)opened stream must resume no later than the server's newest, or it would skip the
    // ids issued again.
    streamId = Math.min(streamId, newest);
    knownNewest = Math.min(knownNewest, newest);
    r.notice = keepsNone
      ? `The server lost the messages of #${name} shown here and has none now.`
      : `The server lost the latest messages of #${name}: showing what it has now.`;
    if (name === current) {
      list.replaceChildren();
      $('new-messages').hidden = true;
      loadHistory(name).catch(() => {});
    }
    renderRooms();
  } else {
    r.notice = `Some earlier messages of #${name} are no longer available ` +
      (keepsNone ? `(the server keeps no messages of #${name} now).` : `(the server keeps messages ${oldest}–${newest}).`);
  }
  if (name === current) showNotice(r.notice);
}

function onEvent(kind, data) {
  if (kind === 'message') {
    streamId = Math.max(streamId, data.id);
    receive(data, true);
  } else if (kind === 'reset') {
    onReset(data);
  } else if (kind === 'presence') {
    const name = roomOf(data);
    if (!wanted(name)) return;
    room(name).presence = data;
    if (name === current) renderPresence();
  } else if (kind === 'status') {
    status = data;
    setStatus(data.text, data.cls);
  } else if (kind === 'stream') {
    onStreamOpen(data);
  } else if (kind === 'expired') {
    endSession(data && typeof data.reason === 'string' ? data.reason : 'token expired');
  }
}

// The sign-in ran out (the stream said so, or /me refused the token after a refusal): nothing
// more is read or posted, and the stream is not reopened, until the person signs in again.
function endSession(reason) {
  if (auth.on && auth.expired) return;
  auth = signedOut(reason, [], true, true);
  for (const r of rooms.values()) r.presence = null;  // no stream tells who is online any more
  renderAuth();
  renderPresence();
  renderRooms();
  if (!owner) return;
  clearTimeout(retryTimer);
  retryTimer = 0;
  if (source) source.close();
  source = null;
  sourceKey = '';
  ownerEvent('status', { text: 'signed out', cls: 'offline' });
}

// The stream opened carrying `names`. A room whose history was loaded before the stream carried
// it may miss what was posted in between: load it again now (duplicates are dropped by id).
function onStreamOpen(names) {
  streamRooms = new Set(names);
  for (const [name, r] of rooms) if (!streamRooms.has(name)) r.synced = false;
  if (!room(current).synced && streamRooms.has(current)) loadHistory(current).catch(() => {});
}

async function loadHistory(name) {
  if (!mayRead(name)) return 0;  // the server would refuse it
  const carried = streamRooms.has(name);  // from here on the stream delivers what follows
  const res = await fetch(`/messages?room=${encodeURIComponent(name)}&limit=${PAGE}`, { cache: 'no-store' });
  if (!res.ok) throw new Error('history ' + res.status);
  let newest = 0;
  const page = await res.json();
  for (const msg of page) {
    receive({ ...msg, room: msg.room || name }, false);
    newest = Math.max(newest, msg.id);
  }
  if (rooms.has(name) && page.length < PAGE) rooms.get(name).olderDone = true;  // all it keeps
  if (carried && rooms.has(name)) rooms.get(name).synced = true;
  if (name === current) renderOlder();
  return newest;
}

// GET /rooms: the directory shown under "Other rooms". Returns the newest id of any room.
async function loadDirectory() {
  if (auth.on && auth.presented) return 0;  // a refused token: the server refuses this too
  const res = await fetch('/rooms?limit=50', { cache: 'no-store' });
  if (!res.ok) return 0;  // a server without rooms
  const all = await res.json();
  directory = (Array.isArray(all) ? all : []).filter((d) => d && typeof d.room === 'string' && ROOM_NAME.test(d.room));
  renderRooms();
  const newest = directory.reduce((max, d) => Math.max(max, Number(d.last_id) || 0), 0);
  knownNewest = Math.max(knownNewest, newest);
  return newest;
}

// ---- the one stream ------------------------------------------------------------------------------

// One EventSource per browser, not per tab: the tab holding the Web Lock is the leader, keeps the
// stream for every room the browser is in and relays every event to the other tabs over a
// BroadcastChannel. Tabs tell each other (and so the leader) when they join or leave a room or
// change the nickname; the leader then reopens the stream with the new rooms from the last id it
// has. When the leader closes, its lock is released and a waiting tab takes over, resuming from
// the last id it has. Browsers without these APIs fall back to one stream per tab.
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('sse-chat') : null;
let owner = false;             // this tab holds the EventSource
let source = null;
let sourceKey = '';
let retryTimer = 0;

function relay(kind, data) {
  if (channel) channel.postMessage({ kind, data });
}

function ownerEvent(kind, data) {
  onEvent(kind, data);
  relay(kind, data);
}

// Why the server would refuse `name` as a message's user, or null.
function nameError(name) {
  const length = [...name].length;
  if (length === 0) return 'Type a nickname.';
  if (length > MAX_NAME_CHARS) return `A nickname is at most ${MAX_NAME_CHARS} characters (this one has ${length}).`;
  if (HALF_CHARACTER.test(name)) return `The nickname has half a character in it: ${HALF_NOTE}`;
  return /[\u0000-\u001f\u007f-\u009f]/.test(name) ? 'A nickname cannot contain control characters.' : null;
}

const validName = (name) => nameError(name) === null;

// The rooms the stream carries: the joined rooms this browser may read (one it may not would make
// the server refuse the whole stream).
const streamNames = () => [...joined].filter(mayRead).sort();

// The stream's rooms and reader name, as a query string: reopened when it changes. With tokens on
// the server names the reader after the token.
function streamQuery() {
  const parts = streamNames().map((name) => 'room=' + name);  // names need no escaping
  if (!auth.on && validName(me)) parts.push('user=' + encodeURIComponent(me));
  return parts.join('&');
}

function openStream() {
  clearTimeout(retryTimer);
  retryTimer = 0;
  const names = streamNames();
  if (!names.length) {
    // Nothing here may be read: a stream would only be refused (one naming no room reads general).
    source = null;
    sourceKey = '';
    const text = !auth.name ? (auth.expired ? 'signed out' : 'not signed in') : 'no rooms to read';
    ownerEvent('status', { text, cls: 'offline' });
    return;
  }
  const query = streamQuery();
  // A room this stream adds had nothing for it to miss: a reset for it on the first connection
  // only says the room kept less than what followed the resume id.
  let fresh = new Set(names.filter((n) => !streamRooms.has(n)));
  let refusal = '';  // why the server refused this stream for now, until it delivers again
  // Resume from the last id the stream delivered; the server replays what followed in every
  // room of the stream, or sends `reset` for a room that no longer reaches back that far.
  const es = new EventSource(`/events?${query}&lastEventId=${streamId}`);
  source = es;
  sourceKey = query;
  const ours = (fn) => (e) => { if (source === es) fn(e); };
  es.onopen = ours(() => {
    ownerEvent('status', { text: 'connected', cls: 'connected' });
    ownerEvent('stream', names);
  });
  const forward = (kind) => ours((e) => {
    let data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    refusal = '';
    ownerEvent(kind, data);
  });
  es.onmessage = forward('message');
  es.addEventListener('reset', ours((e) => {
    let data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    if (!fresh.has(roomOf(data))) ownerEvent('reset', data);
  }));
  es.addEventListener('presence', forward('presence'));
  // Refused for now (the server is busy, or this address holds too many streams): say why; the
  // EventSource comes back by itself after the retry time the server gave.
  es.addEventListener('refused', ours((e) => {
    let data = {};
    try { data = JSON.parse(e.data); } catch (_) { /* the reason is optional */ }
    refusal = typeof data.reason === 'string' ? data.reason : 'busy';
    ownerEvent('status', { text: `waiting: ${refusal}`, cls: 'reconnecting' });
  }));
  // The token that opened the stream ran out: the server ends the stream and would refuse it
  // again. No reconnecting; every tab is told.
  es.addEventListener('expired', ours((e) => {
    let data = {};
    try { data = JSON.parse(e.data); } catch (_) { /* the reason is optional */ }
    es.close();
    source = null;
    ownerEvent('expired', data);
  }));
  es.onerror = ours(() => {
    fresh = new Set();  // from here on a reset means something this page had is gone
    if (es.readyState === EventSource.CLOSED) {
      ownerEvent('status', { text: 'offline', cls: 'offline' });
      source = null;
      // The server refused the stream: try again later ourselves, unless (with tokens on) the
      // refusal was the sign-in running out.
      (auth.on ? checkSession() : Promise.resolve(true)).then((again) => {
        if (again && owner && !source) retryTimer = setTimeout(openStream, 3000);
      });
    } else if (!refusal) {
      ownerEvent('status', { text: navigator.onLine ? 'reconnecting…' : 'offline', cls: 'reconnecting' });
    }
  });
}

// Asks GET /me, after a refusal, whether this browser's sign-in still holds. When it ran out (or a
// token appeared that the server refuses) the session ends in every tab: false then.
async function checkSession() {
  if (auth.expired) return false;
  const now = await fetchMe();
  if (!now || !now.on || now.name) return true;  // out of reach, or signed in: refused for another reason
  if (!auth.name && !now.presented) return true;  // still reading public rooms without a token
  ownerEvent('expired', { reason: now.reason });  // any tab may learn it first
  return false;
}

// A stream can die without a word: a NAT or Wi-Fi change drops its path, and the browser, only
// reading, never learns (the server's heartbeats are comments, which EventSource does not show).
// So the leader compares: when GET /rooms (polled anyway) names a message of a streamed room the
// stream has not delivered, and STREAM_GRACE_MS later it still has delivered nothing, the stream is reopened
// from its last id. Nothing is lost either way; a quiet room costs nothing.
function checkStreamAlive() {
  if (!owner || !source || source.readyState !== EventSource.OPEN) return;
  // A room keeping no messages may still have a last id (a floor it was made with): nothing to deliver.
  const owed = directory.filter((d) => streamRooms.has(d.room) && Number(d.messages) > 0)
    .reduce((max, d) => Math.max(max, Number(d.last_id) || 0), 0);
  if (owed <= streamId) return;
  const es = source;
  const had = streamId;
  setTimeout(() => {
    // Delivering anything (a long replay on a slow link, say) is alive.
    if (source !== es || es.readyState !== EventSource.OPEN || streamId >= owed || streamId > had) return;
    es.close();
    source = null;
    ownerEvent('status', { text: 'reconnecting…', cls: 'reconnecting' });
    openStream();
  }, STREAM_GRACE_MS);
}

// Reopens the stream when its rooms or reader name changed (only in the tab that owns it).
function syncStream() {
  if (!owner || (source && sourceKey === streamQuery())) return;
  if (source) source.close();
  source = null;
  openStream();
}

function connect() {
  if (!channel || !navigator.locks) {
    owner = true;
    openStream();
    return;
  }
  setStatus('connected (shared)', 'connected');
  relay('hello', helloToken);  // the leader answers with its rooms, stream, status and presence
  // Resolves only when this tab closes, so the lock is held for the tab's lifetime.
  navigator.locks.request('sse-chat-leader', () => {
    owner = true;
    document.documentElement.dataset.role = 'leader';
    openStream();
    return new Promise(() => {});
  });
}

// What a new tab needs from the leader, answering its hello.
function snapshot(to) {
  const presence = [];
  for (const r of rooms.values()) if (r.presence) presence.push(r.presence);
  return { to, rooms: [...joined], stream: [...streamRooms], status, presence };
}

// The leader's answer to this tab's hello. Its rooms replace the ones read from localStorage
// when this tab started (another tab may have changed them since); taken once, since later joins
// and leaves come as their own messages.
const helloToken = newNonce();
let adopted = false;

function adopt(state) {
  if (owner || adopted || state.to !== helloToken) return;
  adopted = true;
  const before = JSON.stringify([...joined]);
  joined = new Set([DEFAULT_ROOM]);
  for (const name of state.rooms) if (ROOM_NAME.test(name) && joined.size < maxRooms) joined.add(name);
  if (!joined.has(current)) joinRoom(current);  // the leader has not heard of it yet
  if (JSON.stringify([...joined]) !== before) saveJoined();
  for (const p of state.presence) if (joined.has(roomOf(p))) room(roomOf(p)).presence = p;
  setStatus(state.status.text, state.status.cls);
  if (state.stream.length) onStreamOpen(state.stream);
  renderPresence();
  renderRooms();
}

function onChannel(e) {
  const { kind, data } = e.data || {};
  if (kind === 'join') applyJoin(data);
  else if (kind === 'leave') applyLeave(data);
  else if (kind === 'name') applyName(data);
  else if (kind === 'hello') { if (owner) relay('state', snapshot(data)); }
  else if (kind === 'state') adopt(data);
  else if (kind === 'auth') recheckAuth();
  else onEvent(kind, data);
}

const authKey = (a) => JSON.stringify([a.on, a.name, a.rooms, a.read, a.public, a.presented, a.expired]);

// A tab opened after signing in (or in again) knows first, since the cookie is shared: it says so,
// and every tab asks /me again; the leader reopens the stream for the rooms now readable.
async function recheckAuth() {
  const now = await fetchMe();
  if (!now || authKey(now) === authKey(auth)) return;
  if (auth.expired && !now.name) return;  // still signed out: "your session expired" stays
  auth = now;
  if (auth.on) me = auth.name;
  renderAuth();
  renderRooms();
  if (!owner) return;
  if (source) source.close();  // opened with the old sign-in: its reader's name and rooms
  source = null;
  openStream();
}

// ---- rooms: join, leave, view ----------------------------------------------------------------------

function applyJoin(name) {
  if (typeof name !== 'string' || !ROOM_NAME.test(name) || joined.has(name) || joined.size >= maxRooms) return;
  joined.add(name);
  Object.assign(room(name), { capped: true, capThrough: Infinity });
  markSeen(room(name), knownNewest);
  saveJoined();
  renderRooms();
  syncStream();
  // What the room held when it was joined is its history, not unread: the stream replays it (from
  // the last id the stream had) and this tab may not know how far the room had got.
  loadDirectory().then((newest) => {
    const entry = directory.find((d) => d.room === name);
    const lastId = entry ? Number(entry.last_id) || 0 : newest;
    if (!rooms.has(name)) return;
    const r = rooms.get(name);
    markSeen(r, lastId);
    if (r.capped) r.capThrough = lastId;
    renderRooms();
  }).catch(() => {
    if (rooms.has(name)) rooms.get(name).capped = false;
  });
}

function markSeen(r, id) {
  r.seenThrough = Math.max(r.seenThrough, id);
  saveSeenSoon();
  const fresh = [...r.messages.values()].filter((m) => m.id > r.seenThrough && m.user !== me);
  r.unread = r === rooms.get(current) ? 0 : fresh.length;
  if (r.unread === 0) r.unreadMore = false;  // read (in another tab, say): counted exactly from here
}

function applyLeave(name) {
  if (name === DEFAULT_ROOM || !joined.delete(name)) return;
  rooms.delete(name);
  streamRooms.delete(name);
  saveJoined();
  if (name === current) location.hash = '#' + DEFAULT_ROOM;  // hashchange shows general
  renderRooms();
  syncStream();
}

function joinRoom(name) {
  applyJoin(name);
  relay('join', name);
}

function leaveRoom(name) {
  applyLeave(name);
  relay('leave', name);
}

// Why `name` cannot be put in view (and so joined), or null.
function joinProblem(name) {
  const invalid = roomError(name);
  if (invalid || joined.has(name)) return invalid;
  if (joined.size >= maxRooms) return tooMany();
  return mayRead(name) ? null : notReadable(name);
}

// Room names are lowercase: "/#Team-A" is #team-a, as a name typed in the box is.
function hashRoom() {
  let name = location.hash.slice(1);
  try { name = decodeURIComponent(name); } catch (_) { /* shown as typed */ }
  return name.toLowerCase() || DEFAULT_ROOM;
}

// Puts `name` in view, joining it if need be (so a link to /#room opens it).
function view(name, load = true) {
  const problem = joinProblem(name);
  if (problem) {
    showRoomError(problem);
    name = joined.has(current) ? current : DEFAULT_ROOM;
    history.replaceState(null, '', '#' + name);
  } else {
    showRoomError('');
    if (location.hash && location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
  }
  current = name;
  if (!joined.has(name)) joinRoom(name);
  showRoom();
  if (load && !room(name).synced) loadHistory(name).catch(() => {});
}

// ---- sending ------------------------------------------------------------------------------------------

function newNonce() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);
}

// The message last sent whose fate is not known yet ({ text, room, nonce }): sending the same text
// to the same room again reuses its nonce, so if the server stored it after all (only its answer
// was lost) it answers with the original id instead of storing a copy. Forgotten once an answer
// says whether it was stored.
let unsettled = null;
const UNSETTLED_MS = 10 * 60 * 1000;  // since its last attempt: a resend after that is a new message

function nonceFor(text, to) {
  const now = performance.now();  // monotonic: a clock set back or forward does not count
  const fresh = unsettled && unsettled.text === text && unsettled.room === to && now - unsettled.at < UNSETTLED_MS;
  if (!fresh) unsettled = { text, room: to, nonce: newNonce() };
  unsettled.at = now;
  return unsettled.nonce;
}

const RETRY_NOTE = 'press Enter to retry; it will not be posted twice.';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Posts a message; null once stored, else what to tell the person.
async function send(text, to) {
  // With tokens on the server takes the author's name from the token.
  const body = JSON.stringify({ user: auth.on ? undefined : me, text, room: to, nonce: nonceFor(text, to) });
  // Retry a network failure, a 503 or a proxy's 502/504 (a node stopping or out of reach) with the
  // same nonce: the server answers the retry with the original id, so a message whose answer was
  // lost is never posted twice.
  for (let attempt = 0; ; attempt++) {
    let res;
    try {
      res = await fetch('/messages', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    } catch (_) {
      // No answer: the server may have stored it all the same.
      if (attempt >= 4) return `Could not reach the server; your message may not have been sent — ${RETRY_NOTE}`;
      showSending('Could not reach the server, retrying…');
      await sleep(500 * (attempt + 1));
      continue;
    }
    if (res.status < 500) unsettled = null;  // stored, or refused: either way settled
    if (res.ok) return null;
    let reason = res.statusText;
    try { reason = (await res.json()).error || reason; } catch (_) { /* not JSON */ }
    if ([502, 503, 504].includes(res.status)) {
      if (attempt >= 4) return gaveUp(res.status, reason);
      // Storage is failing, or the proxy found no node: wait as told, retry with the same nonce.
      showSending(res.status === 503 ? `Server busy (${reason}), retrying…` : 'Server unreachable, retrying…');
      const wait = Number(res.headers.get('Retry-After')) || (res.status === 503 ? 2 : 1);
      await sleep(Math.min(wait, 10) * 1000);
      continue;
    }
    return refusedReason(res, reason);
  }
}

// After the last retry: a 503 says the server did not store it; a proxy's 502/504 cannot tell.
function gaveUp(status, reason) {
  if (status === 503 && !/may have stored/.test(reason)) return `Not sent: ${reason} — ${RETRY_NOTE}`;
  return `The server did not answer (${reason}); your message may not have been sent — ${RETRY_NOTE}`;
}

// What to say about a 4xx answer: the message was not stored.
function refusedReason(res, reason) {
  if (res.status === 401 && auth.on) checkSession();  // ends the session if it ran out
  if (res.status !== 429) return reason;
  const wait = res.headers.get('Retry-After');
  return `Slow down: ${reason}` + (wait ? ` (try again in ${wait}s)` : '');
}

// While a send is retried: says so, so a disabled box is not a mystery ('' clears it).
function showSending(text) {
  $('send-status').textContent = text;
  $('send-status').hidden = !text;
}

// ---- nickname -----------------------------------------------------------------------------------------

function applyName(name) {
  if (typeof name !== 'string' || name === me) return;
  me = name;
  for (const li of list.children) li.classList.toggle('mine', li.dataset.user === me);
  renderPresence();
  syncStream();  // the stream names its reader, for presence
}

function showNameError(text) {
  $('name-error').textContent = text || '';
  $('name-error').hidden = !text;
}

function setName(name) {
  localStorage.setItem(NAME_KEY, name);
  showNameError('');
  $('join').hidden = true;
  $('composer').hidden = false;
  $('rename').hidden = false;
  if (name !== me) {
    applyName(name);
    relay('name', name);
  }
  $('text').focus();
}

// ---- wiring -------------------------------------------------------------------------------------------

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  const problem = nameError(name);
  showNameError(problem);
  if (!problem) setName(name);
});
$('name').addEventListener('input', () => showNameError(''));

$('rename').addEventListener('click', () => {
  $('name').value = me;
  $('join').hidden = false;
  $('composer').hidden = true;
  $('name').focus();
});

$('room-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('room-name').value.trim().replace(/^#/, '').toLowerCase();
  const problem = joinProblem(name);
  showRoomError(problem);
  if (problem) return;
  $('room-name').value = '';
  if (name !== current) location.hash = '#' + name;  // hashchange puts it in view
});
$('room-name').addEventListener('input', () => showRoomError(''));

window.addEventListener('hashchange', () => view(hashRoom()));
// Another tab of this browser showed a room's messages: they are read here too.
window.addEventListener('storage', (e) => {
  if (e.key !== SEEN_KEY) return;
  const seen = readSeen();
  for (const [name, r] of rooms) if ((seen.get(name) || 0) > r.seenThrough) markSeen(r, seen.get(name));
  renderRooms();
});

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault();
  const box = $('text');
  const text = box.value.trim();
  if (!text) return;
  const length = [...text].length;
  let error = length > MAX_TEXT_CHARS ? `A message is at most ${MAX_TEXT_CHARS} characters (this one has ${length}).` : null;
  if (!error && HALF_CHARACTER.test(text)) error = `The message has half a character in it (from a broken paste?): ${HALF_NOTE}`;
  if (!error) {
    $('send').disabled = box.disabled = true;
    list.scrollTop = list.scrollHeight;  // whoever sends wants to see it arrive
    error = await send(text, current);
    showSending('');
    $('send').disabled = box.disabled = false;
  }
  $('error').hidden = !error;
  $('error').textContent = error || '';
  if (!error) box.value = '';
  box.focus();
});

$('text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('composer').requestSubmit();
  }
});

list.addEventListener('scroll', () => { if (atBottom()) $('new-messages').hidden = true; });
$('older').addEventListener('click', () => loadOlder().catch(() => {}));
window.addEventListener('pagehide', () => {
  if (seenSaveTimer) saveSeen();
});

$('new-messages').addEventListener('click', () => {
  list.scrollTop = list.scrollHeight;
  $('new-messages').hidden = true;
});

(async function start() {
  // Who this browser is decides the rest: a nickname typed here or the token's name, and which
  // rooms are read and posted to.
  auth = (await fetchMe()) || { on: false };
  if (auth.on) me = auth.name;
  else if (me && nameError(me)) me = '';  // asked for again
  const left = fitJoined(hashRoom());
  renderAuth();
  if (!auth.on && me) setName(me);
  else if (!auth.on) {
    $('join').hidden = false;
    $('name').focus();
  }
  // Listen to the leader before fetching history, so nothing posted meanwhile falls between.
  if (channel) channel.onmessage = onChannel;
  relay('auth');  // the other tabs (the leader among them) may still have an older sign-in
  view(hashRoom(), false);
  if (left.length) showRoomError(`This server carries at most ${maxRooms} rooms on one stream: left ${left.map((n) => '#' + n).join(', ')}.`);
  // The newest id of any room first, then the room in view's history: everything up to that id
  // is history (fetched when a room is viewed), so the stream starts there and replays nothing
  // older in the other rooms.
  const newest = await loadDirectory().catch(() => 0);
  const loaded = await loadHistory(current).catch(() => 0);  // the stream replays what it can
  streamId = Math.max(streamId, newest, loaded);
  connect();
  loadUnread().catch(() => {});
  setInterval(() => loadDirectory().then(checkStreamAlive).catch(() => {}), DIRECTORY_POLL_MS);
})();
