/**
 * Image builders: busybox (a static busybox and its links, well under a second) and Debian
 * minbase via mmdebstrap with extra packages (about 20 s with python3), using the host's mirror.
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BadRequestError, InternalError, RuntimeUnavailableError } from '../core/errors.js';

export interface Progress {
  phase: string;
  message: string;
  percent?: number;
}
export type OnProgress = (p: Progress) => void;

const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Run a tool; stderr lines go to `onLine`; failure carries the last lines of its output. */
export function runTool(cmd: string, args: string[], opts: { onLine?: (line: string) => void; signal?: AbortSignal; input?: NodeJS.ReadableStream } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: { PATH: HOST_PATH, LANG: 'C.UTF-8' }, ...(opts.signal ? { signal: opts.signal } : {}) });
    const tail: string[] = [];
    let partial = '';
    const onData = (chunk: Buffer): void => {
      partial += chunk.toString();
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        tail.push(line);
        if (tail.length > 8) tail.shift();
        opts.onLine?.(line);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    if (opts.input && child.stdin) opts.input.pipe(child.stdin);
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') reject(new RuntimeUnavailableError(`${cmd} is not installed`, { hint: `apt-get install ${cmd === 'mmdebstrap' ? 'mmdebstrap' : cmd}` }));
      else reject(err);
    });
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new InternalError(`${cmd} failed (exit ${code}): ${[...tail, partial].filter(Boolean).slice(-4).join(' | ')}`));
    });
  });
}

export async function buildBusybox(rootfs: string, onProgress: OnProgress): Promise<void> {
  const busybox = '/bin/busybox';
  if (!existsSync(busybox)) throw new RuntimeUnavailableError('no static busybox at /bin/busybox', { hint: 'apt-get install busybox-static' });
  onProgress({ phase: 'busybox', message: 'copying busybox', percent: 10 });
  for (const dir of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'root']) mkdirSync(join(rootfs, dir), { recursive: true, mode: 0o755 });
  copyFileSync(busybox, join(rootfs, 'bin', 'busybox'));
  chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
  // Chrooted, so the links point inside the image rather than at host paths.
  onProgress({ phase: 'busybox', message: 'installing applet links', percent: 50 });
  await runTool('chroot', [rootfs, '/bin/busybox', '--install', '-s']);
  onProgress({ phase: 'busybox', message: 'done', percent: 100 });
}

/** The host's Debian mirror (deb822 .sources or one-line sources.list), else deb.debian.org. */
export function hostMirror(): string {
  const candidates: string[] = [];
  const dir = '/etc/apt/sources.list.d';
  if (existsSync(dir)) for (const f of readdirSync(dir)) candidates.push(join(dir, f));
  candidates.push('/etc/apt/sources.list');
  for (const file of candidates) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    const deb822 = /^URIs:\s*(\S+)/m.exec(text);
    if (deb822 && /^Suites:.*\bbookworm\b/m.test(text)) return deb822[1] as string;
    const oneLine = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(text);
    if (oneLine) return oneLine[1] as string;
  }
  return 'http://deb.debian.org/debian';
}

const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]{0,99}$/;

export async function buildDebian(rootfs: string, packages: string[], onProgress: OnProgress, signal?: AbortSignal): Promise<void> {
  for (const p of packages) if (!PACKAGE_NAME.test(p)) throw new BadRequestError(`not a Debian package name: ${p}`);
  const mirror = hostMirror();
  onProgress({ phase: 'mmdebstrap', message: `bookworm minbase from ${mirror} with ${packages.join(', ') || 'no extra packages'}`, percent: 0 });
  let seen = 0;
  await runTool(
    'mmdebstrap',
    ['--variant=minbase', '--mode=root', ...(packages.length ? [`--include=${packages.join(',')}`] : []), '--dpkgopt=path-exclude=/usr/share/{doc,man,locale}/*', 'bookworm', rootfs, mirror],
    {
      onLine: (line) => {
        seen++;
        const m = /^I: (.*)/.exec(line);
        if (m) onProgress({ phase: 'mmdebstrap', message: m[1] as string, percent: Math.min(95, seen / 2) });
      },
      ...(signal ? { signal } : {}),
    },
  );
  for (const junk of ['var/lib/apt/lists', 'var/cache/apt']) rmSync(join(rootfs, junk), { recursive: true, force: true });
  mkdirSync(join(rootfs, 'var/lib/apt/lists/partial'), { recursive: true });
  onProgress({ phase: 'mmdebstrap', message: 'done', percent: 100 });
}
