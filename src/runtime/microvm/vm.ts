/**
 * One microVM: a QEMU process, the directory holding its agent socket and console log, and the channel
 * to its agent. `start` resolves once the agent answered; `shutdown` asks the guest to power off;
 * `kill` ends QEMU outright. Both leave nothing behind (process, socket, directory).
 */
import { type ChildProcess, spawn, type StdioOptions } from 'node:child_process';
import { chownSync, closeSync, constants as fsConstants, createReadStream, createWriteStream, existsSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
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
import type { RuntimeVolume } from '../types.js';
import { canJail, jailedCommand, vmCredentials } from './jail.js';
import { startVolumeServer } from './volume-server.js';
import { type Accel, qemuArgs, tscKhz } from './qemu-args.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

/** QEMU's directory in a VM's run directory, and what QEMU makes there (named from inside it). */
const QEMU_DIR = 'qemu';
const AGENT_SOCKET = 'agent.sock';
const QMP_SOCKET = 'qmp.sock';
const CONSOLE_LOG = 'console.log';
const INCOMING_SOCKET = 'incoming.sock';
const MIGRATE_SOCKET = 'migrate.sock';
/** The vhost-user socket of the VM's Ith volume, in QEMU's directory. */
const volumeSocket = (i: number): string => `vol${i}.sock`;

export interface VmFiles {
  /** QEMU's working directory, owned by its user. */
  dir: string;
  agentSocket: string;
  qmpSocket: string;
  consoleLog: string;
  incomingSocket: string;
  migrateSocket: string;
}

/**
 * Where the VM of `runDir` has its sockets and console. A VM started by an agentbox before QEMU had
 * a directory of its own has them in `runDir` itself (it is still adopted after an upgrade).
 */
export function vmFiles(runDir: string, o: { fresh?: boolean } = {}): VmFiles {
  const own = join(runDir, QEMU_DIR);
  const dir = o.fresh || existsSync(own) ? own : runDir;
  return {
    dir,
    agentSocket: join(dir, AGENT_SOCKET),
    qmpSocket: join(dir, QMP_SOCKET),
    consoleLog: join(dir, CONSOLE_LOG),
    incomingSocket: join(dir, INCOMING_SOCKET),
    migrateSocket: join(dir, MIGRATE_SOCKET),
  };
}

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
  /** rootfs: writable: the guest overlays the image with a layer on the data disk (qemu-args.ts). */
  writableRoot?: boolean;
  /** Named volumes, each served to the guest by a virtiofsd of its own (volume-server.ts). */
  volumes?: readonly RuntimeVolume[];
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
    return vmFiles(this.runDir).agentSocket;
  }

  get consoleLog(): string {
    return vmFiles(this.runDir).consoleLog;
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
    const accel = opts.accel ?? 'tcg';
    // QEMU's own directory, inside the daemon's: the only place it may write. The daemon's files
    // (the VM's record, its markers, qemu.log) stay out of its reach, a level up.
    const creds = canJail() ? vmCredentials({ kvm: accel === 'kvm' }) : undefined;
    const files = vmFiles(runDir, { fresh: true });
    await mkdir(files.dir, { mode: 0o700 });
    if (creds) chownSync(files.dir, creds.uid, creds.gid);
    // What QEMU reads it gets as descriptors the daemon opened: no path of the host's needs to be open to it.
    const inherited: number[] = [];
    const pass = (path: string, flags: number): number => {
      inherited.push(openSync(path, flags));
      return 2 + inherited.length;
    };
    // QEMU connects to each volume's server as it starts: they listen first.
    const servers: ChildProcess[] = [];
    let serverLog: number | undefined;
    let args: string[];
    try {
      args = qemuArgs({
        vmlinux: `/proc/self/fd/${pass(opts.guest.vmlinux, fsConstants.O_RDONLY)}`,
        initramfs: `/proc/self/fd/${pass(opts.guest.initramfs, fsConstants.O_RDONLY)}`,
        // Relative to QEMU's working directory, files.dir.
        agentSocket: AGENT_SOCKET,
        consoleLog: CONSOLE_LOG,
        memoryMb: opts.memoryMb,
        cpus: opts.cpus,
        accel,
        tscKhz: tscKhz(),
        name: opts.name,
        ...(opts.rootDisk ? { rootDisk: '/dev/fdset/1' } : {}),
        ...(opts.dataDisk ? { dataDisk: '/dev/fdset/2' } : {}),
        addFds: [
          ...(opts.rootDisk ? [{ fd: pass(opts.rootDisk, fsConstants.O_RDONLY), set: 1 }] : []),
          // QEMU opens a disk read-only as well as read-write (probing, locking): one descriptor of each.
          ...(opts.dataDisk ? [{ fd: pass(opts.dataDisk, fsConstants.O_RDWR), set: 2 }, { fd: pass(opts.dataDisk, fsConstants.O_RDONLY), set: 2 }] : []),
        ],
        ...(opts.limits ? { limits: opts.limits } : {}),
        ...(opts.writableRoot ? { writableRoot: true } : {}),
        ...(opts.volumes?.length ? { volumes: opts.volumes.map((v, i) => ({ socket: volumeSocket(i), target: v.target, readOnly: v.readOnly })) } : {}),
        qmpSocket: QMP_SOCKET,
        ...(opts.incoming ? { incoming: INCOMING_SOCKET } : {}),
      });
      // Not QEMU's to inherit: kept apart from its descriptors.
      serverLog = opts.volumes?.length ? openSync(join(runDir, 'virtiofsd.log'), 'a', 0o600) : undefined;
      for (const [i, v] of (opts.volumes ?? []).entries()) {
        servers.push(
          await startVolumeServer({
            source: v.source,
            readOnly: v.readOnly,
            socket: join(files.dir, volumeSocket(i)),
            ...(creds ? { owner: { uid: creds.uid, gid: creds.gid } } : {}),
            logFd: serverLog ?? 'ignore',
            detached: opts.detached === true,
            ...(opts.onSpawn ? { onSpawn: opts.onSpawn } : {}),
          }),
        );
      }
    } catch (err) {
      for (const server of servers) server.kill('SIGKILL');
      for (const fd of inherited) closeSync(fd);
      await rm(runDir, { recursive: true, force: true });
      throw err;
    } finally {
      if (serverLog !== undefined) closeSync(serverLog);
    }
    const binary = opts.qemuBinary ?? process.env.AGENTBOX_QEMU ?? QEMU_BINARY;
    const notInstalled = (): Error => new RuntimeUnavailableError(`${binary} is not installed`, { hint: 'apt-get install qemu-system-x86 (scripts/install-system-deps.sh)' });
    const agentSocket = files.agentSocket;
    const consoleLog = files.consoleLog;
    const started = performance.now();
    const qemuLog = join(runDir, 'qemu.log');
    const logFd = opts.detached ? openSync(qemuLog, 'a', 0o600) : undefined;
    const stdio: StdioOptions = ['ignore', 'ignore', logFd ?? 'pipe', ...inherited];
    // unshare and setpriv exec QEMU in their own place: the pid is QEMU's.
    const cmd = jailedCommand(binary, args, { ...(creds ? { creds } : {}), ...(opts.dieWithParent ? { dieWithParent: true } : {}) });
    const proc = spawn(cmd.command, cmd.args, { stdio, cwd: files.dir, detached: opts.detached === true && !opts.dieWithParent });
    if (logFd !== undefined) closeSync(logFd);
    for (const fd of inherited) closeSync(fd);
    // A server whose QEMU never connected would wait for it forever; one whose QEMU went, exits.
    const killServers = (): void => void servers.forEach((s) => s.kill('SIGKILL'));
    try {
      if (proc.pid !== undefined) opts.onSpawn?.(proc.pid);
    } catch (err) {
      proc.kill('SIGKILL');
      killServers();
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
      gone.abort(err.code === 'ENOENT' ? notInstalled() : err),
    );
    void exited.then(({ code, signal }) => {
      // 127: setpriv could not execute QEMU.
      if (!gone.signal.aborted && code === 127 && /failed to execute/.test(stderr())) {
        gone.abort(notInstalled());
      } else if (!gone.signal.aborted) {
        gone.abort(new RuntimeUnavailableError(`QEMU exited during the boot (${signal ?? `code ${code}`}): ${stderr().trim().slice(-500) || consoleTail(consoleLog)}`, { hint: `the VM's console is in ${consoleLog}` }));
      }
    });
    try {
      const readyMs = opts.readyTimeoutMs ?? 60000;
      if (opts.incoming) {
        // The state goes in through QEMU's incoming socket; loaded, the VM is paused (not 'inmigrate':
        // a `cont` then breaks the restore), and then it runs.
        const qmp = await Qmp.connect(files.qmpSocket, readyMs);
        try {
          await feedState(opts.incoming, files.incomingSocket, readyMs);
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
      killServers();
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
  const files = vmFiles(runDir);
  const qmp = await Qmp.connect(files.qmpSocket);
  let quit = false;
  try {
    await qmp.execute('stop');
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 10 * 1024 ** 3 });
    const written = receiveState(files.migrateSocket, path);
    try {
      // QEMU may only reach its own directory: the socket is its user's, and named from there.
      const { uid, gid } = statSync(files.dir);
      await written.listening;
      chownSync(files.migrateSocket, uid, gid);
      await qmp.execute('migrate', { uri: `unix:${files.dir === runDir ? files.migrateSocket : MIGRATE_SOCKET}` });
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
function receiveState(sock: string, path: string): { listening: Promise<void>; done: Promise<void>; close: () => void } {
  const server = createServer();
  const listening = new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  listening.catch(() => undefined);
  const done = new Promise<void>((resolve, reject) => {
    server.once('connection', (conn) => {
      server.close();
      pipeline(conn, createWriteStream(path, { mode: 0o600 })).then(resolve, reject);
    });
    server.once('error', reject);
  });
  done.catch(() => undefined);
  server.listen(sock);
  return { listening, done, close: () => server.close() };
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
