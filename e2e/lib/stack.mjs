// The end-to-end stack: nats-server, connres (the built binary, on a temporary copy of
// its config), the auth example, Resgate and, when asked, the web example's static file
// server, all on loopback and free ports. Readiness is each program's own word (a log
// line), never a sleep.
//
// Binaries come from the environment scripts/e2e.sh sets: NATS_SERVER, CONNRES_BIN,
// AUTH_BIN, RESGATE_BIN. For debugging: E2E_TRACE=1 echoes every process's output to
// stderr as it comes; E2E_RESGATE_TRACE=1 has Resgate log every NATS message.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** How long anything that must happen may take before the test calls it failed. */
export const WAIT_MS = 15_000;

function bin(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the lane with scripts/e2e.sh`);
  }
  return value;
}

/**
 * Resolves once a TCP connection to the loopback `port` is accepted. Resgate logs
 * "Server ready" from its main goroutine while its HTTP listener starts in another, so
 * the line can come a moment before the port accepts: a client connecting at once then
 * gets `system.connectionError` (seen about once in twenty lane runs). The port gives
 * no event to await, so connection attempts are repeated until one is accepted.
 */
export function acceptsConnections(port, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', (e) => {
        socket.destroy();
        if (Date.now() > deadline) {
          reject(new Error(`nothing accepts connections on 127.0.0.1:${port}: ${e.message}`));
        } else {
          setTimeout(attempt, 10);
        }
      });
    };
    attempt();
  });
}

/** A free loopback TCP port (the OS picks it; the listener is closed at once). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A child process whose output is kept line by line, so tests can await a line. */
export class Proc {
  constructor(name, command, args, options = {}) {
    this.name = name;
    this.lines = [];
    this.waiters = [];
    this.exited = null;
    this.child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
    });
    const onData = (stream) => {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        partial += chunk;
        const parts = partial.split('\n');
        partial = parts.pop();
        for (const line of parts) {
          this.#line(line);
        }
      });
    };
    onData(this.child.stdout);
    onData(this.child.stderr);
    this.exitPromise = new Promise((resolve) => {
      const exited = (how) => {
        if (this.exited) {
          return;
        }
        this.exited = how;
        for (const w of this.waiters.splice(0)) {
          w.reject(new Error(`${this.name} exited (${how.signal ?? how.code ?? how.error}) while waiting for ${w.pattern}`));
        }
        resolve(how);
      };
      this.child.on('exit', (code, signal) => exited({ code, signal }));
      // A program that cannot be started emits 'error' and never 'exit'.
      this.child.on('error', (e) => {
        this.#line(`cannot start ${command}: ${e.message}`);
        exited({ error: e.code ?? e.message });
      });
    });
  }

  #line(line) {
    if (process.env.E2E_TRACE) {
      console.error(`${this.name}| ${line}`);
    }
    this.lines.push(line);
    for (const w of [...this.waiters]) {
      const m = line.match(w.pattern);
      if (m) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  }

  /**
   * The first line matching `pattern` from line `from` on (default: from now on): its
   * match. Rejects when the process exits first or after WAIT_MS.
   */
  waitFor(pattern, from = this.lines.length) {
    for (const line of this.lines.slice(from)) {
      const m = line.match(pattern);
      if (m) {
        return Promise.resolve(m);
      }
    }
    if (this.exited) {
      return Promise.reject(new Error(`${this.name} has exited; no line matches ${pattern}`));
    }
    return new Promise((resolve, reject) => {
      const w = { pattern, resolve, reject };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.name}: no line matching ${pattern} within ${WAIT_MS} ms`));
      }, WAIT_MS);
      w.resolve = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      w.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      this.waiters.push(w);
    });
  }

  /** Stops the process (SIGTERM, then SIGKILL if it lingers) and waits for it. */
  async stop() {
    if (this.exited) {
      return this.exited;
    }
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    const exited = await this.exitPromise;
    clearTimeout(timer);
    return exited;
  }

  tail(n = 40) {
    return this.lines.slice(-n).map((l) => `  ${this.name}| ${l}`).join('\n');
  }
}

/** Every process still running is killed when the test process goes. */
const running = new Set();
process.on('exit', () => {
  for (const p of running) {
    p.child.kill('SIGKILL');
  }
});

function track(proc) {
  running.add(proc);
  proc.exitPromise.then(() => running.delete(proc));
  return proc;
}

/** The shipped resources.yaml with `edit` applied to its text. */
export function shippedConfig(edit = (text) => text) {
  return edit(readFileSync(path.join(ROOT, 'resources.yaml'), 'utf8'));
}

/**
 * A resource that tells a client its own connection ID (the tests need one connection's
 * cid to try another connection's model), and whose empty `set` is a round trip through
 * connres that changes nothing. Appended under `resources:`, the last key of the shipped
 * file.
 */
export const WHOAMI = `
  e2e.whoami.{cid}:
    description: The connection's own ID (end-to-end tests only).
    fields:
      cid: { type: string, from: "{{cid}}" }
      note: { type: string, writable: true }
    access:
      get: cid == params.cid
      call: cid == params.cid
`;

/** Replaces `from` with `to` in `text`, failing when `from` is not there. */
export function replaceOnce(text, from, to) {
  if (!text.includes(from)) {
    throw new Error(`the config has no ${JSON.stringify(from)} to replace`);
  }
  return text.replace(from, to);
}

/**
 * Starts the whole stack. `config` is the text of connres's config file (a temporary
 * copy the test may edit through `stack.writeConfig`); `web: true` also starts the
 * web example's static server; `trace: true` has Resgate log every NATS message;
 * `files` are written beside the config first (name to text); `resgateArgs` are added
 * to Resgate's command line. `instances` connres processes run on the one config (more
 * than one needs `state.store: nats` in it; nats-server then runs with JetStream).
 */
export async function startStack({
  config = shippedConfig((t) => t + WHOAMI),
  web = false,
  trace = false,
  files = {},
  resgateArgs = [],
  instances = 1,
} = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'connres-e2e-'));
  const stack = new Stack(dir);
  try {
    // Files beside the config (keys it reads), by name.
    for (const [name, text] of Object.entries(files)) {
      writeFileSync(path.join(dir, name), text);
    }
    await stack.start(config, web, trace, resgateArgs, instances);
  } catch (e) {
    await stack.stop();
    throw stack.annotate(e);
  }
  return stack;
}

export class Stack {
  constructor(dir) {
    this.dir = dir;
    this.configPath = path.join(dir, 'resources.yaml');
    this.procs = [];
  }

  async start(config, web, trace, resgateArgs = [], instances = 1) {
    writeFileSync(this.configPath, config);
    // The web example's sessions (connres as the auth service): its auth.yaml beside
    // the config, a secret the page's issuer shares, and the directory as the config.
    let configArg = this.configPath;
    if (web) {
      for (const file of ['auth.yaml', 'here.yaml']) {
        writeFileSync(path.join(this.dir, file), readFileSync(path.join(ROOT, 'examples/web', file)));
      }
      writeFileSync(path.join(this.dir, 'jwt.secret'), randomBytes(48).toString('base64'));
      configArg = this.dir;
    }

    // nats-server picks its own port and says which. With JetStream (the shared store),
    // its storage is in the stack's directory.
    const js = /^\s+store:\s*nats\b/m.test(config) ? ['-js', '-sd', path.join(this.dir, 'js')] : [];
    this.nats = this.#spawn('nats', bin('NATS_SERVER'), ['-a', '127.0.0.1', '-p', '-1', ...js]);
    const [, natsPort] = await this.nats.waitFor(/Listening for client connections on [^:]+:(\d+)/, 0);
    this.natsUrl = `nats://127.0.0.1:${natsPort}`;

    // connres: ready once it has subscribed and announced itself with system.reset. Each
    // instance of the shared store says its ID on that line.
    this.instances = [];
    for (let i = 0; i < instances; i++) {
      const name = instances === 1 ? 'connres' : `connres${i + 1}`;
      this.instances.push(
        this.#spawn(name, bin('CONNRES_BIN'), ['serve', '--config', configArg, '--nats', this.natsUrl], {
          env: { RUST_LOG: 'info,async_nats=warn', CONNRES_LOG_FORMAT: 'text', NO_COLOR: '1' },
        }),
      );
    }
    this.connres = this.instances[0];
    this.auth = this.#spawn('auth', bin('AUTH_BIN'), ['--nats', this.natsUrl]);
    const serving = await Promise.all(this.instances.map((p) => p.waitFor(/connres is serving.*/, 0)));
    this.instanceIds = serving.map(([line]) => line.match(/instance="?([^\s"]+)/)?.[1]);
    await this.auth.waitFor(/auth service ready/, 0);

    const resgatePort = await freePort();
    this.resgate = this.#spawn('resgate', bin('RESGATE_BIN'), [
      '--nats', this.natsUrl,
      '--addr', '127.0.0.1',
      '--port', String(resgatePort),
      // The trace logs every NATS message: tests may await one (`trace: true`).
      ...(trace || process.env.E2E_RESGATE_TRACE ? ['--debug', '--trace'] : ['--debug']),
      ...resgateArgs,
    ]);
    await this.resgate.waitFor(/Server ready/, 0);
    await acceptsConnections(resgatePort);
    this.wsUrl = `ws://127.0.0.1:${resgatePort}`;

    if (web) {
      this.web = this.#spawn('web', process.execPath, [
        path.join(ROOT, 'examples/web/serve.mjs'),
        '--port', '0',
        '--resgate', this.wsUrl,
        '--jwt-secret-file', path.join(this.dir, 'jwt.secret'),
      ]);
      const [, url] = await this.web.waitFor(/serving the web example on (http:\S+)/, 0);
      this.webUrl = url;
    }
  }

  #spawn(name, command, args, options) {
    const proc = track(new Proc(name, command, args, options));
    this.procs.push(proc);
    return proc;
  }

  /** Replaces connres's config file by rename, as an editor saves it. */
  writeConfig(text) {
    const tmp = `${this.configPath}.tmp`;
    writeFileSync(tmp, text);
    // A rename is atomic: the watcher never sees half a file.
    renameSync(tmp, this.configPath);
  }

  /**
   * Publishes `payload` (JSON) on `subject` as a backend service would (with `reply` as
   * its reply subject, when given), over the NATS protocol on a connection of its own
   * (the lane has no NATS client for Node). Resolves once the server has answered a
   * PING sent after it, so the message has been processed by the server.
   */
  publish(subject, payload, reply = '') {
    const body = Buffer.from(JSON.stringify(payload));
    const port = Number(new URL(this.natsUrl).port);
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      let seen = '';
      socket.setEncoding('utf8');
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.write(`CONNECT {"verbose":false,"pedantic":false}\r\nPUB ${subject} ${reply ? `${reply} ` : ''}${body.length}\r\n`);
        socket.write(body);
        socket.write('\r\nPING\r\n');
      });
      socket.on('data', (chunk) => {
        seen += chunk;
        if (seen.includes('-ERR')) {
          socket.destroy();
          reject(new Error(`nats-server refused the publish on ${subject}: ${seen.trim()}`));
        } else if (seen.includes('PONG\r\n')) {
          socket.end();
          resolve();
        }
      });
    });
  }

  /**
   * Subscribes to `subject` over the NATS protocol on a connection of its own: returns
   * `{ next(predicate), close() }`, where `next` resolves with the first `{subject, body}`
   * (the payload as JSON) from then on for which `predicate` holds; `onMessage`, when
   * given, sees every message as it comes.
   */
  async subscribe(subject, onMessage = () => {}) {
    const port = Number(new URL(this.natsUrl).port);
    const socket = net.connect(port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    const seen = [];
    let waiting = [];
    const deliver = () => {
      waiting = waiting.filter((w) => {
        const hit = seen.find((e) => !e.taken && w.predicate(e));
        if (hit) {
          hit.taken = true;
          w.resolve({ subject: hit.subject, body: hit.body });
          return false;
        }
        return true;
      });
    };
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const eol = buffer.indexOf('\r\n');
        if (eol < 0) return;
        const line = buffer.subarray(0, eol).toString();
        if (line.startsWith('PING')) {
          socket.write('PONG\r\n');
        }
        if (!line.startsWith('MSG ')) {
          buffer = buffer.subarray(eol + 2);
          continue;
        }
        const parts = line.split(' ');
        const size = Number(parts[parts.length - 1]);
        if (buffer.length < eol + 2 + size + 2) return;
        const payload = buffer.subarray(eol + 2, eol + 2 + size).toString();
        buffer = buffer.subarray(eol + 2 + size + 2);
        const message = { subject: parts[1], body: payload ? JSON.parse(payload) : null };
        onMessage(message);
        seen.push(message);
        deliver();
      }
    });
    await new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.write(`CONNECT {"verbose":false,"pedantic":false}\r\nSUB ${subject} 1\r\nPING\r\n`);
        const ready = (chunk) => {
          if (chunk.toString().includes('PONG')) {
            socket.off('data', ready);
            resolve();
          }
        };
        socket.on('data', ready);
      });
    });
    return {
      next: (predicate) =>
        new Promise((resolve) => {
          waiting.push({ predicate, resolve });
          deliver();
        }),
      close: () => socket.destroy(),
    };
  }

  /**
   * Follows the token events on NATS (as an auth service's observer would): returns
   * `{ next(predicate), close() }`, where `next` resolves with the first `{cid, body}`
   * from then on for which `predicate(body)` holds.
   */
  async tokenEvents() {
    const sub = await this.subscribe('conn.*.token');
    return {
      next: async (predicate) => {
        const { subject, body } = await sub.next((m) => predicate(m.body));
        return { cid: subject.slice('conn.'.length, -'.token'.length), body };
      },
      close: sub.close,
    };
  }

  /** A NATS request to connres as a backend would send it (`payload` as JSON): its reply. */
  async request(subject, payload = {}) {
    const inbox = `_INBOX.e2e.${randomBytes(8).toString('hex')}`;
    const sub = await this.subscribe(inbox);
    try {
      await this.publish(subject, payload, inbox);
      const { body } = await sub.next(() => true);
      return body;
    } finally {
      sub.close();
    }
  }

  /** Every process's last log lines, for a failure message. */
  logs() {
    return this.procs.map((p) => p.tail()).join('\n');
  }

  /** The error with every process's last log lines added to its message. */
  annotate(error) {
    if (!(error instanceof Error)) {
      // A ResError (a RES error reply) has read-only fields.
      error = new Error(error && error.code ? `${error.code}: ${error.message}` : String(error));
    }
    if (!error.logsAdded) {
      error.logsAdded = true;
      error.message = `${error.message}\n--- last log lines ---\n${this.logs()}`;
    }
    return error;
  }

  async stop() {
    // Clients' servers first: Resgate, then the services, then NATS.
    for (const proc of [...this.procs].reverse()) {
      await proc.stop();
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
