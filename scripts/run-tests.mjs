// Runs every compiled test file with node:test, one file at a time (they share cgroups, images and
// the machine's 2 cores). Pass paths or substrings to run a subset: npm test -- conformance
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}

const filters = process.argv.slice(2);
const files = walk(testDir)
  .filter((f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s)))
  .sort();
if (files.length === 0) {
  console.error(`run-tests: no test files match ${filters.join(' ')}`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', '--test-timeout=300000', '--test-force-exit', ...files], {
  stdio: 'inherit',
  env: { ...process.env, AGENTBOX_LOG_LEVEL: process.env.AGENTBOX_LOG_LEVEL ?? 'silent' },
});
process.exit(r.status ?? 1);
