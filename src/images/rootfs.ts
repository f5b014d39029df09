/** What every image root needs, whatever built it: mount points and the sandbox user. */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Mount points must exist in the image: its root is mounted read-only. */
export const MOUNT_POINTS = ['workspace', 'tmp', 'proc', 'dev', 'sys', 'run', '.agentbox'];

export function finishRootfs(rootfs: string): void {
  for (const dir of MOUNT_POINTS) mkdirSync(join(rootfs, dir), { recursive: true, mode: 0o755 });
  const etc = join(rootfs, 'etc');
  mkdirSync(etc, { recursive: true, mode: 0o755 });
  const passwd = join(etc, 'passwd');
  const group = join(etc, 'group');
  if (!existsSync(passwd)) writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/sh\n');
  if (!existsSync(group)) writeFileSync(group, 'root:x:0:\n');
  if (!/^sandbox:/m.test(readFileSync(passwd, 'utf8'))) appendFileSync(passwd, 'sandbox:x:1000:1000:sandbox:/workspace:/bin/sh\n');
  if (!/^sandbox:/m.test(readFileSync(group, 'utf8'))) appendFileSync(group, 'sandbox:x:1000:\n');
  const hosts = join(etc, 'hosts');
  if (!existsSync(hosts)) writeFileSync(hosts, '127.0.0.1 localhost\n::1 localhost\n');
}
