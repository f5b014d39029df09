/**
 * One sandbox: its header (state, image, runtime, limits, labels, age, TTL), the actions (stop,
 * delete, snapshot, pause/resume) and tabs: Terminal (the default), Usage, Execs, Egress, Files, Desktop.
 */
import { useRef, useState } from 'preact/hooks';
import { api, ApiError, sbxPath, type Sandbox } from './api.js';
import { age, labelText, until } from './format.js';
import { usePoll } from './hooks.js';
import { navigate } from './router.js';
import { TerminalView } from './terminal.js';
import { ErrorBox, StateBadge, Status } from './ui.js';
import { UsageTab } from './tab-usage.js';
import { ExecsTab } from './tab-execs.js';
import { EgressTab } from './tab-egress.js';
import { FilesTab } from './tab-files.js';
import { DesktopTab } from './tab-desktop.js';

const TABS = ['Terminal', 'Usage', 'Execs', 'Egress', 'Files', 'Desktop'] as const;
type Tab = (typeof TABS)[number];

export function SandboxPage({ id, onTenant }: { id: string; onTenant: (t: string) => void }) {
  const [sbx, setSbx] = useState<Sandbox | null>(null);
  const [error, setError] = useState<unknown>();
  const [actionError, setActionError] = useState<unknown>();
  const [notice, setNotice] = useState('');
  const [busy, setBusy] = useState(false);
  const [tab, setTab] = useState<Tab>('Terminal');
  const tabRefs = useRef<(HTMLButtonElement | null)[]>([]);

  const load = async (signal?: AbortSignal): Promise<void> => {
    try {
      const s = await api<Sandbox>(sbxPath(id), signal ? { signal } : {});
      setSbx(s);
      setError(undefined);
      onTenant(s.tenant);
    } catch (err) {
      if (!signal?.aborted) setError(err);
    }
  };
  usePoll((signal) => load(signal), 2000, [id]);

  const act = async (what: string, fn: () => Promise<unknown>, done: string): Promise<void> => {
    setBusy(true);
    setActionError(undefined);
    setNotice(`${what}…`);
    try {
      await fn();
      setNotice(done);
      await load();
    } catch (err) {
      setNotice('');
      setActionError(err);
    } finally {
      setBusy(false);
    }
  };

  if (!sbx) {
    return (
      <section>
        <p>
          <a href="/sandboxes">← Sandboxes</a>
        </p>
        <h1 class="mono">{id}</h1>
        {error ? <ErrorBox error={error} /> : <Status>Loading…</Status>}
      </section>
    );
  }
  const running = sbx.state === 'running';
  const onTabKey = (e: KeyboardEvent, i: number): void => {
    let next = i;
    if (e.key === 'ArrowRight') next = (i + 1) % TABS.length;
    else if (e.key === 'ArrowLeft') next = (i - 1 + TABS.length) % TABS.length;
    else if (e.key === 'Home') next = 0;
    else if (e.key === 'End') next = TABS.length - 1;
    else return;
    e.preventDefault();
    setTab(TABS[next] as Tab);
    tabRefs.current[next]?.focus();
  };
  return (
    <section aria-labelledby="sbx-title">
      <p>
        <a href="/sandboxes">← Sandboxes</a>
      </p>
      <div class="title-row">
        <h1 id="sbx-title" class="mono">
          {sbx.id}
        </h1>
        <StateBadge state={sbx.state} paused={sbx.paused} />
      </div>
      <dl class="facts">
        <div>
          <dt>Image</dt>
          <dd>{sbx.image}</dd>
        </div>
        <div>
          <dt>Runtime</dt>
          <dd>
            {sbx.runtime}/{sbx.isolation}
          </dd>
        </div>
        <div>
          <dt>Profile</dt>
          <dd>{sbx.profile ?? 'none'}</dd>
        </div>
        <div>
          <dt>Limits</dt>
          <dd>
            {sbx.limits.cpus} CPU, {sbx.limits.memoryMb} MiB, {sbx.limits.pids} pids, {sbx.limits.diskMb} MiB disk
          </dd>
        </div>
        <div>
          <dt>Age</dt>
          <dd title={sbx.createdAt}>{age(sbx.createdAt)}</dd>
        </div>
        <div>
          <dt>TTL</dt>
          <dd title={sbx.expiresAt ?? ''}>{sbx.state === 'running' ? until(sbx.expiresAt) : sbx.endReason ? `ended: ${sbx.endReason}` : '—'}</dd>
        </div>
        <div>
          <dt>Egress</dt>
          <dd>
            {sbx.egress.mode}
            {sbx.egress.mode === 'allowlist' && sbx.egress.allow.length ? `: ${sbx.egress.allow.join(', ')}` : ''}
          </dd>
        </div>
        <div>
          <dt>Labels</dt>
          <dd>{labelText(sbx.labels) || 'none'}</dd>
        </div>
      </dl>
      <div class="actions" role="group" aria-label="Sandbox actions">
        {sbx.paused ? (
          <button type="button" disabled={busy || !running} onClick={() => void act('Resuming', () => api(sbxPath(id, '/resume'), { method: 'POST' }), 'Resumed.')}>
            Resume
          </button>
        ) : (
          <button type="button" disabled={busy || !running} onClick={() => void act('Pausing', () => api(sbxPath(id, '/pause'), { method: 'POST', body: { mode: 'freeze' } }), 'Paused.')}>
            Pause
          </button>
        )}
        <button
          type="button"
          disabled={busy || !running}
          onClick={() => {
            const name = prompt('Snapshot name (optional: letters, digits, . _ -)', '');
            if (name === null) return;
            void act('Taking a snapshot', () => api(sbxPath(id, '/snapshots'), { method: 'POST', body: name.trim() ? { name: name.trim() } : {} }), 'Snapshot taken.');
          }}
        >
          Snapshot
        </button>
        <button type="button" disabled={busy || !running} onClick={() => void act('Stopping', () => api(sbxPath(id, '/stop'), { method: 'POST' }), 'Stopped.')}>
          Stop
        </button>
        <button
          type="button"
          class="danger"
          disabled={busy || sbx.state === 'deleted'}
          onClick={() => {
            if (!confirm(`Delete sandbox ${sbx.id}? Its files are gone for good.`)) return;
            void act('Deleting', () => api(sbxPath(id), { method: 'DELETE' }), 'Deleted.').then(() => navigate('/sandboxes'));
          }}
        >
          Delete
        </button>
      </div>
      <Status>{notice}</Status>
      <ErrorBox error={actionError} />
      {error && !(error instanceof ApiError && error.status === 0) ? <ErrorBox error={error} /> : null}
      <div role="tablist" aria-label="Sandbox views" class="tabs">
        {TABS.map((t, i) => (
          <button
            type="button"
            role="tab"
            id={`tab-${t}`}
            aria-selected={tab === t}
            aria-controls={`panel-${t}`}
            tabIndex={tab === t ? 0 : -1}
            ref={(el) => {
              tabRefs.current[i] = el;
            }}
            onClick={() => setTab(t)}
            onKeyDown={(e) => onTabKey(e, i)}
          >
            {t}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} class="panel">
        {tab === 'Terminal' ? <TerminalView sandboxId={id} running={running} /> : null}
        {tab === 'Usage' ? <UsageTab sandbox={sbx} /> : null}
        {tab === 'Execs' ? <ExecsTab sandboxId={id} /> : null}
        {tab === 'Egress' ? <EgressTab sandbox={sbx} /> : null}
        {tab === 'Files' ? <FilesTab sandboxId={id} running={running} /> : null}
        {tab === 'Desktop' ? <DesktopTab sandbox={sbx} /> : null}
      </div>
    </section>
  );
}
