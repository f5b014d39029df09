/** The egress log of a sandbox and its denied hosts, each with a one-click approve. */
import { useState } from 'preact/hooks';
import type { DeniedHost, Egress, EgressEvent } from '../../contract/model.js';
import { api, sbxPath, type Sandbox } from './api.js';
import { age, bytes } from './format.js';
import { usePoll } from './hooks.js';
import { ErrorBox, Status } from './ui.js';

interface EgressLog {
  sandboxId: string;
  egress: Egress;
  log: EgressEvent[];
  denied?: DeniedHost[];
}

/** What to approve for a denied host: the name alone opens 80 and 443; another port is named. */
function approvalFor(d: DeniedHost): string {
  return d.port === 80 || d.port === 443 ? d.host : `${d.host}:${d.port}`;
}

export function EgressTab({ sandbox }: { sandbox: Sandbox }) {
  const [log, setLog] = useState<EgressLog | null>(null);
  const [denied, setDenied] = useState<DeniedHost[]>([]);
  const [error, setError] = useState<unknown>();
  const [actionError, setActionError] = useState<unknown>();
  const [notice, setNotice] = useState('');
  const id = sandbox.id;
  const refresh = async (signal?: AbortSignal): Promise<void> => {
    try {
      const o = signal ? { signal } : {};
      const [all, refused] = await Promise.all([api<EgressLog>(sbxPath(id, '/egress?limit=200'), o), api<EgressLog>(sbxPath(id, '/egress?denied=1&limit=1'), o)]);
      setLog(all);
      setDenied(refused.denied ?? []);
      setError(undefined);
    } catch (err) {
      if (!signal?.aborted) setError(err);
    }
  };
  usePoll((signal) => refresh(signal), 3000, [id]);
  const allowed = new Set(log?.egress.allow ?? sandbox.egress.allow);
  const approve = async (d: DeniedHost): Promise<void> => {
    const host = approvalFor(d);
    setNotice(`Approving ${host}…`);
    setActionError(undefined);
    try {
      await api(sbxPath(id, '/egress/allow'), { method: 'POST', body: { host } });
      setNotice(`Approved ${host}: its next connection goes through.`);
      await refresh();
    } catch (err) {
      setNotice('');
      setActionError(err);
    }
  };
  return (
    <div>
      <h2>Egress</h2>
      <p>
        Mode <strong>{log?.egress.mode ?? sandbox.egress.mode}</strong>
        {allowed.size ? `; allowed: ${[...allowed].join(', ')}` : ''}
      </p>
      <Status>{notice}</Status>
      <ErrorBox error={actionError} />
      <ErrorBox error={error} />
      <h3>Denied hosts</h3>
      {denied.length === 0 ? (
        <p class="empty">No connection was refused.</p>
      ) : (
        <ul class="denied">
          {denied.map((d) => {
            const host = approvalFor(d);
            return (
              <li key={`${d.host}:${d.port}`}>
                <span class="mono">
                  {d.host}:{d.port}
                </span>{' '}
                — {d.attempts} attempt{d.attempts === 1 ? '' : 's'}, last {age(d.lastAt)} ago, rule {d.rule}{' '}
                {allowed.has(host) ? (
                  <span class="badge state-running">approved</span>
                ) : (
                  <button type="button" disabled={sandbox.state !== 'running'} onClick={() => void approve(d)}>
                    Approve {host}
                  </button>
                )}
              </li>
            );
          })}
        </ul>
      )}
      <h3>Connection log</h3>
      {log === null ? (
        <Status>Loading…</Status>
      ) : log.log.length === 0 ? (
        <p class="empty">No connections yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Decision</th>
              <th scope="col">Host</th>
              <th scope="col">Kind</th>
              <th scope="col">Rule</th>
              <th scope="col">Up / down</th>
            </tr>
          </thead>
          <tbody>
            {log.log.map((e) => (
              <tr key={e.id}>
                <td title={e.at}>{age(e.at)} ago</td>
                <td>
                  <span class={`badge decision-${e.decision}`}>{e.decision}</span>
                </td>
                <td class="mono">
                  {e.host}:{e.port}
                </td>
                <td>
                  {e.kind}
                  {e.method ? ` ${e.method}` : ''}
                </td>
                <td>{e.rule}</td>
                <td>
                  {bytes(e.bytesUp)} / {bytes(e.bytesDown)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
