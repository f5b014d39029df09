/**
 * The runtime contract on the docker driver, with runc (`container`) and runsc (`gvisor`).
 * Skipped with a reason when no dockerd answers: docker is an optional runtime.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { VERSION, helperPath } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { hasDebian, testImages } from '../helpers/images.js';
import { runRuntimeContract } from './contract.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const homeTag = `test-contract-${process.pid}`;
// As the daemon runs it: runc sandboxes entered directly (direct-entry.ts), gVisor ones through their
// exec agent (exec-agent.ts); and a driver with neither, on Engine execs only.
const agentDir = mkdtempSync(join(tmpdir(), 'ab-agents-'));
const newRuntime = async (): Promise<DockerRuntime> => new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag, version: VERSION, helper: helperPath(), agentDir });
const newEngineOnlyRuntime = async (): Promise<DockerRuntime> => new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag, version: VERSION });

// `npm run test:conformance -- --runtime docker` (or gvisor) sets this: only those contracts run.
const wanted = (process.env.AGENTBOX_CONFORMANCE_RUNTIMES ?? 'docker,gvisor').split(',');
const probe = await new DockerRuntime({ disks: scratchDiskStore(), images: { resolve: () => { throw new Error('unused'); } }, homeTag, version: VERSION }).probe();
const runsc = probe.ok && (probe.details?.runtimes ?? '').split(' ').includes('runsc');

if (!probe.ok) {
  test('docker runtime contract', { skip: `${probe.reason} (${probe.hint})` }, () => undefined);
} else {
  if (wanted.includes('docker')) {
    runRuntimeContract({ name: 'docker (runc, direct entry)', isolation: 'container', debian: hasDebian(), newRuntime });
    runRuntimeContract({ name: 'docker (runc, Engine exec)', isolation: 'container', debian: hasDebian(), newRuntime: newEngineOnlyRuntime });
  }
  if (wanted.includes('gvisor') && !runsc) {
    test('docker runtime contract with gVisor', { skip: 'runsc is not registered with dockerd (see scripts/start-dockerd.sh)' }, () => undefined);
  } else if (wanted.includes('gvisor')) {
    // runsc (20221219, Debian 12's) keeps no session for a terminal: TIOCSCTTY succeeds, but /dev/tty
    // gives EIO and typed control characters raise no signal. Signals sent with `signal` do arrive.
    const skip = [{ reason: "gVisor's terminal raises no signal for a typed Ctrl-C (no session is kept for the terminal in runsc 20221219)", tests: ['a Ctrl-C typed on a terminal interrupts its foreground job'] }];
    runRuntimeContract({ name: 'docker (gVisor, exec agent)', isolation: 'gvisor', debian: hasDebian(), newRuntime, skip });
    runRuntimeContract({ name: 'docker (gVisor, Engine exec)', isolation: 'gvisor', debian: hasDebian(), newRuntime: newEngineOnlyRuntime, skip });
  }

  after(async () => {
    // Every contract run destroys what it made; make sure nothing with this test's label is left.
    const rt = await newRuntime();
    const left = await rt.list();
    await rt.close();
    assert.deepEqual(left, [], `containers labelled agentbox.home=${homeTag} left behind`);
    assert.deepEqual(readdirSync(agentDir), [], 'exec-agent directories left behind');
    rmSync(agentDir, { recursive: true, force: true });
  });
}
