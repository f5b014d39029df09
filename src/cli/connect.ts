/**
 * How the CLI reaches a daemon: AGENTBOX_URL if set; otherwise the home's Unix socket, starting a
 * detached daemon there when none answers (once, said on stderr), as Bazel and Gradle do.
 *
 * Only a home whose lock nobody holds gets a new daemon: a daemon that holds it but does not answer
 * yet (starting, busy, stopped in a debugger) is waited for, never replaced. Two daemons on one home
 * would share the store and end each other's sandboxes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, renameSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cliEntry, resolvePaths, type Paths } from '../core/config.js';
import { RuntimeUnavailableError } from '../contract/errors.js';
import { AgentboxClient } from '../sdk/client.js';

/** How long a CLI waits for the home's daemon to answer. @default AGENTBOX_DAEMON_WAIT (seconds) or 30 */
function waitMs(env: NodeJS.ProcessEnv): number {
  const s = Number(env.AGENTBOX_DAEMON_WAIT);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 30_000;
}

/** A daemon log past this size is moved to daemon.log.1 when a new daemon starts. */
const ROTATE_LOG_BYTES = 16 * 1024 * 1024;

const clients: { client: AgentboxClient; local: boolean }[] = [];

export function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function connectClient(env: NodeJS.ProcessEnv = process.env): Promise<AgentboxClient> {
  if (env.AGENTBOX_URL) {
    const remote = new AgentboxClient({ url: env.AGENTBOX_URL, ...(env.AGENTBOX_TOKEN ? { token: env.AGENTBOX_TOKEN } : {}) });
    clients.push({ client: remote, local: false });
    return remote;
  }
  const paths = resolvePaths(env);
  const client = localClient(paths, env);
  if (!(await answers(paths.socket))) await ensureLocalDaemon(paths, env);
  return client;
}

/** A client of the home's Unix socket, without starting anything. */
export function localClient(paths: Paths, env: NodeJS.ProcessEnv = process.env): AgentboxClient {
  const client = new AgentboxClient({ url: `unix:${paths.socket}`, ...(env.AGENTBOX_TOKEN ? { token: env.AGENTBOX_TOKEN } : {}) });
  clients.push({ client, local: true });
  return client;
}

/**
 * Returns once the home's daemon answers on its socket, starting one only when no daemon holds
 * the home's lock. Returns the pid of a daemon this call started, if it did.
 */
export async function ensureLocalDaemon(paths: Paths, env: NodeJS.ProcessEnv = process.env): Promise<number | undefined> {
  const { acquireStartLock, lockState } = await import('../daemon/home-lock.js');
  const begun = Date.now();
  const deadline = begun + waitMs(env);
  let child: ChildProcess | undefined;
  let saidWaiting = false;
  let holder: number | undefined;
  let startLock: { release(): void } | undefined;
  try {
    while (Date.now() < deadline) {
      if (await answers(paths.socket)) return child?.pid;
      const state = lockState(paths.home);
      if (state.held) {
        holder = state.record?.pid;
        if (!saidWaiting && child === undefined && Date.now() - begun > 1000) {
          process.stderr.write(`agentbox: waiting for the daemon${holder ? ` (pid ${holder})` : ''} to answer on ${paths.socket}\n`);
          saidWaiting = true;
        }
      } else if (child === undefined) {
        // One CLI starts the daemon; the others wait here, then find it answering.
        startLock ??= acquireStartLock(paths.home, Math.max(0, deadline - Date.now()));
        if (!startLock) break;
        if (!(await answers(paths.socket)) && !lockState(paths.home).held) child = startDaemon(paths, env);
        else continue;
      } else if (child.exitCode !== null || child.signalCode !== null) {
        break;
      }
      await sleep(25);
    }
  } finally {
    startLock?.release();
  }
  if (await answers(paths.socket)) return child?.pid;
  const state = lockState(paths.home);
  if (state.held) {
    const pid = state.record?.pid ?? holder;
    throw new RuntimeUnavailableError(`the agentbox daemon${pid ? ` (pid ${pid})` : ''} holds ${paths.home} but has not answered on ${paths.socket} for ${Math.round((Date.now() - begun) / 1000)} s`, {
      hint: 'see agentbox daemon logs; agentbox daemon stop (--force if it hangs) lets the next command start a fresh one',
    });
  }
  const logPath = join(paths.home, 'daemon.log');
  const tail = existsSync(logPath) ? readFileSync(logPath, 'utf8').trim().split('\n').slice(-3).join('\n') : '';
  throw new RuntimeUnavailableError(`the local daemon did not start: ${lastMessage(tail)}`, { hint: `see ${logPath}, or run agentbox serve in a terminal` });
}

function startDaemon(paths: Paths, env: NodeJS.ProcessEnv): ChildProcess {
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  const logPath = join(paths.home, 'daemon.log');
  rotate(logPath);
  const log = openSync(logPath, 'a', 0o600);
  const child = spawn(process.execPath, [cliEntry(), 'serve', '--socket-only'], {
    detached: true,
    stdio: ['ignore', log, log],
    env,
  });
  child.unref();
  process.stderr.write(`agentbox: started a local daemon (pid ${child.pid}, log ${logPath})\n`);
  return child;
}

/** Nobody writes the log now (no daemon holds the home): a big one is kept once as daemon.log.1. */
function rotate(logPath: string): void {
  try {
    if (statSync(logPath).size > ROTATE_LOG_BYTES) renameSync(logPath, `${logPath}.1`);
  } catch {
    // no log yet
  }
}

/**
 * When a daemon this process talked to runs other code than this CLI: one line for stderr.
 * Local daemons compare the build too (a rebuild does not restart a running daemon).
 */
export async function otherVersionWarning(): Promise<string | undefined> {
  const seen = clients.find((c) => c.client.serverVersion !== undefined);
  if (!seen?.client.serverVersion) return undefined;
  const { buildInfo, parseVersionTag, versionMismatch } = await import('../daemon/build-info.js');
  const problem = versionMismatch(buildInfo(), parseVersionTag(seen.client.serverVersion), seen.local);
  if (!problem) return undefined;
  return `agentbox: warning: ${problem}${seen.local ? '; agentbox daemon restart runs this code (running sandboxes keep running)' : ''}`;
}

function lastMessage(tail: string): string {
  for (const line of tail.split('\n').reverse()) {
    try {
      const rec = JSON.parse(line) as { msg?: string; err?: { message?: string } };
      if (rec.err?.message) return rec.err.message;
      if (rec.msg) return rec.msg;
    } catch {
      if (line.trim()) return line.trim();
    }
  }
  return 'no output';
}
