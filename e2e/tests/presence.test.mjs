// Presence lists through the real Resgate: three ResClient connections follow one list
// while they log in, join, open a second tab of the same user, leave from one of two
// tabs and log out. After every step each client's copy (kept by ResClient from
// connres's `add` and `remove` events) equals what a fresh client's get serves, and a
// logout takes its member off for everyone.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { login, logout, roundTrip, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';
import { follow, RID, ROOM } from '../lib/presence.mjs';
import { shippedConfig, WHOAMI } from '../lib/stack.mjs';

/** What a client that gets the list now is served. */
async function freshGet(stack, t) {
  const fresh = clientFor(stack, t);
  const list = await within(fresh.get(RID), 'a fresh get');
  const items = list.toArray();
  // Kept subscribed and connected until the test ends (`clientFor` disconnects it): a
  // client dropped while events for it are on their way can throw inside ResClient.
  const listener = () => {};
  list.on('add', listener);
  list.on('remove', listener);
  return items;
}

describe('presence lists through Resgate', () => {
  const test = withStack({ config: shippedConfig((text) => text + WHOAMI + ROOM) });

  test('every client sees joins, a second tab, a leave of one tab and a logout as a fresh get does', async (stack, t) => {
    const [a, b, c] = [clientFor(stack, t), clientFor(stack, t), clientFor(stack, t)];
    const copies = [await follow(a), await follow(b), await follow(c)];
    const call = (client, method, what) => within(client.call(RID, method), what);

    /** After a step: every copy, once all that connres published has reached it, is `want`, and so is a fresh get. */
    const expect = async (want, step) => {
      for (const [i, client] of [a, b, c].entries()) {
        await roundTrip(client);
        assert.deepEqual(copies[i].toArray(), want, `${step}: client ${'abc'[i]}'s copy`);
      }
      assert.deepEqual(await freshGet(stack, t), want, `${step}: a fresh get`);
    };

    await expect([], 'at first');
    await login(a, 'ann');
    await call(a, 'join', 'ann joins');
    await expect(['Ann'], 'ann joined');
    await login(b, 'bob');
    await call(b, 'join', 'bob joins');
    await expect(['Ann', 'Bob'], 'bob joined');
    // Ann's second tab: listed once.
    await login(c, 'ann');
    await call(c, 'join', "ann's second tab joins");
    await expect(['Ann', 'Bob'], "ann's second tab joined");
    // Closing one of two tabs keeps Ann.
    await call(c, 'leave', "ann's second tab leaves");
    await expect(['Ann', 'Bob'], "ann's second tab left");
    // A ping keeps a joined connection; from the tab that left, it says to join again.
    await call(a, 'ping', 'ann pings');
    const error = await c.call(RID, 'ping').catch((e) => e);
    assert.equal(error.code, 'system.invalidParams');
    assert.match(error.message, /call join/);
    // Ann's last joined tab logs out: she is off for everyone.
    await logout(a);
    await expect(['Bob'], 'ann logged out');
    // Logged out, a connection cannot join (the gateway's access answer).
    const denied = await a.call(RID, 'join').catch((e) => e);
    assert.equal(denied.code, 'system.accessDenied');
    await logout(b);
    await expect([], 'bob logged out');
  });
});
