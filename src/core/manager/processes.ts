/**
 * A running sandbox's processes: the list (pid inside the sandbox, user, command line, the exec that
 * started each) and a signal to one of them. The driver does the work inside the sandbox
 * (Runtime.processes / signalProcess); this part enters a paused sandbox first and records kills.
 */
import type { Logger } from 'pino';
import type { Store, StoredSandbox } from '../../store/store.js';
import type { KillResult, ProcessInfo, SignalName } from '../../contract/model.js';
import type { Caller } from './access.js';
import type { IdlePauses } from './lifecycle.js';
import { markActive } from './lifecycle.js';
import { handleOf, type Runtimes } from './runtimes.js';

interface ProcessDeps {
  store: Store;
  runtimes: Runtimes;
  pauses: IdlePauses;
  logger: Logger;
}

/** Looking does not count as activity; a paused sandbox is thawed first (ps in a frozen cgroup would hang). */
export async function listProcesses(d: ProcessDeps, stored: StoredSandbox): Promise<ProcessInfo[]> {
  await d.pauses.wake(stored);
  return d.runtimes.of(stored).processes(handleOf(stored));
}

/** A kill acts on the sandbox as an exec would: activity, audited. */
export async function killProcess(d: ProcessDeps, stored: StoredSandbox, pid: number, signal: SignalName, caller: Caller): Promise<KillResult> {
  const id = stored.sandbox.id;
  markActive(d.store, id);
  await d.pauses.wake(stored);
  await d.runtimes.of(stored).signalProcess(handleOf(stored), pid, signal);
  d.store.audit({ tenant: stored.sandbox.tenant, actor: caller.actor, action: 'process_kill', sandboxId: id, detail: { pid, signal } });
  d.logger.info({ sandbox_id: id, pid, signal, by: caller.actor }, 'process signalled');
  return { pid, signal };
}
