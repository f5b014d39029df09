/**
 * The overview: sandboxes by state (from the list), and from GET /metrics creates per minute, exec
 * latency (p50/p95 of agentbox_exec_seconds) and denied egress, as rates between two polls. A tenant's
 * token gets its own series only; families it cannot see show a dash.
 */
import { useRef, useState } from 'preact/hooks';
import { api, apiText, type Sandbox } from './api.js';
import { usePoll } from './hooks.js';
import { bucketDelta, buckets, parseProm, quantile, sum } from './prom.js';
import { ErrorBox, Sparkline, Status } from './ui.js';

const POLL_MS = 5000;
const HISTORY = 60;

interface Point {
  at: number;
  created?: number;
  execs?: number;
  denied?: number;
  execBuckets: [number, number][];
}

interface Figures {
  byState: Record<string, number>;
  total: number;
  createsPerMin?: number;
  deniedPerMin?: number;
  deniedTotal?: number;
  execsPerMin?: number;
  p50?: number;
  p95?: number;
  p50All?: number;
  p95All?: number;
  createsHistory: number[];
}

function ms(s: number | undefined): string {
  if (s === undefined) return '—';
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

function perMin(v: number | undefined): string {
  return v === undefined ? '—' : v < 10 ? v.toFixed(1) : String(Math.round(v));
}

export function OverviewPage() {
  const [fig, setFig] = useState<Figures | null>(null);
  const [error, setError] = useState<unknown>();
  const [metricsError, setMetricsError] = useState<unknown>();
  const last = useRef<Point | undefined>(undefined);
  const history = useRef<number[]>([]);
  usePoll(
    async (signal) => {
      try {
        const [list, text] = await Promise.all([
          api<{ sandboxes: Sandbox[] }>('/v1/sandboxes?all=1', { signal }),
          apiText('/metrics', { signal }).then(
            (t) => {
              setMetricsError(undefined);
              return t;
            },
            (err: unknown) => {
              if (!signal.aborted) setMetricsError(err);
              return '';
            },
          ),
        ]);
        const byState: Record<string, number> = {};
        for (const s of list.sandboxes) byState[s.state] = (byState[s.state] ?? 0) + 1;
        const samples = parseProm(text);
        const now: Point = {
          at: Date.now(),
          created: sum(samples, 'agentbox_sandboxes_created_total', { result: 'ok' }) ?? sum(samples, 'agentbox_sandboxes_created_total'),
          execs: sum(samples, 'agentbox_exec_seconds_count'),
          denied: sum(samples, 'agentbox_egress_connections_total', { decision: 'denied' }),
          execBuckets: buckets(samples, 'agentbox_exec_seconds'),
        };
        const prev = last.current;
        const mins = prev ? (now.at - prev.at) / 60_000 : 0;
        const rate = (a: number | undefined, b: number | undefined): number | undefined => (a !== undefined && b !== undefined && mins > 0 ? Math.max(0, a - b) / mins : undefined);
        const recent = bucketDelta(now.execBuckets, prev?.execBuckets);
        const createsPerMin = rate(now.created, prev?.created);
        if (createsPerMin !== undefined) history.current = [...history.current, createsPerMin].slice(-HISTORY);
        last.current = now;
        setFig({
          byState,
          total: list.sandboxes.length,
          ...(createsPerMin !== undefined ? { createsPerMin } : {}),
          ...(rate(now.denied, prev?.denied) !== undefined ? { deniedPerMin: rate(now.denied, prev?.denied) as number } : {}),
          ...(now.denied !== undefined ? { deniedTotal: now.denied } : {}),
          ...(rate(now.execs, prev?.execs) !== undefined ? { execsPerMin: rate(now.execs, prev?.execs) as number } : {}),
          ...(prev && quantile(0.5, recent) !== undefined ? { p50: quantile(0.5, recent) as number, p95: quantile(0.95, recent) as number } : {}),
          ...(quantile(0.5, now.execBuckets) !== undefined ? { p50All: quantile(0.5, now.execBuckets) as number, p95All: quantile(0.95, now.execBuckets) as number } : {}),
          createsHistory: history.current,
        });
        setError(undefined);
      } catch (err) {
        if (!signal.aborted) setError(err);
      }
    },
    POLL_MS,
    [],
  );
  return (
    <section aria-labelledby="ov-h">
      <h1 id="ov-h">Overview</h1>
      <ErrorBox error={error} />
      {fig === null ? <Status>Loading…</Status> : null}
      {fig ? (
        <div class="tiles">
          <div class="tile">
            <h2>Sandboxes by state</h2>
            <ul class="states">
              {['running', 'creating', 'stopped', 'failed', 'deleted'].map((s) => (
                <li key={s}>
                  <a href="/sandboxes" class={`badge state-${s}`}>
                    {s}
                  </a>{' '}
                  <strong>{fig.byState[s] ?? 0}</strong>
                </li>
              ))}
            </ul>
            <p class="muted">{fig.total} known in all</p>
          </div>
          <div class="tile">
            <h2>Creates per minute</h2>
            <p class="big">{perMin(fig.createsPerMin)}</p>
            <Sparkline values={fig.createsHistory} label="creates per minute, recent polls" width={200} height={40} />
          </div>
          <div class="tile">
            <h2>Exec latency</h2>
            <p class="big">
              p50 {ms(fig.p50 ?? fig.p50All)} · p95 {ms(fig.p95 ?? fig.p95All)}
            </p>
            <p class="muted">{fig.p50 !== undefined ? `since the last poll; ${perMin(fig.execsPerMin)} execs/min` : 'since the daemon started'}</p>
          </div>
          <div class="tile">
            <h2>Denied egress</h2>
            <p class="big">{fig.deniedTotal === undefined ? '—' : `${perMin(fig.deniedPerMin)}/min`}</p>
            <p class="muted">{fig.deniedTotal === undefined ? 'not in the metrics this token sees (the operator’s only)' : `${fig.deniedTotal} refused since the daemon started`}</p>
          </div>
        </div>
      ) : null}
      {metricsError ? (
        <>
          <p>The metrics could not be read:</p>
          <ErrorBox error={metricsError} />
        </>
      ) : null}
    </section>
  );
}
