/**
 * Claiming a warm-pool pod so that two daemon replicas never hand out the same one: the claim is a
 * merge-patch of the pod's pool label that carries the pod's `metadata.resourceVersion` as a
 * precondition. The API server applies it only if nobody changed the pod since it was read; a
 * 409 Conflict means another replica's claim won, and the next candidate is tried.
 */
import { randomInt } from 'node:crypto';
import type { V1Pod } from '@kubernetes/client-node';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Cluster } from './cluster.js';
import { apiError, statusOf } from './cluster.js';
import { LABEL_POOL } from './pod-spec.js';

export const CLAIMED_BY = 'agentbox.dev/claimed-by';
/** When it was claimed: the leader's sweep leaves a claimed pod without a row alone for a while after. */
export const ANNOTATION_CLAIMED_AT = 'agentbox.dev/claimed-at';

/** The merge patch of one claim: the precondition, the new labels and when. */
export function claimPatch(pod: V1Pod, claimer: string, at = new Date()): object {
  return {
    metadata: {
      resourceVersion: pod.metadata?.resourceVersion,
      labels: { [LABEL_POOL]: 'claimed', [CLAIMED_BY]: claimer },
      annotations: { [ANNOTATION_CLAIMED_AT]: at.toISOString() },
    },
  };
}

/** Ready to be handed out: available, running, not being deleted. */
export function claimable(pod: V1Pod): boolean {
  return pod.metadata?.labels?.[LABEL_POOL] === 'available' && !pod.metadata.deletionTimestamp && pod.status?.phase === 'Running';
}

/** The candidates in a random order: replicas listing the same pods would otherwise all race for the first. */
function shuffled<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * Claims one available pod among `candidates` (as listed, with their resourceVersions), for
 * `claimer`. Returns the claimed pod, or undefined when every one was taken by someone else.
 */
export async function claimFirst(cluster: Cluster, namespace: string, candidates: V1Pod[], claimer: string): Promise<{ pod: V1Pod; conflicts: number } | undefined> {
  let conflicts = 0;
  for (const pod of shuffled(candidates.filter(claimable))) {
    const name = pod.metadata!.name;
    if (!name) continue;
    try {
      const claimed = await cluster.call(`claim pod ${name}`, () =>
        cluster.core.patchNamespacedPod({ name, namespace, body: claimPatch(pod, claimer) }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
      );
      return { pod: claimed, conflicts };
    } catch (err) {
      const status = statusOf(err);
      // 409: another replica claimed it first (or it changed); 404: it is gone. Either way, the next one.
      if (status === 409 || status === 404) {
        conflicts++;
        continue;
      }
      throw apiError(err, `cannot claim pod ${name}`);
    }
  }
  return undefined;
}
