// gwupstream.js: a test upstream for the gateway's integration tests (Node.js `http` only).
//
//   node gwupstream.js PORT [--log FILE] [--down-file FILE]
//
// Listens on 127.0.0.1:PORT and prints "ready" on stdout once listening. With --log, appends
// one line per request ("<port> <METHOD> <url>") to FILE, written synchronously so a test
// can count what reached the upstream (a smuggled second request shows up as an extra line).
//
// Endpoints (any method):
//   /echo, and any path not below    JSON {port, method, url, httpVersion, headers (lower-case
//                                    names; a repeated header as a list), body_length,
//                                    body_sha256}
//   /big?n=BYTES                     n deterministic bytes (byte i = (i * 131 + 7) mod 251),
//                                    Content-Length, header x-body-sha256
//   /chunked?n=BYTES&parts=K         the same bytes in K writes, Transfer-Encoding: chunked,
//                                    header x-body-sha256
//   /slow?ms=MS                      answers "slow\n" after MS milliseconds
//   /status?code=C                   answers status C with a short body
//   /close-mid                       Content-Length: 1000, 100 bytes, then destroys the socket
//   /healthz                         200 "ok\n", or 503 when the --down-file exists
//   /id                              its own port, as text ("<port>\n")
//   /count                           TCP connections accepted so far whose first request was
//                                    not /healthz nor /count ("<n>\n"): the connections a
//                                    proxy opened for traffic (active health checks and the
//                                    test's own probe do not count)
'use strict';
const http = require('http');
const fs = require('fs');
const crypto = require('crypto');

const args = process.argv.slice(2);
const port = parseInt(args[0], 10);
let logFile = null;
let downFile = null;
for (let i = 1; i < args.length; i++) {
  if (args[i] === '--log') logFile = args[++i];
  else if (args[i] === '--down-file') downFile = args[++i];
  else {
    console.error(`gwupstream: unknown argument ${args[i]}`);
    process.exit(2);
  }
}
if (!(port > 0 && port < 65536)) {
  console.error('usage: node gwupstream.js PORT [--log FILE] [--down-file FILE]');
  process.exit(2);
}

function pattern(n) {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + 7) % 251;
  return b;
}
function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}
function num(q, key, dflt) {
  const v = q.get(key);
  if (v === null) return dflt;
  const n = parseInt(v, 10);
  return Number.isFinite(n) && n >= 0 ? n : dflt;
}

let accepted = 0;
const counted = new WeakSet();
const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  if (!counted.has(req.socket)) {
    counted.add(req.socket);
    if (u.pathname !== '/healthz' && u.pathname !== '/count') accepted++;
  }
  if (logFile) fs.appendFileSync(logFile, `${port} ${req.method} ${req.url}\n`);
  const q = u.searchParams;
  switch (u.pathname) {
    case '/big': {
      const b = pattern(num(q, 'n', 1024));
      res.writeHead(200, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': b.length,
        'x-body-sha256': sha256(b),
      });
      res.end(b);
      req.resume();
      return;
    }
    case '/chunked': {
      const b = pattern(num(q, 'n', 1024));
      const parts = Math.max(1, num(q, 'parts', 4));
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'x-body-sha256': sha256(b) });
      const step = Math.ceil(b.length / parts) || 1;
      for (let off = 0; off < b.length; off += step) res.write(b.subarray(off, off + step));
      res.end();
      req.resume();
      return;
    }
    case '/slow': {
      const t = setTimeout(() => {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('slow\n');
      }, num(q, 'ms', 1000));
      res.on('close', () => clearTimeout(t));
      req.resume();
      return;
    }
    case '/status': {
      const c = num(q, 'code', 200);
      res.writeHead(c >= 200 && c <= 599 ? c : 500, { 'Content-Type': 'text/plain' });
      res.end(`status ${c}\n`);
      req.resume();
      return;
    }
    case '/close-mid': {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': 1000 });
      res.write(pattern(100), () => setTimeout(() => req.socket.destroy(), 50));
      req.resume();
      return;
    }
    case '/healthz': {
      const down = downFile !== null && fs.existsSync(downFile);
      res.writeHead(down ? 503 : 200, { 'Content-Type': 'text/plain' });
      res.end(down ? 'down\n' : 'ok\n');
      req.resume();
      return;
    }
    case '/id':
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(`${port}\n`);
      req.resume();
      return;
    case '/count':
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(`${accepted}\n`);
      req.resume();
      return;
    default: {
      const h = crypto.createHash('sha256');
      let len = 0;
      req.on('data', (d) => {
        len += d.length;
        h.update(d);
      });
      req.on('end', () => {
        const headers = {};
        for (let i = 0; i < req.rawHeaders.length; i += 2) {
          const k = req.rawHeaders[i].toLowerCase();
          const v = req.rawHeaders[i + 1];
          if (k in headers) headers[k] = [].concat(headers[k], v);
          else headers[k] = v;
        }
        const body = JSON.stringify({
          port,
          method: req.method,
          url: req.url,
          httpVersion: req.httpVersion,
          headers,
          body_length: len,
          body_sha256: h.digest('hex'),
        });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(body + '\n');
      });
    }
  }
});
// longer than the gateway's pool idle timeout, so that the gateway closes idle connections
// first (the usual deployment); the keep-alive race is tested separately
server.keepAliveTimeout = 120000;
server.headersTimeout = 130000;
server.requestTimeout = 0;
server.listen(port, '127.0.0.1', () => {
  console.log('ready');
});
for (const s of ['SIGTERM', 'SIGINT']) {
  process.on(s, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
