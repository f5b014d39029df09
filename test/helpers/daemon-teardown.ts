/** The end of a test file that ran its own daemon: nothing may be left on the host, and the home goes. */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import type { Daemon } from '../../src/daemon/compose.js';

/**
 * Runs `deleteSandboxes` (through the API), closes the daemon, checks the local runtime lists nothing
 * and removes the home. A before() that failed (e.g. on the old code) leaves no daemon: the home still goes.
 */
export async function closeDaemonLeavingNothing(daemon: Daemon | undefined, home: string, deleteSandboxes: () => Promise<void>): Promise<void> {
  if (daemon === undefined) {
    rmSync(home, { recursive: true, force: true });
    return;
  }
  await deleteSandboxes();
  const runtime = await daemon.manager.runtime('local');
  await daemon.close();
  const left = await runtime.list();
  rmSync(home, { recursive: true, force: true });
  assert.deepEqual(left, [], 'sandboxes left on the host');
}
