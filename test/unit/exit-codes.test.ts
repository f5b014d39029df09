/** The exit codes are written twice, for TypeScript and for C: the two must not drift apart. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as codes from '../../src/contract/exit-codes.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

test('native/exit-codes.h and src/contract/exit-codes.ts give the same names the same numbers', () => {
  const header = readFileSync(resolve(root, 'native', 'exit-codes.h'), 'utf8');
  const native = new Map([...header.matchAll(/^#define (EXIT_\w+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
  const shared = Object.entries(codes).filter(([name]) => native.has(name));
  assert.deepEqual(
    shared.map(([name]) => name).sort(),
    ['EXIT_AGENTBOX_FAILED', 'EXIT_SIGNAL_BASE', 'EXIT_TIMED_OUT'],
    'the codes both sides decide (EXIT_KILLED is only TypeScript: C computes it as 128+SIGKILL)',
  );
  for (const [name, value] of shared) assert.equal(native.get(name), value, `${name} is ${value} in TypeScript but ${native.get(name)} in native/exit-codes.h`);
});
