/**
 * Usage samples (CPU %, memory) from GET /v1/usage and GET /v1/sandboxes/{id}/usage. A daemon without
 * those routes answers 404: then there are no samples, and no error is shown (asked again a minute later).
 */
import type { SandboxUsageReport, UsageOverview, UsageSample } from '../../contract/usage.js';
import { api, ApiError, sbxPath } from './api.js';

export type { SandboxUsageReport, UsageSample };
/** What a sparkline needs of a sample. */
export type Point = Pick<UsageSample, 'cpuPct' | 'memoryBytes'>;

let missingUntil = 0;

/** The daemon has no such route (it answers `no route PATH` for a path it does not serve). */
export function noRoute(err: unknown): boolean {
  return err instanceof ApiError && ((err.status === 404 && /^no route /.test(err.message)) || err.status === 405);
}

/** Samples by sandbox id; empty when the daemon has no usage route. */
export async function allUsage(signal?: AbortSignal): Promise<Map<string, Point[]>> {
  const out = new Map<string, Point[]>();
  if (Date.now() < missingUntil) return out;
  try {
    const r = await api<UsageOverview>('/v1/usage', signal ? { signal } : {});
    for (const s of r.sandboxes) out.set(s.sandboxId, s.cpuPct.map((cpuPct, i) => ({ cpuPct, memoryBytes: s.memoryBytes[i] ?? 0 })));
  } catch (err) {
    if (noRoute(err)) missingUntil = Date.now() + 60_000;
    else if (!(err instanceof DOMException)) throw err;
  }
  return out;
}

/** One sandbox's samples; null when the daemon has no usage route. */
export async function sandboxUsage(id: string, signal?: AbortSignal): Promise<SandboxUsageReport | null> {
  try {
    return await api<SandboxUsageReport>(sbxPath(id, '/usage'), signal ? { signal } : {});
  } catch (err) {
    if (noRoute(err)) return null;
    throw err;
  }
}
