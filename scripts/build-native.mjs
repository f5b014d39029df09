// Builds the native helpers with the system C compiler (static, so nothing in an image matters):
// agentbox-helper (the local runtime) and agentbox-docker-init (PID 1 and exec wrapper of the docker runtime).
import { spawnSync } from 'node:child_process';
import { mkdirSync, existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cc = process.env.CC ?? 'cc';
let failed = false;
for (const name of ['agentbox-helper', 'agentbox-docker-init']) {
  const src = join(root, 'native', `${name}.c`);
  const out = join(root, 'dist', 'native', name);
  mkdirSync(dirname(out), { recursive: true });
  const headers = readdirSync(join(root, 'native')).filter((f) => f.endsWith('.h')).map((h) => join(root, 'native', h));
  const newest = Math.max(...[src, ...headers].map((f) => statSync(f).mtimeMs));
  if (existsSync(out) && statSync(out).mtimeMs >= newest) continue;
  const args = ['-O2', '-Wall', '-Wextra', '-Werror', '-static', '-o', out, src];
  const r = spawnSync(cc, args, { stdio: 'inherit' });
  if (r.error) {
    console.error(`build-native: cannot run ${cc} (${r.error.message}); install gcc and libc6-dev`);
    process.exit(1);
  }
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
