/**
 * Request + policy -> SandboxSpec. A request may ask for less than its profile (or the
 * defaults) allows, never more; asking for more is policy_denied with a hint that names the
 * profile and the field.
 */
import { type AgentboxError, BadRequestError, PolicyDeniedError } from '../contract/errors.js';
import type { Egress, Isolation, Limits, RuntimeName, SandboxSpec } from '../contract/model.js';
import type { CreateSandboxRequest } from '../contract/requests.js';
import { formatDuration, parseDuration } from './duration.js';
import { RUNTIME_ISOLATIONS, defaultIsolation, isolationFits, isolationStrength } from './isolation.js';
import { resolveEgress } from './resolve-egress.js';
import { BUILTIN_PROFILES, profileNames, profileOf } from './profiles.js';
import type { Policy, Profile } from './schema.js';
import { DEFAULTS_WHO, says } from './wording.js';

export { hostMatches } from './hosts.js';

export interface ResolveCtx {
  tenant: string;
  id: string;
}

const LIMIT_KEYS = ['cpus', 'memoryMb', 'pids', 'diskMb'] as const;

function whoOf(profileName: string | null): string {
  return profileName === null ? DEFAULTS_WHO : `profile "${profileName}"`;
}

export function resolveSpec(policy: Policy, req: CreateSandboxRequest, ctx: ResolveCtx): SandboxSpec {
  const profileName = req.profile ?? null;
  const profile = profileName === null ? undefined : findProfile(policy, profileName);
  const who = whoOf(profileName);
  const d = policy.defaults;

  const image = req.image ?? profile?.image ?? d.image;
  if (policy.images !== undefined && !policy.images.includes(image)) {
    throw new PolicyDeniedError(`image ${image} is not allowed by the policy`, { hint: `allowed images: ${policy.images.join(', ')}` });
  }
  const runtime = req.runtime ?? profile?.runtime ?? d.runtime;
  const ttlMs = atMost('ttl', req.ttl === undefined ? undefined : parseDuration(req.ttl), parseDuration(profile?.ttl ?? d.ttl), who);

  return {
    id: ctx.id,
    tenant: ctx.tenant,
    image,
    profile: profileName,
    runtime,
    isolation: resolveIsolation(runtime, req.isolation, profile?.isolation ?? d.isolation, who),
    limits: resolveLimits({ ...d.limits, ...profile?.limits }, req.limits ?? {}, who),
    egress: resolveEgress(policy, profile?.egress ?? d.egress, req.egress, who),
    env: { ...req.env },
    labels: { ...req.labels },
    ttlMs,
    idleTimeoutMs: parseDuration(profile?.idleTimeout ?? d.idleTimeout),
    ...resolvePause(profile?.pauseAfter),
    ...(profile?.rootfs === 'writable' ? { rootfs: 'writable' as const } : {}),
    execTimeoutMs: parseDuration(profile?.execTimeout ?? d.execTimeout),
    outputLimitBytes: profile?.outputLimitBytes ?? d.outputLimitBytes,
  };
}

/**
 * A live approval of one more host for a running sandbox: checked against the same ceiling its
 * create was (the profile's egress, else defaults.egress), with the global deny list winning.
 */
export function resolveEgressApproval(policy: Policy, profileName: string | null, mode: Egress['mode'], host: string): Egress {
  const profile = profileName === null ? undefined : findProfile(policy, profileName);
  return resolveEgress(policy, profile?.egress ?? policy.defaults.egress, { mode, allow: [host] }, whoOf(profileName));
}

/**
 * A new lifetime for a running sandbox, counted from now: at most what its profile (or the
 * defaults) allows a create to ask for.
 */
export function resolveTtlChange(policy: Policy, profileName: string | null, askedMs: number): number {
  const profile = profileName === null ? undefined : findProfile(policy, profileName);
  return atMost('ttl', askedMs, parseDuration(profile?.ttl ?? policy.defaults.ttl), whoOf(profileName));
}

function findProfile(policy: Policy, name: string): Profile {
  const profile = profileOf(policy, name);
  if (profile === undefined) {
    throw new PolicyDeniedError(`unknown profile "${name}"`, { hint: `profiles: ${profileNames(policy).join(', ')} (built in: ${Object.keys(BUILTIN_PROFILES).join(', ')})` });
  }
  return profile;
}

/**
 * `floor` is the isolation the profile or defaults fix: a request may ask for stronger, never
 * weaker. Without a request, the floor is raised to what the runtime offers when needed.
 */
function resolveIsolation(runtime: RuntimeName, asked: Isolation | undefined, floor: Isolation | undefined, who: string): Isolation {
  const offered = RUNTIME_ISOLATIONS[runtime];
  if (asked !== undefined) {
    if (!isolationFits(runtime, asked)) {
      throw new BadRequestError(`runtime ${runtime} cannot provide ${asked} isolation`, { hint: `runtime ${runtime} offers: ${offered.join(', ')}` });
    }
    if (floor !== undefined && isolationStrength(asked) < isolationStrength(floor)) {
      throw new PolicyDeniedError(`isolation ${asked} is weaker than ${says(who, 'require')} (${floor})`, {
        hint: `${says(who, 'require')} ${floor} isolation or stronger; leave isolation out or ask for ${floor}`,
      });
    }
    return asked;
  }
  if (floor === undefined) return defaultIsolation(runtime);
  if (isolationFits(runtime, floor)) return floor;
  const raised = offered.find((i) => isolationStrength(i) >= isolationStrength(floor));
  if (raised === undefined) {
    throw new PolicyDeniedError(`${says(who, 'require')} ${floor} isolation, which runtime ${runtime} cannot provide`, {
      hint: `leave runtime out, or use a runtime that offers ${floor}`,
    });
  }
  return raised;
}

function resolveLimits(allowed: Limits, asked: Partial<Limits>, who: string): Limits {
  const out: Limits = { ...allowed };
  for (const key of LIMIT_KEYS) {
    const value = asked[key];
    if (value === undefined) continue;
    if (value > allowed[key]) {
      throw tooMuch(`${key} ${value} is more than ${says(who, 'allow')} (${allowed[key]})`, who, key, String(allowed[key]));
    }
    out[key] = value;
  }
  return out;
}

function atMost(field: string, askedMs: number | undefined, allowedMs: number, who: string): number {
  if (askedMs === undefined) return allowedMs;
  if (askedMs > allowedMs) {
    const allowed = formatDuration(allowedMs);
    throw tooMuch(`${field} ${formatDuration(askedMs)} is longer than ${says(who, 'allow')} (${allowed})`, who, field, allowed);
  }
  return askedMs;
}

function tooMuch(message: string, who: string, field: string, allowed: string): AgentboxError {
  return new PolicyDeniedError(message, {
    hint: `${says(who, 'allow')} ${field} up to ${allowed}; ask for less or use ${who === DEFAULTS_WHO ? 'a profile that allows more' : 'another profile'}`,
  });
}

function resolvePause(pauseAfter: Profile['pauseAfter']): Pick<SandboxSpec, 'pauseAfterMs' | 'pauseMode'> {
  if (pauseAfter === undefined) return { pauseAfterMs: null };
  if (typeof pauseAfter === 'string') return { pauseAfterMs: parseDuration(pauseAfter), pauseMode: 'freeze' };
  return { pauseAfterMs: parseDuration(pauseAfter.idle), pauseMode: pauseAfter.mode };
}
