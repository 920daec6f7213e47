// Presence lists on the shared store through the real Resgate: three connres instances
// on one JetStream bucket (`state.store: nats`, 32 partitions), one list, and four
// ResClient connections whose partitions are owned by all three instances (found from
// the lease keys and each connection's ID). Joins, a second tab, a leave of one tab,
// logouts and a token for another member: after every step each client's copy (kept by
// ResClient from the `add` and `remove` events the list's owner publishes) equals the
// list connres serves to a get over NATS, so a logout takes its member off for everyone,
// whichever instance owns the connection that logged out.
//
// A second test subscribes clients before they log in: the list's access was answered
// without a token, and Resgate 1.8.0 keeps the `call` it was refused until connres asks
// it to check again (`reaccess`). The list's owner does so at each such connection's
// login, whichever instance keeps the connection's record (docs/scaling.md, Limits);
// before it did, a `join` right after the login was answered `system.accessDenied` by
// Resgate itself, as this lane first showed.

import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { describe } from 'node:test';

import { cidOf, connect, login, logout, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';
import { follow, RID, ROOM } from '../lib/presence.mjs';
import { replaceOnce, shippedConfig, WHOAMI } from '../lib/stack.mjs';

const BUCKET = 'e2e';
const PARTITIONS = 32;
const SHARED = `state:
  store: nats
  bucket: ${BUCKET}
  partitions: ${PARTITIONS}
  lease: 2s
`;

/** A connection's partition: 32-bit FNV-1a of its ID, as connres and nats-server place it. */
function partitionOf(cid) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(cid)) {
    h = Math.imul(h ^ b, 0x01000193) >>> 0;
  }
  return h % PARTITIONS;
}

/**
 * Partition -> owning instance, once ownership has settled: every partition's lease
 * seen, every instance owning some, and every lease renewed twice (owners renew four
 * times a lease) since the last change of owner. Read from the lease keys' writes.
 */
async function settledOwners(stack) {
  const owners = new Map();
  const renewals = new Map();
  let done;
  const settled = new Promise((resolve) => {
    done = resolve;
  });
  const sub = await stack.subscribe(`$KV.${BUCKET}.lease.*`, ({ subject, body }) => {
    const p = Number(subject.split('.').pop());
    const owner = body?.owner;
    if (owners.get(p) === owner) {
      renewals.set(p, renewals.get(p) + 1);
    } else {
      owners.set(p, owner);
      for (const k of renewals.keys()) {
        renewals.set(k, 0);
      }
      renewals.set(p, 0);
    }
    const held = new Set(owners.values());
    if (
      owners.size === PARTITIONS &&
      stack.instanceIds.every((id) => held.has(id)) &&
      [...renewals.values()].every((n) => n >= 2)
    ) {
      done(new Map(owners));
    }
  });
  try {
    return await within(settled, 'the partitions to settle over the three instances');
  } finally {
    sub.close();
  }
}

/** Resolves once the collection's items are `want` (now, or after an add or remove). */
async function until(list, want, what) {
  let check;
  const reached = new Promise((resolve) => {
    check = () => {
      if (isDeepStrictEqual(list.toArray(), want)) {
        resolve();
      }
    };
    list.on('add', check);
    list.on('remove', check);
    check();
  });
  try {
    await within(reached, `${what}: ${JSON.stringify(want)}`);
  } catch (e) {
    throw new Error(`${e.message}; the copy is ${JSON.stringify(list.toArray())}`);
  } finally {
    list.off('add', check);
    list.off('remove', check);
  }
}

/** The members connres serves to a get over NATS (from the list's owner). */
async function served(stack) {
  const reply = await within(stack.request(`get.${RID}`), `a get of ${RID} over NATS`);
  assert.ok(Array.isArray(reply?.result?.collection), `a collection: ${JSON.stringify(reply)}`);
  return reply.result.collection;
}

describe('presence lists on the shared store through Resgate', () => {
  const test = withStack({
    config: shippedConfig((text) => replaceOnce(text, 'state:\n', SHARED) + WHOAMI + ROOM),
    instances: 3,
  });

  test('clients on three instances see joins, a leave and logouts as a get serves them', async (stack, t) => {
    const owners = await settledOwners(stack);
    const ownerOf = (cid) => owners.get(partitionOf(cid));
    // Connections until each instance owns one (one client per instance), and a
    // fourth whose owner differs from the first's (ann's second tab).
    const byInstance = new Map();
    let tab;
    for (let i = 0; i < 40 && (byInstance.size < 3 || !tab); i++) {
      const client = connect(stack.wsUrl);
      const cid = await cidOf(client);
      const owner = ownerOf(cid);
      if (!byInstance.has(owner)) {
        byInstance.set(owner, client);
        t.after(() => client.disconnect());
      } else if (byInstance.size > 0 && !tab && owner !== [...byInstance.keys()][0]) {
        tab = client;
        t.after(() => client.disconnect());
      } else {
        client.disconnect();
      }
    }
    assert.equal(byInstance.size, 3, `connections owned by ${[...byInstance.keys()]}`);
    assert.ok(tab, 'a fourth connection');
    const [a, b, c] = [...byInstance.values()];
    const clients = [a, b, c, tab];
    for (const [client, name] of [[a, 'ann'], [b, 'bob'], [c, 'cat'], [tab, 'ann']]) {
      await login(client, name);
    }
    const lists = [];
    for (const client of clients) {
      lists.push(await follow(client));
    }
    const call = (client, method, what) => within(client.call(RID, method), what);

    /** After a step: every copy reaches `want`, which is what connres serves. */
    const expect = async (want, step) => {
      for (const [i, list] of lists.entries()) {
        await until(list, want, `${step}: client ${'abcd'[i]}'s copy`);
      }
      assert.deepEqual(await served(stack), want, `${step}: the get over NATS`);
      const fresh = await follow(clientFor(stack, t));
      assert.deepEqual(fresh.toArray(), want, `${step}: a fresh client's get`);
    };

    await expect([], 'at first');
    await call(a, 'join', 'ann joins');
    await expect(['Ann'], 'ann joined');
    await call(b, 'join', 'bob joins');
    await expect(['Ann', 'Bob'], 'bob joined');
    await call(c, 'join', 'cat joins');
    await expect(['Ann', 'Bob', 'Cat'], 'cat joined');
    // Ann's second tab, on another instance than her first: listed once; then it leaves.
    await call(tab, 'join', "ann's second tab joins");
    await expect(['Ann', 'Bob', 'Cat'], "ann's second tab joined");
    await call(tab, 'leave', "ann's second tab leaves");
    await expect(['Ann', 'Bob', 'Cat'], "ann's second tab left");
    // Ann's last joined tab logs out: she is off for everyone.
    await logout(a);
    await expect(['Bob', 'Cat'], 'ann logged out');
    await logout(b);
    await expect(['Cat'], 'bob logged out');
    // Cat's connection logs in as bob: a token for another member takes it off, until
    // it joins again as Bob.
    await login(c, 'bob');
    await expect([], "cat's connection logged in as bob");
    await call(c, 'join', 'bob joins from c');
    await expect(['Bob'], 'bob joined from c');
    // Every client's copy equals the final get.
    const final = await served(stack);
    for (const [i, list] of lists.entries()) {
      assert.deepEqual(list.toArray(), final, `client ${'abcd'[i]}'s copy at the end`);
    }
  });

  test('clients that subscribed before logging in join after their logins, whichever instance owns them', async (stack, t) => {
    const owners = await settledOwners(stack);
    const byInstance = new Map();
    for (let i = 0; i < 40 && byInstance.size < 3; i++) {
      const client = connect(stack.wsUrl);
      const owner = owners.get(partitionOf(await cidOf(client)));
      if (!byInstance.has(owner)) {
        byInstance.set(owner, client);
        t.after(() => client.disconnect());
      } else {
        client.disconnect();
      }
    }
    assert.equal(byInstance.size, 3, `connections owned by ${[...byInstance.keys()]}`);
    const clients = [...byInstance.values()];
    // Subscribed while logged out: the list's access is answered without a token.
    const lists = [];
    for (const client of clients) {
      lists.push(await follow(client));
    }
    // The stack is the suite's: members an earlier test left stay listed (no ttl has
    // passed), and a member joins once however many connections it has.
    const names = ['Ann', 'Bob', 'Cat'];
    const want = await served(stack);
    for (const name of names) {
      if (!want.includes(name)) {
        want.push(name);
      }
    }
    for (const [i, client] of clients.entries()) {
      await login(client, names[i].toLowerCase());
      await within(client.call(RID, 'join'), `${names[i]} joins right after logging in`);
    }
    for (const [i, list] of lists.entries()) {
      await until(list, want, `client ${'abc'[i]}'s copy`);
    }
    assert.deepEqual(await served(stack), want, 'the get over NATS');
  });
});
