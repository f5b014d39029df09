/**
 * The web dashboard (ARCHITECTURE.md, "Dashboard"): the files `npm run build` bundles into
 * dist/dashboard (scripts/build-dashboard.mjs), served at `/` on the daemon's own origin. The page
 * holds no data: everything it shows comes from the API with the signed-in token, so these files
 * need none. Only names found in the assets folder are ever served (no path from the URL reaches the
 * file system); page paths of the client-side router get index.html.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { packageRoot } from '../core/config.js';

/** The built dashboard's folder: dist/dashboard of this package. */
export const DASHBOARD_DIR = join(packageRoot, 'dist', 'dashboard');

/**
 * What the page may load and talk to: only this origin (`connect-src 'self'` covers the same
 * origin's ws: in current browsers). `style-src 'unsafe-inline'`: xterm.js and uPlot set style
 * elements and attributes at run time; scripts stay 'self' only.
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data: blob:",
  "style-src 'self' 'unsafe-inline'",
  "font-src 'self'",
  "worker-src 'self' blob:",
  "object-src 'none'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': DASHBOARD_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.ttf': 'font/ttf',
};

/** Paths the client-side router shows a page at (src/dashboard/web/main.tsx). */
const PAGE_PATHS = /^\/(?:|index\.html|overview|sandboxes|sandboxes\/[A-Za-z0-9_.-]{1,128})\/?$/;
const ASSET_PATH = /^\/assets\/([A-Za-z0-9][A-Za-z0-9._-]{0,200})$/;

interface File {
  body: Buffer;
  type: string;
  etag: string;
}

export interface Dashboard {
  /** Whether this request is the dashboard's (a page or an asset); false lets the API handle it. */
  owns(pathname: string): boolean;
  /** Answers a request owns() took: the file, 304, 404, 405, or a page saying the dashboard is not built. */
  handle(req: IncomingMessage, res: ServerResponse, pathname: string): void;
}

function load(path: string): File {
  const body = readFileSync(path);
  const ext = /\.[a-z0-9]+$/i.exec(path)?.[0]?.toLowerCase() ?? '';
  return { body, type: TYPES[ext] ?? 'application/octet-stream', etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
}

/** The dashboard served from `dir` (default: this package's dist/dashboard), read once, on first use. */
export function createDashboard(dir = DASHBOARD_DIR): Dashboard {
  let files: { index: File; assets: Map<string, File> } | null | undefined;
  const read = (): typeof files => {
    if (files !== undefined) return files;
    try {
      const assets = new Map<string, File>();
      for (const name of readdirSync(join(dir, 'assets'))) if (ASSET_PATH.test(`/assets/${name}`)) assets.set(name, load(join(dir, 'assets', name)));
      files = { index: load(join(dir, 'index.html')), assets };
    } catch {
      // Not built: asked again next time, so a build while the daemon runs is picked up.
      return null;
    }
    return files;
  };
  return {
    owns(pathname: string): boolean {
      return PAGE_PATHS.test(pathname) || pathname.startsWith('/assets/');
    },
    handle(req: IncomingMessage, res: ServerResponse, pathname: string): void {
      const head = req.method === 'HEAD';
      if (req.method !== 'GET' && !head) {
        send(res, 405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }, `${req.method} is not allowed on ${pathname}\n`, head);
        return;
      }
      const built = read();
      if (!built) {
        send(res, 503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }, 'The agentbox dashboard is not built: run `npm run build` (it writes dist/dashboard), then reload.\nThe API is served as usual under /v1.\n', head);
        return;
      }
      let file: File | undefined;
      let immutable = false;
      const asset = ASSET_PATH.exec(pathname);
      if (asset) {
        file = built.assets.get(asset[1] as string);
        immutable = true;
      } else if (PAGE_PATHS.test(pathname)) {
        file = built.index;
      }
      if (!file) {
        send(res, 404, { 'content-type': 'text/plain; charset=utf-8' }, 'no such dashboard file\n', head);
        return;
      }
      const headers: Record<string, string> = {
        'content-type': file.type,
        etag: file.etag,
        'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      };
      if (req.headers['if-none-match'] === file.etag) {
        send(res, 304, headers, undefined, true);
        return;
      }
      send(res, 200, { ...headers, 'content-length': String(file.body.length) }, file.body, head);
    },
  };
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: string | Buffer | undefined, head: boolean): void {
  res.writeHead(status, { ...SECURITY_HEADERS, ...headers });
  res.end(head ? undefined : body);
}
