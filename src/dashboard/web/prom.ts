/**
 * A small reader of the Prometheus text format (what GET /metrics answers): samples with their
 * labels, sums over series, and quantiles from a histogram's cumulative buckets.
 */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/g;

export function parseProm(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2]) for (const l of m[2].matchAll(LABEL)) labels[l[1] as string] = (l[2] as string).replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    const v = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    out.push({ name: m[1] as string, labels, value: v });
  }
  return out;
}

/** Sum of a family's samples whose labels include `match`; undefined when it has none. */
export function sum(samples: PromSample[], name: string, match: Record<string, string> = {}): number | undefined {
  let total: number | undefined;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).some(([k, v]) => s.labels[k] !== v)) continue;
    total = (total ?? 0) + s.value;
  }
  return total;
}

/** Cumulative buckets of a histogram summed over its series: [upper bound, count] by bound. */
export function buckets(samples: PromSample[], name: string): [number, number][] {
  const by = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || s.labels.le === undefined) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    by.set(le, (by.get(le) ?? 0) + s.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

/** Bucket counts of `now` minus those of `before` (the observations between two polls). */
export function bucketDelta(now: [number, number][], before: [number, number][] | undefined): [number, number][] {
  if (!before) return now;
  const prev = new Map(before);
  return now.map(([le, c]) => [le, Math.max(0, c - (prev.get(le) ?? 0))]);
}

/** The q-quantile by linear interpolation within the bucket it falls in (as Prometheus' histogram_quantile); undefined with no observations. */
export function quantile(q: number, cumulative: [number, number][]): number | undefined {
  const total = cumulative[cumulative.length - 1]?.[1] ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of cumulative) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = count - prevCount;
      return inBucket <= 0 ? le : prevLe + (le - prevLe) * ((rank - prevCount) / inBucket);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}
