// Hot reload through Resgate: connres's config file is edited while a client is
// subscribed. A field added appears in the client's model live; a broken edit is
// ignored and the old config keeps serving; access revoked in the file makes Resgate
// unsubscribe the client.

import assert from 'node:assert/strict';
import { after, describe } from 'node:test';

import { connect, login, rejection, roundTrip, values, watch, within } from '../lib/client.mjs';
import { withStack } from '../lib/harness.mjs';
import { replaceOnce, shippedConfig, WHOAMI } from '../lib/stack.mjs';

const ORIGINAL = shippedConfig((t) => t + WHOAMI);
const FONT_SIZE = '      fontSize: { type: integer, default: 14, min: 8, max: 32, writable: true }\n';
const WITH_DENSITY = replaceOnce(
  ORIGINAL,
  FONT_SIZE,
  `${FONT_SIZE}      density:  { type: string,  default: cozy, enum: [cozy, compact], writable: true }\n`,
);
/** `min` above `max`: a config error, so the reload is rejected. */
const BROKEN = replaceOnce(WITH_DENSITY, 'min: 8, max: 32', 'min: 40, max: 32');
/** session.prefs.{cid} readable by nobody. */
const PREFS_REVOKED = (() => {
  const at = WITH_DENSITY.indexOf('session.prefs.{cid}:');
  const head = WITH_DENSITY.slice(0, at);
  const tail = replaceOnce(WITH_DENSITY.slice(at), 'get: cid == params.cid', 'get: "false"');
  return head + tail;
})();

describe('hot reload through Resgate', () => {
  const test = withStack({ config: ORIGINAL });
  // The steps build on each other: one connection follows the same models throughout.
  let client;
  let prefs;
  let user;
  after(() => client?.disconnect());

  test('a field added to the file appears in the subscribed model', async (stack) => {
    client = connect(stack.wsUrl);
    prefs = await watch(client, 'session.prefs.{cid}');
    user = await watch(client, 'session.user.{cid}');
    await login(client, 'ann');
    assert.deepEqual(values(prefs.model), { theme: 'light', fontSize: 14 });

    const reloaded = stack.connres.waitFor(/config reloaded/);
    stack.writeConfig(WITH_DENSITY);
    await reloaded;
    // connres names session.prefs.* in a system.reset; Resgate gets the model again
    // and sends the difference as a change event.
    assert.deepEqual(await prefs.until((v) => v.density === 'cozy', 'density to appear'), {
      theme: 'light',
      fontSize: 14,
      density: 'cozy',
    });
    await within(prefs.model.set({ density: 'compact' }), 'set the new field');
    await prefs.until((v) => v.density === 'compact', 'density compact');
  });

  test('a broken edit is ignored and the old config keeps serving', async (stack) => {
    const rejected = stack.connres.waitFor(/config reload rejected/);
    stack.writeConfig(BROKEN);
    await rejected;
    // The rules in force are still the old ones: 20 is within 8..32 (not 40..32).
    await within(prefs.model.set({ fontSize: 20 }), 'set under the old rules');
    await prefs.until((v) => v.fontSize === 20, 'fontSize 20');
    const error = await rejection(prefs.model.set({ fontSize: 33 }), 'set above the old max');
    assert.equal(error.code, 'system.invalidParams');
    await roundTrip(client);
    assert.equal(prefs.unsubscribed, false);
  });

  test('access revoked in the file makes Resgate unsubscribe the client', async (stack) => {
    const reloaded = stack.connres.waitFor(/config reloaded/);
    stack.writeConfig(PREFS_REVOKED);
    await reloaded;
    // connres names session.prefs.* under `access`; Resgate asks again, is denied and
    // tells the client.
    await prefs.untilUnsubscribed();
    prefs.close();
    assert.equal((await rejection(client.get('session.prefs.{cid}'), 'prefs after the revocation')).code, 'system.accessDenied');
    // Other models are untouched.
    await roundTrip(client);
    assert.equal(user.unsubscribed, false);
    assert.equal(user.model.name, 'Ann');
  });
});
