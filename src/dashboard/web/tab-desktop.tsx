/**
 * A sandbox's desktop through noVNC (loaded when first shown): GET/POST /v1/sandboxes/{id}/desktop to
 * find or start it, then the VNC WebSocket .../desktop/vnc with the token as a subprotocol.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, sbxPath, socketProtocols, wsUrl, type Sandbox } from './api.js';
import { ErrorBox, Status } from './ui.js';
import { noRoute } from './usage.js';

export function DesktopTab({ sandbox }: { sandbox: Sandbox }) {
  const [started, setStarted] = useState(false);
  const [error, setError] = useState<unknown>();
  const [status, setStatus] = useState('');
  const screen = useRef<HTMLDivElement>(null);
  const id = sandbox.id;

  useEffect(() => {
    // A desktop image's desktop may run already: look, and connect if so.
    api<{ running?: boolean; state?: string }>(sbxPath(id, '/desktop'))
      .then((d) => {
        if (d.running || d.state === 'running') setStarted(true);
      })
      .catch((err) => {
        if (noRoute(err)) setError(new Error('This daemon has no desktop routes (GET /v1/sandboxes/{id}/desktop).'));
      });
  }, [id]);

  useEffect(() => {
    if (!started || !screen.current) return undefined;
    let rfb: { disconnect(): void; scaleViewport: boolean; addEventListener: EventTarget['addEventListener'] } | undefined;
    let gone = false;
    setStatus('Connecting to the desktop…');
    void import('@novnc/novnc')
      .then(({ default: RFB }) => {
        if (gone || !screen.current) return;
        const r = new RFB(screen.current, wsUrl(sbxPath(id, '/desktop/vnc')), { wsProtocols: socketProtocols() });
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

  const start = async (): Promise<void> => {
    setError(undefined);
    setStatus('Starting the desktop…');
    try {
      await api(sbxPath(id, '/desktop'), { method: 'POST', body: {} });
      setStarted(true);
    } catch (err) {
      setStatus('');
      setError(noRoute(err) ? new Error('This daemon has no desktop routes (POST /v1/sandboxes/{id}/desktop).') : err);
    }
  };
  return (
    <div>
      <h2>Desktop</h2>
      {!started ? (
        <button type="button" class="primary" disabled={sandbox.state !== 'running'} onClick={() => void start()}>
          Start desktop
        </button>
      ) : null}
      <Status>{status}</Status>
      <ErrorBox error={error} />
      <div class="desktop" ref={screen} aria-label="Remote desktop" />
    </div>
  );
}
