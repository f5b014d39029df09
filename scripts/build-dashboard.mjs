// Builds the web dashboard (src/dashboard/web, Preact + xterm.js + uPlot + noVNC) into dist/dashboard:
// the web typecheck first (its own tsconfig: DOM libs, noEmit), then one esbuild bundle (ESM, minified,
// es2022, source maps) with content-hashed names, and an index.html that names the hashed files. The
// daemon serves that folder (src/api/dashboard.ts); nothing is fetched from a CDN at run time.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const web = join(root, 'src', 'dashboard', 'web');
const out = join(root, 'dist', 'dashboard');

const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(web, 'tsconfig.json')], { stdio: 'inherit' });
if (tsc.status !== 0) {
  console.error('build-dashboard: the web typecheck failed');
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });
const result = await build({
  entryPoints: { app: join(web, 'main.tsx') },
  bundle: true,
  format: 'esm',
  splitting: true,
  target: 'es2022',
  minify: true,
  sourcemap: 'linked',
  outdir: join(out, 'assets'),
  entryNames: '[name]-[hash]',
  chunkNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  metafile: true,
  legalComments: 'linked',
  logLevel: 'warning',
  loader: { '.woff2': 'file', '.woff': 'file', '.ttf': 'file', '.png': 'file', '.svg': 'file' },
});

const outputs = Object.entries(result.metafile.outputs);
const entry = outputs.find(([, o]) => o.entryPoint !== undefined && o.entryPoint.endsWith('main.tsx') && !o.entryPoint.endsWith('.css'));
if (!entry) throw new Error('build-dashboard: no entry bundle in the output');
const jsFile = basename(entry[0]);
const cssFile = entry[1].cssBundle ? basename(entry[1].cssBundle) : undefined;
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>agentbox</title>
<link rel="icon" href="data:,">
${cssFile ? `<link rel="stylesheet" href="/assets/${cssFile}">\n` : ''}<script type="module" src="/assets/${jsFile}"></script>
</head>
<body>
<noscript>The agentbox dashboard needs JavaScript.</noscript>
<div id="app"></div>
</body>
</html>
`;
writeFileSync(join(out, 'index.html'), html);
const sizes = outputs.filter(([f]) => !f.endsWith('.map')).map(([f, o]) => `${relative(out, join(root, f))} ${(o.bytes / 1024).toFixed(0)} KiB`);
writeFileSync(join(out, 'manifest.json'), `${JSON.stringify({ js: jsFile, css: cssFile ?? null, files: outputs.map(([f]) => relative(out, join(root, f))) }, null, 2)}\n`);
console.log(`build-dashboard: dist/dashboard (${sizes.join(', ')})`);
