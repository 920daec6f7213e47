// The seed scenario through the real Resgate: a client subscribes its
// `session.user.{cid}`, sees the null model, logs in through the auth example and sees
// the user appear live with typed values, logs out and sees null again; another
// connection is denied the model.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { cidOf, LOGGED_OUT, login, logout, rejection, roundTrip, values, watch, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';

describe('seed scenario through Resgate', () => {
  const test = withStack();

  test('logged out the model is null; login is seen live with typed values; logout returns to null', async (stack, t) => {
    const client = clientFor(stack, t);
    const user = await watch(client, 'session.user.{cid}');
    assert.deepEqual(values(user.model), LOGGED_OUT);

    await login(client, 'ann');
    const ann = await user.until((v) => v.id !== null, 'the login');
    assert.deepEqual(ann, { id: 42, name: 'Ann', role: 'admin', user: { rid: 'users.user.42' } });
    assert.equal(typeof user.model.id, 'number', 'an integer field arrives as a JSON number');
    // The reference is followed by Resgate: the client holds the referred model.
    assert.equal(user.model.user.name, 'Ann');
    assert.equal(user.changes.length, 1, 'one change event for the login');

    await logout(client);
    assert.deepEqual(await user.until((v) => v.id === null, 'the logout'), LOGGED_OUT);
    // ResClient reports the changed fields with their old values: all four, in one event.
    assert.equal(user.changes.length, 2);
    assert.deepEqual(Object.keys(user.changes[1].changed).sort(), ['id', 'name', 'role', 'user']);
  });

  test('a refused login changes nothing', async (stack, t) => {
    const client = clientFor(stack, t);
    const user = await watch(client, 'session.user.{cid}');
    const error = await rejection(client.authenticate('session', 'login', { name: 'ann', password: 'wrong' }), 'a wrong password');
    assert.deepEqual(error, { code: 'auth.invalidCredentials', message: 'Unknown user name or wrong password' });
    const missing = await rejection(client.authenticate('session', 'login', { name: 'ann' }), 'no password');
    assert.equal(missing.code, 'system.invalidParams');
    // Any change event would have reached the client by the end of a round trip.
    await roundTrip(client);
    assert.deepEqual(user.changes, []);
    assert.deepEqual(values(user.model), LOGGED_OUT);
  });

  test("another connection's model is denied, logged in or not", async (stack, t) => {
    const owner = clientFor(stack, t);
    const other = clientFor(stack, t);
    const cid = await cidOf(owner);
    const denied = { code: 'system.accessDenied', message: 'Access denied' };
    assert.deepEqual(await rejection(other.get(`session.user.${cid}`), "another connection's user model"), denied);
    await login(owner, 'ann');
    await login(other, 'bob');
    assert.deepEqual(await rejection(other.get(`session.user.${cid}`), "another connection's user model"), denied);
    assert.deepEqual(await rejection(other.get(`session.prefs.${cid}`), "another connection's prefs"), denied);
    assert.deepEqual(
      await rejection(other.call(`session.prefs.${cid}`, 'set', { theme: 'dark' }), "a set on another connection's prefs"),
      denied,
    );
    // The owner's own view is untouched.
    const prefs = await within(owner.get('session.prefs.{cid}'), 'own prefs');
    assert.equal(prefs.theme, 'light');
  });
});
