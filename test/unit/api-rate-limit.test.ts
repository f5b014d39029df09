import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RateLimiter } from '../../src/api/rate-limit.js';
import { QuotaExceededError } from '../../src/contract/errors.js';

test('a tenant bursts up to its allowance, then waits for the refill; others are unaffected', () => {
  const limiter = new RateLimiter((t) => (t === 'slow' ? 3 : undefined));
  const t0 = 1_000_000;
  for (let i = 0; i < 3; i++) limiter.take('slow', t0);
  const err = (() => {
    try {
      limiter.take('slow', t0);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(err instanceof QuotaExceededError);
  assert.equal(err.retryAfterSec, 20);
  for (let i = 0; i < 100; i++) limiter.take('free', t0);
  limiter.take('slow', t0 + 20_000);
  assert.throws(() => limiter.take('slow', t0 + 20_000), QuotaExceededError);
});
