/** Which isolation each runtime can give, and how the levels compare. */
import type { Isolation, RuntimeName } from '../contract/model.js';

/** Offered isolations per runtime, weakest first; the first is the runtime's default. */
export const RUNTIME_ISOLATIONS: Readonly<Record<RuntimeName, readonly Isolation[]>> = {
  local: ['namespaces'],
  docker: ['container', 'gvisor'],
  microvm: ['vm'],
  // Pods: the cluster's default runtime (runc), RuntimeClass gvisor, RuntimeClass kata (a VM per pod).
  kubernetes: ['container', 'gvisor', 'vm'],
};

// namespaces and container share the host kernel alike; gvisor narrows the kernel surface; a VM has a kernel of its own.
const STRENGTH: Readonly<Record<Isolation, number>> = { namespaces: 1, container: 1, gvisor: 2, vm: 3 };

export function isolationStrength(isolation: Isolation): number {
  return STRENGTH[isolation];
}

export function isolationFits(runtime: RuntimeName, isolation: Isolation): boolean {
  return RUNTIME_ISOLATIONS[runtime].includes(isolation);
}

export function defaultIsolation(runtime: RuntimeName): Isolation {
  return RUNTIME_ISOLATIONS[runtime][0] as Isolation;
}
