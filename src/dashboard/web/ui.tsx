/** Shared pieces: the error box (message + hint), a status line for screen readers, inline SVG sparklines. */
import type { ComponentChildren } from 'preact';
import { describeError } from './api.js';

export function ErrorBox({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  const { message, hint } = describeError(error);
  return (
    <div class="error" role="alert">
      <strong>{message}</strong>
      {hint ? <div class="hint">{hint}</div> : null}
    </div>
  );
}

export function Status({ children }: { children: ComponentChildren }) {
  return (
    <p class="status" role="status" aria-live="polite">
      {children}
    </p>
  );
}

/**
 * A polyline of the last values, scaled to its own maximum (or `max` when given). Cheap enough for
 * a thousand rows: one element, no library.
 */
export function Sparkline({ values, max, label, width = 80, height = 20 }: { values: number[]; max?: number; label: string; width?: number; height?: number }) {
  if (values.length < 2) return <span class="muted" aria-label={`${label}: no samples`}>—</span>;
  const top = Math.max(max ?? 0, ...values, 1e-9);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 2)).toFixed(1)}`).join(' ');
  return (
    <svg class="spark" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={label}>
      <polyline points={points} fill="none" stroke="currentColor" stroke-width="1.5" />
    </svg>
  );
}

export function StateBadge({ state, paused }: { state: string; paused?: string | undefined }) {
  return <span class={`badge state-${state}`}>{paused ? `${state} (${paused})` : state}</span>;
}
