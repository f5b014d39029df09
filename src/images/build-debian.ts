/**
 * The Debian image: `mmdebstrap --variant=minbase` of bookworm from the host's own mirror, plus
 * any packages asked for (about 20 s with python3). Runs as root (mode root): the tree comes out
 * owned by root and the packages' own users, with Debian's normal permissions.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BadRequestError, RuntimeUnavailableError } from '../contract/errors.js';
import { runTool, type OnProgress } from './run-tool.js';

export const SUITE = 'bookworm';
export const FALLBACK_MIRROR = 'http://deb.debian.org/debian';
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]{0,99}$/;

/** Docs, man pages and translations are not installed (about 50 MB with python3). */
const DPKG_EXCLUDES = ['/usr/share/doc/*', '/usr/share/man/*', '/usr/share/info/*', '/usr/share/locale/*'];
const DPKG_INCLUDES = ['/usr/share/doc/*/copyright'];

/** mmdebstrap's `I:` lines that mark its main steps, with a rough share of the total time. */
const STEPS: Array<[RegExp, number]> = [
  [/apt-get update/, 5],
  [/downloading packages/, 15],
  [/extracting archives/, 35],
  [/installing essential packages/, 45],
  [/installing remaining packages/, 65],
  [/cleaning package lists/, 90],
];

/** The `URIs:` of a deb822 stanza (or the URI of a one-line `deb` entry) serving `suite`. */
function mirrorIn(text: string, suite: string): string | undefined {
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (name: string): string[] => {
      const m = new RegExp(`^${name}:[ \\t]*(.*)$`, 'mi').exec(stanza);
      return m?.[1]?.trim().split(/\s+/) ?? [];
    };
    const enabled = !/^Enabled:\s*no\b/im.test(stanza);
    if (enabled && field('Types').includes('deb') && field('Suites').includes(suite)) return field('URIs')[0];
  }
  for (const line of text.split('\n')) {
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s/.exec(line.trim() + ' ');
    if (m?.[2] === suite) return m[1];
  }
  return undefined;
}

/** The host's Debian mirror for `suite` (deb822 `.sources` first, then `.list` files), else deb.debian.org. */
export function hostMirror(suite: string = SUITE, aptDir = '/etc/apt'): string {
  const files: string[] = [];
  const listDir = join(aptDir, 'sources.list.d');
  if (existsSync(listDir)) {
    const names = readdirSync(listDir).sort();
    for (const ext of ['.sources', '.list']) files.push(...names.filter((n) => n.endsWith(ext)).map((n) => join(listDir, n)));
  }
  files.push(join(aptDir, 'sources.list'));
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    // Drop comment lines whole: an emptied line would split a deb822 stanza in two.
    const uncommented = text.split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n');
    const mirror = mirrorIn(uncommented, suite);
    if (mirror) return mirror;
  }
  return FALLBACK_MIRROR;
}

export interface DebianOpts {
  packages?: string[];
  /** @default the host's mirror for bookworm, else http://deb.debian.org/debian */
  mirror?: string;
  onProgress?: OnProgress;
  signal?: AbortSignal;
}

export function checkPackageNames(packages: string[]): void {
  for (const p of packages) {
    if (!PACKAGE_NAME.test(p)) throw new BadRequestError(`not a Debian package name: ${JSON.stringify(p)}`, { hint: 'give package names such as python3 or git, comma-separated' });
  }
}

/** Fill the (not yet existing) directory `rootfs` with Debian minbase plus `packages`. */
export async function buildDebian(rootfs: string, opts: DebianOpts = {}): Promise<void> {
  const packages = opts.packages ?? [];
  checkPackageNames(packages);
  if (process.getuid?.() !== 0) {
    throw new RuntimeUnavailableError('building a Debian image needs root (mmdebstrap --mode=root)', { hint: 'run agentbox image build as root, or let the agentbox daemon build it' });
  }
  const mirror = opts.mirror ?? hostMirror();
  const progress = opts.onProgress ?? (() => undefined);
  progress({ phase: 'mmdebstrap', message: `${SUITE} minbase from ${mirror}${packages.length ? ` with ${packages.join(', ')}` : ''}`, percent: 0 });
  let percent = 0;
  const args = [
    '--variant=minbase',
    '--mode=root',
    '--format=directory',
    ...(packages.length ? [`--include=${packages.join(',')}`] : []),
    ...DPKG_EXCLUDES.map((p) => `--dpkgopt=path-exclude=${p}`),
    ...DPKG_INCLUDES.map((p) => `--dpkgopt=path-include=${p}`),
    SUITE,
    rootfs,
    mirror,
  ];
  await runTool('mmdebstrap', args, {
    installHint: 'apt-get install mmdebstrap',
    onStderr: (line) => {
      for (const [re, pct] of STEPS) if (re.test(line)) percent = Math.max(percent, pct);
      progress({ phase: 'mmdebstrap', message: line.replace(/^I: /, ''), percent });
    },
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  // mmdebstrap cleans most of these already; make sure, they are dead weight in a read-only root.
  for (const junk of ['var/lib/apt/lists', 'var/cache/apt', 'var/cache/debconf/templates.dat-old', 'var/log/apt']) rmSync(join(rootfs, junk), { recursive: true, force: true });
  mkdirSync(join(rootfs, 'var/lib/apt/lists/partial'), { recursive: true, mode: 0o700 });
  progress({ phase: 'mmdebstrap', message: 'done', percent: 100 });
}
