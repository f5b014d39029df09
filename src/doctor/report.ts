/** How the attack suite prints: one line per attack (text or JSON lines), then the counts as the last line. */
import type { AttackCategory, AttackRuntime } from './attacks/types.js';

export type Status = 'PASS' | 'FAIL' | 'SKIP';

export interface AttackLine {
  status: Status;
  runtime: AttackRuntime;
  id: string;
  category: AttackCategory | 'runner';
  title: string;
  detail: string;
  durationMs: number;
}

export interface Totals {
  passed: number;
  failed: number;
  skipped: number;
}

/** One line, whatever an attack put in its detail (output of a sandbox may hold newlines or escapes). */
export function oneLine(s: string, max = 400): string {
  // eslint-disable-next-line no-control-regex
  const flat = s.replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

export class Reporter {
  readonly totals: Totals = { passed: 0, failed: 0, skipped: 0 };
  readonly lines: AttackLine[] = [];

  constructor(private readonly opts: { json: boolean; write: (line: string) => void }) {}

  add(line: AttackLine): void {
    const l = { ...line, title: oneLine(line.title, 200), detail: oneLine(line.detail) };
    this.lines.push(l);
    if (l.status === 'PASS') this.totals.passed++;
    else if (l.status === 'FAIL') this.totals.failed++;
    else this.totals.skipped++;
    this.opts.write(this.opts.json ? JSON.stringify(l) : `${l.status} ${l.runtime} ${l.id} — ${l.title}: ${l.detail}`);
  }

  /** A note that is not a verdict (e.g. how to build a missing image): stderr in JSON mode. */
  note(text: string): void {
    if (this.opts.json) process.stderr.write(`${text}\n`);
    else this.opts.write(text);
  }

  finish(): void {
    const t = this.totals;
    if (this.opts.json) {
      this.opts.write(JSON.stringify({ summary: true, ...t }));
      return;
    }
    if (t.skipped > 0) this.opts.write(`${t.skipped} skipped`);
    this.opts.write(`${t.passed} passed, ${t.failed} failed`);
  }
}
