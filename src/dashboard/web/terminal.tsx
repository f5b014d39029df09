/**
 * A browser terminal: xterm.js over the daemon's PTY WebSocket. POST .../terminals with the fitted
 * size, then attach with the token as a subprotocol; binary frames are bytes both ways, text frames
 * JSON control (resize from us, exit from the daemon).
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import type { Terminal as TerminalInfo } from '../../contract/terminals.js';
import { api, sbxPath, socketProtocols, wsUrl } from './api.js';
import { ErrorBox, Status } from './ui.js';

type Phase = { kind: 'opening' } | { kind: 'open' } | { kind: 'exited'; code: number } | { kind: 'closed'; why: string } | { kind: 'failed'; error: unknown };

export function TerminalView({ sandboxId, running }: { sandboxId: string; running: boolean }) {
  const host = useRef<HTMLDivElement>(null);
  const [phase, setPhase] = useState<Phase>({ kind: 'opening' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const el = host.current;
    if (!el || !running) return undefined;
    const dark = matchMedia('(prefers-color-scheme: dark)').matches;
    const term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: dark ? { background: '#0d1117', foreground: '#e6edf3' } : { background: '#ffffff', foreground: '#1f2328', cursor: '#1f2328', selectionBackground: '#b6d7ff' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    try {
      fit.fit();
    } catch {
      // not laid out yet: the first resize fits it
    }
    let ws: WebSocket | undefined;
    let disposed = false;
    const enc = new TextEncoder();
    const sendResize = (): void => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    };
    const ro = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        // hidden
      }
    });
    ro.observe(el);
    const onResize = term.onResize(sendResize);
    const onData = term.onData((d) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    const onBinary = term.onBinary((d) => {
      if (ws?.readyState !== WebSocket.OPEN) return;
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
      ws.send(b);
    });
    setPhase({ kind: 'opening' });
    void (async () => {
      try {
        const t = await api<TerminalInfo>(sbxPath(sandboxId, '/terminals'), { method: 'POST', body: { cols: term.cols, rows: term.rows } });
        if (disposed) return;
        ws = new WebSocket(wsUrl(sbxPath(sandboxId, `/terminals/${encodeURIComponent(t.terminalId)}/attach`)), socketProtocols());
        ws.binaryType = 'arraybuffer';
        let exited = false;
        ws.onopen = () => {
          setPhase({ kind: 'open' });
          sendResize();
          term.focus();
        };
        ws.onmessage = (ev: MessageEvent) => {
          if (ev.data instanceof ArrayBuffer) {
            term.write(new Uint8Array(ev.data));
            return;
          }
          try {
            const msg = JSON.parse(String(ev.data)) as { type?: string; exitCode?: number };
            if (msg.type === 'exit') {
              exited = true;
              setPhase({ kind: 'exited', code: msg.exitCode ?? -1 });
              term.write(`\r\n\x1b[2m[the shell exited with code ${msg.exitCode}]\x1b[0m\r\n`);
            }
          } catch {
            // not ours
          }
        };
        ws.onclose = (ev: CloseEvent) => {
          if (!disposed && !exited) setPhase({ kind: 'closed', why: ev.reason || (ev.code === 1006 ? 'the connection was refused or lost' : `closed (${ev.code})`) });
        };
      } catch (err) {
        if (!disposed) setPhase({ kind: 'failed', error: err });
      }
    })();
    return () => {
      disposed = true;
      ro.disconnect();
      onResize.dispose();
      onData.dispose();
      onBinary.dispose();
      ws?.close(1000, 'the page closed the terminal');
      term.dispose();
    };
  }, [sandboxId, attempt, running]);

  if (!running) return <p class="empty">The terminal needs a running sandbox.</p>;
  return (
    <div class="terminal-wrap">
      <div class="term-bar">
        <Status>
          {phase.kind === 'opening'
            ? 'Opening a terminal…'
            : phase.kind === 'open'
              ? 'Connected: a login shell in the sandbox.'
              : phase.kind === 'exited'
                ? `The shell exited with code ${phase.code}.`
                : phase.kind === 'closed'
                  ? `Disconnected: ${phase.why}.`
                  : 'The terminal could not be opened.'}
        </Status>
        <button type="button" onClick={() => setAttempt((a) => a + 1)}>
          {phase.kind === 'open' ? 'New terminal' : 'Reconnect'}
        </button>
      </div>
      {phase.kind === 'failed' ? <ErrorBox error={phase.error} /> : null}
      <div class="terminal" ref={host} role="application" aria-label="Terminal: a shell in the sandbox" />
    </div>
  );
}
