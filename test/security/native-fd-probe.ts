/**
 * Run by native-fd-leak.test.ts in a process that holds fd 300 (not close-on-exec) on a root-owned
 * host file, as a daemon started by a careless shell would: creates one sandbox on the runtime path
 * named in argv[2], looks for that descriptor from inside (a command, and the files API), and prints
 * what it saw as one JSON line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSION, helperPath } from '../../src/core/config.js';
import type { Isolation } from '../../src/contract/model.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { readAll } from '../../src/sdk/client.js';
import type { Runtime } from '../../src/runtime/types.js';
import { collect, execOpts } from '../helpers/collect.js';
import { testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const path = process.argv[2] ?? '';
const secret = process.argv[3] ?? '';
const images = await testImages();
const agentDir = mkdtempSync(join(tmpdir(), 'ab-fd-agents-'));
const homeTag = `test-fd-${process.pid}`;
let rt: Runtime;
let isolation: Isolation = 'container';
switch (path) {
  case 'local':
    rt = new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/test-fd-${process.pid}`, resolveRootfs: (image) => images.resolve(image).rootfs, helper: helperPath() });
    isolation = 'namespaces';
    break;
  case 'runc-direct':
  case 'gvisor-agent':
    rt = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag, version: VERSION, helper: helperPath(), agentDir });
    break;
  case 'runc-engine':
  case 'gvisor-engine':
    rt = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag, version: VERSION });
    break;
  default:
    throw new Error(`unknown path ${path}`);
}
if (path.startsWith('gvisor')) isolation = 'gvisor';

const h = await rt.create({ id: `sbx_fd${process.pid}`, image: 'busybox', isolation, limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 16 }, labels: {} });
try {
  const cmd = [
    'echo "SELF $(ls -l /proc/self/fd/ 2>&1 | tr "\\n" "|")"',
    'echo "PID1 $(ls -l /proc/1/fd/ 2>&1 | tr "\\n" "|")"',
    'for p in /proc/[0-9]*; do for f in $p/fd/*; do [ -e "$f" ] && echo "ANY $f -> $(readlink $f)"; done; done 2>/dev/null',
    '[ -e /proc/self/fd/300 ] && echo FD300-PRESENT',
    // Through the descriptor itself (reopening /proc/self/fd/300 would check the file's permissions again).
    'cat <&300 2>/dev/null',
    'echo overwritten-from-sandbox 2>/dev/null >&300',
    'true',
  ].join('; ');
  const r = await collect(rt.exec(h, ['sh', '-c', cmd], execOpts()));
  let fileApi = '';
  try {
    fileApi = (await readAll(await rt.readFile(h, '/proc/self/fd/300'))).toString();
  } catch (err) {
    fileApi = `refused: ${(err as Error).name}`;
  }
  process.stdout.write(`${JSON.stringify({ stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, fileApi, secretSeen: r.stdout.includes(secret) || fileApi.includes(secret) })}\n`);
} finally {
  await rt.destroy(h);
  await rt.close();
  rmSync(agentDir, { recursive: true, force: true });
}
