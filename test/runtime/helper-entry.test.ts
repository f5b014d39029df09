/**
 * agentbox-helper enters a sandbox by its PID 1's host pid. If that process died and the pid was
 * reused between the daemon's liveness check and the helper's opens, the helper would join whatever
 * process now has it (as host root, before dropping privileges). It checks the start time the daemon
 * saw against the same /proc/PID directory it then opens everything from.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { helperPath } from '../../src/core/config.js';
import { localSkip, useLocalSandbox } from '../helpers/local-sandbox.js';

const skip = localSkip;
const local = useLocalSandbox('entry');

function enter(startTime: number): { status: number | null; stdout: string; stderr: string } {
  const { pid } = local.sandbox().data as { pid: number };
  const r = spawnSync(helperPath(), ['exec', '--pid', String(pid), '--start-time', String(startTime), '--uid', '1000', '--gid', '1000', '--', '/bin/echo', 'ENTERED'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('the helper enters the sandbox whose PID 1 has the start time the daemon saw', { ...(skip ? { skip } : {}) }, () => {
  const r = enter((local.sandbox().data as { startTime: number }).startTime);
  assert.equal(r.stdout, 'ENTERED\n', r.stderr);
});

test('the helper refuses a pid whose start time differs (a reused pid) and runs nothing', { ...(skip ? { skip } : {}) }, () => {
  const r = enter((local.sandbox().data as { startTime: number }).startTime + 1);
  assert.equal(r.status, 125);
  assert.doesNotMatch(r.stdout, /ENTERED/);
  assert.match(r.stderr, /init is gone/);
});
