// Bounded state through Resgate, with `state.idle_ttl: 1s`: a connection nobody touches
// for a second is dropped by connres, which names what the gateway may cache in a
// system.reset. Written values read as their defaults after that reset; a logged-in
// connection stays logged in (Resgate asks access again with its token) and still sees
// its logout; one that was dropped while logged out can still log in and write.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { cidOf, LOGGED_OUT, login, logout, roundTrip, values, watch, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';
import { replaceOnce, shippedConfig, WHOAMI } from '../lib/stack.mjs';

// 1s is the least idle_ttl allowed; connres sweeps every second.
const CONFIG = shippedConfig((t) => replaceOnce(t, 'idle_ttl: 24h', 'idle_ttl: 1s') + WHOAMI);

describe('bounded state through Resgate', () => {
  const test = withStack({ config: CONFIG, trace: true });

  test('an expired model reads as its defaults after the reset; the login stays', async (stack, t) => {
    const client = clientFor(stack, t);
    const user = await watch(client, 'session.user.{cid}');
    const prefs = await watch(client, 'session.prefs.{cid}');
    await login(client, 'ann');
    await within(prefs.model.set({ theme: 'dark', fontSize: 20 }), 'set');
    await prefs.until((v) => v.theme === 'dark', 'theme dark');

    // Nothing touches the connection now: the sweep drops it and Resgate gets the
    // defaults on connres's reset.
    assert.deepEqual(await prefs.until((v) => v.theme === 'light', 'the expiry'), { theme: 'light', fontSize: 14 });
    // The user model was named under `access`: Resgate asked again with the token and
    // kept its model; the client never saw a logout.
    assert.equal(user.model.name, 'Ann');
    assert.deepEqual(user.changes.map((c) => c.values.name), ['Ann']);

    // The token record is back from that access request: the logout still shows.
    await logout(client);
    assert.deepEqual(await user.until((v) => v.id === null, 'the logout'), LOGGED_OUT);
  });

  test('a connection dropped while logged out can log in and write after', async (stack, t) => {
    const client = clientFor(stack, t);
    const cid = await cidOf(client);
    const user = await watch(client, 'session.user.{cid}');
    const prefs = await watch(client, 'session.prefs.{cid}');
    // Wait for the sweep to drop this connection: its granted prefs (their call rule
    // reads the token) are named under `access` in a system.reset (Resgate's trace).
    const escaped = cid.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await stack.resgate.waitFor(new RegExp(`system\\.reset: .*"access":\\[[^\\]]*"session\\.prefs\\.${escaped}"`));
    await roundTrip(client);

    await login(client, 'bob');
    await within(prefs.model.set({ theme: 'dark' }), 'set after the login');
    await prefs.until((v) => v.theme === 'dark', 'theme dark');
    assert.equal(values(user.model).name, 'Bob');
  });
});
