/**
 * The end of a gVisor exec-agent session (issue 14). A command may end before the daemon has written
 * all of its stdin (a command that does not read it, a file write the sandbox refuses). If the agent
 * then closes the connection at once, what the daemon writes next fails (EPIPE, or a reset for
 * frames left unread), Node drops the connection with the exit frame still unread, and the exec
 * came back as 137 with no output, a refused file write as a 500 instead of a 4xx. Each case runs
 * many times: the daemon's next write races with the agent's close.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { after, before, describe, test } from 'node:test';
import { VERSION } from '../../src/core/config.js';
import { AgentboxError } from '../../src/contract/errors.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { WATCHDOG_LOG } from '../../src/runtime/docker/oom.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { collect, execOpts, run } from '../helpers/collect.js';
import { testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const homeTag = `test-gvisor-agent-${process.pid}`;
const agentDir = mkdtempSync(join(tmpdir(), 'ab-agents-'));
const rt = new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag, version: VERSION, agentDir });
const probe = await rt.probe();
const skip = !probe.ok ? `${probe.reason}` : !(probe.details?.runtimes ?? '').split(' ').includes('runsc') ? 'runsc is not registered with dockerd' : false;

const ROUNDS = 30;

/** 4 MiB in 64 KiB chunks, each after a turn of the event loop: the daemon keeps writing while the command has long ended. */
function trickle(): Readable {
  return Readable.from(
    (async function* () {
      for (let i = 0; i < 64; i++) {
        await new Promise((r) => setImmediate(r));
        yield Buffer.alloc(65536, 120);
      }
    })(),
  );
}

/** How often each outcome came up, for a message that shows them all. */
function tally(outcomes: string[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const o of outcomes) t[o] = (t[o] ?? 0) + 1;
  return t;
}

describe('gVisor exec agent: a session that ends before its input', { skip }, () => {
  let h: SandboxHandle;
  before(async () => {
    h = await rt.create({ id: `sbx_gvagent${process.pid}`, image: 'busybox', isolation: 'gvisor', limits: { cpus: 1, memoryMb: 256, pids: 128, diskMb: 64 }, labels: {} });
  });
  after(async () => {
    if (h) await rt.destroy(h);
    const left = await rt.list();
    await rt.close();
    rmSync(agentDir, { recursive: true, force: true });
    assert.deepEqual(left, [], `containers labelled agentbox.home=${homeTag} left behind`);
  });

  test('a command that exits without reading its streamed stdin reports its own status and output', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const r = await collect(rt.exec(h, ['sh', '-c', `echo out${i}; exit 3`], execOpts({ stdin: trickle() })));
      outcomes.push(`exit ${r.exitCode}, ${r.stdout === `out${i}\n` ? 'its output' : `output ${JSON.stringify(r.stdout)}`}`);
    }
    assert.deepEqual(tally(outcomes), { 'exit 3, its output': ROUNDS });
  });

  test('a command that exits without reading a whole stdin buffer reports its own status', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < ROUNDS; i++) outcomes.push(`exit ${(await run(rt, h, 'exit 0', { stdin: Buffer.alloc(4 << 20, 120) })).exitCode}`);
    assert.deepEqual(tally(outcomes), { 'exit 0': ROUNDS });
  });

  test('a file write the sandbox refuses is a typed 4xx error while the body is still arriving', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      for (const path of ['/etc/agentbox-refused', '/proc/self/agentbox-refused']) {
        try {
          await rt.writeFile(h, path, trickle());
          outcomes.push(`${path}: written`);
        } catch (err) {
          outcomes.push(`${path}: ${err instanceof AgentboxError ? err.code : String(err)}`);
        }
      }
    }
    assert.deepEqual(tally(outcomes), { '/etc/agentbox-refused: forbidden': ROUNDS, '/proc/self/agentbox-refused: forbidden': ROUNDS });
  });

  test('execs in parallel after an output flood all run, and the memory watchdog killed nothing', async () => {
    const flood = await run(rt, h, "echo HEAD; head -c 67108864 /dev/zero | tr '\\0' x", { outputLimitBytes: 2 << 20, timeoutMs: 120_000 });
    assert.equal(flood.truncated, true);
    assert.ok(flood.stdout.startsWith('HEAD\n'));
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => run(rt, h, `echo ok${i}`, { stdin: Buffer.alloc(256 << 10, 120) })));
    assert.deepEqual(tally(results.map((r) => `exit ${r.exitCode} ${r.stdout.startsWith('ok') ? 'ran' : 'no output'}`)), { 'exit 0 ran': 16 });
    // Nothing was out of memory: PID 1's watchdog (which reads the sentry's count) killed nothing.
    assert.equal(await text(await rt.readFile(h, WATCHDOG_LOG)), '');
  });
});
