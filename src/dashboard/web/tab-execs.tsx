/** Exec history (newest first); choosing one shows its exit code and the tail of its output. */
import { useState } from 'preact/hooks';
import type { ExecRecord } from '../../contract/model.js';
import { api, sbxPath } from './api.js';
import { age } from './format.js';
import { usePoll } from './hooks.js';
import { ErrorBox, Status } from './ui.js';

export function ExecsTab({ sandboxId }: { sandboxId: string }) {
  const [execs, setExecs] = useState<ExecRecord[] | null>(null);
  const [error, setError] = useState<unknown>();
  const [chosen, setChosen] = useState<ExecRecord | null>(null);
  const [chosenError, setChosenError] = useState<unknown>();
  usePoll(
    async (signal) => {
      try {
        setExecs((await api<{ execs: ExecRecord[] }>(sbxPath(sandboxId, '/execs?limit=100'), { signal })).execs);
        setError(undefined);
      } catch (err) {
        if (!signal.aborted) setError(err);
      }
    },
    3000,
    [sandboxId],
  );
  const open = async (execId: string): Promise<void> => {
    setChosenError(undefined);
    try {
      setChosen(await api<ExecRecord>(sbxPath(sandboxId, `/execs/${encodeURIComponent(execId)}`)));
    } catch (err) {
      setChosenError(err);
    }
  };
  return (
    <div class="split">
      <div>
        <h2>Exec history</h2>
        <ErrorBox error={error} />
        {execs === null ? <Status>Loading…</Status> : execs.length === 0 ? <p class="empty">No commands have run yet.</p> : null}
        {execs && execs.length > 0 ? (
          <table>
            <thead>
              <tr>
                <th scope="col">Command</th>
                <th scope="col">State</th>
                <th scope="col">Exit</th>
                <th scope="col">Took</th>
                <th scope="col">Started</th>
              </tr>
            </thead>
            <tbody>
              {execs.map((x) => (
                <tr key={x.execId} class={chosen?.execId === x.execId ? 'chosen' : ''}>
                  <th scope="row" class="mono">
                    <button type="button" class="link" onClick={() => void open(x.execId)} aria-label={`Show exec ${x.execId}: ${x.cmd.join(' ')}`}>
                      {x.cmd.join(' ').slice(0, 80)}
                    </button>
                  </th>
                  <td>{x.state}</td>
                  <td>{x.exitCode ?? '—'}</td>
                  <td>{x.durationMs === null ? '—' : `${x.durationMs} ms`}</td>
                  <td title={x.startedAt}>{age(x.startedAt)} ago</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : null}
      </div>
      <div aria-live="polite">
        <ErrorBox error={chosenError} />
        {chosen ? (
          <div class="card">
            <h3 class="mono">{chosen.cmd.join(' ')}</h3>
            <p>
              {chosen.execId}: {chosen.state}, exit code {chosen.exitCode ?? '—'}
              {chosen.timedOut ? ', timed out' : ''}
              {chosen.oomKilled ? ', killed for memory' : ''}
              {chosen.truncated ? ', output truncated' : ''}
            </p>
            <h4>stdout (tail)</h4>
            <pre class="output">{chosen.stdout || '(empty)'}</pre>
            <h4>stderr (tail)</h4>
            <pre class="output">{chosen.stderr || '(empty)'}</pre>
          </div>
        ) : (
          <p class="muted">Choose a command to see its output.</p>
        )}
      </div>
    </div>
  );
}
