#!/usr/bin/env node
// A static file server for the web example (Node, no dependencies): the page, its
// script and style, ResClient's browser build from the npm package, and config.json
// telling the page where Resgate is. Loopback only.
//
//   node examples/web/serve.mjs [--port 8000] [--resgate ws://127.0.0.1:8080]
//
// --port 0 picks a free port. ResClient comes from e2e/node_modules (scripts/install-e2e.sh
// installs it; --resclient PATH names another copy of dist/resclient.js).

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

// Only these paths exist: nothing else on disk is reachable.
const routes = {
  '/': { file: path.join(here, 'index.html'), type: 'text/html; charset=utf-8' },
  '/index.html': { file: path.join(here, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: path.join(here, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: path.join(here, 'style.css'), type: 'text/css; charset=utf-8' },
  '/resclient.js': { file: resclient, type: 'text/javascript; charset=utf-8' },
  '/config.json': { body: JSON.stringify({ resgate }), type: 'application/json' },
};

const server = http.createServer(async (req, res) => {
  const route = routes[new URL(req.url, 'http://localhost').pathname];
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
