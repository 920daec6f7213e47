// node:test glue: one stack per describe block, clients closed after each test, and
// every failure annotated with the stack's last log lines.

import { after, before, it } from 'node:test';

import { connect } from './client.mjs';
import { startStack } from './stack.mjs';

/**
 * Starts a stack before the block's tests and stops it after them. Returns `test(name,
 * fn)`, which runs `fn(stack, t)` and adds every process's last log lines to a failure.
 */
export function withStack(options) {
  let stack;
  before(async () => {
    stack = await startStack(options);
  });
  after(async () => {
    await stack?.stop();
  });
  return (name, fn) =>
    it(name, async (t) => {
      try {
        await fn(stack, t);
      } catch (e) {
        throw stack ? stack.annotate(e) : e;
      }
    });
}

/** A ResClient on the stack's Resgate, disconnected when the test ends. */
export function clientFor(stack, t) {
  const client = connect(stack.wsUrl);
  t.after(() => client.disconnect());
  return client;
}
