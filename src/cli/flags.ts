/** CLI flags (ARCHITECTURE: CLI flags) turned into API request bodies. */
import { BadRequestError } from '../contract/errors.js';
import type { CreateSandboxRequest, ExecRequest } from '../contract/requests.js';
import { parseDuration } from '../policy/duration.js';

export interface CreateFlags {
  image?: string;
  profile?: string;
  runtime?: string;
  isolation?: string;
  memory?: string;
  cpus?: string;
  pids?: string;
  disk?: string;
  snapshot?: string;
  ttl?: string;
  env?: string[];
  label?: string[];
  egress?: string;
  allow?: string[];
}

export interface ExecFlags {
  timeout?: string;
  cwd?: string;
  env?: string[];
  i?: boolean;
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function number(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new BadRequestError(`--${flag} needs a positive number, got ${value}`);
  return n;
}

export function pairs(flag: string, values: string[] | undefined): Record<string, string> | undefined {
  if (!values || values.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new BadRequestError(`--${flag} takes KEY=VALUE, got ${v}`);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

/** Only the fields the user gave: the policy fills in the rest. */
export function createRequest(f: CreateFlags): CreateSandboxRequest {
  const limits = {
    ...(f.memory !== undefined ? { memoryMb: number('memory', f.memory) } : {}),
    ...(f.cpus !== undefined ? { cpus: number('cpus', f.cpus) } : {}),
    ...(f.pids !== undefined ? { pids: number('pids', f.pids) } : {}),
    ...(f.disk !== undefined ? { diskMb: number('disk', f.disk) } : {}),
  };
  const env = pairs('env', f.env);
  const labels = pairs('label', f.label);
  return {
    ...(f.image ? { image: f.image } : {}),
    ...(f.profile ? { profile: f.profile } : {}),
    ...(f.runtime ? { runtime: f.runtime as CreateSandboxRequest['runtime'] } : {}),
    ...(f.isolation ? { isolation: f.isolation as CreateSandboxRequest['isolation'] } : {}),
    ...(Object.keys(limits).length > 0 ? { limits: limits as CreateSandboxRequest['limits'] } : {}),
    ...(f.snapshot ? { snapshot: f.snapshot } : {}),
    ...(f.ttl ? { ttl: `${Math.ceil(parseDuration(f.ttl) / 1000)}s` } : {}),
    ...(env ? { env } : {}),
    ...(labels ? { labels } : {}),
    ...(f.egress || f.allow
      ? { egress: { ...(f.egress ? { mode: f.egress as 'none' | 'allowlist' | 'open' } : {}), ...(f.allow ? { allow: f.allow } : {}) } }
      : {}),
  };
}

export function execRequest(cmd: string[], f: ExecFlags, stdin: string | undefined): ExecRequest {
  const env = pairs('env', f.env);
  return {
    cmd,
    ...(f.timeout ? { timeoutMs: parseDuration(f.timeout) } : {}),
    ...(f.cwd ? { cwd: f.cwd } : {}),
    ...(env ? { env } : {}),
    ...(stdin !== undefined ? { stdin } : {}),
  };
}
