/**
 * Usage samples (CPU %, memory) from GET /v1/usage and GET /v1/sandboxes/{id}/usage. A daemon without
 * those routes answers 404: then there are no samples, and no error is shown (asked again a minute later).
 */
import { api, ApiError, sbxPath } from './api.js';

export interface UsageSample {
  at: string;
  cpuPct: number;
  memoryBytes: number;
  pids?: number;
}

export interface SandboxUsage {
  sandboxId: string;
  current?: UsageSample | null;
  samples: UsageSample[];
}

let missingUntil = 0;

/** The daemon has no such route (it answers `no route PATH` for a path it does not serve). */
export function noRoute(err: unknown): boolean {
  return err instanceof ApiError && ((err.status === 404 && /^no route /.test(err.message)) || err.status === 405);
}

/** Samples by sandbox id; empty when the daemon has no usage route. */
export async function allUsage(signal?: AbortSignal): Promise<Map<string, UsageSample[]>> {
  const out = new Map<string, UsageSample[]>();
  if (Date.now() < missingUntil) return out;
  try {
    const r = await api<{ sandboxes: SandboxUsage[] }>('/v1/usage', signal ? { signal } : {});
    for (const s of r.sandboxes ?? []) out.set(s.sandboxId, s.samples ?? []);
  } catch (err) {
    if (noRoute(err)) missingUntil = Date.now() + 60_000;
    else if (!(err instanceof DOMException)) throw err;
  }
  return out;
}

/** One sandbox's samples; null when the daemon has no usage route. */
export async function sandboxUsage(id: string, signal?: AbortSignal): Promise<SandboxUsage | null> {
  try {
    return await api<SandboxUsage>(sbxPath(id, '/usage'), signal ? { signal } : {});
  } catch (err) {
    if (noRoute(err)) return null;
    throw err;
  }
}
