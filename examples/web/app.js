// The web example: a small account page on Resgate's WebSocket. It shows the
// connection's models, served by connres from resources.yaml, as they change:
//
// - `session.user.{cid}`: who is logged in (the header and the welcome card). Logging in
//   takes a JWT from the example's development issuer and hands it to connres
//   (`auth.identity.login`, examples/web/auth.yaml), which sets the connection's token;
//   connres turns that into change events and the page re-renders on them: nothing here
//   reloads or polls. The session outlives a reconnect (a resume key) and ends live when
//   the JWT expires. Without the issuer, the auth example answers logins
//   (`auth.session.login` / `logout`).
// - `session.prefs.{cid}`: theme and text size, applied to the whole page from the model.
//   The form calls `set`; connres validates it against resources.yaml, and its refusals
//   are shown as sentences (the form does no validation of its own).
// - `session.status.{cid}`: what the shop's services know about the session (items in
//   the cart, a notice), written through connres's backend API.
// - `shop.here.members` (examples/web/here.yaml): who is here, a presence list. The
//   page joins once logged in and pings while it is open; connres takes a person off
//   when their last page logs out or stops pinging, and every page sees it live.

const ResClient = window.resclient.default;

const $ = (id) => document.getElementById(id);

/**
 * What serve.mjs says: Resgate's WebSocket URL (else port 8080 on this page's host),
 * and `issuer`, where the example's development identity provider issues JWTs (when
 * connres is the auth service; without it the auth example answers logins).
 */
async function pageConfig() {
  let config = {};
  try {
    config = await (await fetch('config.json')).json();
  } catch {
    // no config.json: the defaults below
  }
  return { resgate: config.resgate ?? `ws://${location.hostname}:8080`, issuer: config.issuer ?? null };
}

/** Where the page keeps its resume key: the tab's session storage, so a reload resumes too. */
const RESUME_KEY = 'connres-resume-key';

/**
 * Sessions with connres as the auth service (`auth: identity:` in examples/web/auth.yaml):
 * a JWT from the issuer logs the connection in and answers a resume key; when the
 * WebSocket reconnects (a new connection, a new cid), the key moves the session, with
 * the user and the preferences, to the new connection before anything is subscribed again.
 */
function jwtSessions(client, issuer) {
  client.setOnConnect(async () => {
    const key = sessionStorage.getItem(RESUME_KEY);
    if (!key) {
      return;
    }
    try {
      const resumed = await client.authenticate('identity', 'resume', { key });
      sessionStorage.setItem(RESUME_KEY, resumed.resume);
    } catch (err) {
      // Spent, expired, or the old session ended: log in again.
      console.warn(`resume: ${err.code}: ${err.message}`);
      sessionStorage.removeItem(RESUME_KEY);
    }
  });
  return {
    async login(name, password, ttl) {
      const answer = await fetch(issuer, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name, password, ttl }),
      });
      const body = await answer.json();
      if (!answer.ok) {
        throw { code: 'auth.invalidCredentials', message: body.message };
      }
      const result = await client.authenticate('identity', 'login', { token: body.token });
      sessionStorage.setItem(RESUME_KEY, result.resume);
    },
    async logout() {
      sessionStorage.removeItem(RESUME_KEY);
      await client.authenticate('identity', 'logout');
    },
  };
}

/** Sessions through the auth example (`auth.session.*`, examples/auth.rs). */
function serviceSessions(client) {
  return {
    login: (name, password) => client.authenticate('session', 'login', { name, password }),
    logout: () => client.authenticate('session', 'logout'),
  };
}

/** How the page names the fields of `session.prefs` in its messages. */
const LABELS = { theme: 'Theme', fontSize: 'Text size' };

/** What connres's reasons for refusing a value say, as the page words them. */
const RULES = [
  [/^is above max (\S+)$/, (max) => `must be at most ${max}`],
  [/^is below min (\S+)$/, (min) => `must be at least ${min}`],
  [/^is not an integer$/, () => 'must be a whole number'],
  [/^is not one of \[(.*)\]/, (list) => `must be one of ${list.replaceAll('"', '')}`],
];

/**
 * connres's refusal of a value (`field `fontSize`: 99 is above max 32`) as a sentence
 * for the person who typed it; null when the message has another shape.
 */
function fieldProblem(message) {
  const m = /^field `(\w+)`: (.*?) (is .*)$/.exec(message);
  if (!m) {
    return null;
  }
  const [, field, value, problem] = m;
  const label = LABELS[field] ?? field;
  for (const [re, says] of RULES) {
    const r = re.exec(problem);
    if (r) {
      const rule = says(...r.slice(1));
      return value === '""' ? `${label} is empty: it ${rule}.` : `${label} ${rule} (not ${value}).`;
    }
  }
  return `${label}: ${value} ${problem}.`;
}

/**
 * A RES error as a sentence for the page. `deniedHint` says what a refused access means
 * where it happened. The code and raw message go to the console (and the element's
 * title), not into the text.
 */
function describe(err, deniedHint = 'You may not do that.') {
  const code = err?.code;
  if (code === 'system.accessDenied') {
    return deniedHint;
  }
  if (code === 'auth.invalidCredentials') {
    return 'Wrong user name or password.';
  }
  if (code === 'system.invalidParams') {
    return fieldProblem(err.message) ?? `The server refused this: ${err.message}.`;
  }
  if (code === 'system.timeout' || code === 'system.connectionError' || code === 'system.disconnect') {
    return 'The server did not answer. Check your connection and try again.';
  }
  return err?.message ? `Something went wrong: ${err.message}.` : 'Something went wrong.';
}

/** Shows `err` in the element `id` (or clears it with null). */
function showError(id, err, deniedHint) {
  $(id).textContent = err ? describe(err, deniedHint) : '';
  $(id).title = err?.code ? `${err.code}: ${err.message}` : '';
}

function setStatus(state, text) {
  $('conn-status').dataset.state = state;
  $('conn-status').textContent = text;
}

function renderUser(user) {
  const loggedIn = user.id !== null;
  document.body.dataset.session = loggedIn ? 'logged-in' : 'logged-out';
  $('user-name').textContent = loggedIn ? user.name ?? `User #${user.id}` : 'Not logged in';
  $('user-role').textContent = user.role ?? '';
  $('user-role').hidden = !loggedIn || !user.role;
  $('logout').hidden = !loggedIn;
  $('welcome').textContent = loggedIn ? `Welcome back, ${user.name ?? `user #${user.id}`}` : 'Log in';
  $('user-detail').textContent = loggedIn ? `Signed in as ${user.role ?? 'a user'}, account #${user.id}.` : '';
  $('user-detail').hidden = !loggedIn;
  $('login-form').hidden = loggedIn;
}

function renderPrefs(prefs) {
  // Applied from the model, so a change made anywhere (a reset, a reload of
  // resources.yaml) shows here.
  document.body.dataset.theme = prefs.theme ?? 'light';
  document.documentElement.style.fontSize = prefs.fontSize ? `${prefs.fontSize}px` : '';
  $('theme').value = prefs.theme ?? 'light';
  if (document.activeElement !== $('font-size')) {
    $('font-size').value = prefs.fontSize ?? '';
  }
}

function renderStatus(status) {
  const n = status.cartItems ?? 0;
  $('cart-items').textContent = `${n} ${n === 1 ? 'item' : 'items'}`;
  $('notice').textContent = status.notice ?? '';
  $('notice').hidden = !status.notice;
}

function renderHere(members) {
  const names = members.toArray();
  $('here').replaceChildren(
    ...names.map((name) => {
      const li = document.createElement('li');
      li.textContent = name;
      return li;
    }),
  );
  $('here-empty').hidden = names.length > 0;
}

/** The presence list of who is here, and how often the page says it is still open. */
const HERE = 'shop.here.members';
const HERE_PING_MS = 8_000;

/**
 * Keeps this connection in `shop.here.members` while logged in: joins on login, then
 * pings; a ping refused (the connection left, or reconnected as a new one) joins again.
 */
function stayHere(client, user) {
  const join = () => client.call(HERE, 'join').catch((err) => console.warn(`join: ${err.code}: ${err.message}`));
  let loggedIn = false;
  const update = () => {
    const now = user.id !== null;
    if (now && !loggedIn) {
      join();
    }
    loggedIn = now;
  };
  update();
  user.on('change', update);
  setInterval(() => {
    if (loggedIn) {
      client.call(HERE, 'ping').catch(join);
    }
  }, HERE_PING_MS);
}

/** Gets a model, renders it and re-renders it on every change event. */
async function follow(client, rid, render) {
  const model = await client.get(rid);
  render(model);
  model.on('change', () => render(model));
  return model;
}

async function main() {
  const config = await pageConfig();
  const client = new ResClient(config.resgate);
  // Before the first connect: a reload of the tab resumes its session too.
  const sessions = config.issuer ? jwtSessions(client, config.issuer) : serviceSessions(client);
  $('login-ttl-field').hidden = !config.issuer;
  client.on('connect', () => setStatus('live', 'Live'));
  client.on('disconnect', () => setStatus('reconnecting', 'Reconnecting…'));
  // Every error reply, also those the page shows (a refused set, a wrong password).
  client.on('error', (err) => console.warn(`resclient: ${err.code}: ${err.message}`));

  // `{cid}` is replaced by Resgate with this connection's ID.
  const user = await follow(client, 'session.user.{cid}', renderUser);
  const prefs = await follow(client, 'session.prefs.{cid}', renderPrefs);
  await follow(client, 'session.status.{cid}', renderStatus);
  const here = await client.get(HERE);
  renderHere(here);
  here.on('add', () => renderHere(here));
  here.on('remove', () => renderHere(here));
  stayHere(client, user);

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    showError('login-error', null);
    try {
      await sessions.login($('login-name').value, $('login-password').value, Number($('login-ttl').value));
      $('login-password').value = '';
    } catch (err) {
      showError('login-error', err);
    }
  });

  $('logout').addEventListener('click', async () => {
    showError('login-error', null);
    try {
      await sessions.logout();
    } catch (err) {
      showError('login-error', err);
    }
  });

  const denied = 'Log in to change your preferences.';
  const save = async (values) => {
    showError('prefs-error', null);
    try {
      await prefs.set(values);
      $('font-size').blur();
    } catch (err) {
      showError('prefs-error', err, denied);
      renderPrefs(prefs); // the form shows the model again, not the refused value
    }
  };
  // The theme applies as soon as it is chosen; the text size when saved.
  $('theme').addEventListener('change', () => save({ theme: $('theme').value }));
  $('prefs-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('font-size').value.trim();
    // Sent as typed: a number when it reads as one, else the text (connres says why not).
    save({ fontSize: text !== '' && !Number.isNaN(Number(text)) ? Number(text) : text });
  });

  $('prefs-reset').addEventListener('click', async () => {
    showError('prefs-error', null);
    try {
      await prefs.call('reset');
    } catch (err) {
      showError('prefs-error', err, denied);
    }
  });

  document.body.dataset.ready = 'true';
}

main().catch((err) => {
  console.error(err);
  setStatus('failed', 'Offline');
  showError('login-error', err);
});
