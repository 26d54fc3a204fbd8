// The usual Node.js SSE chat demo, with sse-chat's API, for scripts/bench:
// GET /events streams, POST /messages {"user","text"} broadcasts to every stream.
'use strict';
const http = require('http');

const port = Number(process.argv[2] || 8082);
const clients = new Set();
let nextId = 1;

http.createServer((req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/events')) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    res.write('retry: 2000\n\n');
    clients.add(res);
    req.on('close', () => clients.delete(res));
    return;
  }
  if (req.method === 'POST' && req.url === '/messages') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      let msg;
      try { msg = JSON.parse(body); } catch { reply(res, 400, '{"error":"bad json"}'); return; }
      const id = nextId++;
      const frame = `id: ${id}\ndata: ${JSON.stringify({ id, user: msg.user, text: msg.text, ts: Date.now() })}\n\n`;
      for (const c of clients) c.write(frame);
      reply(res, 201, `{"id":${id}}`);
    });
    return;
  }
  reply(res, 404, '{"error":"not found"}');
}).listen(port, '127.0.0.1');

function reply(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }).end(body);
}
