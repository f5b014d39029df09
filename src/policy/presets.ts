/**
 * Built-in egress presets: the hosts common package managers and code hosts need. A policy's own
 * `egress.presets` entry of the same name replaces the built-in one.
 */
import type { Policy } from './schema.js';

export const BUILTIN_PRESETS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  pypi: ['pypi.org', 'files.pythonhosted.org'],
  npm: ['registry.npmjs.org'],
  github: ['github.com', 'api.github.com', 'codeload.github.com', 'objects.githubusercontent.com', 'raw.githubusercontent.com'],
  debian: ['deb.debian.org', 'security.debian.org'],
  crates: ['crates.io', 'index.crates.io', 'static.crates.io'],
  go: ['proxy.golang.org', 'sum.golang.org'],
});

/** The hosts of a preset, the policy's own first; undefined for an unknown name. */
export function presetHosts(presets: Policy['egress']['presets'], name: string): readonly string[] | undefined {
  return presets[name] ?? (Object.hasOwn(BUILTIN_PRESETS, name) ? BUILTIN_PRESETS[name] : undefined);
}
