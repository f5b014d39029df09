/**
 * Issue 19's dashboard with 1,000 sandboxes listed, in real headless Chromium (Debian's), on the
 * local runtime: from submitting the sign-in form to the first sandbox row on screen, and to the
 * page showing that all 1,000 are there, beside the raw baseline in the same run: the API's own
 * GET /v1/sandboxes (fetch + JSON.parse) from Node. Also the page's JS heap and DOM size.
 * Usage: npm run bench:dashboard  (BENCH_SANDBOXES: how many, default 1000; BENCH_N: page loads, default 7)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { startDaemon } from '../src/daemon/compose.js';
import { silentLogger } from '../src/observability/logger.js';
import { AgentboxClient } from '../src/sdk/client.js';
import { pct } from './stats.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const SANDBOXES = Number(process.env.BENCH_SANDBOXES ?? 1000);
const N = Number(process.env.BENCH_N ?? 7);
const TOKEN = 'bench-dashboard-token-0123456789';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const home = mkdtempSync(join(tmpdir(), 'agentbox-bench-dash-'));
writeFileSync(
  join(home, 'policy.yaml'),
  `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 16 }
  ttl: 2h
  idleTimeout: 2h
tenants:
  - name: bench
    tokens: [${TOKEN}]
`,
);
const daemon = await startDaemon({
  env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: IMAGES },
  logger: silentLogger(),
  policyPath: join(home, 'policy.yaml'),
  socket: join(home, 'agentbox.sock'),
  tcp: { host: '127.0.0.1', port: 0 },
  maxConcurrentCreates: 8,
  createQueueLength: SANDBOXES,
});
const url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
const client = new AgentboxClient({ url, token: TOKEN });
const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  userDataDir: join(home, 'chrome'),
  args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--no-first-run', '--no-default-browser-check', '--disable-dev-shm-usage'],
});
try {
  const t0 = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < SANDBOXES; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, SANDBOXES - i) }, (_, j) => client.create({ labels: { bench: 'dashboard', n: String(i + j) } })));
    ids.push(...batch.map((s) => s.id));
    process.stderr.write(`\rcreated ${ids.length}/${SANDBOXES}`);
  }
  process.stderr.write(`\rcreated ${SANDBOXES} sandboxes in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

  const api: number[] = [];
  for (let i = 0; i < N; i++) {
    const a = performance.now();
    const r = await fetch(`${url}/v1/sandboxes`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const body = (await r.json()) as { sandboxes: unknown[] };
    api.push(performance.now() - a);
    if (body.sandboxes.length !== SANDBOXES) throw new Error(`listed ${body.sandboxes.length}`);
  }

  const firstRow: number[] = [];
  const allCounted: number[] = [];
  let heapMb = 0;
  let domNodes = 0;
  for (let i = 0; i < N; i++) {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 800 });
    await page.goto(`${url}/`, { waitUntil: 'load' });
    const input = await page.waitForSelector('input[type=password]', { timeout: 10_000 });
    if (!input) throw new Error('no sign-in form');
    await input.type(TOKEN);
    const a = performance.now();
    await input.press('Enter');
    // Strings, not functions: this file is compiled without the DOM's types.
    await page.waitForFunction(`document.querySelector('a[href^="/sandboxes/"]') !== null`, { timeout: 30_000 });
    firstRow.push(performance.now() - a);
    // The page says how many it lists ("1000 sandboxes", "1,000 of 1,000", ...).
    const counted = new RegExp(`\\b(${SANDBOXES}|${SANDBOXES.toLocaleString('en-US')})\\b`);
    await page.waitForFunction(`${counted}.test(document.body.innerText)`, { timeout: 30_000 });
    allCounted.push(performance.now() - a);
    const m = await page.metrics();
    heapMb = (m.JSHeapUsedSize ?? 0) / 2 ** 20;
    domNodes = m.Nodes ?? 0;
    await page.close();
  }
  const f = (xs: number[], p: number): string => pct(xs, p).toFixed(0);
  console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; ${SANDBOXES} running busybox sandboxes (local), ${N} page loads, Chromium headless`);
  console.log('\n| what | p50 (ms) | p95 (ms) |\n|---|---|---|');
  console.log(`| baseline: GET /v1/sandboxes from Node (fetch + JSON.parse) | ${f(api, 50)} | ${f(api, 95)} |`);
  console.log(`| dashboard: sign-in submitted → first sandbox row on screen | ${f(firstRow, 50)} | ${f(firstRow, 95)} |`);
  console.log(`| dashboard: sign-in submitted → the page shows all ${SANDBOXES} counted | ${f(allCounted, 50)} | ${f(allCounted, 95)} |`);
  console.log(`\nfirst row / API baseline: ${(pct(firstRow, 50) / pct(api, 50)).toFixed(1)}× at p50; page JS heap ${heapMb.toFixed(1)} MiB, ${domNodes} DOM nodes with ${SANDBOXES} listed`);
} finally {
  await browser.close().catch(() => undefined);
  for (const s of await client.list().catch(() => [])) await client.delete(s.id).catch(() => undefined);
  await daemon.close();
  rmSync(home, { recursive: true, force: true });
}
