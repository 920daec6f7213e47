// Isolation through Resgate: connections never see each other's models, whatever they
// do, and 50 clients logging in and out at once each see exactly their own session.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { cidOf, connect, LOGGED_OUT, login, logout, rejection, roundTrip, values, watch, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';

const ACCOUNTS = [
  { name: 'ann', user: { id: 42, name: 'Ann', role: 'admin', user: { rid: 'users.user.42' } } },
  { name: 'bob', user: { id: 43, name: 'Bob', role: 'user', user: { rid: 'users.user.43' } } },
  { name: 'cat', user: { id: 44, name: 'Cat', role: 'guest', user: { rid: 'users.user.44' } } },
];

describe('isolation through Resgate', () => {
  const test = withStack();

  test("two connections never see each other's models", async (stack, t) => {
    const a = clientFor(stack, t);
    const b = clientFor(stack, t);
    const [userA, prefsA, userB, prefsB] = await Promise.all([
      watch(a, 'session.user.{cid}'),
      watch(a, 'session.prefs.{cid}'),
      watch(b, 'session.user.{cid}'),
      watch(b, 'session.prefs.{cid}'),
    ]);
    const [cidA, cidB] = await Promise.all([cidOf(a), cidOf(b)]);
    assert.notEqual(cidA, cidB);

    await login(a, 'ann');
    assert.deepEqual(await userA.until((v) => v.id === 42, 'A logged in'), ACCOUNTS[0].user);
    await within(prefsA.model.set({ theme: 'dark' }), 'A sets its theme');
    await prefsA.until((v) => v.theme === 'dark', 'A dark');
    await roundTrip(b);
    assert.deepEqual(userB.changes, [], "B saw nothing of A's login");
    assert.deepEqual(prefsB.changes, [], "B saw nothing of A's write");
    assert.deepEqual(values(userB.model), LOGGED_OUT);

    await login(b, 'bob');
    assert.deepEqual(await userB.until((v) => v.id === 43, 'B logged in'), ACCOUNTS[1].user);
    await logout(a);
    await userA.until((v) => v.id === null, 'A logged out');
    await roundTrip(b);
    assert.equal(userB.model.name, 'Bob', "A's logout left B logged in");
    assert.equal(prefsB.model.theme, 'light');

    for (const [client, cid] of [[a, cidB], [b, cidA]]) {
      for (const rid of [`session.user.${cid}`, `session.prefs.${cid}`, `session.status.${cid}`, `e2e.whoami.${cid}`]) {
        assert.equal((await rejection(client.get(rid), `get ${rid}`)).code, 'system.accessDenied', rid);
      }
      assert.equal(
        (await rejection(client.call(`session.prefs.${cid}`, 'reset'), 'reset on the other')).code,
        'system.accessDenied',
      );
    }
  });

  test('50 clients log in and out at once, each seeing only its own session', async (stack, t) => {
    const clients = Array.from({ length: 50 }, () => connect(stack.wsUrl));
    t.after(() => clients.forEach((c) => c.disconnect()));
    const users = await Promise.all(clients.map((c) => watch(c, 'session.user.{cid}')));

    await Promise.all(
      clients.map(async (client, i) => {
        const account = ACCOUNTS[i % ACCOUNTS.length];
        await login(client, account.name);
        assert.deepEqual(await users[i].until((v) => v.id === account.user.id, `client ${i} logged in`), account.user);
        await logout(client);
        assert.deepEqual(await users[i].until((v) => v.id === null, `client ${i} logged out`), LOGGED_OUT);
      }),
    );
    users.forEach((user, i) => {
      const own = ACCOUNTS[i % ACCOUNTS.length].user.name;
      assert.deepEqual(
        user.changes.map((c) => c.values.name),
        [own, null],
        `client ${i} saw exactly its login and logout`,
      );
    });
  });
});
