/** Which code this process runs: the package version and the build fingerprint (scripts/build-info.mjs). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot, VERSION } from '../core/config.js';

export interface BuildInfo {
  version: string;
  /** Fingerprint of dist/src and the native programs; `unknown` when the build wrote none. */
  build: string;
}

let cached: BuildInfo | undefined;

export function buildInfo(): BuildInfo {
  if (cached) return cached;
  try {
    const raw = JSON.parse(readFileSync(join(packageRoot, 'dist', 'build-info.json'), 'utf8')) as Partial<BuildInfo>;
    cached = { version: typeof raw.version === 'string' ? raw.version : VERSION, build: typeof raw.build === 'string' ? raw.build : 'unknown' };
  } catch {
    cached = { version: VERSION, build: 'unknown' };
  }
  return cached;
}

/** `0.1.0+1a2b3c4d5e6f`: what the daemon sends in its `agentbox-version` header on the Unix socket. */
export function versionTag(info: BuildInfo = buildInfo()): string {
  return `${info.version}+${info.build}`;
}

export function parseVersionTag(tag: string): BuildInfo {
  const plus = tag.indexOf('+');
  return plus < 0 ? { version: tag, build: 'unknown' } : { version: tag.slice(0, plus), build: tag.slice(plus + 1) };
}

/**
 * A sentence when the daemon runs other code than this CLI, else undefined. Over TCP only the
 * version counts (builds of one version differ from machine to machine).
 */
export function versionMismatch(cli: BuildInfo, daemon: BuildInfo, local: boolean): string | undefined {
  if (cli.version !== daemon.version) return `the daemon runs agentbox ${daemon.version}, this CLI is ${cli.version}`;
  if (local && cli.build !== daemon.build && cli.build !== 'unknown' && daemon.build !== 'unknown') {
    return `the daemon runs an older or other build of agentbox ${daemon.version} (${daemon.build}) than this CLI (${cli.build})`;
  }
  return undefined;
}
