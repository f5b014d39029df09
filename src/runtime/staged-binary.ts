/**
 * The native binaries bind-mounted into sandboxes (local: agentbox-helper as PID 1 at /.agentbox/init;
 * docker: agentbox-docker-init). A bind mount shows its source path in the sandbox's
 * /proc/self/mountinfo, and the build's own path says where agentbox is installed (often under a user's
 * home). So they are bound from a copy under a neutral directory, named by content:
 * `<run dir>/bin/<sha256 prefix>/<name>`. One copy per build, shared by every sandbox and daemon using it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Where agentbox keeps what it stages for sandboxes (the local runtime's stage directory is under it too). */
export const RUN_DIR = '/run/agentbox';

export function stagedBinary(source: string, runDir: string, name: string): string {
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 16);
  const dir = join(runDir, 'bin', hash);
  const path = join(dir, name);
  try {
    if (statSync(path).size === statSync(source).size) return path;
  } catch {
    // not there yet
  }
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Written aside and renamed: a sandbox started by another daemon at the same moment never sees half a file.
  const tmp = join(dir, `.${name}-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    copyFileSync(source, tmp);
    chmodSync(tmp, 0o755);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
  return path;
}
