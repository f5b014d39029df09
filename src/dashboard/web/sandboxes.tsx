/**
 * The sandboxes list: live (every 2 s while the tab shows), filtered by state, text and a label
 * selector, with CPU and memory sparklines. Only the rows in view are in the DOM (fixed row height),
 * so a thousand sandboxes cost a few dozen rows.
 */
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, listSandboxes, type Sandbox } from './api.js';
import { age, bytes, labelText } from './format.js';
import { usePoll } from './hooks.js';
import { navigate } from './router.js';
import { ErrorBox, Sparkline, StateBadge, Status } from './ui.js';
import { allUsage, type Point } from './usage.js';

const ROW_HEIGHT = 40;
const OVERSCAN = 8;
const STATES = ['all', 'active', 'creating', 'running', 'stopped', 'failed', 'deleted'] as const;

export function SandboxesPage({ onTenant }: { onTenant: (t: string) => void }) {
  const [list, setList] = useState<Sandbox[] | null>(null);
  const [usage, setUsage] = useState<Map<string, Point[]>>(new Map());
  const [error, setError] = useState<unknown>();
  const [state, setState] = useState<(typeof STATES)[number]>('active');
  const [text, setText] = useState('');
  const [selector, setSelector] = useState('');
  const [appliedSelector, setAppliedSelector] = useState('');
  const [creating, setCreating] = useState(false);
  const [now, setNow] = useState(Date.now());

  usePoll(
    async (signal) => {
      try {
        const q = new URLSearchParams();
        if (appliedSelector) q.set('labels', appliedSelector);
        if (state === 'all' || state === 'deleted' || state === 'stopped' || state === 'failed') q.set('all', '1');
        const qs = q.toString();
        const [sbx, use] = await Promise.all([
          qs ? (await api<{ sandboxes: Sandbox[] }>(`/v1/sandboxes?${qs}`, { signal })).sandboxes : listSandboxes(signal),
          allUsage(signal).catch(() => new Map<string, Point[]>()),
        ]);
        sbx.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : a.id.localeCompare(b.id)));
        setList(sbx);
        setUsage(use);
        setNow(Date.now());
        setError(undefined);
        if (sbx[0]) onTenant(sbx[0].tenant);
      } catch (err) {
        if (!signal.aborted) setError(err);
      }
    },
    2000,
    [appliedSelector, state],
  );

  const shown = useMemo(() => {
    if (!list) return [];
    const needle = text.trim().toLowerCase();
    return list.filter((s) => {
      if (state === 'active' ? !(s.state === 'running' || s.state === 'creating') : state !== 'all' && s.state !== state) return false;
      if (!needle) return true;
      return s.id.toLowerCase().includes(needle) || s.image.toLowerCase().includes(needle) || labelText(s.labels).toLowerCase().includes(needle);
    });
  }, [list, text, state]);

  return (
    <section aria-labelledby="sbx-h">
      <div class="title-row">
        <h1 id="sbx-h">Sandboxes</h1>
        <button type="button" class="primary" onClick={() => setCreating((c) => !c)} aria-expanded={creating}>
          New sandbox
        </button>
      </div>
      {creating ? <CreateForm onDone={(id) => (setCreating(false), id ? navigate(`/sandboxes/${id}`) : undefined)} /> : null}
      <form
        class="filters"
        role="search"
        aria-label="Filter sandboxes"
        onSubmit={(e) => {
          e.preventDefault();
          setAppliedSelector(selector.trim());
        }}
      >
        <label>
          State
          <select value={state} onChange={(e) => setState((e.target as HTMLSelectElement).value as (typeof STATES)[number])}>
            {STATES.map((s) => (
              <option value={s}>{s === 'active' ? 'creating or running' : s}</option>
            ))}
          </select>
        </label>
        <label>
          Search
          <input type="search" placeholder="id, image or label" value={text} onInput={(e) => setText((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Label selector
          <input type="text" placeholder="k=v,k2=v2" value={selector} onInput={(e) => setSelector((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">Apply</button>
      </form>
      <ErrorBox error={error} />
      <Status>{list === null ? 'Loading…' : `${shown.length} of ${list.length} sandboxes shown`}</Status>
      {list !== null ? <SandboxTable rows={shown} usage={usage} now={now} /> : null}
    </section>
  );
}

function SandboxTable({ rows, usage, now }: { rows: Sandbox[]; usage: Map<string, Point[]>; now: number }) {
  const box = useRef<HTMLDivElement>(null);
  const [scroll, setScroll] = useState(0);
  const [height, setHeight] = useState(600);
  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  const first = Math.max(0, Math.floor(scroll / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((scroll + height) / ROW_HEIGHT) + OVERSCAN);
  const visible = rows.slice(first, last);
  if (rows.length === 0) return <p class="empty">No sandboxes match. Create one with “New sandbox”.</p>;
  return (
    <div class="table-box" ref={box} onScroll={(e) => setScroll((e.target as HTMLDivElement).scrollTop)} tabIndex={0} aria-label="Sandboxes table (scrolls)">
      <table class="sbx-table" aria-rowcount={rows.length + 1}>
        <thead>
          <tr aria-rowindex={1}>
            <th scope="col">Sandbox</th>
            <th scope="col">State</th>
            <th scope="col">Image</th>
            <th scope="col">Runtime</th>
            <th scope="col">Age</th>
            <th scope="col">Labels</th>
            <th scope="col">CPU</th>
            <th scope="col">Memory</th>
          </tr>
        </thead>
        <tbody>
          {first > 0 ? <tr class="spacer" aria-hidden="true" style={{ height: `${first * ROW_HEIGHT}px` }} /> : null}
          {visible.map((s, i) => {
            const samples = usage.get(s.id) ?? [];
            const last = samples[samples.length - 1];
            return (
              <tr key={s.id} aria-rowindex={first + i + 2} style={{ height: `${ROW_HEIGHT}px` }}>
                <th scope="row" class="mono">
                  <a href={`/sandboxes/${encodeURIComponent(s.id)}`}>{s.id}</a>
                </th>
                <td>
                  <StateBadge state={s.state} paused={s.paused} />
                </td>
                <td>{s.image}</td>
                <td>
                  {s.runtime}/{s.isolation}
                </td>
                <td title={s.createdAt}>{age(s.createdAt, now)}</td>
                <td class="labels">{labelText(s.labels) || <span class="muted">—</span>}</td>
                <td>
                  <Sparkline values={samples.map((x) => x.cpuPct)} max={100} label={`CPU ${last ? `${last.cpuPct.toFixed(0)}%` : 'no samples'}`} />
                  {last ? <span class="spark-value" aria-hidden="true">{`${last.cpuPct.toFixed(0)}%`}</span> : null}
                </td>
                <td>
                  <Sparkline values={samples.map((x) => x.memoryBytes)} max={s.limits.memoryMb * 1024 * 1024} label={`memory ${last ? bytes(last.memoryBytes) : 'no samples'}`} />
                  {last ? <span class="spark-value" aria-hidden="true">{bytes(last.memoryBytes)}</span> : null}
                </td>
              </tr>
            );
          })}
          {last < rows.length ? <tr class="spacer" aria-hidden="true" style={{ height: `${(rows.length - last) * ROW_HEIGHT}px` }} /> : null}
        </tbody>
      </table>
    </div>
  );
}

function CreateForm({ onDone }: { onDone: (id?: string) => void }) {
  const [image, setImage] = useState('');
  const [profile, setProfile] = useState('');
  const [ttl, setTtl] = useState('');
  const [labels, setLabels] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const body: Record<string, unknown> = {};
      if (image.trim()) body.image = image.trim();
      if (profile.trim()) body.profile = profile.trim();
      if (ttl.trim()) body.ttl = /^\d+$/.test(ttl.trim()) ? Number(ttl.trim()) : ttl.trim();
      if (labels.trim()) body.labels = Object.fromEntries(labels.split(',').map((kv) => kv.trim().split('=').map((x) => x.trim())).filter((kv) => kv[0]).map(([k, v]) => [k, v ?? '']));
      const s = await api<Sandbox>('/v1/sandboxes', { method: 'POST', body });
      onDone(s.id);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card create" onSubmit={(e) => void submit(e)} aria-labelledby="create-h">
      <h2 id="create-h">New sandbox</h2>
      <div class="grid">
        <label>
          Image
          <input value={image} placeholder="policy default" onInput={(e) => setImage((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Profile
          <input value={profile} placeholder="none" onInput={(e) => setProfile((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          TTL
          <input value={ttl} placeholder="e.g. 30m" onInput={(e) => setTtl((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Labels
          <input value={labels} placeholder="k=v,k2=v2" onInput={(e) => setLabels((e.target as HTMLInputElement).value)} />
        </label>
      </div>
      <div class="actions">
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Creating…' : 'Create'}
        </button>
        <button type="button" onClick={() => onDone()}>
          Cancel
        </button>
      </div>
      <ErrorBox error={error} />
    </form>
  );
}
