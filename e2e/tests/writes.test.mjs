// Client writes through Resgate: `set` on `session.prefs.{cid}` is denied before login
// (Resgate's cached access allows only `reset`), allowed after it without subscribing
// again (connres's reaccess event makes Resgate ask again), validated by connres with
// its errors reaching the client, and `reset` returns the defaults.

import assert from 'node:assert/strict';
import { describe } from 'node:test';

import { login, logout, rejection, roundTrip, values, watch, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';

const DEFAULTS = { theme: 'light', fontSize: 14 };

describe('writes through Resgate', () => {
  const test = withStack();

  test('set is denied before login and allowed after it without subscribing again', async (stack, t) => {
    const client = clientFor(stack, t);
    const prefs = await watch(client, 'session.prefs.{cid}');
    assert.deepEqual(values(prefs.model), DEFAULTS);
    assert.deepEqual(await rejection(prefs.model.set({ theme: 'dark' }), 'set before login'), {
      code: 'system.accessDenied',
      message: 'Access denied',
    });

    await login(client, 'ann');
    // At once: Resgate keeps the access it got without a token until connres's reaccess
    // event, and the auth example answers the login only after connres acknowledged
    // the token event, which it does after publishing that reaccess.
    await within(prefs.model.set({ theme: 'dark' }), 'set after login');
    assert.deepEqual(await prefs.until((v) => v.theme === 'dark', 'theme dark'), { theme: 'dark', fontSize: 14 });
    assert.equal(prefs.changes.length, 1);
  });

  test("validation errors reach the client and change nothing", async (stack, t) => {
    const client = clientFor(stack, t);
    const prefs = await watch(client, 'session.prefs.{cid}');
    await login(client, 'bob');

    const cases = [
      [{ fontSize: 99 }, ['fontSize', 'above max 32']],
      [{ fontSize: 'big' }, ['fontSize']],
      [{ fontSize: 12.5 }, ['fontSize']],
      [{ theme: 'purple' }, ['theme', 'purple']],
      [{ colour: 'red' }, ['colour']],
      // One bad field rejects the whole call.
      [{ theme: 'dark', fontSize: 7 }, ['fontSize', 'below min 8']],
    ];
    for (const [params, needles] of cases) {
      const error = await rejection(prefs.model.set(params), `set ${JSON.stringify(params)}`);
      assert.equal(error.code, 'system.invalidParams', JSON.stringify(params));
      for (const needle of needles) {
        assert.ok(error.message.includes(needle), `${JSON.stringify(params)}: ${error.message} should mention ${needle}`);
      }
    }
    await roundTrip(client); // any change event would be in by now
    assert.deepEqual(prefs.changes, []);
    assert.deepEqual(values(prefs.model), DEFAULTS);
  });

  test('reset returns the defaults; prefs outlive a logout, as resources.yaml says', async (stack, t) => {
    const client = clientFor(stack, t);
    const prefs = await watch(client, 'session.prefs.{cid}');
    await login(client, 'cat');
    await within(prefs.model.set({ theme: 'dark', fontSize: 20 }), 'set');
    await prefs.until((v) => v.fontSize === 20, 'fontSize 20');

    await logout(client);
    // reset.on_logout: false keeps them; the round trip proves no change came.
    await roundTrip(client);
    assert.deepEqual(values(prefs.model), { theme: 'dark', fontSize: 20 });

    // `reset` needs no token.
    await within(prefs.model.call('reset'), 'reset');
    assert.deepEqual(await prefs.until((v) => v.theme === 'light' && v.fontSize === 14, 'the defaults'), DEFAULTS);
  });
});
