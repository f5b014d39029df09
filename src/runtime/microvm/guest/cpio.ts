/**
 * A cpio archive in the "newc" format, the one the Linux kernel unpacks as an initramfs. Written by
 * hand (the format is 110 bytes of hex header per entry) so the guest build needs no cpio binary and
 * gives the same bytes for the same inputs (every mtime is 0).
 */
export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number; uid?: number; gid?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number; uid?: number; gid?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const hex8 = (n: number): string => n.toString(16).padStart(8, '0');
const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);

/** The archive's bytes, entries in the order given (a directory must come before what is in it). */
export function cpioArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const add = (name: string, mode: number, data: Buffer, o: { uid?: number; gid?: number; rdev?: [number, number] } = {}): void => {
    const nameBuf = Buffer.from(`${name}\0`, 'utf8');
    const header = [
      '070701',
      hex8(ino++),
      hex8(mode),
      hex8(o.uid ?? 0),
      hex8(o.gid ?? 0),
      hex8((mode & 0o170000) === S_IFDIR ? 2 : 1),
      hex8(0),
      hex8(data.length),
      hex8(0),
      hex8(0),
      hex8(o.rdev?.[0] ?? 0),
      hex8(o.rdev?.[1] ?? 0),
      hex8(nameBuf.length),
      hex8(0),
    ].join('');
    parts.push(Buffer.from(header, 'latin1'), nameBuf, pad4(110 + nameBuf.length), data, pad4(data.length));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (!name || name.split('/').includes('..')) throw new Error(`cpio: bad path ${JSON.stringify(e.path)}`);
    switch (e.kind) {
      case 'dir':
        add(name, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0), e);
        break;
      case 'file':
        add(name, S_IFREG | (e.mode ?? 0o644), e.data, e);
        break;
      case 'symlink':
        add(name, S_IFLNK | 0o777, Buffer.from(e.target, 'utf8'));
        break;
      case 'chardev':
        add(name, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), { rdev: [e.major, e.minor] });
        break;
    }
  }
  add('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}
