/**
 * The desktop routes (ARCHITECTURE.md, "Desktops"): look at and start a sandbox's desktop, and see
 * it through a WebSocket that carries VNC (RFB) as binary messages, what websockify does for noVNC.
 *
 * `GET /v1/sandboxes/{id}/desktop/vnc` (WebSocket) starts the desktop when it does not run, then
 * joins the socket to Xvnc on 127.0.0.1:5900 inside the sandbox through `openPort`: the sandbox's
 * network stays closed, and Xvnc's lack of a password is safe because only the daemon, for an
 * authenticated caller with the exec scope, reaches it. A page authenticates as for any API
 * WebSocket: subprotocols `agentbox.v1, agentbox.bearer.<base64url token>` (noVNC's `wsProtocols`).
 * Errors come before the upgrade, as plain HTTP: 404 (unknown or another tenant's sandbox), 409 (its
 * image has no desktop), 401, 403.
 */
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { DesktopSchema } from '../contract/desktop.js';
import { chooseSocketProtocol } from './auth.js';
import { sendJson } from './http-util.js';
import type { RouteCtx, UpgradeCtx, UpgradeRouteFn } from './routes.js';
import type { RouteFn } from './volume-routes.js';

/** One message from the viewer: RFB client messages are small (a ClientCutText is the largest). */
const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Screen updates queued for a slow viewer: past HIGH the VNC side is paused until below LOW. */
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;
const PING_MS = 30_000;

const sockets = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES, perMessageDeflate: false, handleProtocols: chooseSocketProtocol });

function id(ctx: { params: Record<string, string> }): string {
  return ctx.params.id as string;
}

export function registerDesktopRoutes(route: RouteFn, upgradeRoute: UpgradeRouteFn): void {
  route('GET', '/v1/sandboxes/{id}/desktop', { summary: "The sandbox's desktop: whether its image has one and it runs, its screen size, the VNC WebSocket route and Chromium's DevTools port (runs nothing, wakes nothing)", response: DesktopSchema }, async (ctx: RouteCtx) => {
    sendJson(ctx.res, 200, await ctx.manager.desktop(id(ctx), ctx.caller));
  });

  route('POST', '/v1/sandboxes/{id}/desktop', { summary: "Start the sandbox's desktop unless it runs (agentbox-desktop start, an exec of its history); answers once its VNC server accepts; 409 when the image has no desktop", response: DesktopSchema }, async (ctx: RouteCtx) => {
    sendJson(ctx.res, 200, await ctx.manager.ensureDesktop(id(ctx), ctx.caller));
  });

  upgradeRoute('/v1/sandboxes/{id}/desktop/vnc', { summary: "The sandbox's desktop over VNC (WebSocket, binary messages are RFB both ways: for noVNC); starts the desktop when needed; 409 when the image has none", upgrade: 'websocket' }, async (ctx: UpgradeCtx) => {
    // Before the upgrade, so a wrong id, no desktop or a desktop that fails to start is plain HTTP.
    const conn = await ctx.manager.openDesktop(id(ctx), ctx.caller);
    if (!ctx.socket.writable) {
      conn.destroy();
      return;
    }
    // A handshake ws refuses (a 400) or a client gone before it completed never reaches the callback.
    let relayed = false;
    ctx.socket.once('close', () => {
      if (!relayed) conn.destroy();
    });
    sockets.handleUpgrade(ctx.req, ctx.socket, ctx.head, (ws) => {
      relayed = true;
      relay(ws, conn);
    });
  });
}

/** RFB bytes both ways; either side's end ends both; flow control both ways. */
function relay(ws: WebSocket, conn: Duplex): void {
  let alive = true;
  let ended = false;
  const end = (code: number, reason: string): void => {
    if (ended) return;
    ended = true;
    clearInterval(ping);
    conn.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason);
  };
  // A viewer whose network died answers no ping: cut it rather than keep the sandbox busy.
  const ping = setInterval(() => {
    if (!alive) {
      ws.terminate();
      end(1001, 'no pong');
      return;
    }
    alive = false;
    ws.ping();
  }, PING_MS);
  ping.unref();
  ws.on('pong', () => {
    alive = true;
  });

  // VNC → viewer: pause reading the VNC side while the viewer is behind.
  const resumeWhenDrained = (): void => {
    if (conn.isPaused() && ws.bufferedAmount < LOW_WATER) conn.resume();
  };
  conn.on('data', (chunk: Buffer) => {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(chunk, { binary: true }, resumeWhenDrained);
    if (ws.bufferedAmount > HIGH_WATER) conn.pause();
  });
  // Viewer → VNC: stop reading the socket while the VNC side does not take more.
  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (!isBinary) {
      end(1003, 'binary messages only: RFB bytes');
      return;
    }
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (!conn.write(bytes) && !ws.isPaused) {
      ws.pause();
      conn.once('drain', () => ws.resume());
    }
  });
  conn.on('end', () => end(1000, 'the VNC server closed the connection'));
  conn.on('close', () => end(1000, 'the VNC server closed the connection'));
  conn.on('error', () => end(1011, 'the connection to the VNC server failed'));
  ws.on('close', () => end(1000, ''));
  ws.on('error', () => end(1011, ''));
}
