/** A files browser for /workspace (or any absolute path): directories, breadcrumbs, upload, download, delete. */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { DirEntry } from '../../contract/model.js';
import { api, apiBlob, sbxPath } from './api.js';
import { bytes } from './format.js';
import { ErrorBox, Status } from './ui.js';

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

export function FilesTab({ sandboxId, running }: { sandboxId: string; running: boolean }) {
  const [dir, setDir] = useState('/workspace');
  const [entries, setEntries] = useState<DirEntry[] | null>(null);
  const [error, setError] = useState<unknown>();
  const [notice, setNotice] = useState('');
  const [tick, setTick] = useState(0);
  const fileInput = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (!running) return undefined;
    const ctrl = new AbortController();
    setEntries(null);
    api<{ path: string; entries: DirEntry[] }>(sbxPath(sandboxId, `/files/list?path=${encodeURIComponent(dir)}`), { signal: ctrl.signal })
      .then((r) => {
        setEntries(r.entries);
        setError(undefined);
      })
      .catch((err) => {
        if (!ctrl.signal.aborted) setError(err);
      });
    return () => ctrl.abort();
  }, [sandboxId, dir, tick, running]);
  if (!running) return <p class="empty">Files can be browsed while the sandbox runs.</p>;

  const parts = dir.split('/').filter(Boolean);
  const upload = async (): Promise<void> => {
    const files = fileInput.current?.files;
    if (!files || files.length === 0) return;
    setError(undefined);
    for (const f of Array.from(files)) {
      const path = join(dir, f.name);
      setNotice(`Uploading ${f.name}…`);
      try {
        await api(sbxPath(sandboxId, `/files?path=${encodeURIComponent(path)}`), { method: 'PUT', raw: f });
        setNotice(`Uploaded ${path} (${bytes(f.size)}).`);
      } catch (err) {
        setNotice('');
        setError(err);
        break;
      }
    }
    if (fileInput.current) fileInput.current.value = '';
    setTick((t) => t + 1);
  };
  const download = async (name: string): Promise<void> => {
    const path = join(dir, name);
    setNotice(`Downloading ${name}…`);
    try {
      const blob = await apiBlob(sbxPath(sandboxId, `/files?path=${encodeURIComponent(path)}`));
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = name;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      setNotice(`Downloaded ${name} (${bytes(blob.size)}).`);
    } catch (err) {
      setNotice('');
      setError(err);
    }
  };
  const remove = async (e: DirEntry): Promise<void> => {
    const path = join(dir, e.name);
    if (!confirm(`Delete ${path}${e.type === 'dir' ? ' and everything in it' : ''}?`)) return;
    try {
      await api(sbxPath(sandboxId, `/files?path=${encodeURIComponent(path)}`), { method: 'DELETE' });
      setNotice(`Deleted ${path}.`);
      setTick((t) => t + 1);
    } catch (err) {
      setError(err);
    }
  };
  return (
    <div>
      <h2>Files</h2>
      <nav aria-label="Folder" class="crumbs">
        <ol>
          <li>
            <button type="button" class="link" onClick={() => setDir('/')}>
              /
            </button>
          </li>
          {parts.map((p, i) => (
            <li key={i}>
              <button type="button" class="link" aria-current={i === parts.length - 1 ? 'location' : undefined} onClick={() => setDir(`/${parts.slice(0, i + 1).join('/')}`)}>
                {p}
              </button>
            </li>
          ))}
        </ol>
      </nav>
      <div class="actions">
        <label class="upload">
          Upload file
          <input type="file" multiple ref={fileInput} onChange={() => void upload()} />
        </label>
        <button type="button" onClick={() => setTick((t) => t + 1)}>
          Refresh
        </button>
      </div>
      <Status>{notice}</Status>
      <ErrorBox error={error} />
      {entries === null ? (
        <Status>Loading…</Status>
      ) : entries.length === 0 ? (
        <p class="empty">This folder is empty.</p>
      ) : (
        <table class="files">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Size</th>
              <th scope="col">Modified</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.name}>
                <th scope="row" class="mono">
                  {e.type === 'dir' ? (
                    <button type="button" class="link" onClick={() => setDir(join(dir, e.name))}>
                      {e.name}/
                    </button>
                  ) : (
                    e.name + (e.type === 'symlink' ? ' →' : '')
                  )}
                </th>
                <td>{e.type === 'dir' ? '—' : bytes(e.size)}</td>
                <td title={e.mtime}>{new Date(e.mtime).toLocaleString()}</td>
                <td class="row-actions">
                  {e.type === 'file' ? (
                    <button type="button" onClick={() => void download(e.name)} aria-label={`Download ${e.name}`}>
                      Download
                    </button>
                  ) : null}
                  <button type="button" class="danger" onClick={() => void remove(e)} aria-label={`Delete ${e.name}`}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
