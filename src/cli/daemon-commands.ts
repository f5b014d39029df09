/**
 * `agentbox daemon status|start|stop|restart|logs`: the home's background daemon, seen and managed
 * with agentbox itself. Status exits 0 when a daemon answers, 3 when none runs (as LSB init scripts
 * and systemctl do), 1 when one holds the home but does not answer.
 */
import { closeSync, createReadStream, existsSync, openSync, readFileSync, readSync, statSync, watchFile, unwatchFile } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import type { DaemonInfo } from '../contract/daemon.js';
import { resolvePaths, type Paths } from '../core/config.js';
import { BadRequestError, RuntimeUnavailableError } from '../contract/errors.js';
import { parseDuration } from '../policy/duration.js';
import { answers, connectClient, ensureLocalDaemon, localClient } from './connect.js';
import { printJson } from './output.js';

export const EXIT_NOT_RUNNING = 3;
const EXIT_NOT_ANSWERING = 1;

export function registerDaemonCommands(program: Command, setExit: (code: number) => void): void {
  const daemon = program
    .command('daemon')
    .description('the background daemon of AGENTBOX_HOME (the one the CLI starts): status, start, stop, restart, logs');

  daemon
    .command('status')
    .description('pid, version, uptime, socket, runtimes and their health, sandboxes by state; exit 0 running, 3 not running, 1 not answering')
    .option('--json', 'the daemon\'s details as JSON')
    .action(async (flags: { json?: boolean }) => setExit(await status(flags)));

  daemon
    .command('start')
    .description('start the daemon in the background if none runs (any other command does too)')
    .action(async () => {
      const paths = localPaths();
      const started = await ensureLocalDaemon(paths);
      if (started === undefined) process.stderr.write(`agentbox: the daemon is already running (${describeHolder(await holderPid(paths))})\n`);
    });

  daemon
    .command('stop')
    .description('stop the daemon gracefully; running sandboxes keep running (the next daemon takes them over) unless --stop-sandboxes')
    .option('--timeout <dur>', 'how long to wait for a graceful stop', '60s')
    .option('--force', 'SIGKILL the daemon if it has not stopped within --timeout')
    .option('--stop-sandboxes', 'also stop every running sandbox (records kept, endReason daemon_stopped)')
    .action(async (flags: StopFlags) => setExit(await stop(localPaths(), flags)));

  daemon
    .command('restart')
    .description('stop the daemon, then start a new one with this CLI\'s code; running sandboxes keep running and the new daemon takes them over, unless --stop-sandboxes')
    .option('--timeout <dur>', 'how long to wait for a graceful stop', '60s')
    .option('--force', 'SIGKILL the old daemon if it has not stopped within --timeout')
    .option('--stop-sandboxes', 'also stop every running sandbox (records kept, endReason daemon_stopped)')
    .action(async (flags: StopFlags) => {
      const paths = localPaths();
      const code = await stop(paths, flags);
      if (code !== 0) return setExit(code);
      await ensureLocalDaemon(paths);
    });

  daemon
    .command('logs')
    .description('the background daemon\'s log (JSON lines, $AGENTBOX_HOME/daemon.log); -f follows it')
    .option('-f, --follow', 'keep printing what the daemon writes')
    .option('-n, --tail <lines>', 'only the last N lines ("all" for every line)', 'all')
    .action(async (flags: { follow?: boolean; tail: string }) => setExit(await logs(localPaths(), flags)));
}

/** The daemon commands manage the daemon of this host's AGENTBOX_HOME; status also reads a remote one. */
function localPaths(): Paths {
  if (process.env.AGENTBOX_URL) {
    throw new BadRequestError('this command manages the local daemon of AGENTBOX_HOME, and AGENTBOX_URL points elsewhere', {
      hint: 'unset AGENTBOX_URL, or run it on the daemon\'s host (agentbox daemon status works remotely)',
    });
  }
  return resolvePaths();
}

async function holderPid(paths: Paths): Promise<number | undefined> {
  const { lockHolderPid, lockState } = await import('../daemon/home-lock.js');
  const state = lockState(paths.home);
  if (!state.held) return undefined;
  return lockHolderPid(paths.home) ?? state.record?.pid;
}

function describeHolder(pid: number | undefined): string {
  return pid === undefined ? 'pid unknown' : `pid ${pid}`;
}

async function status(flags: { json?: boolean }): Promise<number> {
  if (process.env.AGENTBOX_URL) {
    const info = await (await connectClient()).daemonInfo();
    await printInfo(info, flags.json === true, false);
    return 0;
  }
  const paths = resolvePaths();
  const pid = await holderPid(paths);
  if (pid === undefined) {
    if (flags.json) printJson({ running: false, home: paths.home });
    else process.stdout.write(`agentbox daemon: not running (home ${paths.home})\n`);
    if (await answers(paths.socket)) process.stderr.write(`agentbox: but something answers on ${paths.socket} without holding the home's lock (an older agentbox?)\n`);
    return EXIT_NOT_RUNNING;
  }
  try {
    const info = await withTimeout(localClient(paths).daemonInfo(), 5000);
    await printInfo(info, flags.json === true, true);
    return 0;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    if (flags.json) printJson({ running: true, answering: false, pid, home: paths.home, error: why });
    else process.stdout.write(`agentbox daemon: pid ${pid} holds ${paths.home} but does not answer on ${paths.socket}: ${why}\n`);
    return EXIT_NOT_ANSWERING;
  }
}

async function printInfo(info: DaemonInfo, json: boolean, local: boolean): Promise<void> {
  const { buildInfo, versionMismatch } = await import('../daemon/build-info.js');
  const mismatch = versionMismatch(buildInfo(), info, local);
  if (json) {
    printJson({ running: true, answering: true, ...info, ...(mismatch ? { warning: mismatch } : {}) });
    return;
  }
  const rows: [string, string][] = [
    ['pid', String(info.pid)],
    ['version', `${info.version} (build ${info.build})`],
    ['uptime', `${duration(info.uptimeMs)}, since ${info.startedAt}`],
    ['home', info.home],
    ['socket', info.socket ?? '-'],
    ['tcp', info.tcp ? `${info.tcp.host}:${info.tcp.port}` : '-'],
    ['log', info.log ?? 'its standard output (started with agentbox serve)'],
  ];
  const out = ['agentbox daemon: running', ...rows.map(([k, v]) => `${k.padEnd(10)}${v}`)];
  const names = Object.keys(info.runtimes);
  const width = Math.max(0, ...names.map((n) => n.length));
  names.forEach((name, i) => {
    const r = info.runtimes[name];
    if (!r) return;
    const line = `${name.padEnd(width)}  ${r.ok ? 'ok  ' : 'down'}  ${r.detail}${!r.ok && r.hint ? ` (${r.hint})` : ''}`;
    out.push(`${(i === 0 ? 'runtimes' : '').padEnd(10)}${line}`);
  });
  const states = Object.entries(info.sandboxes).map(([state, n]) => `${state} ${n}`);
  out.push(`${'sandboxes'.padEnd(10)}${states.length ? states.join(', ') : 'none'}`);
  if (info.pools.length) out.push(`${'pools'.padEnd(10)}${info.pools.map((p) => `${p.image}${p.profile ? `/${p.profile}` : ''} ${p.ready}/${p.size} ready`).join(', ')}`);
  process.stdout.write(`${out.join('\n')}\n`);
  // Local: the CLI's own check (main.ts) says it once for every command.
  if (mismatch && !local) process.stderr.write(`agentbox: warning: ${mismatch}\n`);
}

interface StopFlags {
  timeout: string;
  force?: boolean;
  stopSandboxes?: boolean;
}

async function stop(paths: Paths, flags: StopFlags): Promise<number> {
  const timeoutMs = parseDuration(flags.timeout);
  const pid = await holderPid(paths);
  if (pid === undefined) {
    process.stderr.write(`agentbox: no daemon is running for ${paths.home}\n`);
    return 0;
  }
  let active: number | undefined;
  try {
    const info = await withTimeout(localClient(paths).daemonInfo(), 3000);
    active = (info.sandboxes.running ?? 0) + (info.sandboxes.creating ?? 0);
  } catch {
    // a daemon that does not answer is stopped all the same
  }
  const what = active === undefined ? 'its running sandboxes' : active === 1 ? '1 running sandbox' : `${active} running sandboxes`;
  const { DAEMON_STOP_SIGNALS } = await import('../contract/daemon.js');
  const sandboxes = flags.stopSandboxes ? 'stop' : 'leave';
  const sig = (Object.keys(DAEMON_STOP_SIGNALS) as (keyof typeof DAEMON_STOP_SIGNALS)[]).find((s) => DAEMON_STOP_SIGNALS[s] === sandboxes) ?? 'SIGTERM';
  const fate = flags.stopSandboxes ? 'will be stopped (records kept, endReason daemon_stopped)' : `keep${active === 1 ? 's' : ''} running (the next daemon takes ${active === 1 ? 'it' : 'them'} over)`;
  process.stderr.write(`agentbox: stopping the daemon (pid ${pid}); ${what} ${fate}\n`);
  signal(pid, sig);
  if (await released(paths, pid, timeoutMs)) {
    process.stderr.write('agentbox: daemon stopped\n');
    return 0;
  }
  if (!flags.force) {
    throw new RuntimeUnavailableError(`the daemon (pid ${pid}) did not stop within ${flags.timeout}`, { hint: 'agentbox daemon logs shows what it is doing; agentbox daemon stop --force kills it (the next daemon takes its sandboxes over)' });
  }
  signal(pid, 'SIGKILL');
  if (await released(paths, pid, 10_000)) {
    process.stderr.write(`agentbox: daemon killed (pid ${pid}); the next daemon takes its sandboxes over${flags.stopSandboxes ? ' (they were not all stopped)' : ''}\n`);
    return 0;
  }
  throw new RuntimeUnavailableError(`the daemon (pid ${pid}) survived SIGKILL`, { hint: 'a process stuck in the kernel (D state): see /proc/' + pid + '/stack' });
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** The daemon let go of the home and its process is gone. */
async function released(paths: Paths, pid: number, timeoutMs: number): Promise<boolean> {
  const { lockState } = await import('../daemon/home-lock.js');
  const done = (): boolean => !lockState(paths.home).held && !processExists(pid);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (done()) return true;
    await sleep(50);
  }
  return done();
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // a zombie has let go of everything; its parent has just not reaped it yet
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

async function logs(paths: Paths, flags: { follow?: boolean; tail: string }): Promise<number> {
  const file = join(paths.home, 'daemon.log');
  const tail = flags.tail === 'all' ? undefined : Number(flags.tail);
  if (tail !== undefined && (!Number.isInteger(tail) || tail < 0)) throw new BadRequestError(`bad --tail ${flags.tail}`, { hint: 'a number of lines, or all' });
  if (!existsSync(file)) {
    if (!flags.follow) {
      process.stderr.write(`agentbox: no daemon log yet (${file}); the CLI writes it when it starts the daemon\n`);
      return 0;
    }
  }
  let offset = existsSync(file) ? await printFrom(file, tail === undefined ? 0 : tailOffset(file, tail)) : 0;
  if (!flags.follow) return 0;
  await new Promise<void>((resolve) => {
    const onChange = (): void => {
      let size: number;
      try {
        size = statSync(file).size;
      } catch {
        return;
      }
      if (size < offset) offset = 0; // rotated or truncated: start over
      if (size > offset) offset += copyRange(file, offset, size);
    };
    watchFile(file, { interval: 200 }, onChange);
    const done = (): void => {
      unwatchFile(file, onChange);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
    process.stdout.once('error', done);
  });
  return 0;
}

/** Where the last `lines` lines of the file start. */
function tailOffset(file: string, lines: number): number {
  const size = statSync(file).size;
  if (lines === 0) return size;
  const fd = openSync(file, 'r');
  try {
    const chunk = Buffer.alloc(64 * 1024);
    let end = size;
    let seen = 0;
    // a final newline ends the last line; it does not start one
    let skipFinal = true;
    while (end > 0) {
      const start = Math.max(0, end - chunk.length);
      const n = readSync(fd, chunk, 0, end - start, start);
      for (let i = n - 1; i >= 0; i--) {
        if (chunk[i] !== 0x0a) {
          skipFinal = false;
          continue;
        }
        if (skipFinal) {
          skipFinal = false;
          continue;
        }
        if (++seen === lines) return start + i + 1;
      }
      end = start;
    }
    return 0;
  } finally {
    closeSync(fd);
  }
}

function printFrom(file: string, offset: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let end = offset;
    const stream = createReadStream(file, { start: offset });
    stream.on('data', (chunk) => {
      end += chunk.length;
      process.stdout.write(chunk);
    });
    stream.on('end', () => resolve(end));
    stream.on('error', reject);
  });
}

function copyRange(file: string, from: number, to: number): number {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(to - from);
    const n = readSync(fd, buf, 0, buf.length, from);
    process.stdout.write(buf.subarray(0, n));
    return n;
  } finally {
    closeSync(fd);
  }
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const parts = [Math.floor(s / 86400) && `${Math.floor(s / 86400)}d`, Math.floor(s / 3600) % 24 && `${Math.floor(s / 3600) % 24}h`, Math.floor(s / 60) % 60 && `${Math.floor(s / 60) % 60}m`, `${s % 60}s`];
  return parts.filter(Boolean).join(' ');
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
