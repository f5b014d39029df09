/**
 * How the CLI reaches a daemon: AGENTBOX_URL if set; otherwise the home's Unix socket, starting a
 * detached daemon there when none answers (once, said on stderr), as Bazel and Gradle do.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cliEntry, resolvePaths } from '../core/config.js';
import { RuntimeUnavailableError } from '../contract/errors.js';
import { AgentboxClient } from '../sdk/client.js';

function answers(socketPath: string): Promise<boolean> {
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
  if (env.AGENTBOX_URL) return new AgentboxClient({ url: env.AGENTBOX_URL, ...(env.AGENTBOX_TOKEN ? { token: env.AGENTBOX_TOKEN } : {}) });
  const paths = resolvePaths(env);
  const client = new AgentboxClient({ url: `unix:${paths.socket}`, ...(env.AGENTBOX_TOKEN ? { token: env.AGENTBOX_TOKEN } : {}) });
  if (await answers(paths.socket)) return client;
  await startLocalDaemon(paths.home, paths.socket);
  return client;
}

async function startLocalDaemon(home: string, socket: string): Promise<void> {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const logPath = join(home, 'daemon.log');
  const log = openSync(logPath, 'a', 0o600);
  const child = spawn(process.execPath, [cliEntry(), 'serve', '--socket-only'], {
    detached: true,
    stdio: ['ignore', log, log],
    env: process.env,
  });
  child.unref();
  process.stderr.write(`agentbox: started a local daemon (pid ${child.pid}, log ${logPath})\n`);
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (await answers(socket)) return;
    if (child.exitCode !== null) break;
    await sleep(25);
  }
  // Another CLI may have won the race to start it: its daemon is as good as ours.
  if (await answers(socket)) return;
  const tail = existsSync(logPath) ? readFileSync(logPath, 'utf8').trim().split('\n').slice(-3).join('\n') : '';
  throw new RuntimeUnavailableError(`the local daemon did not start: ${lastMessage(tail)}`, { hint: `see ${logPath}, or run agentbox serve in a terminal` });
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
