// Writes dist/build-info.json: the package version and a fingerprint of the built code (dist/src and
// the native programs). A CLI compares its own with its daemon's to say when the daemon runs older code
// (a `git pull && npm run build` does not restart a running daemon).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const dist = join(root, 'dist');

function walk(dir) {
  return readdirSync(dir).sort().flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const files = [...walk(join(dist, 'src')).filter((f) => f.endsWith('.js')), ...walk(join(dist, 'native')).filter((f) => !f.includes('/gen/'))];
const hash = createHash('sha256');
for (const f of files) hash.update(relative(dist, f)).update('\0').update(readFileSync(f)).update('\0');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const info = { version, build: hash.digest('hex').slice(0, 12), builtAt: new Date().toISOString() };
writeFileSync(join(dist, 'build-info.json'), `${JSON.stringify(info, null, 2)}\n`);
