// Builds the local runtime's helper with the system C compiler (static, so nothing in an image matters).
import { spawnSync } from 'node:child_process';
import { mkdirSync, existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'native', 'agentbox-helper.c');
const out = join(root, 'dist', 'native', 'agentbox-helper');
mkdirSync(dirname(out), { recursive: true });
if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) process.exit(0);
const cc = process.env.CC ?? 'cc';
const args = ['-O2', '-Wall', '-Wextra', '-Werror', '-static', '-o', out, src];
const r = spawnSync(cc, args, { stdio: 'inherit' });
if (r.error) {
  console.error(`build-native: cannot run ${cc} (${r.error.message}); install gcc and libc6-dev`);
  process.exit(1);
}
process.exit(r.status ?? 1);
