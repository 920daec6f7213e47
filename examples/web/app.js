// The web example: one page on Resgate's WebSocket, showing the connection's
// `session.user.{cid}` and `session.prefs.{cid}` (served by connres) live.
//
// - Logging in and out calls the auth example (`auth.session.login` / `logout`), which
//   sets the connection's token; connres turns that into change events, and the page
//   re-renders on them: nothing here reloads or polls.
// - The preferences form calls `set` on the model; connres validates it against
//   resources.yaml and the page shows its errors as they come.

const ResClient = window.resclient.default;

const $ = (id) => document.getElementById(id);

/** Resgate's WebSocket URL: what serve.mjs says, else port 8080 on this page's host. */
async function resgateUrl() {
  try {
    const config = await (await fetch('config.json')).json();
    if (config.resgate) {
      return config.resgate;
    }
  } catch {
    // no config.json: the default below
  }
  return `ws://${location.hostname}:8080`;
}

/** A model's values as `name: value` rows; references show their resource ID. */
function renderModel(dl, model) {
  dl.replaceChildren();
  for (const [key, value] of Object.entries(model.props)) {
    const dt = document.createElement('dt');
    dt.textContent = key;
    const dd = document.createElement('dd');
    dd.dataset.field = key;
    if (value && typeof value.getResourceId === 'function') {
      dd.textContent = `-> ${value.getResourceId()}${value.name ? ` (${value.name})` : ''}`;
    } else {
      dd.textContent = JSON.stringify(value);
    }
    dl.append(dt, dd);
  }
}

function renderUser(user) {
  const loggedIn = user.id !== null;
  $('user-line').textContent = loggedIn ? `${user.name} (${user.role}), user #${user.id}` : 'Not logged in';
  $('user-line').dataset.state = loggedIn ? 'logged-in' : 'logged-out';
  renderModel($('user-model'), user);
  $('login-form').hidden = loggedIn;
  $('logout').hidden = !loggedIn;
}

function renderPrefs(prefs) {
  renderModel($('prefs-model'), prefs);
  // Applied from the model, so a change made anywhere (another tab of this connection,
  // a reset, a reload of resources.yaml) shows here.
  document.body.dataset.theme = prefs.theme ?? 'light';
  $('preview').style.fontSize = prefs.fontSize ? `${prefs.fontSize}px` : '';
  $('theme').value = prefs.theme ?? 'light';
  if (document.activeElement !== $('font-size')) {
    $('font-size').value = prefs.fontSize ?? '';
  }
}

/** A RES error as a line for the page. */
function describe(err) {
  if (err && err.code === 'system.accessDenied') {
    return `${err.message}: log in to change your preferences (${err.code})`;
  }
  return err && err.code ? `${err.message} (${err.code})` : String(err);
}

async function main() {
  const client = new ResClient(await resgateUrl());
  client.on('connect', () => ($('conn-status').textContent = 'connected to Resgate'));
  client.on('disconnect', () => ($('conn-status').textContent = 'disconnected; reconnecting...'));
  // Every error reply, also those the page shows (a refused set, a wrong password).
  client.on('error', (err) => console.warn(`resclient: ${err.code}: ${err.message}`));

  // `{cid}` is replaced by Resgate with this connection's ID.
  const user = await client.get('session.user.{cid}');
  renderUser(user);
  user.on('change', () => renderUser(user));

  const prefs = await client.get('session.prefs.{cid}');
  renderPrefs(prefs);
  prefs.on('change', () => renderPrefs(prefs));

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('login-error').textContent = '';
    try {
      await client.authenticate('session', 'login', {
        name: $('login-name').value,
        password: $('login-password').value,
      });
      $('login-password').value = '';
    } catch (err) {
      $('login-error').textContent = describe(err);
    }
  });

  $('logout').addEventListener('click', async () => {
    $('login-error').textContent = '';
    try {
      await client.authenticate('session', 'logout');
    } catch (err) {
      $('login-error').textContent = describe(err);
    }
  });

  $('prefs-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('prefs-error').textContent = '';
    const text = $('font-size').value.trim();
    // Sent as typed: a number when it reads as one, else the text (connres says why not).
    const fontSize = text !== '' && !Number.isNaN(Number(text)) ? Number(text) : text;
    try {
      await prefs.set({ theme: $('theme').value, fontSize });
      $('font-size').blur();
    } catch (err) {
      $('prefs-error').textContent = describe(err);
    }
  });

  $('prefs-reset').addEventListener('click', async () => {
    $('prefs-error').textContent = '';
    try {
      await prefs.call('reset');
    } catch (err) {
      $('prefs-error').textContent = describe(err);
    }
  });

  document.body.dataset.ready = 'true';
}

main().catch((err) => {
  console.error(err);
  $('conn-status').textContent = `failed: ${describe(err)}`;
});
