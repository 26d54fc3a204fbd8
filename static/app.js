// sse-chat page: load recent history, then follow /events from the last id seen, so nothing falls
// between. Text is only ever set with textContent.
'use strict';

const $ = (id) => document.getElementById(id);
const list = $('messages');
const seen = new Set();          // message ids shown, so a replay after reconnect shows each once
let lastId = 0;
let lastAuthor = null;
let me = localStorage.getItem('sse-chat-name') || '';
let source = null;

function setStatus(text, cls) {
  const el = $('status');
  el.textContent = text;
  el.className = 'status ' + cls;
}

function atBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function render(msg) {
  if (seen.has(msg.id)) return;
  seen.add(msg.id);
  lastId = Math.max(lastId, msg.id);
  const stick = atBottom();
  const li = document.createElement('li');
  li.className = 'message' + (msg.user === me ? ' mine' : '') + (msg.user === lastAuthor ? ' grouped' : '');
  li.dataset.id = String(msg.id);
  const meta = document.createElement('span');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = msg.user + ' · ';
  const time = document.createElement('time');
  const when = new Date(msg.ts);
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  meta.append(author, time);
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = msg.text;
  li.append(meta, text);
  // Relayed and fetched messages can arrive out of order: keep the list sorted by id.
  const later = [...list.children].find((el) => Number(el.dataset.id) > msg.id);
  list.insertBefore(li, later || null);
  lastAuthor = msg.user;
  if (stick) list.scrollTop = list.scrollHeight;
  else $('new-messages').hidden = false;
}

function showNotice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = false;
}

async function loadHistory() {
  const res = await fetch('/messages?limit=100', { cache: 'no-store' });
  if (!res.ok) throw new Error('history ' + res.status);
  for (const msg of await res.json()) render(msg);
}

// One EventSource per browser, not per tab: the tab holding the Web Lock is the leader, keeps the
// stream and relays every event to the other tabs over a BroadcastChannel. When the leader closes,
// its lock is released and a waiting tab takes over, resuming from the last id it has. Browsers
// without these APIs fall back to one stream per tab.
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('sse-chat') : null;

function relay(kind, data) {
  if (channel) channel.postMessage({ kind, data });
}

function onEvent(kind, data) {
  if (kind === 'message') render(data);
  else if (kind === 'reset') {
    showNotice(`Some earlier messages are no longer available (the server keeps messages ${data.oldest}–${data.newest}).`);
  } else if (kind === 'presence') $('online').textContent = data.online + ' online';
  else if (kind === 'status') setStatus(data.text, data.cls);
}

function leaderStatus(text, cls) {
  onEvent('status', { text, cls });
  relay('status', { text, cls });
}

function openStream() {
  // Resume from the last id we have; the server replays what we missed, or sends `reset`.
  source = new EventSource('/events?lastEventId=' + lastId);
  source.onopen = () => leaderStatus('connected', 'connected');
  const forward = (kind) => (e) => {
    const data = JSON.parse(e.data);
    onEvent(kind, data);
    relay(kind, data);
  };
  source.onmessage = forward('message');
  source.addEventListener('reset', forward('reset'));
  source.addEventListener('presence', forward('presence'));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      leaderStatus('offline', 'offline');
      source = null;
      setTimeout(openStream, 3000);  // the server refused the stream: try again later ourselves
    } else {
      leaderStatus(navigator.onLine ? 'reconnecting…' : 'offline', 'reconnecting');
    }
  };
}

function connect() {
  if (!channel || !navigator.locks) return openStream();
  setStatus('connected (shared)', 'connected');
  // Resolves only when this tab closes, so the lock is held for the tab's lifetime.
  navigator.locks.request('sse-chat-leader', () => {
    document.documentElement.dataset.role = 'leader';
    openStream();
    return new Promise(() => {});
  });
}

function newNonce() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);
}

async function send(text) {
  const body = JSON.stringify({ user: me, text, nonce: newNonce() });
  // Retry a network failure or a 503 with the same nonce: the server answers the retry with the
  // original id, so a message whose answer was lost is never posted twice.
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch('/messages', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
      if (res.ok) return null;
      let reason = res.statusText;
      try { reason = (await res.json()).error || reason; } catch (_) { /* not JSON */ }
      if (res.status === 503 && attempt < 4) {
        // Storage is failing and nothing was stored: wait as told, retry with the same nonce.
        const wait = Number(res.headers.get('Retry-After')) || 2;
        await new Promise((r) => setTimeout(r, Math.min(wait, 10) * 1000));
        continue;
      }
      if (res.status === 429) {
        const wait = res.headers.get('Retry-After');
        return `Slow down: ${reason}` + (wait ? ` (try again in ${wait}s)` : '');
      }
      return reason;
    } catch (err) {
      if (attempt >= 4) return 'Could not reach the server; your message was not sent.';
      await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    }
  }
}

function join(name) {
  me = name.trim();
  localStorage.setItem('sse-chat-name', me);
  $('join').hidden = true;
  $('composer').hidden = false;
  $('rename').hidden = false;
  for (const li of list.children) li.classList.toggle('mine', li.querySelector('.author').textContent === me + ' · ');
  $('text').focus();
}

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  if (name) join(name);
});

$('rename').addEventListener('click', () => {
  $('name').value = me;
  $('join').hidden = false;
  $('composer').hidden = true;
  $('name').focus();
});

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault();
  const box = $('text');
  const text = box.value.trim();
  if (!text) return;
  $('send').disabled = box.disabled = true;
  const error = await send(text);
  $('send').disabled = box.disabled = false;
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
$('new-messages').addEventListener('click', () => {
  list.scrollTop = list.scrollHeight;
  $('new-messages').hidden = true;
});

(async function start() {
  if (me) join(me);
  else $('name').focus();
  // Listen to the leader before fetching history, so nothing posted meanwhile falls between.
  if (channel) channel.onmessage = (e) => onEvent(e.data.kind, e.data.data);
  try { await loadHistory(); } catch (_) { /* the stream replays what it can */ }
  connect();
})();
