// ResClient in Node over Resgate's WebSocket, and ways to await what it shows: a model's
// next change, its unsubscription. Every wait is for an event; the only clock is the
// failure deadline (WAIT_MS).

import resclient from 'resclient';
import WebSocket from 'ws';

import { WAIT_MS } from './stack.mjs';

const ResClient = resclient.default;

/** A ResClient on `wsUrl` (Node has no WebSocket of its own before v22: `ws` is one). */
export function connect(wsUrl) {
  return new ResClient(() => new WebSocket(wsUrl), { reconnectDelay: 200 });
}

/** A promise that rejects with `what` after WAIT_MS unless `promise` settles first. */
export function within(promise, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** The model's values as a plain object (references as their resource IDs). */
export function values(model) {
  const out = {};
  for (const [k, v] of Object.entries(model.props)) {
    out[k] = v && typeof v === 'object' && typeof v.getResourceId === 'function' ? { rid: v.getResourceId() } : v;
  }
  return out;
}

/**
 * Follows a model: keeps it subscribed (ResClient unsubscribes a model nobody listens
 * to) and records its change events, so a test can await the next one that makes
 * `predicate(values)` true, whenever it arrives.
 */
export class Watch {
  constructor(model) {
    this.model = model;
    this.changes = [];
    this.unsubscribed = false;
    this.waiters = [];
    this.onChange = (changed) => {
      this.changes.push({ changed, values: values(model) });
      this.#check();
    };
    this.onUnsubscribe = () => {
      this.unsubscribed = true;
      this.#check();
    };
    model.on('change', this.onChange);
    model.on('unsubscribe', this.onUnsubscribe);
  }

  #check() {
    for (const w of [...this.waiters]) {
      if (w.test()) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  }

  /**
   * Resolves with the model's values once `predicate(values)` holds (now or after a
   * change), and the change handlers have run.
   */
  async until(predicate, what = predicate.toString()) {
    const test = () => predicate(values(this.model));
    await this.#wait(test, `${this.model.getResourceId()}: ${what}`);
    await handlersRun();
    return values(this.model);
  }

  /** Resolves once the gateway has unsubscribed the client from the model. */
  untilUnsubscribed() {
    return this.#wait(() => this.unsubscribed, `${this.model.getResourceId()} to be unsubscribed`);
  }

  #wait(test, what) {
    if (test()) {
      return Promise.resolve();
    }
    return within(
      new Promise((resolve) => this.waiters.push({ test, resolve })),
      `${what}; changes seen: ${JSON.stringify(this.changes.map((c) => c.values))}`,
    );
  }

  close() {
    this.model.off('change', this.onChange);
    this.model.off('unsubscribe', this.onUnsubscribe);
  }
}

/** Subscribes `rid` and follows it. */
export async function watch(client, rid) {
  const model = await within(client.get(rid), `get ${rid}`);
  return new Watch(model);
}

/** The error a ResClient request rejected with (fails when it succeeded). */
export async function rejection(promise, what) {
  try {
    const result = await within(promise, what);
    throw new Error(`${what}: expected an error, got ${JSON.stringify(result)}`);
  } catch (e) {
    if (e && typeof e.code === 'string') {
      return { code: e.code, message: e.message };
    }
    throw e;
  }
}

/**
 * ResClient updates a model at once but calls its event handlers from a timer (its
 * event bus): this waits until the handlers of what it has received so far have run.
 */
export function handlersRun() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * A request through Resgate to connres that changes nothing (an empty `set` on
 * `e2e.whoami.{cid}`): whatever connres published before answering it has reached the
 * client, and been handled, once this resolves.
 */
export async function roundTrip(client) {
  await within(client.call('e2e.whoami.{cid}', 'set', {}), 'a round trip through connres');
  await handlersRun();
}

/** The connection's own ID, from the test-only `e2e.whoami.{cid}` resource. */
export async function cidOf(client) {
  const model = await within(client.get('e2e.whoami.{cid}'), 'get e2e.whoami.{cid}');
  return model.cid;
}

/** Logs `client` in through the auth example. */
export function login(client, name, password = `${name}-pass`) {
  return within(client.authenticate('session', 'login', { name, password }), `login as ${name}`);
}

export function logout(client) {
  return within(client.authenticate('session', 'logout'), 'logout');
}

export const LOGGED_OUT = { id: null, name: null, role: null, user: null };
