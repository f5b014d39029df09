/**
 * Built-in profiles: what a policy gets without writing them, as with the built-in egress presets
 * (src/policy/presets.ts). A policy's own `profiles` entry of the same name replaces the built-in
 * one whole. A built-in profile never widens what a policy otherwise pins: its image must still be
 * in the policy's `images` (when that is set) and tenants' quotas still count its memory.
 */
import type { Policy, Profile } from './schema.js';

export const BUILTIN_PROFILES: Readonly<Record<string, Readonly<Profile>>> = Object.freeze({
  /**
   * A desktop sandbox (ARCHITECTURE.md, "Desktops"): the `desktop` image (agentbox image build
   * desktop); Chromium wants memory, processes (one per renderer, many threads) and disk for its cache.
   */
  desktop: Object.freeze({
    image: 'desktop',
    limits: Object.freeze({ cpus: 2, memoryMb: 2048, pids: 1024, diskMb: 4096 }),
    idleTimeout: '30m',
  }),
});

/** The profile NAME: the policy's own first, then a built-in; undefined for an unknown name. */
export function profileOf(policy: Pick<Policy, 'profiles'>, name: string): Profile | undefined {
  // Own properties only: a profile called "constructor" must not come from Object.prototype.
  if (Object.hasOwn(policy.profiles, name)) return policy.profiles[name];
  return Object.hasOwn(BUILTIN_PROFILES, name) ? BUILTIN_PROFILES[name] : undefined;
}

/** Every profile name a request may give: the policy's, then built-ins it does not replace. */
export function profileNames(policy: Pick<Policy, 'profiles'>): string[] {
  return [...new Set([...Object.keys(policy.profiles), ...Object.keys(BUILTIN_PROFILES)])];
}
