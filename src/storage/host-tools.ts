/**
 * The util-linux and filesystem tools the disk store drives (mount, umount, mkfs, fsfreeze), and
 * the host's mount table. Node has no mount(2): each call is one short child process.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { InternalError, RuntimeUnavailableError } from '../contract/errors.js';

const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Packages that provide the tools, for the hint when one is missing. */
const PACKAGE_OF: Record<string, string> = {
  'mkfs.xfs': 'xfsprogs',
  'mkfs.ext4': 'e2fsprogs',
  mount: 'mount',
  umount: 'mount',
  fsfreeze: 'util-linux',
  chown: 'coreutils',
};

/** Run a host tool; rejects with its stderr's last line. */
export function runTool(tool: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, args, { env: { PATH: HOST_PATH, LC_ALL: 'C' }, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        return reject(new RuntimeUnavailableError(`${tool} is not installed, and sandbox disks need it`, { hint: `apt-get install ${PACKAGE_OF[tool] ?? tool}` }));
      }
      const detail = String(stderr).trim().split('\n').pop() || err.message;
      reject(new InternalError(`${tool} ${args.join(' ')}: ${detail}`));
    });
  });
}

export interface MountEntry {
  /** Mount point, unescaped. */
  point: string;
  fstype: string;
  source: string;
}

/** The host's mount table as this process sees it (/proc/self/mountinfo). */
export function mountTable(): MountEntry[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const fields = line.split(' ');
      const dash = fields.indexOf('-');
      return { point: unescape(fields[4] ?? ''), fstype: fields[dash + 1] ?? '', source: unescape(fields[dash + 2] ?? '') };
    });
}

export function isMountPoint(path: string): boolean {
  return mountTable().some((m) => m.point === path);
}
