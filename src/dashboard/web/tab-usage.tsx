/** Live CPU % and memory charts (uPlot, loaded when first shown) from GET /v1/sandboxes/{id}/usage, every 2 s. */
import { useEffect, useRef, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { type Sandbox } from './api.js';
import { bytes } from './format.js';
import { usePoll } from './hooks.js';
import { ErrorBox, Status } from './ui.js';
import { sandboxUsage, type SandboxUsageReport } from './usage.js';

export function UsageTab({ sandbox }: { sandbox: Sandbox }) {
  const [usage, setUsage] = useState<SandboxUsageReport | null | undefined>(undefined);
  const [error, setError] = useState<unknown>();
  usePoll(
    async (signal) => {
      try {
        setUsage(await sandboxUsage(sandbox.id, signal));
        setError(undefined);
      } catch (err) {
        if (!signal.aborted) setError(err);
      }
    },
    2000,
    [sandbox.id],
  );
  if (usage === null) return <p class="empty">This daemon does not serve usage samples (no /v1/sandboxes/{'{id}'}/usage route).</p>;
  const samples = usage?.samples ?? [];
  // The latest sample, else the measurement the daemon took now (before its first sample).
  const now = usage?.current;
  const cur = samples[samples.length - 1] ?? (now ? { cpuPct: now.cpuUsedPct, memoryBytes: now.memoryBytes, pids: now.pids } : undefined);
  const xs = samples.map((s) => Date.parse(s.at) / 1000);
  return (
    <div>
      <h2>Usage</h2>
      <ErrorBox error={error} />
      {usage === undefined ? <Status>Loading…</Status> : null}
      <Status>{cur ? `Now: CPU ${cur.cpuPct.toFixed(1)}%, memory ${bytes(cur.memoryBytes)} of ${sandbox.limits.memoryMb} MiB${cur.pids !== undefined ? `, ${cur.pids} processes` : ''} (CPU as a share of its ${sandbox.limits.cpus} CPU${sandbox.limits.cpus === 1 ? '' : 's'})` : usage ? 'No samples yet.' : ''}</Status>
      <div class="charts">
        <Chart title="CPU %" xs={xs} ys={samples.map((s) => s.cpuPct)} max={100} unit="%" />
        <Chart title="Memory" xs={xs} ys={samples.map((s) => s.memoryBytes / (1024 * 1024))} max={sandbox.limits.memoryMb} unit=" MiB" />
      </div>
    </div>
  );
}

function Chart({ title, xs, ys, max, unit }: { title: string; xs: number[]; ys: number[]; max: number; unit: string }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = useRef<[number[], number[]]>([xs, ys]);
  data.current = [xs, ys];
  useEffect(() => {
    let gone = false;
    void import('uplot').then(({ default: UPlot }) => {
      if (gone || !host.current) return;
      const stroke = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim() || '#0969da';
      plot.current = new UPlot(
        {
          width: Math.max(280, host.current.clientWidth),
          height: 200,
          scales: { y: { range: [0, max] } },
          axes: [{}, { values: (_u, vals) => vals.map((v) => `${Math.round(v)}${unit}`), size: 70 }],
          series: [{}, { label: title, stroke, width: 2, fill: `${stroke}22` }],
          legend: { show: false },
        },
        data.current,
        host.current,
      );
    });
    return () => {
      gone = true;
      plot.current?.destroy();
      plot.current = null;
    };
  }, [max]);
  useEffect(() => {
    plot.current?.setData([xs, ys]);
  }, [xs, ys]);
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={host} role="img" aria-label={`${title} chart: ${ys.length ? `latest ${ys[ys.length - 1]!.toFixed(1)}${unit}` : 'no samples'}`} />
    </figure>
  );
}
