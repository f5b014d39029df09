/**
 * One microVM: a QEMU process, the directory holding its agent socket and console log, and the channel
 * to its agent. `start` resolves once the agent answered; `shutdown` asks the guest to power off;
 * `kill` ends QEMU outright. Both leave nothing behind (process, socket, directory).
 */
import { type ChildProcess, spawn, type StdioOptions } from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InternalError, RuntimeUnavailableError } from '../../contract/errors.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { Qmp } from './qmp.js';
import type { BootGate } from './boot-gate.js';
import { VmChannel } from './channel.js';
import type { GuestArtifacts } from './guest/build.js';
import { type Accel, qemuArgs, tscKhz } from './qemu-args.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

export interface MicroVmOpts {
  guest: Pick<GuestArtifacts, 'vmlinux' | 'initramfs'>;
  memoryMb: number;
  cpus: number;
  /** @default 'tcg' */
  accel?: Accel;
  /** Parent of the VM's own directory (agent socket, console log). @default os.tmpdir() */
  runRoot?: string;
  /** The VM's own directory, exactly (made here; must not exist): for a driver that finds it again by name. */
  runDir?: string;
  /**
   * QEMU in a session of its own, its stderr in RUNDIR/qemu.log, not a child this process waits
   * for: the VM outlives this process (a sandbox's VM outlives a daemon restart). @default false
   */
  detached?: boolean;
  /** `-name` of the QEMU process. */
  name?: string;
  /** The image's root disk and the sandbox's own disk (qemu-args.ts). */
  rootDisk?: string;
  dataDisk?: string;
  /** Start from this saved state file (a template's, `saveState`) instead of booting. The command line must be the saved VM's but for its paths. */
  incoming?: string;
  /** Called with QEMU's pid as soon as it is spawned, before it boots anything (to put it in a host cgroup). */
  onSpawn?: (pid: number) => void;
  /** The sandbox's memoryMb and pids, enforced in the guest (qemu-args.ts). */
  limits?: { memoryMb: number; pids: number };
  /** Boots wait their turn here (the runtime shares one gate among its VMs). */
  gate?: BootGate;
  /** From QEMU's start to the agent's answer. @default 60000 */
  readyTimeoutMs?: number;
  /** @default 'qemu-system-x86_64' (AGENTBOX_QEMU overrides) */
  qemuBinary?: string;
  /**
   * QEMU gets SIGKILL when this process dies (util-linux `setpriv --pdeathsig`): for tests and
   * benchmarks. Off by default, since a sandbox's VM outlives a daemon restart. @default false
   */
  dieWithParent?: boolean;
  log?: Logger;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class MicroVm {
  /** The current channel; `reconnect` replaces it. */
  channel: VmChannel;
  readonly exited: Promise<VmExit>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly runDir: string,
    channel: VmChannel,
    exited: Promise<VmExit>,
    /** From spawning QEMU to the agent's answer (the wait at the gate not included). */
    readonly bootMs: number,
    private readonly log: Logger | undefined,
  ) {
    this.channel = channel;
    this.exited = exited;
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get agentSocket(): string {
    return join(this.runDir, 'agent.sock');
  }

  get consoleLog(): string {
    return join(this.runDir, 'console.log');
  }

  static async start(opts: MicroVmOpts): Promise<MicroVm> {
    return opts.gate ? opts.gate.run(() => MicroVm.boot(opts)) : MicroVm.boot(opts);
  }

  private static async boot(opts: MicroVmOpts): Promise<MicroVm> {
    let runDir: string;
    if (opts.runDir) {
      await mkdir(opts.runDir, { mode: 0o700 });
      runDir = opts.runDir;
    } else {
      runDir = await mkdtemp(join(opts.runRoot ?? tmpdir(), 'agentbox-vm-'));
    }
    const agentSocket = join(runDir, 'agent.sock');
    const consoleLog = join(runDir, 'console.log');
    const accel = opts.accel ?? 'tcg';
    const args = qemuArgs({
      vmlinux: opts.guest.vmlinux,
      initramfs: opts.guest.initramfs,
      agentSocket,
      consoleLog,
      memoryMb: opts.memoryMb,
      cpus: opts.cpus,
      accel,
      tscKhz: tscKhz(),
      name: opts.name,
      ...(opts.rootDisk ? { rootDisk: opts.rootDisk } : {}),
      ...(opts.dataDisk ? { dataDisk: opts.dataDisk } : {}),
      ...(opts.limits ? { limits: opts.limits } : {}),
      qmpSocket: join(runDir, 'qmp.sock'),
      ...(opts.incoming ? { incoming: join(runDir, 'incoming.sock') } : {}),
    });
    const binary = opts.qemuBinary ?? process.env.AGENTBOX_QEMU ?? QEMU_BINARY;
    const started = performance.now();
    // setpriv execs QEMU in its own place: the pid is QEMU's.
    const qemuLog = join(runDir, 'qemu.log');
    const logFd = opts.detached ? openSync(qemuLog, 'a', 0o600) : undefined;
    const stdio: StdioOptions = ['ignore', 'ignore', logFd ?? 'pipe'];
    const proc = opts.dieWithParent
      ? spawn('setpriv', ['--pdeathsig', 'KILL', '--', binary, ...args], { stdio })
      : spawn(binary, args, { stdio, detached: opts.detached === true });
    if (logFd !== undefined) closeSync(logFd);
    try {
      if (proc.pid !== undefined) opts.onSpawn?.(proc.pid);
    } catch (err) {
      proc.kill('SIGKILL');
      await rm(runDir, { recursive: true, force: true });
      throw err;
    }
    let stderrText = '';
    proc.stderr?.on('data', (c: Buffer) => {
      if (stderrText.length < 8192) stderrText += c.toString();
    });
    const stderr = (): string => (opts.detached ? fileTail(qemuLog) : stderrText);
    const exited = new Promise<VmExit>((resolve) => {
      proc.once('exit', (code, signal) => resolve({ code, signal }));
      proc.once('error', () => resolve({ code: null, signal: null }));
    });
    const gone = new AbortController();
    proc.once('error', (err: NodeJS.ErrnoException) =>
      gone.abort(err.code === 'ENOENT' ? new RuntimeUnavailableError(`${binary} is not installed`, { hint: 'apt-get install qemu-system-x86 (scripts/install-system-deps.sh)' }) : err),
    );
    void exited.then(({ code, signal }) => {
      if (!gone.signal.aborted) {
        gone.abort(new RuntimeUnavailableError(`QEMU exited during the boot (${signal ?? `code ${code}`}): ${stderr().trim().slice(-500) || consoleTail(consoleLog)}`, { hint: `the VM's console is in ${consoleLog}` }));
      }
    });
    try {
      const readyMs = opts.readyTimeoutMs ?? 60000;
      if (opts.incoming) {
        // The state goes in through QEMU's incoming socket; loaded, the VM is paused (not 'inmigrate':
        // a `cont` then breaks the restore), and then it runs.
        const qmp = await Qmp.connect(join(runDir, 'qmp.sock'), readyMs);
        try {
          await feedState(opts.incoming, join(runDir, 'incoming.sock'), readyMs);
          await qmp.waitStatus('paused', readyMs);
          await qmp.execute('cont');
        } finally {
          qmp.close();
        }
      }
      const channel = await VmChannel.connect(agentSocket, { timeoutMs: readyMs, signal: gone.signal, log: opts.log });
      const bootMs = Math.round(performance.now() - started);
      opts.log?.info({ pid: proc.pid, bootMs, accel, memoryMb: opts.memoryMb, cpus: opts.cpus }, 'microvm ready');
      if (opts.detached) proc.unref();
      return new MicroVm(proc, runDir, channel, exited, bootMs, opts.log);
    } catch (err) {
      proc.kill('SIGKILL');
      await exited;
      await rm(runDir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Save the running VM's state to `path` (QEMU's migration stream) and go on running it. The agent
   * channel is closed first, so a VM restored from the state waits for its own host. `whileStopped`
   * runs with the VM stopped, right after the save: the moment its disks match the state.
   */
  async saveState(path: string, whileStopped?: () => Promise<void>): Promise<void> {
    await this.channel.close();
    await saveVmState(this.runDir, path, { then: 'cont', ...(whileStopped ? { whileStopped } : {}) });
    this.channel = await VmChannel.connect(this.agentSocket, { timeoutMs: 10000, log: this.log });
  }

  /** Drop the channel and connect again (the agent keeps running; what ran through the old channel is ended). */
  async reconnect(timeoutMs = 10000): Promise<VmChannel> {
    await this.channel.close();
    this.channel = await VmChannel.connect(this.agentSocket, { timeoutMs, log: this.log });
    return this.channel;
  }

  /** Ask the guest to power off; kill QEMU if it has not exited within `timeoutMs`. Removes everything. */
  async shutdown(timeoutMs = 5000): Promise<void> {
    if (this.channel.isOpen) this.channel.powerOff();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
    await this.cleanup();
  }

  /** End QEMU at once (SIGKILL) and remove everything. Idempotent. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
    await this.cleanup();
  }

  private async cleanup(): Promise<void> {
    await this.channel.close().catch(() => undefined);
    await rm(this.runDir, { recursive: true, force: true });
  }
}

/**
 * Stop the VM whose directory is `runDir` and write its state to `path` through its QMP socket (the
 * migration stream goes to a socket of ours: QEMU runs under `-sandbox spawn=deny`, so no `exec:`).
 * Then the VM goes on (`cont`) or QEMU exits (`quit`: a hibernation). `whileStopped` runs between
 * the two, while the VM's disks match the state. Whoever holds the agent's channel closes it first:
 * a VM restored from the state then waits for its own host's hello.
 */
export async function saveVmState(runDir: string, path: string, o: { then: 'cont' | 'quit'; whileStopped?: () => Promise<void> }): Promise<void> {
  const qmp = await Qmp.connect(join(runDir, 'qmp.sock'));
  let quit = false;
  try {
    await qmp.execute('stop');
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 10 * 1024 ** 3 });
    const sock = join(runDir, 'migrate.sock');
    const written = receiveState(sock, path);
    try {
      await qmp.execute('migrate', { uri: `unix:${sock}` });
      const deadline = Date.now() + 120_000;
      for (;;) {
        const m = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
        if (m.status === 'completed') break;
        if (m.status === 'failed' || m.status === 'cancelled' || Date.now() > deadline) throw new InternalError(`saving the VM's state failed: ${m['error-desc'] ?? m.status}`);
        await sleep(10);
      }
      await written.done;
    } finally {
      written.close();
    }
    await o.whileStopped?.();
    if (o.then === 'quit') {
      quit = true;
      // QEMU may close the socket before it answers: its exit is what counts, and the caller waits for it.
      await qmp.execute('quit').catch(() => undefined);
    }
  } finally {
    if (!quit) await qmp.execute('cont').catch(() => undefined);
    qmp.close();
  }
}

/** A one-connection Unix socket server whose stream goes to `path`; `done` once the file is written. */
function receiveState(sock: string, path: string): { done: Promise<void>; close: () => void } {
  const server = createServer();
  const done = new Promise<void>((resolve, reject) => {
    server.once('connection', (conn) => {
      server.close();
      pipeline(conn, createWriteStream(path, { mode: 0o600 })).then(resolve, reject);
    });
    server.once('error', reject);
  });
  done.catch(() => undefined);
  server.listen(sock);
  return { done, close: () => server.close() };
}

/**
 * Stream a saved state file into QEMU's incoming socket (retrying while QEMU has not made it yet).
 * Resolves once connected: QEMU closes its end as soon as it has read the whole state, which may be
 * before this side has finished closing its own, so the copy's own end says nothing. Whether the
 * state loaded is QEMU's to say (`query-status`; QEMU exits on a broken stream).
 */
async function feedState(path: string, sock: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const conn = await new Promise<Socket | undefined>((resolve) => {
      const s = createConnection(sock);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (conn) {
      conn.on('error', () => undefined);
      const file = createReadStream(path);
      file.on('error', () => conn.destroy());
      file.pipe(conn);
      return;
    }
    if (Date.now() > deadline) throw new InternalError(`QEMU did not open its incoming socket within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** The processes started with a `-name` (QEMU's: how a VM is found again), with that name. */
export function namedProcesses(): { pid: number; name: string }[] {
  const found: { pid: number; name: string }[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${p}/cmdline`, 'latin1').split('\0');
    } catch {
      continue;
    }
    const i = argv.indexOf('-name');
    const name = i >= 0 ? argv[i + 1] : undefined;
    if (name !== undefined) found.push({ pid: Number(p), name });
  }
  return found;
}

function fileTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-2000);
  } catch {
    return '';
  }
}

function consoleTail(path: string): string {
  try {
    return existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n').slice(-5).join(' | ') : '';
  } catch {
    return '';
  }
}
