/**
 * Finding 4 of issue 14: a descriptor the daemon inherited without close-on-exec must not reach a
 * sandbox on any native entry path. Each path runs in a child process started by bash holding fd 300
 * open read-write on a root-owned host file (native-fd-probe.ts); from inside, a command lists
 * /proc/self/fd, /proc/1/fd and every process's fds, reads and overwrites /proc/self/fd/300, and the
 * files API reads it too.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const probeScript = fileURLToPath(new URL('./native-fd-probe.js', import.meta.url));
const secretFile = `/root/.agentbox-fd-secret-${process.pid}`;
const secret = `host-secret-${randomBytes(8).toString('hex')}`;
writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
after(() => unlinkSync(secretFile));

const probe = await new DockerRuntime({ disks: scratchDiskStore(), images: { resolve: () => { throw new Error('unused'); } }, homeTag: 'test-fd-probe', version: VERSION }).probe();
const runsc = probe.ok && (probe.details?.runtimes ?? '').split(' ').includes('runsc');
const paths: { path: string; skip?: string }[] = [
  { path: 'local', ...(process.getuid?.() !== 0 ? { skip: 'the local runtime needs root' } : {}) },
  { path: 'runc-direct', ...(!probe.ok ? { skip: `docker: ${probe.reason}` } : {}) },
  { path: 'runc-engine', ...(!probe.ok ? { skip: `docker: ${probe.reason}` } : {}) },
  { path: 'gvisor-agent', ...(!runsc ? { skip: 'runsc is not registered with dockerd' } : {}) },
  { path: 'gvisor-engine', ...(!runsc ? { skip: 'runsc is not registered with dockerd' } : {}) },
];

describe('no descriptor of the daemon reaches a sandbox', () => {
  for (const { path, skip } of paths) {
    test(`${path}: fd 300 of the daemon is not in any process of the sandbox`, { ...(skip ? { skip } : {}) }, () => {
      // bash opens fd 300 without close-on-exec, then becomes node: the fd is inherited like a daemon's would be.
      const r = spawnSync('bash', ['-c', 'exec 300<>"$1"; exec "$2" "$3" "$4" "$5"', 'bash', secretFile, process.execPath, probeScript, path, secret], {
        encoding: 'utf8',
        timeout: 240_000,
        env: { ...process.env, AGENTBOX_LOG_LEVEL: 'silent' },
      });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      assert.ok(line.startsWith('{'), `the probe did not report (status ${r.status}): ${r.stderr.slice(-1500)}`);
      const seen = JSON.parse(line) as { stdout: string; fileApi: string; secretSeen: boolean };
      assert.equal(readFileSync(secretFile, 'utf8'), `${secret}\n`, 'the sandbox overwrote the host file through fd 300');
      assert.equal(seen.secretSeen, false, `the sandbox read the host file through fd 300:\n${seen.stdout}\nfiles API: ${seen.fileApi}`);
      assert.doesNotMatch(seen.stdout, /FD300-PRESENT/, seen.stdout);
      assert.doesNotMatch(seen.stdout, new RegExp(`\\.agentbox-fd-secret-${process.pid}`), `a process in the sandbox holds the host file:\n${seen.stdout}`);
      assert.match(seen.stdout, /^SELF /m, `the probe command did not run:\n${seen.stdout}`);
    });
  }
});
