/** The daemon's enabled runtime drivers, each probed once before its first create. */
import type { StoredSandbox } from '../../store/store.js';
import type { Runtime, SandboxHandle } from '../../runtime/types.js';
import { RuntimeUnavailableError } from '../../contract/errors.js';
import type { RuntimeName } from '../../contract/model.js';

/** The driver's handle for a stored sandbox (its opaque data is empty before the runtime created it). */
export function handleOf(stored: StoredSandbox): SandboxHandle {
  return { id: stored.sandbox.id, runtime: stored.sandbox.runtime, data: (stored.runtimeData ?? {}) as Record<string, unknown> };
}

export class Runtimes {
  private readonly probes = new Map<RuntimeName, Promise<void>>();

  constructor(private readonly byName: Partial<Record<RuntimeName, Runtime>>) {}

  /**
   * The runtime for a name, probed once; a clear runtime_unavailable when it is not enabled or
   * cannot work here. A failed probe is forgotten, so the next call probes again.
   */
  async probed(name: RuntimeName): Promise<Runtime> {
    const rt = this.byName[name];
    if (!rt) {
      throw new RuntimeUnavailableError(`runtime ${name} is not enabled in this daemon`, {
        hint: `available: ${Object.keys(this.byName).join(', ') || 'none'}`,
      });
    }
    let probe = this.probes.get(name);
    if (!probe) {
      probe = rt.probe().then((r) => {
        if (!r.ok) {
          this.probes.delete(name);
          throw new RuntimeUnavailableError(`runtime ${name} is unavailable: ${r.reason ?? 'unknown reason'}`, r.hint ? { hint: r.hint } : {});
        }
      });
      this.probes.set(name, probe);
    }
    await probe;
    return rt;
  }

  /** The enabled runtime of that name, unprobed; undefined when this daemon has none. */
  find(name: RuntimeName): Runtime | undefined {
    return this.byName[name];
  }

  /** The runtime a stored sandbox lives in; runtime_unavailable when this daemon lacks it. */
  of(stored: StoredSandbox): Runtime {
    const rt = this.byName[stored.sandbox.runtime];
    if (!rt) throw new RuntimeUnavailableError(`runtime ${stored.sandbox.runtime} is not enabled`);
    return rt;
  }

  /** Every enabled runtime with its name. */
  entries(): [RuntimeName, Runtime][] {
    return (Object.entries(this.byName) as [RuntimeName, Runtime | undefined][]).filter((e): e is [RuntimeName, Runtime] => e[1] !== undefined);
  }
}
