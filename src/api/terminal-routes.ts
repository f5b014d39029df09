/**
 * The terminal routes (ARCHITECTURE.md, "Terminals and ports"): open one with POST, attach with a WebSocket.
 *
 * On the WebSocket, binary messages are the terminal's bytes both ways: what it shows (its recent
 * output first, then live), and what is typed. Text messages are JSON: from the client
 * `{"type":"resize","cols":C,"rows":R}` or `{"type":"signal","signal":"INT"}`; from the daemon
 * `{"type":"exit","exitCode":N}` once the command ended, after which it closes the socket (1000).
 * Closing the socket detaches; the terminal goes on (see OpenTerminalRequest.keepAlive).
 */
import { z } from 'zod';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { TerminalControlSchema, TerminalResizeSchema, TerminalSchema, OpenTerminalRequestSchema, type TerminalEvent } from '../contract/terminals.js';
import { parseWith, readJson, sendJson } from './http-util.js';
import type { RouteCtx, UpgradeCtx, UpgradeRouteFn } from './routes.js';
import type { RouteFn } from './volume-routes.js';
import type { TerminalAttachment } from '../core/manager/terminals.js';
import { chooseSocketProtocol } from './auth.js';

/** A typed burst larger than this is refused by closing the socket (1009). */
const MAX_MESSAGE_BYTES = 1024 * 1024;
/** A client that reads nothing while the terminal writes is cut past this much queued output. */
const MAX_QUEUED_OUTPUT = 8 * 1024 * 1024;
const PING_MS = 30_000;

const sockets = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES, perMessageDeflate: false, handleProtocols: chooseSocketProtocol });

function id(ctx: { params: Record<string, string> }): string {
  return ctx.params.id as string;
}

function terminalId(ctx: { params: Record<string, string> }): string {
  return ctx.params.terminalId as string;
}

export function registerTerminalRoutes(route: RouteFn, upgradeRoute: UpgradeRouteFn): void {
  route('POST', '/v1/sandboxes/{id}/terminals', { summary: 'Open a terminal: a command (a login shell by default) on a pseudo-terminal inside the sandbox; attach to it with the WebSocket route', body: OpenTerminalRequestSchema, response: TerminalSchema, status: 201 }, async (ctx: RouteCtx) => {
    const body = await readJson(ctx.req, OpenTerminalRequestSchema);
    sendJson(ctx.res, 201, await ctx.manager.openTerminal(id(ctx), body, ctx.caller));
  });

  route('GET', '/v1/sandboxes/{id}/terminals', { summary: 'The sandbox\'s terminals: running ones and those that ended in the last minute', response: z.object({ terminals: z.array(TerminalSchema) }) }, async (ctx) => {
    sendJson(ctx.res, 200, { terminals: ctx.manager.listTerminals(id(ctx), ctx.caller) });
  });

  route('GET', '/v1/sandboxes/{id}/terminals/{terminalId}', { summary: 'One terminal', response: TerminalSchema }, async (ctx) => {
    sendJson(ctx.res, 200, ctx.manager.getTerminal(id(ctx), terminalId(ctx), ctx.caller));
  });

  route('POST', '/v1/sandboxes/{id}/terminals/{terminalId}/resize', { summary: 'Resize a terminal (also a WebSocket message)', body: TerminalResizeSchema, response: TerminalSchema }, async (ctx) => {
    const body = await readJson(ctx.req, TerminalResizeSchema);
    sendJson(ctx.res, 200, ctx.manager.resizeTerminal(id(ctx), terminalId(ctx), body.cols, body.rows, ctx.caller));
  });

  route('DELETE', '/v1/sandboxes/{id}/terminals/{terminalId}', { summary: 'Hang up a terminal: its session gets SIGHUP, then SIGKILL 2 s later', response: TerminalSchema }, async (ctx) => {
    sendJson(ctx.res, 200, ctx.manager.closeTerminal(id(ctx), terminalId(ctx), ctx.caller));
  });

  upgradeRoute('/v1/sandboxes/{id}/terminals/{terminalId}/attach', { summary: 'Attach to a terminal (WebSocket): binary messages are its bytes both ways, text messages JSON control (resize, signal; exit from the daemon)', upgrade: 'websocket' }, async (ctx: UpgradeCtx) => {
    // Checked before the upgrade, so a wrong id is a plain 404.
    const attachment = ctx.manager.attachTerminal(id(ctx), terminalId(ctx), ctx.caller);
    // A handshake ws refuses (no key, another version: a 400) or a client gone before it completed
    // never reaches the callback: let go of the attachment, or the terminal counts a client forever
    // and is never hung up.
    let relayed = false;
    ctx.socket.once('close', () => {
      if (!relayed) attachment.detach();
    });
    sockets.handleUpgrade(ctx.req, ctx.socket, ctx.head, (ws) => {
      relayed = true;
      relay(ws, attachment);
    });
  });
}

function relay(ws: WebSocket, a: TerminalAttachment): void {
  let open = true;
  const detach = (): void => {
    if (!open) return;
    open = false;
    clearInterval(ping);
    a.detach();
  };
  const ping = setInterval(() => ws.ping(), PING_MS);
  ping.unref();
  const send = (data: Buffer): void => {
    if (ws.readyState !== ws.OPEN) return;
    if (ws.bufferedAmount > MAX_QUEUED_OUTPUT) {
      ws.close(1008, 'too much output queued: the client is not reading');
      return;
    }
    ws.send(data, { binary: true });
  };
  if (a.replay.length > 0) send(a.replay);
  a.on('output', send);
  a.on('exit', (exitCode) => {
    const ev: TerminalEvent = { type: 'exit', exitCode };
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(ev), () => ws.close(1000, 'the command ended'));
    detach();
  });
  // Nothing a client sends may throw out of here: an exception in an event handler would end the daemon.
  ws.on('message', (data: RawData, isBinary: boolean) => {
    try {
      onMessage(data, isBinary);
    } catch {
      ws.close(1011, 'the daemon could not handle that message');
    }
  });
  const onMessage = (data: RawData, isBinary: boolean): void => {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary) {
      a.write(bytes);
      return;
    }
    let control;
    try {
      control = parseWith(TerminalControlSchema, JSON.parse(bytes.toString('utf8')));
    } catch (err) {
      ws.close(1007, closeReason(`not a control message: ${(err as Error).message}`));
      return;
    }
    if (control.type === 'resize') a.resize(control.cols, control.rows);
    else a.signal(control.signal);
  };
  ws.on('close', detach);
  ws.on('error', detach);
}

/**
 * A close frame's reason is at most 123 bytes, and ws throws on a longer one: the reason often echoes
 * the client's message (an unknown key), so cut it by bytes, not characters. Thrown from a message
 * handler, that RangeError would end the daemon.
 */
function closeReason(text: string): string {
  let s = text.slice(0, 123);
  while (Buffer.byteLength(s) > 123) s = s.slice(0, -1);
  return s;
}
