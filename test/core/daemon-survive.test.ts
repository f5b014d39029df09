/**
 * Sandboxes outlive their daemon, on every runtime (local, docker with runc, docker with gVisor).
 * kill -9 of a real `agentbox serve` leaves each sandbox running: its files, a background process
 * (same pid and start time inside), its pause; the next daemon adopts it: new execs and the files API
 * work, its egress proxy (and, under gVisor, its exec agent) is back, the exec that ran through the
 * kill is recorded lost, and TTL and idle timeout still fire. A graceful stop (SIGTERM, what `agentbox
 * daemon stop` sends) leaves them running too; SIGUSR2 (`daemon stop --stop-sandboxes`) stops them.
 * Nothing is left on the host at the end: no process, cgroup, mount or container of these sandboxes.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { cliEntry, helperPath, resolvePaths, VERSION } from '../../src/core/config.js';
import type { Sandbox } from '../../src/contract/model.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { DiskStore } from '../../src/storage/disk-store.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';
import type { Runtime, SandboxHandle } from '../../src/runtime/types.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { Store } from '../../src/store/store.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await sleep(100);
  }
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Case {
  name: 'local' | 'docker' | 'gvisor';
  /** `defaults:` lines of the policy. */
  defaults: string;
  /** The driver the daemon of that home uses (for status, list and reap without a daemon). */
  driver(homeTag: string, disks: DiskStore): Runtime;
}

describe('sandboxes outlive the daemon', async () => {
  const images = await testImages();
  const docker = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: 'probe', version: VERSION });
  const dockerProbe = await docker.probe();
  const local = new LocalRuntime({ disks: scratchDiskStore(), scope: 'agentbox/probe', resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
  const localProbe = await local.probe();
  const cases: { c: Case; skip: string | false }[] = [
    {
      c: {
        name: 'local',
        defaults: '  runtime: local\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }',
        driver: (homeTag, disks) => new LocalRuntime({ disks, scope: `agentbox/${homeTag}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() }),
      },
      skip: localProbe.ok ? false : `the local runtime cannot run here: ${localProbe.reason}`,
    },
    {
      c: {
        name: 'docker',
        defaults: '  runtime: docker\n  isolation: container\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }',
        driver: (homeTag, disks) => new DockerRuntime({ disks, images, homeTag, version: VERSION }),
      },
      skip: dockerProbe.ok ? false : `dockerd is not reachable (scripts/start-dockerd.sh): ${dockerProbe.reason}`,
    },
    {
      c: {
        name: 'gvisor',
        defaults: '  runtime: docker\n  isolation: gvisor\n  limits: { memoryMb: 256, pids: 64, diskMb: 16 }',
        driver: (homeTag, disks) => new DockerRuntime({ disks, images, homeTag, version: VERSION }),
      },
      skip: !dockerProbe.ok
        ? `dockerd is not reachable (scripts/start-dockerd.sh): ${dockerProbe.reason}`
        : !/\brunsc\b/.test(dockerProbe.details?.runtimes ?? '')
          ? 'gVisor (runsc) is not registered with dockerd (scripts/start-dockerd.sh)'
          : false,
    },
  ];

  for (const { c, skip } of cases) {
    test(`${c.name}: kill -9 of the daemon; the next one adopts every sandbox; SIGTERM leaves them, SIGUSR2 stops them; nothing left`, { skip }, async () => {
      const home = mkdtempSync(join(tmpdir(), `agentbox-survive-${c.name}-`));
      const policy = join(home, 'policy.yaml');
      writeFileSync(
        policy,
        `version: 1\ndefaults:\n${c.defaults}\nprofiles:\n  nap: { pauseAfter: 1s }\n  brief: { idleTimeout: 15s }\negress:\n  allowRanges: [127.0.0.1/32]\n`,
      );
      // A site on the host's loopback, reached through the egress proxy of a sandbox with network.
      const site = createServer((_req, res) => res.end('site-ok\n'));
      await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
      const sitePort = (site.address() as AddressInfo).port;
      writeFileSync(join(home, 'hosts'), '127.0.0.1 site.survive.test\n');
      const env = { ...process.env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_POLICY: policy, AGENTBOX_LOG_LEVEL: 'warn', AGENTBOX_EGRESS_HOSTS: join(home, 'hosts') };
      const client = new AgentboxClient({ url: `unix:${join(home, 'agentbox.sock')}` });
      const paths = resolvePaths(env);
      const rt = c.driver(paths.homeTag, new DiskStore({ dir: paths.storage }));
      const mountsUnderHome = (): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(`${home}/`));
      const runtimeName = c.name === 'local' ? 'local' : 'docker';
      const daemons: ChildProcess[] = [];
      const start = async (): Promise<ChildProcess> => {
        const child = spawn(process.execPath, [cliEntry(), 'serve', '--socket-only'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
        daemons.push(child);
        await until('the daemon answers', async () => (await client.health().catch(() => undefined))?.checks?.[`runtime.${runtimeName}`]?.ok === true);
        return child;
      };
      const stopWith = async (d: ChildProcess, signal: NodeJS.Signals): Promise<void> => {
        const exited = new Promise((resolve) => d.once('exit', resolve));
        d.kill(signal);
        await exited;
      };
      /** The driver's handle of a sandbox, from the store (no daemon needed). */
      const handle = (id: string): SandboxHandle => {
        const store = Store.open(join(home, 'agentbox.db'));
        try {
          const stored = store.getSandbox(id);
          assert.ok(stored?.runtimeData, `no runtime data for ${id}`);
          return { id, runtime: stored.sandbox.runtime, data: stored.runtimeData as Record<string, unknown> };
        } finally {
          store.close();
        }
      };
      const rowOf = (id: string): Sandbox => {
        const store = Store.open(join(home, 'agentbox.db'));
        try {
          const stored = store.getSandbox(id);
          assert.ok(stored);
          return stored.sandbox;
        } finally {
          store.close();
        }
      };
      const fetchSite = async (id: string): Promise<string> =>
        (await client.exec(id, { cmd: ['wget', '-q', '-O', '-', `http://site.survive.test:${sitePort}/`], timeoutMs: 20_000 })).stdout;
      const ids: string[] = [];
      const create = async (req: Parameters<AgentboxClient['create']>[0] = {}): Promise<Sandbox> => {
        const sb = await client.create(req);
        ids.push(sb.id);
        return sb;
      };
      try {
        const first = await start();
        const sb = await create();
        const data = randomBytes(1 << 20);
        await client.writeFile(sb.id, '/workspace/keep', data);
        assert.equal((await client.exec(sb.id, { cmd: ['sh', '-c', 'sha256sum /workspace/keep | cut -d" " -f1'] })).stdout.trim(), sha256(data));
        // A background job with its output redirected, its pid and start time as seen inside.
        const job = (await client.exec(sb.id, { cmd: ['sh', '-c', 'sleep 1000 >/dev/null 2>&1 & echo "$! $(cut -d" " -f22 /proc/$!/stat)"'] })).stdout.trim();
        assert.match(job, /^\d+ \d+$/);
        const parentOfExec = async (id: string): Promise<string> =>
          (await client.exec(id, { cmd: ['sh', '-c', 'tr "\\0" " " < /proc/$PPID/cmdline'] })).stdout.trim().split(' ').slice(1, 2).join(' ');
        const agentParent = await parentOfExec(sb.id);
        if (c.name === 'gvisor') assert.equal(agentParent, 'agent', 'execs do not go through the exec agent');
        const online = await create({ egress: { mode: 'allowlist', allow: [`site.survive.test:${sitePort}`] } });
        assert.equal(await fetchSite(online.id), 'site-ok\n');
        const nap = await create({ profile: 'nap' });
        await until('the idle sandbox is paused', async () => (await rt.status(handle(nap.id))).paused === true);
        // An exec running when the daemon dies.
        const running = client.exec(sb.id, { cmd: ['sleep', '30'] }).catch(() => undefined);
        await until('the exec runs', async () => (await client.execs(sb.id)).some((e) => e.state === 'running'));
        // Last, so that their clocks have not run out before the restart.
        const brief = await create({ profile: 'brief' });
        const ttl = await create({ ttl: '15s' });

        await stopWith(first, 'SIGKILL');
        await running;
        for (const id of ids) assert.equal((await rt.status(handle(id))).alive, true, `${id} died with the daemon`);

        await start();
        for (const id of ids) assert.equal((await client.get(id)).state, 'running', `${id} was not adopted`);
        assert.equal((await rt.status(handle(nap.id))).paused, true, 'the paused sandbox was thawed or lost at start');
        assert.equal((await client.exec(nap.id, { cmd: ['echo', 'awake'] })).stdout, 'awake\n');
        assert.equal((await rt.status(handle(nap.id))).paused, false);
        const [jobPid, jobStart] = job.split(' ');
        assert.equal((await client.exec(sb.id, { cmd: ['sh', '-c', `cut -d" " -f22 /proc/${jobPid}/stat`] })).stdout.trim(), jobStart, 'the background job did not survive');
        assert.equal((await client.exec(sb.id, { cmd: ['sh', '-c', 'sha256sum /workspace/keep | cut -d" " -f1'] })).stdout.trim(), sha256(data));
        assert.equal(sha256(await buffer(await client.readFile(sb.id, '/workspace/keep'))), sha256(data), 'the files API reads another file');
        await client.writeFile(sb.id, '/workspace/after', 'written after the restart\n');
        assert.deepEqual((await client.listDir(sb.id, '/workspace')).map((e) => e.name).sort(), ['after', 'keep']);
        assert.equal((await client.exec(sb.id, { cmd: ['sh', '-c', 'echo new-exec-$((6*7))'] })).stdout, 'new-exec-42\n');
        if (c.name === 'gvisor') {
          // Through the sandbox's exec agent again (it redials the new daemon), not an Engine exec.
          assert.equal(await parentOfExec(sb.id), agentParent, 'the exec agent is not back after the restart');
        }
        const lost = (await client.execs(sb.id)).find((e) => e.cmd.join(' ') === 'sleep 30');
        assert.equal(lost?.state, 'lost', 'the exec that ran through the kill is not recorded as lost');
        assert.equal(lost?.exitCode, null);
        assert.equal(await fetchSite(online.id), 'site-ok\n', 'the egress proxy did not come back');
        assert.equal((await client.egressLog(online.id)).log.length, 2, 'the egress log does not span the restart');
        await until('the ttl fires after the restart', async () => (await client.get(ttl.id)).state !== 'running', 40_000);
        assert.equal((await client.get(ttl.id)).endReason, 'ttl_expired');
        await until('the idle timeout fires after the restart', async () => (await client.get(brief.id)).state !== 'running', 40_000);
        assert.equal((await client.get(brief.id)).endReason, 'idle_timeout');

        // A graceful stop leaves them running; the next daemon takes them over again.
        await stopWith(daemons.at(-1) as ChildProcess, 'SIGTERM');
        for (const id of [sb.id, online.id, nap.id]) assert.equal((await rt.status(handle(id))).alive, true, `${id} did not outlive a graceful stop`);
        const third = await start();
        assert.equal((await client.exec(sb.id, { cmd: ['cat', '/workspace/after'] })).stdout, 'written after the restart\n');
        assert.equal(await fetchSite(online.id), 'site-ok\n');

        // daemon stop --stop-sandboxes: every sandbox stopped, records kept.
        await stopWith(third, 'SIGUSR2');
        for (const id of [sb.id, online.id, nap.id]) {
          const row = rowOf(id);
          assert.deepEqual([row.state, row.endReason], ['stopped', 'daemon_stopped'], id);
        }
        assert.deepEqual(await rt.list(), [], 'host objects left behind');
        assert.deepEqual(hostLeftovers(ids), [], 'left on the host');
        assert.deepEqual(mountsUnderHome(), [], 'mounts left under the home');
      } finally {
        site.close();
        for (const d of daemons.filter((x) => x.exitCode === null && x.signalCode === null)) await stopWith(d, 'SIGUSR2');
        for (const o of await rt.list()) await rt.reap(o.id);
        await rt.close();
        rmSync(home, { recursive: true, force: true });
      }
    });
  }
});
