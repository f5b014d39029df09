/** Durations as people write them in policy files and flags: 250ms, 90s, 5m, 1h, 2d. */
import { BadRequestError } from '../contract/errors.js';

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as const;
type Unit = keyof typeof UNIT_MS;

const DURATION_RE = /^(\d+)(ms|s|m|h|d)?$/;
const HINT = 'use a whole number with a unit: 250ms, 90s, 5m, 1h or 2d (a bare number means seconds)';

function tryParse(input: string | number): number | undefined {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input <= 0) return undefined;
    const ms = Math.round(input * 1000);
    return ms >= 1 && Number.isSafeInteger(ms) ? ms : undefined;
  }
  const m = DURATION_RE.exec(input.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[(m[2] ?? 's') as Unit];
  return ms > 0 && Number.isSafeInteger(ms) ? ms : undefined;
}

/** Milliseconds from `250ms`, `90s`, `5m`, `1h`, `2d`; a number (or a bare digit string) means seconds. */
export function parseDuration(input: string | number): number {
  const ms = tryParse(input);
  if (ms === undefined) throw new BadRequestError(`invalid duration ${JSON.stringify(input)}`, { hint: HINT });
  return ms;
}

/** Whether `parseDuration` would accept the input. */
export function isDuration(input: string | number): boolean {
  return tryParse(input) !== undefined;
}

/** The largest unit that expresses `ms` exactly: 3600000 -> `1h`, 90000 -> `90s`, 1500 -> `1500ms`. */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms <= 0) return `${ms}ms`;
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}
