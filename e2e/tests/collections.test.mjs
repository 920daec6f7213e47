// Collections through the real Resgate: ResClient's copy of a collection follows
// connres's `add` and `remove` events (a backend's writes seen by several clients, a
// client's own adds and removes), equals a fresh get after every sequence, and a
// logout empties a per-connection collection live.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { login, logout, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';
import { shippedConfig, WHOAMI } from '../lib/stack.mjs';

const LISTS = `
  session.recent.{cid}:
    collection:
      item: { type: string, max_length: 40 }
      max_items: 50
      writable: true
    access:
      get: cid == params.cid
      call: cid == params.cid
  e2e.board.pins:
    collection:
      item: { type: string }
    access:
      get: "true"
`;

/** Follows a collection: resolves `until(predicate)` once its items satisfy it. */
async function follow(client, rid) {
  const collection = await within(client.get(rid), `get ${rid}`);
  const waiters = [];
  const check = () => {
    for (const w of [...waiters]) {
      if (w.predicate(collection.toArray())) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(collection.toArray());
      }
    }
  };
  collection.on('add', check);
  collection.on('remove', check);
  return {
    items: () => collection.toArray(),
    until(predicate, what) {
      if (predicate(collection.toArray())) {
        return Promise.resolve(collection.toArray());
      }
      const seen = () => JSON.stringify(collection.toArray());
      return within(
        new Promise((resolve) => waiters.push({ predicate, resolve })),
        `${rid}: ${what}; items: ${seen()}`,
      );
    },
  };
}

/** Keeps a collection subscribed: ResClient lets go of one nobody listens to. */
function keep(collection) {
  collection.on('add', () => {});
  collection.on('remove', () => {});
}

const same = (want) => (items) => JSON.stringify(items) === JSON.stringify(want);

describe('collections through Resgate', () => {
  const test = withStack({ config: shippedConfig((t) => t + WHOAMI + LISTS) });

  test("a backend's adds and removes reach every client at their indices", async (stack, t) => {
    const [a, b] = [clientFor(stack, t), clientFor(stack, t)];
    const [pa, pb] = [await follow(a, 'e2e.board.pins'), await follow(b, 'e2e.board.pins')];
    assert.deepEqual(pa.items(), []);
    const steps = [
      ['connres.add.e2e.board.pins', { value: 'x' }, ['x']],
      ['connres.add.e2e.board.pins', { value: 'w', idx: 0 }, ['w', 'x']],
      ['connres.add.e2e.board.pins', { value: 'y', idx: 1 }, ['w', 'y', 'x']],
      ['connres.remove.e2e.board.pins', { idx: 0 }, ['y', 'x']],
      ['connres.remove.e2e.board.pins', { value: 'x' }, ['y']],
      ['connres.add.e2e.board.pins', { value: 'z' }, ['y', 'z']],
    ];
    for (const [subject, payload, want] of steps) {
      await stack.publish(subject, payload);
      await pa.until(same(want), JSON.stringify(want));
      await pb.until(same(want), JSON.stringify(want));
      // A client that gets it now sees what the others built from the events.
      const fresh = clientFor(stack, t);
      const got = await within(fresh.get('e2e.board.pins'), 'a fresh get');
      assert.deepEqual(got.toArray(), want);
      // Kept subscribed (and connected) until the test ends: a client dropped while
      // events for it are on their way can throw inside ResClient.
      keep(got);
    }
  });

  test("a client's own adds and removes, and a logout that empties its list", async (stack, t) => {
    const client = clientFor(stack, t);
    const recent = await follow(client, 'session.recent.{cid}');
    await login(client, 'ann');
    await within(client.call('session.recent.{cid}', 'add', { value: 'home' }), 'add home');
    await within(client.call('session.recent.{cid}', 'add', { value: 'docs', idx: 0 }), 'add docs');
    await within(client.call('session.recent.{cid}', 'add', { value: 'faq' }), 'add faq');
    await recent.until(same(['docs', 'home', 'faq']), 'three pages');
    await within(client.call('session.recent.{cid}', 'remove', { idx: 1 }), 'remove home');
    await recent.until(same(['docs', 'faq']), 'home removed');
    const error = await client.call('session.recent.{cid}', 'add', { value: 'x'.repeat(41) }).catch((e) => e);
    assert.equal(error.code, 'system.invalidParams');
    assert.match(error.message, /max_length 40/);
    await logout(client);
    await recent.until(same([]), 'emptied by the logout');
  });
});
