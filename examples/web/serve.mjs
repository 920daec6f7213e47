#!/usr/bin/env node
// A static file server for the web example (Node, no dependencies): the page, its
// script and style, ResClient's browser build from the npm package, and config.json
// telling the page where Resgate is. Loopback only.
//
// It is also the example's identity provider, for development only: `POST /token` with
// `{name, password, ttl?}` answers `{token}`, an HS256 JWT for a demo account (the
// accounts of examples/auth.rs), signed with the secret in --jwt-secret-file (the one
// connres's `auth:` block reads), valid for `ttl` seconds (default 3600, at most a day).
//
//   node examples/web/serve.mjs [--port 8000] [--resgate ws://127.0.0.1:8080] [--jwt-secret-file F]
//
// --port 0 picks a free port. ResClient comes from e2e/node_modules (scripts/install-e2e.sh
// installs it; --resclient PATH names another copy of dist/resclient.js).

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(option('port', '8000'));
const resgate = option('resgate', 'ws://127.0.0.1:8080');
const resclient = option('resclient', path.join(here, '../../e2e/node_modules/resclient/dist/resclient.js'));

const secretFile = option('jwt-secret-file', null);
const secret = secretFile ? readFileSync(secretFile, 'utf8').trim() : null;

// The demo accounts (examples/auth.rs has the same).
const ACCOUNTS = {
  ann: { password: 'ann-pass', sub: 42, name: 'Ann', role: 'admin' },
  bob: { password: 'bob-pass', sub: 43, name: 'Bob', role: 'user' },
  cat: { password: 'cat-pass', sub: 44, name: 'Cat', role: 'guest' },
};

/** An HS256 JWT of `claims`. */
function sign(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** `POST /token`: a JWT for a demo account, or 401. */
async function token(req, res) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 4096) {
      res.writeHead(413).end();
      return;
    }
  }
  let asked;
  try {
    asked = JSON.parse(body);
  } catch {
    asked = {};
  }
  const account = ACCOUNTS[asked.name];
  if (!account || account.password !== asked.password) {
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ message: 'Unknown user name or wrong password' }));
    return;
  }
  const ttl = Math.min(Math.max(Number(asked.ttl) || 3600, 1), 86400);
  const now = Math.floor(Date.now() / 1000);
  const { sub, name, role } = account;
  const jwt = sign({ sub, name, role, iat: now, exp: now + ttl, iss: 'connres-web-example' });
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ token: jwt }));
}

// Only these paths exist: nothing else on disk is reachable.
const routes = {
  '/': { file: path.join(here, 'index.html'), type: 'text/html; charset=utf-8' },
  '/index.html': { file: path.join(here, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: path.join(here, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: path.join(here, 'style.css'), type: 'text/css; charset=utf-8' },
  '/resclient.js': { file: resclient, type: 'text/javascript; charset=utf-8' },
  '/config.json': { body: JSON.stringify({ resgate, issuer: secret ? 'token' : null }), type: 'application/json' },
};

const server = http.createServer(async (req, res) => {
  const pathname = new URL(req.url, 'http://localhost').pathname;
  if (pathname === '/token' && secret && req.method === 'POST') {
    await token(req, res);
    return;
  }
  const route = routes[pathname];
  if (!route || (req.method !== 'GET' && req.method !== 'HEAD')) {
    res.writeHead(route ? 405 : 404, { 'content-type': 'text/plain' }).end(route ? 'method not allowed\n' : 'not found\n');
    return;
  }
  try {
    const body = route.body ?? (await readFile(route.file));
    res.writeHead(200, { 'content-type': route.type, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch (e) {
    console.error(`serve: ${route.file}: ${e.message}`);
    res.writeHead(500, { 'content-type': 'text/plain' }).end('cannot read the file (is e2e/node_modules installed? scripts/install-e2e.sh)\n');
  }
});

server.listen(port, '127.0.0.1', () => {
  const { port: actual } = server.address();
  console.log(`serving the web example on http://127.0.0.1:${actual}/ (Resgate at ${resgate})`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
