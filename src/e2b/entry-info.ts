/** agentbox's directory entries as envd's EntryInfo. */
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { posix } from 'node:path';
import type { DirEntry } from '../contract/model.js';
import { EntryInfoSchema, FileType, type EntryInfo } from './gen/filesystem/filesystem_pb.js';

const TYPES: Record<DirEntry['type'], FileType> = { file: FileType.FILE, dir: FileType.DIRECTORY, symlink: FileType.SYMLINK, other: FileType.UNSPECIFIED };
const TYPE_CHAR: Record<DirEntry['type'], string> = { file: '-', dir: 'd', symlink: 'l', other: '?' };

/** `drwxr-xr-x` from a type and permission bits. */
function permissions(type: DirEntry['type'], mode: number): string {
  const bits = 'rwxrwxrwx';
  let out = TYPE_CHAR[type];
  for (let i = 0; i < 9; i++) out += mode & (1 << (8 - i)) ? bits[i] : '-';
  return out;
}

/** `path` is the entry's absolute path. Owner and group are left empty: the files API does not report them. */
export function entryInfo(entry: DirEntry, path: string): EntryInfo {
  const mode = entry.mode & 0o7777;
  const mtime = new Date(entry.mtime);
  return create(EntryInfoSchema, {
    name: entry.name,
    type: TYPES[entry.type],
    path,
    size: BigInt(Math.max(0, Math.trunc(entry.size))),
    mode,
    permissions: permissions(entry.type, mode),
    owner: '',
    group: '',
    ...(Number.isNaN(mtime.getTime()) ? {} : { modifiedTime: timestampFromDate(mtime) }),
  });
}

/** The root directory, which has no parent to list it. */
export function rootEntry(): DirEntry {
  return { name: '/', type: 'dir', size: 0, mode: 0o755, mtime: new Date(0).toISOString() };
}

export function childPath(dir: string, name: string): string {
  return posix.join(dir, name);
}
