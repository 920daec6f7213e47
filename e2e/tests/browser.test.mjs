// The web example (examples/web/) in headless Chromium (Debian's, through
// playwright-core; nothing downloads a browser): a wrong password and a set before login
// are explained in words; logging in shows the user in the header without reloading; a
// backend write to session.status shows in the session card; the dark theme darkens the
// whole page, form fields included, and the text size scales it; invalid values are
// refused with a sentence saying why; logging out keeps the preferences; no model is
// shown as raw values. Two pages (two connections) never see each other's models, and
// each sees the other log in and out in "who is here". A
// failure reports the pages' console output and saves a screenshot of each page in
// e2e/artifacts/.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe } from 'node:test';

import { chromium } from 'playwright-core';

import { withStack } from '../lib/harness.mjs';
import { ROOT, WAIT_MS } from '../lib/stack.mjs';

const ARTIFACTS = path.join(ROOT, 'e2e/artifacts');

describe('the web example in Chromium', () => {
  const test = withStack({ web: true });
  let browser;

  before(async () => {
    const executablePath = process.env.CHROMIUM;
    assert.ok(executablePath, 'CHROMIUM is not set: run the lane with scripts/e2e.sh');
    // playwright-core starts it with a fresh, temporary profile of its own.
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  after(async () => {
    await browser?.close();
  });

  /**
   * A new page (its own browser context, so its own WebSocket: its own connection) on
   * the example, with its console kept. On failure the test's error gets the console
   * lines and a screenshot is saved.
   */
  async function openPage(stack, t, name) {
    const context = await browser.newContext({ viewport: { width: 1000, height: 560 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const consoleLines = [];
    page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
    pages.push({ page, name, consoleLines, test: t.name });
    t.after(() => context.close());
    await page.goto(stack.webUrl);
    await page.locator('body[data-ready="true"]').waitFor();
    return page;
  }

  const pages = [];
  /** Runs a test body; on failure, adds what the pages logged and saves screenshots. */
  function browserTest(name, fn) {
    test(name, async (stack, t) => {
      pages.length = 0;
      try {
        await fn(stack, t);
      } catch (e) {
        mkdirSync(ARTIFACTS, { recursive: true });
        const notes = [];
        for (const p of pages) {
          const file = path.join(ARTIFACTS, `failure-${p.name}.png`);
          await p.page.screenshot({ path: file, fullPage: true }).catch(() => {});
          notes.push(`--- ${p.name}: console (screenshot ${path.relative(ROOT, file)}) ---\n${p.consoleLines.join('\n') || '(nothing logged)'}`);
        }
        const error = e instanceof Error ? e : new Error(String(e));
        error.message = `${error.message}\n${notes.join('\n')}`;
        throw error;
      }
    });
  }

  async function logIn(page, name, password = `${name}-pass`) {
    await page.fill('#login-name', name);
    await page.fill('#login-password', password);
    await page.click('#login');
  }

  browserTest('log in, see the session, change preferences, see errors, log out', async (stack, t) => {
    const tokens = await stack.tokenEvents();
    t.after(() => tokens.close());
    const page = await openPage(stack, t, 'single');
    await assertText(page.locator('#conn-status'), 'Live');
    await assertText(page.locator('#user-name'), 'Not logged in');
    await assertText(page.locator('#welcome'), 'Log in');
    await assertText(page.locator('#cart-items'), '0 items');
    assert.equal(await page.isVisible('#notice'), false);
    await assertNoRawValues(page);
    assert.ok((await backgrounds(page)).every((l) => l > 0.8), 'the light theme is light');

    await logIn(page, 'ann', 'wrong');
    await assertText(page.locator('#login-error'), 'Wrong user name or password.');

    // A set before login is refused by Resgate: the page says what to do.
    await page.fill('#font-size', '20');
    await page.click('#prefs-apply');
    await assertText(page.locator('#prefs-error'), 'Log in to change your preferences.');

    await logIn(page, 'ann');
    // Live, through the change event: the page never reloads.
    await assertText(page.locator('#user-name'), 'Ann');
    await assertText(page.locator('#user-role'), 'admin');
    await assertText(page.locator('#welcome'), 'Welcome back, Ann');
    await assertText(page.locator('#user-detail'), 'Signed in as admin, account #42.');
    await assertText(page.locator('#login-error'), '');
    assert.equal(await page.isVisible('#login-form'), false);

    // The shop's services write session.status through connres's backend API.
    const { cid } = await tokens.next((e) => e.token?.name === 'Ann');
    await stack.publish(`connres.set.session.status.${cid}`, { values: { cartItems: 3, notice: 'Your order has shipped.' } });
    await assertText(page.locator('#cart-items'), '3 items');
    await assertText(page.locator('#notice'), 'Your order has shipped.');

    // The theme applies when chosen, to everything on the page, form fields included.
    await page.selectOption('#theme', 'dark');
    await page.locator('body[data-theme="dark"]').waitFor();
    assert.ok((await backgrounds(page)).every((l) => l < 0.1), 'the dark theme is dark everywhere');
    await page.fill('#font-size', '20');
    await page.click('#prefs-apply');
    await page.waitForFunction(() => getComputedStyle(document.documentElement).fontSize === '20px');
    await assertText(page.locator('#prefs-error'), '');

    await page.fill('#font-size', '99');
    await page.click('#prefs-apply');
    await assertText(page.locator('#prefs-error'), 'Text size must be at most 32 (not 99).');
    assert.equal(await page.inputValue('#font-size'), '20');
    assert.equal(await page.evaluate(() => getComputedStyle(document.documentElement).fontSize), '20px');
    // The README's picture: logged in, the dark theme applied, connres's refusal shown.
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'web-example.png'), fullPage: true });
    await page.fill('#font-size', 'big');
    await page.click('#prefs-apply');
    await assertText(page.locator('#prefs-error'), 'Text size must be a whole number (not "big").');

    await page.click('#logout');
    await assertText(page.locator('#user-name'), 'Not logged in');
    await assertText(page.locator('#welcome'), 'Log in');
    assert.equal(await page.isVisible('#login-form'), true);
    assert.equal(await page.isVisible('#user-role'), false);
    // resources.yaml keeps prefs across a logout.
    await page.locator('body[data-theme="dark"]').waitFor();
    await assertNoRawValues(page);

    await page.click('#prefs-reset');
    await page.locator('body[data-theme="light"]').waitFor();
    await page.waitForFunction(() => getComputedStyle(document.documentElement).fontSize === '14px');
    assert.equal(await page.inputValue('#font-size'), '14');
  });

  browserTest("two pages never see each other's models", async (stack, t) => {
    const first = await openPage(stack, t, 'first');
    const second = await openPage(stack, t, 'second');

    await logIn(first, 'bob');
    await assertText(first.locator('#user-name'), 'Bob');
    await first.selectOption('#theme', 'dark');
    await first.locator('body[data-theme="dark"]').waitFor();

    await logIn(second, 'cat');
    await assertText(second.locator('#user-name'), 'Cat');
    await assertText(second.locator('#user-role'), 'guest');
    // Each page shows its own session; the second's theme is untouched.
    await assertText(first.locator('#user-name'), 'Bob');
    assert.equal(await second.getAttribute('body', 'data-theme'), 'light');

    await first.click('#logout');
    await assertText(first.locator('#user-name'), 'Not logged in');
    await assertText(second.locator('#user-name'), 'Cat');
    assert.equal(await second.getAttribute('body', 'data-theme'), 'light');
  });

  browserTest('who is here: two pages see each other log in and out, live', async (stack, t) => {
    const first = await openPage(stack, t, 'here-first');
    const second = await openPage(stack, t, 'here-second');
    // Pages of earlier tests that closed without logging out stay listed until their
    // ttl (20s): these names are checked among whatever else is listed.
    const shows = async (page, present, absent = []) => {
      await page.waitForFunction(
        ([present, absent]) => {
          const names = [...document.querySelectorAll('#here li')].map((li) => li.textContent);
          const order = names.filter((n) => present.includes(n));
          return JSON.stringify(order) === JSON.stringify(present) && absent.every((n) => !names.includes(n));
        },
        [present, absent],
      );
    };
    await shows(first, [], ['Ann', 'Bob']);

    await logIn(first, 'ann');
    await shows(first, ['Ann']);
    await shows(second, ['Ann']);
    await logIn(second, 'bob');
    // In the order they joined, on both pages.
    await shows(second, ['Ann', 'Bob']);
    await shows(first, ['Ann', 'Bob']);
    assert.equal(await second.isVisible('#here-empty'), false);

    // A logout takes Ann off for everyone, the page that logged out included.
    await first.click('#logout');
    await shows(second, ['Bob'], ['Ann']);
    await shows(first, ['Bob'], ['Ann']);
  });

  browserTest('a reload (a new WebSocket, a new connection) keeps the session and the preferences', async (stack, t) => {
    const tokens = await stack.tokenEvents();
    t.after(() => tokens.close());
    const page = await openPage(stack, t, 'reload');
    await logIn(page, 'ann');
    await assertText(page.locator('#user-name'), 'Ann');
    const { cid: before } = await tokens.next((e) => e.token?.name === 'Ann');
    await page.selectOption('#theme', 'dark');
    await page.locator('body[data-theme="dark"]').waitFor();
    // The page closes its WebSocket; the reloaded page opens another, on a new cid,
    // and hands its resume key over before it subscribes.
    await page.reload();
    await page.locator('body[data-ready="true"]').waitFor();
    const { cid: after } = await tokens.next((e) => e.token?.name === 'Ann');
    assert.notEqual(after, before, 'a new connection');
    await assertText(page.locator('#user-name'), 'Ann');
    await page.locator('body[data-theme="dark"]').waitFor();
    // The old connection was logged out.
    await tokens.next((e) => e.token === null);
  });

  browserTest('a short-lived JWT logs the page out live when it expires', async (stack, t) => {
    const page = await openPage(stack, t, 'expiry');
    await page.selectOption('#login-ttl', '5');
    await logIn(page, 'bob');
    await assertText(page.locator('#user-name'), 'Bob');
    // No request from the page: connres ends the token at the JWT's exp.
    await assertText(page.locator('#user-name'), 'Not logged in');
    assert.equal(await page.isVisible('#login-form'), true);
  });
});

/** The page shows no model as raw values: no `null`, no quoted JSON strings, no resource IDs. */
async function assertNoRawValues(page) {
  const text = await page.innerText('body');
  assert.doesNotMatch(text, /\bnull\b|"(light|dark)"|session\.\w+\.|\{cid\}/, `the page shows raw values:\n${text}`);
}

/**
 * The relative luminance (0 black, 1 white) of the backgrounds of the page, its header,
 * its cards and each form field and button.
 */
function backgrounds(page) {
  return page.evaluate(() => {
    const luminance = (css) => {
      const [r, g, b] = css.match(/\d+(\.\d+)?/g).slice(0, 3).map((v) => {
        const c = Number(v) / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const elements = [document.body, ...document.querySelectorAll('.topbar, .card, input, select, #prefs-reset')];
    return elements.map((el) => luminance(getComputedStyle(el).backgroundColor));
  });
}

/** Waits until the element's text is `expected` (a string: exactly, trimmed; or a RegExp). */
async function assertText(locator, expected) {
  const matches = (text) => (expected instanceof RegExp ? expected.test(text) : text.trim() === expected);
  await locator.waitFor({ state: 'attached' });
  try {
    await locator.page().waitForFunction(
      ([el, source, flags, exact]) => {
        const text = el.textContent ?? '';
        return source !== null ? new RegExp(source, flags).test(text) : text.trim() === exact;
      },
      [await locator.elementHandle(), expected instanceof RegExp ? expected.source : null, expected.flags ?? '', String(expected)],
      { timeout: WAIT_MS },
    );
  } catch (e) {
    const text = await locator.textContent().catch(() => '(unreadable)');
    if (!matches(text ?? '')) {
      throw new assert.AssertionError({ message: `text of ${locator}: expected ${expected}, got ${JSON.stringify(text)}`, actual: text, expected: String(expected) });
    }
    throw e;
  }
}
