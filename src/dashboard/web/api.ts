/**
 * The dashboard's one way to the daemon: same-origin fetches with the signed-in token as a bearer,
 * and errors in the API's shape `{error:{code,message,hint}}` turned into ApiError. The token lives
 * in sessionStorage (or localStorage when remembered); never in a URL.
 */
import type { Sandbox } from '../../contract/model.js';

const KEY = 'agentbox.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** What the signed-in session holds: a token, or none for a daemon that needs none (anonymous loopback, the CLI's proxy). */
export interface Session {
  token: string | null;
}

let session: Session | null = null;

export function currentSession(): Session | null {
  return session;
}

export function storedToken(): string | null {
  try {
    return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function signIn(token: string | null, remember: boolean): void {
  session = { token };
  try {
    if (token === null) return;
    sessionStorage.setItem(KEY, token);
    if (remember) localStorage.setItem(KEY, token);
  } catch {
    // Storage refused (private mode): the session lasts as long as the page.
  }
}

export function signOut(): void {
  session = null;
  try {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}

function authHeaders(token: string | null | undefined = session?.token): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function errorOf(res: Response): Promise<ApiError> {
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  const e = (body as { error?: { code?: string; message?: string; hint?: string } } | undefined)?.error;
  return new ApiError(res.status, e?.code ?? 'http_error', e?.message ?? `${res.status} ${res.statusText}`, e?.hint);
}

export interface RequestOpts {
  method?: string;
  body?: unknown;
  /** Raw bytes (a file upload) instead of JSON. */
  raw?: Blob | ArrayBuffer;
  signal?: AbortSignal;
  /** Use this token instead of the session's (the sign-in probe). */
  token?: string | null;
}

async function send(path: string, opts: RequestOpts): Promise<Response> {
  const headers: Record<string, string> = { ...authHeaders(opts.token === undefined ? session?.token : opts.token) };
  let body: BodyInit | undefined;
  if (opts.raw !== undefined) {
    headers['content-type'] = 'application/octet-stream';
    body = opts.raw;
  } else if (opts.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  const res = await fetch(path, { method: opts.method ?? 'GET', headers, ...(body !== undefined ? { body } : {}), ...(opts.signal ? { signal: opts.signal } : {}), cache: 'no-store', credentials: 'omit' });
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401 && opts.token === undefined) onUnauthorized?.(err);
    throw err;
  }
  return res;
}

let onUnauthorized: ((err: ApiError) => void) | undefined;
/** Called when the session's token is refused (revoked, daemon restarted with another policy). */
export function setUnauthorizedHandler(fn: (err: ApiError) => void): void {
  onUnauthorized = fn;
}

export async function api<T>(path: string, opts: RequestOpts = {}): Promise<T> {
  const res = await send(path, opts);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export async function apiText(path: string, opts: RequestOpts = {}): Promise<string> {
  return (await send(path, opts)).text();
}

export async function apiBlob(path: string, opts: RequestOpts = {}): Promise<Blob> {
  return (await send(path, opts)).blob();
}

/** An API path with its segments encoded. */
export function sbxPath(id: string, rest = ''): string {
  return `/v1/sandboxes/${encodeURIComponent(id)}${rest}`;
}

export async function listSandboxes(signal?: AbortSignal): Promise<Sandbox[]> {
  return (await api<{ sandboxes: Sandbox[] }>('/v1/sandboxes', signal ? { signal } : {})).sandboxes;
}

/** base64url of a UTF-8 string, for the bearer WebSocket subprotocol. */
export function base64url(s: string): string {
  const bytes = new TextEncoder().encode(s);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The subprotocols a page's WebSocket offers: agentbox.v1, and the token when there is one. */
export function socketProtocols(): string[] {
  const token = session?.token;
  return token ? ['agentbox.v1', `agentbox.bearer.${base64url(token)}`] : ['agentbox.v1'];
}

export function wsUrl(path: string): string {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${path}`;
}

export function describeError(err: unknown): { message: string; hint?: string } {
  if (err instanceof ApiError) return err.hint ? { message: err.message, hint: err.hint } : { message: err.message };
  if (err instanceof Error) return { message: err.message };
  return { message: String(err) };
}

export type { Sandbox };
