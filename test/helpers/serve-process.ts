/**
 * `agentbox serve --socket-only` as child processes on one test home, for tests that kill the daemon
 * (kill -9) and start the next: start one and wait until its runtime answers, kill one, and at the
 * end stop those still running with SIGUSR2 (their sandboxes stopped), then reap what a runtime
 * still has on the host and unmount the home's disk store, so the home can be removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cliEntry } from '../../src/core/config.js';
import type { Runtime } from '../../src/runtime/types.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import type { DiskStore } from '../../src/storage/disk-store.js';

export class ServeProcesses {
  readonly client: AgentboxClient;
  private readonly children: ChildProcess[] = [];

  constructor(
    private readonly opts: { home: string; env: NodeJS.ProcessEnv; runtime: 'local' | 'docker' | 'microvm'; startTimeoutMs?: number },
  ) {
    this.client = new AgentboxClient({ url: `unix:${join(opts.home, 'agentbox.sock')}` });
  }

  /** A new daemon, once its health check says its runtime works. */
  async start(): Promise<ChildProcess> {
    const child = spawn(process.execPath, [cliEntry(), 'serve', '--socket-only'], { env: this.opts.env, stdio: ['ignore', 'ignore', 'inherit'] });
    this.children.push(child);
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 30_000);
    for (;;) {
      const health = await this.client.health().catch(() => undefined);
      if (health?.checks?.[`runtime.${this.opts.runtime}`]?.ok === true) return child;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the daemon did not come up (exit ${child.exitCode})`);
      await sleep(100);
    }
  }

  async kill9(child: ChildProcess): Promise<void> {
    await this.signal(child, 'SIGKILL');
  }

  /**
   * Run `body`, then `cleanUp`. When the body failed, its error is the one reported: a clean-up
   * that fails after it (a store still busy) goes to stderr instead of hiding it.
   */
  async around(rt: Runtime, disks: DiskStore, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      await this.cleanUp(rt, disks).catch((cleanUpErr: unknown) => console.error('clean-up after a failed test also failed:', cleanUpErr));
      throw err;
    }
    await this.cleanUp(rt, disks);
  }

  /** Stop the daemons still running (their sandboxes too), reap what `rt` still has, unmount the disk store, remove the home. */
  async cleanUp(rt: Runtime, disks: DiskStore): Promise<void> {
    for (const d of this.children) if (d.exitCode === null && d.signalCode === null) await this.signal(d, 'SIGUSR2');
    for (const o of await rt.list().catch(() => [])) await rt.reap(o.id).catch(() => undefined);
    await rt.close();
    await disks.closeIfIdle();
    rmSync(this.opts.home, { recursive: true, force: true });
  }

  private async signal(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  }
}
