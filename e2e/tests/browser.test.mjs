// The web example (examples/web/) in headless Chromium (Debian's, through
// playwright-core; nothing downloads a browser): log in and see the name appear without
// reloading, change a preference and see it applied, try an invalid one and see
// connres's error, log out and see the null model; two pages (two connections) never see
// each other's models. A failure reports the pages' console output and saves a
// screenshot of each page in e2e/artifacts/.

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

  async function logIn(page, name) {
    await page.fill('#login-name', name);
    await page.fill('#login-password', `${name}-pass`);
    await page.click('#login');
  }

  browserTest('log in, change preferences, see an error, log out', async (stack, t) => {
    const page = await openPage(stack, t, 'single');
    const line = page.locator('#user-line');
    await assertText(line, 'Not logged in');
    await assertText(page.locator('#user-model dd[data-field="name"]'), 'null');

    // A set before login is refused by Resgate: the page says so.
    await page.fill('#font-size', '20');
    await page.click('#prefs-apply');
    await assertText(page.locator('#prefs-error'), /Access denied: log in/);

    await logIn(page, 'ann');
    // Live, through the change event: the page never reloads.
    await assertText(line, 'Ann (admin), user #42');
    await assertText(page.locator('#user-model dd[data-field="user"]'), '-> users.user.42 (Ann)');
    assert.equal(await page.isVisible('#login-form'), false);

    await page.selectOption('#theme', 'dark');
    await page.fill('#font-size', '20');
    await page.click('#prefs-apply');
    await page.locator('body[data-theme="dark"]').waitFor();
    await assertText(page.locator('#prefs-model dd[data-field="fontSize"]'), '20');
    assert.equal(await page.locator('#preview').evaluate((el) => el.style.fontSize), '20px');
    await assertText(page.locator('#prefs-error'), '');

    await page.fill('#font-size', '99');
    await page.click('#prefs-apply');
    await assertText(page.locator('#prefs-error'), 'field `fontSize`: 99 is above max 32 (system.invalidParams)');
    await assertText(page.locator('#prefs-model dd[data-field="fontSize"]'), '20');
    // The README's picture: logged in, the dark theme applied, connres's error shown.
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'web-example.png') });

    await page.click('#logout');
    await assertText(line, 'Not logged in');
    for (const field of ['id', 'name', 'role', 'user']) {
      await assertText(page.locator(`#user-model dd[data-field="${field}"]`), 'null');
    }
    // resources.yaml keeps prefs across a logout.
    await page.locator('body[data-theme="dark"]').waitFor();

    await page.click('#prefs-reset');
    await page.locator('body[data-theme="light"]').waitFor();
    await assertText(page.locator('#prefs-model dd[data-field="fontSize"]'), '14');
  });

  browserTest("two pages never see each other's models", async (stack, t) => {
    const first = await openPage(stack, t, 'first');
    const second = await openPage(stack, t, 'second');

    await logIn(first, 'bob');
    await assertText(first.locator('#user-line'), 'Bob (user), user #43');
    await first.selectOption('#theme', 'dark');
    await first.click('#prefs-apply');
    await first.locator('body[data-theme="dark"]').waitFor();

    await logIn(second, 'cat');
    await assertText(second.locator('#user-line'), 'Cat (guest), user #44');
    // Each page shows its own session; the second's theme is untouched.
    await assertText(first.locator('#user-line'), 'Bob (user), user #43');
    assert.equal(await second.getAttribute('body', 'data-theme'), 'light');

    await first.click('#logout');
    await assertText(first.locator('#user-line'), 'Not logged in');
    await assertText(second.locator('#user-line'), 'Cat (guest), user #44');
    assert.equal(await second.getAttribute('body', 'data-theme'), 'light');
  });
});

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
