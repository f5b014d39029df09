/**
 * A sandbox's desktop through noVNC (loaded when first shown): GET/POST /v1/sandboxes/{id}/desktop to
 * find or start it, then the VNC WebSocket .../desktop/vnc with the token as a subprotocol.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, sbxPath, socketProtocols, wsUrl, type Sandbox } from './api.js';
import { ErrorBox, Status } from './ui.js';
import { noRoute } from './usage.js';
import type { Desktop } from '../../contract/desktop.js';

export function DesktopTab({ sandbox }: { sandbox: Sandbox }) {
  const [started, setStarted] = useState(false);
  const [desktop, setDesktop] = useState<Desktop | undefined>();
  const [error, setError] = useState<unknown>();
  const [status, setStatus] = useState('');
  const screen = useRef<HTMLDivElement>(null);
  const id = sandbox.id;

  const start = async (): Promise<void> => {
    setError(undefined);
    setStatus('Starting the desktop…');
    try {
      setDesktop(await api<Desktop>(sbxPath(id, '/desktop'), { method: 'POST', body: {} }));
      setStarted(true);
    } catch (err) {
      setStatus('');
      setError(noRoute(err) ? new Error('This daemon has no desktop routes (POST /v1/sandboxes/{id}/desktop).') : err);
    }
  };

  useEffect(() => {
    // Opening this tab of a desktop sandbox is asking to see it: connect, starting it if needed.
    api<Desktop>(sbxPath(id, '/desktop'))
      .then((d) => {
        setDesktop(d);
        if (d.running) setStarted(true);
        else if (d.available && sandbox.state === 'running') void start();
      })
      .catch((err: unknown) => setError(noRoute(err) ? new Error('This daemon has no desktop routes (GET /v1/sandboxes/{id}/desktop).') : err));
  }, [id]);

  useEffect(() => {
    if (!started || !screen.current) return undefined;
    let rfb: { disconnect(): void; scaleViewport: boolean; addEventListener: EventTarget['addEventListener'] } | undefined;
    let gone = false;
    setStatus('Connecting to the desktop…');
    void import('@novnc/novnc')
      .then(({ default: RFB }) => {
        if (gone || !screen.current) return;
        const r = new RFB(screen.current, wsUrl(desktop?.vncPath ?? sbxPath(id, '/desktop/vnc')), { wsProtocols: socketProtocols() });
        r.scaleViewport = true;
        r.addEventListener('connect', () => setStatus('Connected to the desktop.'));
        r.addEventListener('disconnect', (e: Event) => setStatus((e as CustomEvent<{ clean: boolean }>).detail?.clean ? 'Disconnected.' : 'The desktop connection failed or was lost.'));
        rfb = r;
      })
      .catch((err: unknown) => setError(err));
    return () => {
      gone = true;
      rfb?.disconnect();
    };
  }, [started, id]);

  const noDesktop = desktop !== undefined && !desktop.available && !desktop.paused;
  return (
    <div>
      <h2>Desktop</h2>
      {noDesktop ? (
        <p class="empty">
          This sandbox&apos;s image ({sandbox.image}) has no desktop. Build one with <code>agentbox image build desktop</code> and create a sandbox with the <code>desktop</code> profile.
        </p>
      ) : null}
      {!started && !noDesktop ? (
        <button type="button" class="primary" disabled={sandbox.state !== 'running'} onClick={() => void start()}>
          Start desktop
        </button>
      ) : null}
      <Status>{status}</Status>
      <ErrorBox error={error} />
      {desktop?.running && desktop.width ? <p class="muted">{`${desktop.width}×${desktop.height}; the agent drives Chromium through its DevTools port ${desktop.devtoolsPort} (openPort, port-forward)`}</p> : null}
      <div class="desktop" ref={screen} aria-label="Remote desktop" />
    </div>
  );
}
