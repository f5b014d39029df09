/** Human output (tables, ages, progress) and the error printer: message and hint, never a stack. */
import { AgentboxError } from '../contract/errors.js';

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function table(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  process.stdout.write(`${[line(headers), ...rows.map(line)].join('\n')}\n`);
}

export function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A one-line progress display on stderr; plain lines when stderr is not a terminal. */
export function progressPrinter(): (p: { phase: string; message: string; percent?: number }) => void {
  const tty = process.stderr.isTTY;
  let last = 0;
  return (p) => {
    const pct = p.percent === undefined ? '' : ` ${Math.round(p.percent)}%`;
    const text = `[${p.phase}${pct}] ${p.message}`.slice(0, 160);
    if (tty) process.stderr.write(`\r\x1b[2K${text}`);
    else if (Date.now() - last > 1000 || p.percent === 100) {
      process.stderr.write(`${text}\n`);
      last = Date.now();
    }
  };
}

/** Print an error for a human: message, then the hint. Stack only with AGENTBOX_DEBUG=1. */
export function printError(err: unknown): void {
  if (err instanceof AgentboxError) {
    process.stderr.write(`agentbox: ${err.message}\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
  } else {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`agentbox: ${msg}\n`);
  }
  if (process.env.AGENTBOX_DEBUG === '1' && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
}
