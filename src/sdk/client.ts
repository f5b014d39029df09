/**
 * Typed client for the agentbox HTTP API, over TCP (`http://host:port`) or the daemon's Unix
 * socket (`unix:/path/agentbox.sock`). Errors come back as the typed classes of contract/errors.
 */
import { request, type IncomingMessage } from 'node:http';
import type { CreatedSandboxToken, CreateSandboxTokenRequest, SandboxToken } from '../contract/tokens.js';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { context, isSpanContextValid, trace } from '@opentelemetry/api';
import { AgentboxError, errorFromWire, RuntimeUnavailableError } from '../contract/errors.js';
import type { DaemonInfo } from '../contract/daemon.js';
import type { SandboxUsageReport, UsageOverview } from '../contract/usage.js';
import type { WebhookDelivery } from '../contract/webhooks.js';
import type { Desktop } from '../contract/desktop.js';
import type { DeniedHost, DirEntry, Egress, EgressEvent, ExecRecord, ExecResult, ExecSummary, KillResult, ProcessInfo, Sandbox, Snapshot } from '../contract/model.js';
import type { CreateSandboxRequest, CreateSnapshotRequest, ExecRequest, ForkRequest, KillProcessRequest, PauseRequest } from '../contract/requests.js';
import type { ImageInfo } from '../contract/images.js';
import type { CreateVolumeRequest, Volume } from '../contract/volumes.js';
import { SandboxRef } from './sandbox.js';
import type { OpenTerminalRequest, Terminal } from '../contract/terminals.js';
import type { GrantPortAccessRequest, PortAccess } from '../contract/ports.js';
import { connectTerminal, type TerminalConnection } from './terminal.js';

export interface ClientOpts {
  /** `http://127.0.0.1:8080` or `unix:/home/me/.agentbox/agentbox.sock`. @default AGENTBOX_URL */
  url: string;
  /** Bearer token. @default AGENTBOX_TOKEN */
  token?: string;
}

export type StreamEvent =
  | { type: 'start'; execId: string }
  | { type: 'stdout'; data: Buffer }
  | { type: 'stderr'; data: Buffer }
  | { type: 'exit'; result: ExecSummary };


export interface EgressLog {
  sandboxId: string;
  egress: Egress;
  log: EgressEvent[];
  denied?: DeniedHost[];
}

interface Target {
  socketPath?: string;
  host?: string;
  port?: number;
}

function parseTarget(url: string): Target {
  if (url.startsWith('unix:')) return { socketPath: url.slice('unix:'.length) };
  const u = new URL(url);
  if (u.protocol !== 'http:') throw new AgentboxError('bad_request', `unsupported URL ${url}`, { hint: 'use http://HOST:PORT or unix:/path/to/agentbox.sock' });
  return { host: u.hostname, port: Number(u.port || 80) };
}

export type { ExecRecord };

/**
 * W3C trace context of the caller's active span, so the daemon's spans join the caller's trace:
 * `traceparent` (and `tracestate`) when the application uses OpenTelemetry and a span is active,
 * nothing otherwise. Formatted here, not through the global propagator: an application may have
 * registered none (or another format) while still having active spans.
 */
export function traceHeaders(): Record<string, string> {
  const sc = trace.getSpanContext(context.active());
  if (!sc || !isSpanContextValid(sc)) return {};
  const out: Record<string, string> = { traceparent: `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}` };
  const state = sc.traceState?.serialize();
  if (state) out.tracestate = state;
  return out;
}

export class AgentboxClient {
  private readonly target: Target;
  private lastServerVersion: string | undefined;

  constructor(private readonly opts: ClientOpts) {
    this.target = parseTarget(opts.url);
  }

  get url(): string {
    return this.opts.url;
  }

  /** The daemon's `agentbox-version` (version+build) from the last response, where it sends one (its Unix socket). */
  get serverVersion(): string | undefined {
    return this.lastServerVersion;
  }

  /**
   * A connection to a server listening on PORT inside the sandbox (its 127.0.0.1 or ::1), made from
   * inside: the sandbox needs no network. A ConflictError when nothing listens there.
   */
  openPort(id: string, port: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const req = request({
        ...this.target,
        method: 'GET',
        path: `/v1/sandboxes/${encodeURIComponent(id)}/ports/${encodeURIComponent(String(port))}/connect`,
        headers: { ...traceHeaders(), connection: 'Upgrade', upgrade: 'tcp', ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}) },
      });
      req.on('upgrade', (_res, socket: Socket, head: Buffer) => {
        if (head.length > 0) socket.unshift(head);
        resolve(socket);
      });
      req.on('response', (res) => {
        this.check(res).then(
          () => reject(new AgentboxError('internal', `the daemon did not open port ${port} (HTTP ${res.statusCode})`)),
          reject,
        );
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') reject(new RuntimeUnavailableError(`no agentbox daemon answers at ${this.opts.url}`, { hint: 'start one with agentbox serve' }));
        else reject(err);
      });
      req.end();
    });
  }

  /** Let browsers reach PORT through the daemon's port proxy: a new access token (shown once), or `public`. */
  grantPortAccess(id: string, port: number, req: GrantPortAccessRequest = {}): Promise<PortAccess> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/ports/${encodeURIComponent(String(port))}/access`, req);
  }

  /**
   * A short-lived token scoped to this sandbox (read, exec, files; at most 1h, default 15m), shown
   * once; `inject: true` also writes it into the sandbox. Code inside a sandbox with egress calls the
   * API at `apiUrl` (http://agentbox.internal) with it.
   */
  createToken(id: string, req: CreateSandboxTokenRequest): Promise<CreatedSandboxToken> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/tokens`, req);
  }

  /** The sandbox's tokens, without their secrets. */
  async listTokens(id: string): Promise<SandboxToken[]> {
    return (await this.json<{ tokens: SandboxToken[] }>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/tokens`)).tokens;
  }

  /** Revoke one of the sandbox's tokens now. */
  revokeToken(id: string, tokenId: string): Promise<SandboxToken> {
    return this.json('DELETE', `/v1/sandboxes/${encodeURIComponent(id)}/tokens/${encodeURIComponent(tokenId)}`);
  }

  /** Revoke every access token of PORT and make it private again; how many grants went. */
  async revokePortAccess(id: string, port: number): Promise<number> {
    return (await this.json<{ revoked: number }>('DELETE', `/v1/sandboxes/${encodeURIComponent(id)}/ports/${encodeURIComponent(String(port))}/access`)).revoked;
  }

  /** Open a terminal in a sandbox (a login shell unless `cmd` says otherwise); attach to it with `attachTerminal`. */
  openTerminal(id: string, req: OpenTerminalRequest = {}): Promise<Terminal> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/terminals`, req);
  }

  async listTerminals(id: string): Promise<Terminal[]> {
    return (await this.json<{ terminals: Terminal[] }>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/terminals`)).terminals;
  }

  /** Hang up a terminal. */
  closeTerminal(id: string, terminalId: string): Promise<Terminal> {
    return this.json('DELETE', `/v1/sandboxes/${encodeURIComponent(id)}/terminals/${encodeURIComponent(terminalId)}`);
  }

  /** Attach to a terminal: its recent output, then live output as 'data' events. */
  attachTerminal(id: string, terminalId: string): Promise<TerminalConnection> {
    const path = `/v1/sandboxes/${encodeURIComponent(id)}/terminals/${encodeURIComponent(terminalId)}/attach`;
    const url = this.target.socketPath ? `ws+unix:${this.target.socketPath}:${path}` : `ws://${this.target.host}:${this.target.port}${path}`;
    return connectTerminal(url, this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}, async (res) => {
      await this.check(res);
      throw new AgentboxError('internal', `the daemon refused the terminal's WebSocket (HTTP ${res.statusCode})`);
    });
  }

  /**
   * A running sandbox's usage now (CPU of its limit, memory, processes, disk) and its samples of the
   * last minutes, oldest first. Reading keeps it sampled for a minute: the first call has no samples yet.
   */
  usage(id: string): Promise<SandboxUsageReport> {
    return this.json('GET', `/v1/sandboxes/${encodeURIComponent(id)}/usage`);
  }

  /** Every running sandbox you see: its latest usage sample and its last `points` CPU and memory samples (default 30). */
  usageAll(opts: { points?: number } = {}): Promise<UsageOverview> {
    return this.json('GET', `/v1/usage${opts.points !== undefined ? `?points=${encodeURIComponent(String(opts.points))}` : ''}`);
  }

  /** The daemon itself: pid, version, uptime, runtimes, sandboxes by state (host operator only). */
  daemonInfo(): Promise<DaemonInfo> {
    return this.json('GET', '/v1/daemon');
  }

  private raw(method: string, path: string, body?: Buffer | Readable, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          ...this.target,
          method,
          path,
          headers: {
            ...traceHeaders(),
            ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
            ...(Buffer.isBuffer(body) ? { 'content-length': String(body.length) } : {}),
            ...headers,
          },
          ...(signal ? { signal } : {}),
        },
        (res) => {
          const version = res.headers['agentbox-version'];
          if (typeof version === 'string') this.lastServerVersion = version;
          resolve(res);
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') {
          reject(new RuntimeUnavailableError(`no agentbox daemon answers at ${this.opts.url}`, { hint: 'start one with agentbox serve, or unset AGENTBOX_URL to use the local daemon' }));
        } else reject(err);
      });
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.on('error', (err) => req.destroy(err));
        body.pipe(req);
      }
    });
  }

  private async check(res: IncomingMessage): Promise<IncomingMessage> {
    if ((res.statusCode ?? 500) < 400) return res;
    const text = await readAll(res);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text.toString('utf8'));
    } catch {
      throw new AgentboxError('internal', `HTTP ${res.statusCode}: ${text.toString('utf8').slice(0, 200)}`);
    }
    const err = (parsed as { error?: Record<string, unknown> }).error;
    throw errorFromWire(err ?? {});
  }

  private async json<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const res = await this.check(await this.raw(method, path, payload, payload ? { 'content-type': 'application/json' } : {}, signal));
    return JSON.parse((await readAll(res)).toString('utf8')) as T;
  }

  create(req: CreateSandboxRequest = {}): Promise<Sandbox> {
    return this.json('POST', '/v1/sandboxes', req);
  }

  /** Create a sandbox and get it as an object with exec/readFile/writeFile/delete. */
  async createSandbox(req: CreateSandboxRequest = {}): Promise<SandboxRef> {
    return new SandboxRef(this, await this.create(req));
  }

  async list(opts: { labels?: Record<string, string>; all?: boolean } = {}): Promise<Sandbox[]> {
    const q = new URLSearchParams();
    if (opts.labels) q.set('labels', Object.entries(opts.labels).map(([k, v]) => `${k}=${v}`).join(','));
    if (opts.all) q.set('all', '1');
    const qs = q.toString();
    return (await this.json<{ sandboxes: Sandbox[] }>('GET', `/v1/sandboxes${qs ? `?${qs}` : ''}`)).sandboxes;
  }

  get(id: string): Promise<Sandbox> {
    return this.json('GET', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }

  delete(id: string): Promise<Sandbox> {
    return this.json('DELETE', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }

  /** Pause a running sandbox (`mode` freeze, or hibernate where the runtime can); any later call resumes it. */
  pause(id: string, req: PauseRequest = {}): Promise<Sandbox> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/pause`, req);
  }

  resume(id: string): Promise<Sandbox> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/resume`);
  }

  stop(id: string): Promise<Sandbox> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/stop`);
  }

  exec(id: string, req: ExecRequest, signal?: AbortSignal): Promise<ExecResult> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/exec`, req, signal);
  }

  /** Output as it happens: `start`, then `stdout`/`stderr` chunks, then one `exit`. */
  async *execStream(id: string, req: ExecRequest, signal?: AbortSignal): AsyncIterable<StreamEvent> {
    const body = Buffer.from(JSON.stringify(req));
    const res = await this.check(
      await this.raw('POST', `/v1/sandboxes/${encodeURIComponent(id)}/exec`, body, { 'content-type': 'application/json', accept: 'text/event-stream' }, signal),
    );
    yield* execEvents(res);
  }

  /** Follow an exec: what it printed so far, then live output until it exits. */
  async *followExec(id: string, execId: string, signal?: AbortSignal): AsyncIterable<StreamEvent> {
    const res = await this.check(
      await this.raw('GET', `/v1/sandboxes/${encodeURIComponent(id)}/execs/${encodeURIComponent(execId)}?follow=1`, undefined, { accept: 'text/event-stream' }, signal),
    );
    yield* execEvents(res);
  }

  async execs(id: string): Promise<ExecRecord[]> {
    return (await this.json<{ execs: ExecRecord[] }>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/execs`)).execs;
  }

  execRecord(id: string, execId: string): Promise<ExecRecord> {
    return this.json('GET', `/v1/sandboxes/${encodeURIComponent(id)}/execs/${encodeURIComponent(execId)}`);
  }

  /** The processes of a running sandbox as seen inside it, each with the exec that started it (`execId`, null for its init). */
  async processes(id: string): Promise<ProcessInfo[]> {
    return (await this.json<{ processes: ProcessInfo[] }>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/processes`)).processes;
  }

  /** The sandbox's desktop (a sandbox of the desktop image): whether it runs, its size, the VNC WebSocket route, Chromium's DevTools port. */
  desktop(id: string): Promise<Desktop> {
    return this.json('GET', `/v1/sandboxes/${encodeURIComponent(id)}/desktop`);
  }

  /** Start the sandbox's desktop unless it runs; resolves once its VNC server accepts. ConflictError when its image has no desktop. */
  startDesktop(id: string): Promise<Desktop> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/desktop`);
  }

  /** Signal one process of a running sandbox by its pid inside it (TERM unless given): ForbiddenError for PID 1, NotFoundError for an unknown pid. */
  killProcess(id: string, pid: number, req: KillProcessRequest = {}): Promise<KillResult> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/processes/${encodeURIComponent(String(pid))}/kill`, req);
  }

  private filePath(id: string, path: string, suffix = ''): string {
    return `/v1/sandboxes/${encodeURIComponent(id)}/files${suffix}?path=${encodeURIComponent(path)}`;
  }

  /** The file's bytes as a stream (never fully in memory). */
  async readFile(id: string, path: string): Promise<Readable> {
    return this.check(await this.raw('GET', this.filePath(id, path)));
  }

  async writeFile(id: string, path: string, data: Buffer | string | Readable): Promise<{ bytes: number }> {
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    const res = await this.check(await this.raw('PUT', this.filePath(id, path), body, { 'content-type': 'application/octet-stream' }));
    return JSON.parse((await readAll(res)).toString('utf8')) as { bytes: number };
  }

  async listDir(id: string, path: string): Promise<DirEntry[]> {
    return (await this.json<{ entries: DirEntry[] }>('GET', this.filePath(id, path, '/list'))).entries;
  }

  async removePath(id: string, path: string): Promise<void> {
    await this.json('DELETE', this.filePath(id, path));
  }

  /** A named volume of the caller's tenant: a filesystem of `sizeMb` (default 1024) that outlives sandboxes. */
  createVolume(name: string, opts: Omit<CreateVolumeRequest, 'name'> = {}): Promise<Volume> {
    return this.json('POST', '/v1/volumes', { name, ...opts });
  }

  async listVolumes(): Promise<Volume[]> {
    return (await this.json<{ volumes: Volume[] }>('GET', '/v1/volumes')).volumes;
  }

  getVolume(name: string): Promise<Volume> {
    return this.json('GET', `/v1/volumes/${encodeURIComponent(name)}`);
  }

  /** ConflictError while a sandbox mounts it. */
  deleteVolume(name: string): Promise<Volume> {
    return this.json('DELETE', `/v1/volumes/${encodeURIComponent(name)}`);
  }

  private volumeFilePath(name: string, path: string, suffix = ''): string {
    return `/v1/volumes/${encodeURIComponent(name)}/files${suffix}?path=${encodeURIComponent(path)}`;
  }

  /** A file of a volume, with no sandbox running; `path` is absolute inside the volume. */
  async readVolumeFile(name: string, path: string): Promise<Readable> {
    return this.check(await this.raw('GET', this.volumeFilePath(name, path)));
  }

  async writeVolumeFile(name: string, path: string, data: Buffer | string | Readable): Promise<{ bytes: number }> {
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    const res = await this.check(await this.raw('PUT', this.volumeFilePath(name, path), body, { 'content-type': 'application/octet-stream' }));
    return JSON.parse((await readAll(res)).toString('utf8')) as { bytes: number };
  }

  async listVolumeDir(name: string, path = '/'): Promise<DirEntry[]> {
    return (await this.json<{ entries: DirEntry[] }>('GET', this.volumeFilePath(name, path, '/list'))).entries;
  }

  async removeVolumePath(name: string, path: string): Promise<void> {
    await this.json('DELETE', this.volumeFilePath(name, path));
  }

  /** The sandbox's egress connection log, newest first; with `denied`, only refusals plus the refused hosts. */
  egressLog(id: string, opts: { denied?: boolean; limit?: number } = {}): Promise<EgressLog> {
    const q = new URLSearchParams();
    if (opts.denied) q.set('denied', '1');
    if (opts.limit) q.set('limit', String(opts.limit));
    const qs = q.toString();
    return this.json('GET', `/v1/sandboxes/${encodeURIComponent(id)}/egress${qs ? `?${qs}` : ''}`);
  }

  /** The tenant's lifecycle webhook deliveries, newest first (filter by sandbox id and state). */
  async webhookDeliveries(opts: { sandboxId?: string; state?: WebhookDelivery['state']; limit?: number } = {}): Promise<WebhookDelivery[]> {
    const q = new URLSearchParams();
    if (opts.sandboxId) q.set('sandbox', opts.sandboxId);
    if (opts.state) q.set('state', opts.state);
    if (opts.limit) q.set('limit', String(opts.limit));
    const qs = q.toString();
    return (await this.json<{ deliveries: WebhookDelivery[] }>('GET', `/v1/webhooks/deliveries${qs ? `?${qs}` : ''}`)).deliveries;
  }

  /** Let a running sandbox reach one more host (HOST, HOST:PORT or *.DOMAIN), from its next connection on. */
  allowEgress(id: string, host: string): Promise<Sandbox> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/egress/allow`, { host });
  }

  /** Snapshot a running sandbox's files (/workspace, /tmp); restore with `create({ snapshot })`. */
  snapshot(id: string, req: CreateSnapshotRequest = {}): Promise<Snapshot> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/snapshots`, req);
  }

  async listSnapshots(): Promise<Snapshot[]> {
    return (await this.json<{ snapshots: Snapshot[] }>('GET', '/v1/snapshots')).snapshots;
  }

  /** By id or name. */
  getSnapshot(ref: string): Promise<Snapshot> {
    return this.json('GET', `/v1/snapshots/${encodeURIComponent(ref)}`);
  }

  deleteSnapshot(ref: string): Promise<Snapshot> {
    return this.json('DELETE', `/v1/snapshots/${encodeURIComponent(ref)}`);
  }

  /** New sandboxes with a copy-on-write copy of a running sandbox's files; it keeps running. */
  async fork(id: string, req: ForkRequest = {}): Promise<Sandbox[]> {
    return (await this.json<{ sandboxes: Sandbox[] }>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/fork`, req)).sandboxes;
  }

  /** Pull a registry image on the daemon's host (operator only); progress as it comes. */
  async pullImage(ref: string, opts: { name?: string; onProgress?: (p: { phase: string; message: string; percent?: number }) => void } = {}): Promise<ImageInfo> {
    const body = Buffer.from(JSON.stringify({ ref, ...(opts.name ? { name: opts.name } : {}) }));
    const res = await this.check(await this.raw('POST', '/v1/images/pull', body, { 'content-type': 'application/json', accept: 'text/event-stream' }));
    for await (const { event, data } of parseSse(res)) {
      const value = JSON.parse(data) as Record<string, unknown>;
      if (event === 'progress') opts.onProgress?.(value as { phase: string; message: string; percent?: number });
      else if (event === 'done') return value as unknown as ImageInfo;
      else if (event === 'error') throw errorFromWire(value);
    }
    throw new AgentboxError('internal', 'the pull stream ended without a result', { hint: 'see the daemon log' });
  }

  /** `checks` (each subsystem and runtime) only for the host's operator: the Unix socket or AGENTBOX_TOKEN. */
  health(): Promise<{ ok: boolean; checks?: Record<string, { ok: boolean; detail?: string }> }> {
    return this.json('GET', '/healthz');
  }
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

async function* execEvents(res: Readable): AsyncIterable<StreamEvent> {
  for await (const { event, data } of parseSse(res)) {
    const value = JSON.parse(data) as Record<string, unknown>;
    if (event === 'start') yield { type: 'start', execId: String(value.execId) };
    else if (event === 'stdout' || event === 'stderr') yield { type: event, data: Buffer.from(String(value.data), 'base64') };
    else if (event === 'exit') yield { type: 'exit', result: value as unknown as ExecSummary };
    else if (event === 'error') throw errorFromWire(value);
  }
}

/** Minimal SSE parser: `event:` and `data:` lines, blank line ends an event. */
async function* parseSse(stream: Readable): AsyncIterable<{ event: string; data: string }> {
  let buf = '';
  let event = 'message';
  let data: string[] = [];
  stream.setEncoding('utf8');
  for await (const chunk of stream as AsyncIterable<string>) {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') {
        if (data.length > 0) yield { event, data: data.join('\n') };
        event = 'message';
        data = [];
      } else if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
    }
  }
}
