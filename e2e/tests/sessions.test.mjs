// Sessions through the real Resgate with connres as the auth service (`auth:`): a JWT
// login with `client.authenticate`, the same JWT as a cookie on the WebSocket
// (`--wsheadauth`), which logs the connection in before its first subscription, a
// refused token, and a logout.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe } from 'node:test';

import resclient from 'resclient';
import WebSocket from 'ws';

import { LOGGED_OUT, rejection, roundTrip, values, watch, within } from '../lib/client.mjs';
import { clientFor, withStack } from '../lib/harness.mjs';
import { replaceOnce, shippedConfig, WHOAMI } from '../lib/stack.mjs';

const ResClient = resclient.default;
const SECRET = 'an end-to-end secret of at least thirty-two bytes';

const AUTH = `
auth:
  jwt:
    jwt:
      algorithms: [HS256]
      secret: { file: jwt.secret }
    token:
      userId: "{{claims.sub}}"
      name: "{{claims.name}}"
      role: "{{claims.role}}"
    tid: "{{claims.sub}}"
    methods:
      login: { jwt: params.token }
      header: { jwt: [header.Authorization, cookie.session] }
      logout: { logout: true }
      resume: { resume: true }
resources:`;

/** An HS256 JWT of `claims`, signed with `secret`. */
function sign(claims, secret = SECRET) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

function annJwt() {
  return sign({ sub: 42, name: 'Ann', role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 });
}

const ANN = { id: 42, name: 'Ann', role: 'admin', user: { rid: 'users.user.42' } };

/** A model only a logged-in request may read: for HTTP requests with --headauth. */
const MEMBERS = `
  e2e.members:
    fields:
      note: { type: string, default: members only }
    access:
      get: token != null
`;

describe('sessions: connres as the auth service, through Resgate', () => {
  const test = withStack({
    config: shippedConfig((t) => replaceOnce(t, '\nresources:', AUTH) + WHOAMI + MEMBERS),
    files: { 'jwt.secret': SECRET },
    resgateArgs: ['--wsheadauth', 'jwt.header', '--headauth', 'jwt.header'],
  });

  test('authenticate with a JWT logs in live; logout returns to null', async (stack, t) => {
    const client = clientFor(stack, t);
    const user = await watch(client, 'session.user.{cid}');
    assert.deepEqual(values(user.model), LOGGED_OUT);
    await within(client.authenticate('jwt', 'login', { token: annJwt() }), 'the login');
    assert.deepEqual(await user.until((v) => v.id !== null, 'the login'), ANN);
    await within(client.authenticate('jwt', 'logout'), 'the logout');
    assert.deepEqual(await user.until((v) => v.id === null, 'the logout'), LOGGED_OUT);
  });

  test('a refused JWT is an error with its reason, and changes nothing', async (stack, t) => {
    const client = clientFor(stack, t);
    const user = await watch(client, 'session.user.{cid}');
    const expired = sign({ sub: 42, exp: Math.floor(Date.now() / 1000) - 600 });
    const error = await rejection(client.authenticate('jwt', 'login', { token: expired }), 'an expired token');
    assert.deepEqual(error, { code: 'connres.invalidToken', message: 'token expired' });
    const forged = sign({ sub: 1, exp: Math.floor(Date.now() / 1000) + 600 }, 'another secret, also thirty-two bytes long');
    const bad = await rejection(client.authenticate('jwt', 'login', { token: forged }), 'a forged token');
    assert.equal(bad.code, 'connres.invalidToken');
    assert.deepEqual(values(user.model), LOGGED_OUT);
    assert.deepEqual(user.changes, []);
  });

  test('a session cookie on the WebSocket logs the connection in before its first subscription', async (stack, t) => {
    const headers = { Cookie: `theme=dark; session=${annJwt()}` };
    const client = new ResClient(() => new WebSocket(stack.wsUrl, { headers }), { reconnectDelay: 200 });
    t.after(() => client.disconnect());
    const user = await watch(client, 'session.user.{cid}');
    assert.deepEqual(values(user.model), ANN, 'the first get already shows the user');
  });

  test('a revocation logs out every connection of the token ID, and only those', async (stack, t) => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const bob = sign({ sub: 7, name: 'Bob', role: 'user', exp });
    const clients = [clientFor(stack, t), clientFor(stack, t), clientFor(stack, t)];
    const users = [];
    for (const [i, client] of clients.entries()) {
      const user = await watch(client, 'session.user.{cid}');
      await within(client.authenticate('jwt', 'login', { token: i < 2 ? annJwt() : bob }), 'a login');
      await user.until((v) => v.id !== null, 'the login');
      users.push(user);
    }
    // As a backend would: every session of user 42, wherever it is.
    await stack.publish('connres.revoke.jwt', { tids: ['42'] });
    for (const user of users.slice(0, 2)) {
      assert.deepEqual(await user.until((v) => v.id === null, 'the revocation'), LOGGED_OUT);
    }
    await roundTrip(clients[2]);
    assert.equal(users[2].model.name, 'Bob', "another user's session stays");
  });

  test('a resume on a new WebSocket keeps the user and the preferences; the old key is spent', async (stack, t) => {
    const first = clientFor(stack, t);
    await watch(first, 'session.user.{cid}');
    const prefs = await watch(first, 'session.prefs.{cid}');
    const login = await within(first.authenticate('jwt', 'login', { token: annJwt() }), 'the login');
    assert.equal(typeof login.resume, 'string', 'a login answers a resume key');
    await within(first.call('session.prefs.{cid}', 'set', { theme: 'dark' }), 'a set');
    await prefs.until((v) => v.theme === 'dark', 'the set');
    // The WebSocket drops: the next one is a new connection, with a new cid.
    first.disconnect();
    const second = clientFor(stack, t);
    const user = await watch(second, 'session.user.{cid}');
    const prefs2 = await watch(second, 'session.prefs.{cid}');
    assert.deepEqual(values(user.model), LOGGED_OUT);
    const resumed = await within(second.authenticate('jwt', 'resume', { key: login.resume }), 'the resume');
    assert.notEqual(resumed.resume, login.resume, 'a fresh key');
    assert.deepEqual(await user.until((v) => v.id !== null, 'the resume'), ANN);
    assert.equal((await prefs2.until((v) => v.theme === 'dark', 'the preferences')).theme, 'dark');
    const third = clientFor(stack, t);
    const spent = await rejection(third.authenticate('jwt', 'resume', { key: login.resume }), 'a spent key');
    assert.equal(spent.code, 'connres.invalidResumeKey');
  });

  test('setOnConnect resumes the session when the WebSocket drops and ResClient reconnects', async (stack, t) => {
    let socket;
    const client = new ResClient(() => (socket = new WebSocket(stack.wsUrl)), { reconnectDelay: 200 });
    t.after(() => client.disconnect());
    let key = null;
    const resumes = [];
    client.setOnConnect(async () => {
      if (key) {
        key = (await client.authenticate('jwt', 'resume', { key })).resume;
        resumes.push(key);
      }
    });
    const user = await watch(client, 'session.user.{cid}');
    const prefs = await watch(client, 'session.prefs.{cid}');
    key = (await within(client.authenticate('jwt', 'login', { token: annJwt() }), 'the login')).resume;
    await user.until((v) => v.id !== null, 'the login');
    await within(client.call('session.prefs.{cid}', 'set', { theme: 'dark' }), 'a set');
    await prefs.until((v) => v.theme === 'dark', 'the set');
    const whoami = await watch(client, 'e2e.whoami.{cid}');
    const oldCid = whoami.model.cid;
    // The connection drops under the client; ResClient reconnects, on a new cid, and
    // resubscribes what it holds once the onConnect callback is done.
    // As a network drop: no closing handshake.
    socket.terminate();
    await whoami.until((v) => v.cid !== oldCid, 'a new connection');
    assert.equal(resumes.length, 1, 'resumed once, on connect');
    assert.deepEqual(values(user.model), ANN, 'the user, on the new connection');
    assert.equal(prefs.model.theme, 'dark', 'the preferences, on the new connection');
  });

  test('an HTTP request with the session cookie is logged in for that request (--headauth)', async (stack) => {
    const url = `${stack.wsUrl.replace(/^ws:/, 'http:')}/api/e2e/members`;
    const anonymous = await fetch(url);
    assert.equal(anonymous.status, 401, 'no cookie: access denied');
    const withCookie = await fetch(url, { headers: { Cookie: `session=${annJwt()}` } });
    assert.equal(withCookie.status, 200);
    assert.deepEqual(await withCookie.json(), { note: 'members only' });
    const expired = sign({ sub: 42, exp: Math.floor(Date.now() / 1000) - 600 });
    const refused = await fetch(url, { headers: { Authorization: `Bearer ${expired}` } });
    assert.equal(refused.status, 401, 'an expired token logs nothing in');
  });
});

describe('sessions: a tokenReset naming a recheck method, through Resgate', () => {
  const RECHECK = AUTH.replace('      resume: { resume: true }\n', '      recheck: { recheck: true }\n');
  const config = shippedConfig((t) => replaceOnce(t, '\nresources:', RECHECK) + WHOAMI);
  const test = withStack({ config, files: { 'jwt.secret': SECRET, 'rotated.secret': `${SECRET}, rotated` } });

  test('after a key rotation, the sessions of the token IDs named are checked again and logged out', async (stack, t) => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const bob = sign({ sub: 7, name: 'Bob', role: 'user', exp });
    const [ann, other] = [clientFor(stack, t), clientFor(stack, t)];
    const users = [];
    for (const [client, token] of [[ann, annJwt()], [other, bob]]) {
      const user = await watch(client, 'session.user.{cid}');
      await within(client.authenticate('jwt', 'login', { token }), 'a login');
      await user.until((v) => v.id !== null, 'the login');
      users.push(user);
    }
    // Checked again with the key they were signed with: both stay.
    await stack.publish('system.tokenReset', { tids: ['42', '7'], subject: 'auth.jwt.recheck' });
    await roundTrip(ann);
    assert.equal(users[0].model.name, 'Ann');

    const reloaded = stack.connres.waitFor(/config reloaded/);
    stack.writeConfig(config.replace('{ file: jwt.secret }', '{ file: rotated.secret }'));
    await reloaded;
    // As an operator would after the rotation: user 42's sessions.
    await stack.publish('system.tokenReset', { tids: ['42'], subject: 'auth.jwt.recheck' });
    assert.deepEqual(await users[0].until((v) => v.id === null, 'the recheck'), LOGGED_OUT);
    await roundTrip(other);
    assert.equal(users[1].model.name, 'Bob', 'a session not named stays');
  });
});
