/**
 * The home's daemon, managed as a user would: one daemon per home whatever races the CLIs run,
 * `agentbox daemon status|stop|restart|logs`, what a stop does to running sandboxes (nothing, unless
 * --stop-sandboxes), and a CLI that talks to a daemon of other code. Real processes, real sockets,
 * real locks.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, before, describe, test } from 'node:test';
import { cliEntry, packageRoot } from '../../src/core/config.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Every process whose environment names this home and that runs `serve`: the home's daemons. */
function daemonsOf(home: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (!cmd.includes('serve')) continue;
      const env = readFileSync(`/proc/${name}/environ`, 'utf8').split('\0');
      if (env.includes(`AGENTBOX_HOME=${home}`)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** A zombie is not alive: it has let go of everything, its parent has only not reaped it yet. */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

async function until(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await sleep(50);
  }
}

describe('agentbox daemon', () => {
  let home: string;
  let env: NodeJS.ProcessEnv;

  const ab = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Run => {
    const r = spawnSync(process.execPath, [cliEntry(), ...args], { env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 90_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  /** Same, without blocking this process (for several CLIs at once). */
  const abAsync = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Run> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [cliEntry(), ...args], { env: { ...env, ...extraEnv } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });

  before(async () => {
    await testImages();
  });

  afterEach(async () => {
    // Whatever a test did, no daemon of its home survives it, nor a sandbox (sandboxes outlive a
    // daemon: one is started to stop them).
    for (const pid of daemonsOf(home)) process.kill(pid, 'SIGCONT');
    ab(['daemon', 'start']);
    ab(['daemon', 'stop', '--stop-sandboxes', '--timeout', '20s', '--force']);
    await until('the home has no daemon left', () => daemonsOf(home).length === 0);
    rmSync(home, { recursive: true, force: true });
  });

  const freshHome = (): void => {
    home = mkdtempSync(join(tmpdir(), 'agentbox-daemon-'));
    env = { PATH: process.env.PATH, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_LOG_LEVEL: 'info' };
  };

  test('status says not running (exit 3); CLIs that race to start one get exactly one daemon', async () => {
    freshHome();
    const none = ab(['daemon', 'status']);
    assert.equal(none.code, 3, none.stderr);
    assert.match(none.stdout, /not running/);

    const runs = await Promise.all(Array.from({ length: 6 }, () => abAsync(['ls', '--json'])));
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    assert.equal(runs.filter((r) => /started a local daemon/.test(r.stderr)).length, 1, runs.map((r) => r.stderr).join('\n'));
    const daemons = daemonsOf(home);
    assert.equal(daemons.length, 1, `daemons running for the home: ${daemons.join(', ')}`);

    const status = ab(['daemon', 'status']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`^pid\\s+${daemons[0]}$`, 'm'));
    assert.match(status.stdout, /^version\s+\d+\.\d+\.\d+ \(build [0-9a-f]{12}\)$/m);
    assert.match(status.stdout, /^uptime\s+\d+s, since /m);
    assert.match(status.stdout, new RegExp(`^socket\\s+${join(home, 'agentbox.sock')}$`, 'm'));
    assert.match(status.stdout, /^runtimes\s+local\s+ok\s+/m);
    const json = JSON.parse(ab(['daemon', 'status', '--json']).stdout) as { pid: number; running: boolean; sandboxes: Record<string, number>; log: string };
    assert.equal(json.running, true);
    assert.equal(json.pid, daemons[0]);
    assert.equal(json.log, join(home, 'daemon.log'));
    assert.equal(readFileSync(join(home, 'daemon.pid'), 'utf8'), `${daemons[0]}\n`, 'daemon.pid does not name the daemon');
  });

  test('a second daemon on the home exits naming the first; a hung daemon is waited for, never replaced', async () => {
    freshHome();
    assert.equal(ab(['ls']).code, 0);
    const [pid] = daemonsOf(home);
    assert.ok(pid);

    const second = ab(['serve', '--socket-only']);
    assert.equal(second.code, 125);
    assert.match(second.stderr, new RegExp(`another agentbox daemon \\(pid ${pid}\\) is already running`));
    assert.deepEqual(daemonsOf(home), [pid]);

    // The race seen in the field: a daemon too busy to accept connections. Stop it and fill its
    // listen backlog, so that connecting fails the way it did then; the CLI used to start another
    // daemon, which took the socket over.
    process.kill(pid, 'SIGSTOP');
    const flood: Socket[] = [];
    try {
      for (let i = 0; i < 5000; i++) {
        const refused = await new Promise<boolean>((resolve) => {
          const s = connect(join(home, 'agentbox.sock'));
          s.once('connect', () => resolve(false));
          s.once('error', () => resolve(true));
          flood.push(s);
        });
        if (refused) break;
      }
      const hung = ab(['ls'], { AGENTBOX_DAEMON_WAIT: '2' });
      assert.equal(hung.code, 125, hung.stdout);
      assert.match(hung.stderr, new RegExp(`daemon \\(pid ${pid}\\) holds .* but has not answered`));
      assert.doesNotMatch(hung.stderr, /started a local daemon/);
      assert.match(ab(['serve', '--socket-only']).stderr, new RegExp(`pid ${pid}`));
      assert.equal(ab(['daemon', 'status'], { AGENTBOX_DAEMON_WAIT: '2' }).code, 1);
      assert.deepEqual(daemonsOf(home), [pid]);
    } finally {
      for (const s of flood) s.destroy();
      process.kill(pid, 'SIGCONT');
    }
    const back = ab(['ls']);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(daemonsOf(home), [pid]);
  });

  test('stop leaves the running sandboxes running and the next daemon takes them over; stop --stop-sandboxes stops them (records kept, endReason daemon_stopped) and leaves nothing behind', async () => {
    freshHome();
    const created = ab(['create']);
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    const [pid] = daemonsOf(home);
    assert.ok(pid);
    const job = ab(['exec', id, '--', 'sh', '-c', 'sleep 600 >/dev/null 2>&1 & echo "$! $(cut -d" " -f22 /proc/$!/stat)"']).stdout.trim();
    assert.match(job, /^\d+ \d+$/);

    const stopped = ab(['daemon', 'stop']);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stderr, /1 running sandbox keeps running \(the next daemon takes it over\)/);
    assert.equal(alive(pid), false);
    for (const file of ['agentbox.sock', 'daemon.json', 'daemon.pid']) assert.equal(existsSync(join(home, file)), false, `${file} is left`);
    assert.notDeepEqual(hostLeftovers([id]), [], 'the sandbox did not outlive its daemon');

    const inspected = ab(['inspect', id]);
    assert.match(inspected.stderr, /started a local daemon/);
    assert.equal((JSON.parse(inspected.stdout) as { state: string }).state, 'running');
    const [jobPid, jobStart] = job.split(' ');
    assert.equal(ab(['exec', id, '--', 'sh', '-c', `cut -d" " -f22 /proc/${jobPid}/stat`]).stdout.trim(), jobStart, 'the background job did not survive the restart');

    const [second] = daemonsOf(home);
    assert.ok(second && second !== pid);
    const all = ab(['daemon', 'stop', '--stop-sandboxes']);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stderr, /1 running sandbox will be stopped \(records kept, endReason daemon_stopped\)/);
    assert.equal(alive(second), false);
    // Nothing of the sandbox on the host: no process of it (nor its keeper), no cgroup, no mount.
    assert.deepEqual(hostLeftovers([id]), []);

    const again = ab(['daemon', 'stop']);
    assert.equal(again.code, 0, 'stopping a stopped daemon is not an error');
    assert.match(again.stderr, /no daemon is running/);
    assert.equal(ab(['daemon', 'status']).code, 3);

    const sb = JSON.parse(ab(['inspect', id]).stdout) as { state: string; endReason: string };
    assert.equal(sb.state, 'stopped');
    assert.equal(sb.endReason, 'daemon_stopped');
  });

  test('kill -9 leaves no stale lock: the next command starts a new daemon; restart replaces it', async () => {
    freshHome();
    assert.equal(ab(['ls']).code, 0);
    const [first] = daemonsOf(home);
    assert.ok(first);
    process.kill(first, 'SIGKILL');
    await until('the killed daemon is gone', () => !alive(first));
    assert.equal(ab(['daemon', 'status']).code, 3);
    const next = ab(['ls']);
    assert.equal(next.code, 0, next.stderr);
    assert.match(next.stderr, /started a local daemon/);
    const [second] = daemonsOf(home);
    assert.ok(second && second !== first);

    const restarted = ab(['daemon', 'restart']);
    assert.equal(restarted.code, 0, restarted.stderr);
    const [third] = daemonsOf(home);
    assert.ok(third && third !== second, 'restart did not replace the daemon');
    assert.equal(alive(second), false);
    assert.match(ab(['daemon', 'status']).stdout, new RegExp(`^pid\\s+${third}$`, 'm'));
  });

  test('logs prints the daemon log; -n keeps the last lines; -f follows it', async () => {
    freshHome();
    assert.equal(ab(['ls']).code, 0);
    const all = ab(['daemon', 'logs']);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /"msg":"agentbox daemon ready"/);
    const last = ab(['daemon', 'logs', '-n', '1']).stdout;
    assert.equal(last.trim().split('\n').length, 1);
    assert.ok(all.stdout.endsWith(last), 'the last line of logs -n 1 is not the log\'s last line');

    const follow = spawn(process.execPath, [cliEntry(), 'daemon', 'logs', '-f', '-n', '0'], { env });
    let seen = '';
    follow.stdout.on('data', (d: Buffer) => (seen += d.toString()));
    try {
      await sleep(500);
      const run = ab(['run', '--', 'true']);
      assert.equal(run.code, 0, run.stderr);
      await until('logs -f shows the new sandbox', () => /"msg":"sandbox ended"/.test(seen));
      assert.doesNotMatch(seen, /agentbox daemon ready/, '-n 0 printed old lines');
    } finally {
      follow.kill('SIGTERM');
    }
  });

  test('a CLI that talks to a daemon of other code says so', async () => {
    freshHome();
    // A copy of this build that says it is another one, inside the package so it finds node_modules.
    const copy = mkdtempSync(join(packageRoot, '.test-dist-'));
    try {
      cpSync(join(packageRoot, 'dist', 'src'), join(copy, 'dist', 'src'), { recursive: true });
      cpSync(join(packageRoot, 'dist', 'native'), join(copy, 'dist', 'native'), { recursive: true });
      const info = JSON.parse(readFileSync(join(packageRoot, 'dist', 'build-info.json'), 'utf8')) as { build: string };
      writeFileSync(join(copy, 'dist', 'build-info.json'), JSON.stringify({ ...info, build: 'c0ffee000000' }));
      const old = spawn(process.execPath, [join(copy, 'dist', 'src', 'cli', 'main.js'), 'serve', '--socket-only'], { env, stdio: 'ignore', detached: true });
      old.unref();
      await until('the other build answers', () => ab(['daemon', 'status']).code === 0);
      const r = ab(['ls']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /warning: the daemon runs an older or other build of agentbox .* \(c0ffee000000\) than this CLI/);
      assert.match(r.stderr, /agentbox daemon restart/);
      assert.equal(ab(['daemon', 'restart']).code, 0);
      const after = ab(['ls']);
      assert.doesNotMatch(after.stderr, /warning/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  after(() => {
    for (const entry of readdirSync(packageRoot)) if (entry.startsWith('.test-dist-')) rmSync(join(packageRoot, entry), { recursive: true, force: true });
  });
});
