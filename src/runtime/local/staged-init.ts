/**
 * The binary a local sandbox runs as its PID 1 (agentbox-helper `init`), bind-mounted at /.agentbox/init.
 * A bind mount shows its source path in the sandbox's /proc/self/mountinfo, and the helper's own path
 * says where agentbox is installed (often under a user's home). So PID 1 is bound from a copy under the
 * stage's parent directory, named by the helper's content: `<run dir>/bin/<sha256 prefix>/init`. One
 * copy per helper build, shared by every sandbox and daemon that uses that build.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function stagedInit(helper: string, runDir: string): string {
  const hash = createHash('sha256').update(readFileSync(helper)).digest('hex').slice(0, 16);
  const dir = join(runDir, 'bin', hash);
  const path = join(dir, 'init');
  try {
    if (statSync(path).size === statSync(helper).size) return path;
  } catch {
    // not there yet
  }
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Written aside and renamed: a sandbox started by another daemon at the same moment never sees half a file.
  const tmp = join(dir, `.init-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    copyFileSync(helper, tmp);
    chmodSync(tmp, 0o755);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
  return path;
}
