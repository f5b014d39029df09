import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentboxError } from '../../src/contract/errors.js';
import { formatDuration, isDuration, parseDuration } from '../../src/policy/duration.js';

describe('parseDuration', () => {
  test('accepts every unit', () => {
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('2d'), 172_800_000);
  });

  test('a number, or bare digits, means seconds', () => {
    assert.equal(parseDuration(30), 30_000);
    assert.equal(parseDuration(1.5), 1500);
    assert.equal(parseDuration('30'), 30_000);
    assert.equal(parseDuration(' 5m '), 300_000);
  });

  for (const bad of ['', 'abc', '5 m', '1.5h', '-5s', '0s', '10y', '5M', 'm5', '1h30m', '99999999999999999999d']) {
    test(`rejects ${JSON.stringify(bad)} as bad_request with a hint`, () => {
      assert.throws(
        () => parseDuration(bad),
        (err: unknown) => err instanceof AgentboxError && err.code === 'bad_request' && (err.hint ?? '').includes('90s'),
      );
      assert.equal(isDuration(bad), false);
    });
  }

  for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    test(`rejects the number ${bad}`, () => {
      assert.throws(() => parseDuration(bad), (err: unknown) => err instanceof AgentboxError && err.code === 'bad_request');
    });
  }
});

describe('formatDuration', () => {
  test('uses the largest exact unit', () => {
    assert.equal(formatDuration(172_800_000), '2d');
    assert.equal(formatDuration(3_600_000), '1h');
    assert.equal(formatDuration(300_000), '5m');
    assert.equal(formatDuration(90_000), '90s');
    assert.equal(formatDuration(1500), '1500ms');
  });

  test('round-trips through parseDuration', () => {
    for (const s of ['250ms', '90s', '5m', '1h', '2d', '36h']) assert.equal(formatDuration(parseDuration(s)), s);
  });
});
