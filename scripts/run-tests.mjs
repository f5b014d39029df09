// Runs the compiled test files with node:test, one file at a time (they share cgroups, images and
// the machine's 2 cores).
//
//   node scripts/run-tests.mjs [FILTER...]            every test (npm test), or the files whose path contains a FILTER
//   node scripts/run-tests.mjs --unit [FILTER...]     test/unit/ only: no root, no bubblewrap, no dockerd (npm run test:unit)
//   node scripts/run-tests.mjs --conformance [--runtime local|docker|gvisor|microvm]...
//                                                     the runtime contract (npm run test:conformance), on the runtimes named
//
// A test file belongs in test/unit/ when it passes as an unprivileged user with no bwrap on the host;
// scripts/run-tests.mjs does not check that, `npm run test:unit` as such a user does.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');
/** --runtime NAME -> the conformance file that covers it (docker.test.ts covers runc and gVisor). */
const CONFORMANCE = { local: 'local.test.js', docker: 'docker.test.js', gvisor: 'docker.test.js', microvm: 'microvm.test.js', kubernetes: 'kubernetes.test.js' };

function usage(problem) {
  console.error(`run-tests: ${problem}\nusage: run-tests.mjs [--unit | --conformance [--runtime ${Object.keys(CONFORMANCE).join('|')}]...] [FILTER...]`);
  process.exit(2);
}

let mode = 'all';
const runtimes = [];
const filters = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--unit' || a === '--conformance') {
    if (mode !== 'all') usage('give --unit or --conformance, not both');
    mode = a.slice(2);
  } else if (a === '--runtime' || a.startsWith('--runtime=')) {
    const value = a === '--runtime' ? args[++i] : a.slice('--runtime='.length);
    if (!value) usage('--runtime needs a name');
    for (const r of (value ?? '').split(',').filter(Boolean)) {
      if (!(r in CONFORMANCE)) usage(`unknown runtime ${JSON.stringify(r)}`);
      runtimes.push(r);
    }
  } else if (a.startsWith('--')) {
    usage(`unknown option ${a}`);
  } else {
    filters.push(a);
  }
}
if (runtimes.length > 0 && mode !== 'conformance') usage('--runtime goes with --conformance');

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}

/** A compiled test whose source was moved or deleted stays in dist/ (tsc never cleans): not run. */
const hasSource = (f) => existsSync(join(root, relative(join(root, 'dist'), f)).replace(/\.js$/, '.ts'));

let files = walk(testDir).filter(hasSource);
if (mode === 'unit') files = files.filter((f) => relative(testDir, f).startsWith(`unit/`));
if (mode === 'conformance') {
  const wanted = new Set((runtimes.length ? runtimes : Object.keys(CONFORMANCE)).map((r) => CONFORMANCE[r]));
  files = files.filter((f) => relative(testDir, f).startsWith('conformance/') && wanted.has(relative(join(testDir, 'conformance'), f)));
}
files = files.filter((f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s))).sort();
if (files.length === 0) {
  console.error(`run-tests: no test files match ${[mode !== 'all' ? `--${mode}` : '', ...filters].join(' ').trim()}`);
  process.exit(1);
}
const ledger = join(mkdtempSync(join(tmpdir(), 'agentbox-test-ledger-')), 'silent-files.jsonl');
const r = spawnSync(
  process.execPath,
  [
    '--import',
    join(root, 'scripts', 'test-stdout-blocking.mjs'),
    '--test',
    '--test-concurrency=1',
    '--test-timeout=300000',
    '--test-force-exit',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    `--test-reporter=${join(root, 'scripts', 'test-ledger.mjs')}`,
    '--test-reporter-destination=/dev/null',
    ...files,
  ],
  {
    stdio: 'inherit',
    env: {
      ...process.env,
      AGENTBOX_TEST_LEDGER: ledger,
      AGENTBOX_LOG_LEVEL: process.env.AGENTBOX_LOG_LEVEL ?? 'silent',
      // test/conformance/docker.test.ts registers the runc and gVisor contracts only for the runtimes asked for
      ...(runtimes.length ? { AGENTBOX_CONFORMANCE_RUNTIMES: [...new Set(runtimes)].join(',') } : {}),
    },
  },
);
reapOrphanedTestScopes();
// A killed test process leaves its scratch disk store mounted (src/storage/scratch-store.ts).
const { removeOrphanedScratchStores } = await import(join(testDir, '..', 'src', 'storage', 'scratch-store.js'));
const reaped = removeOrphanedScratchStores();
if (reaped.length > 0) console.error(`run-tests: removed the scratch disk stores of killed test processes: ${reaped.join(', ')}`);
const silentFiles = existsSync(ledger) ? readFileSync(ledger, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
rmSync(dirname(ledger), { recursive: true, force: true });
// A file that passed without reporting a single test of its own ended early with status 0: every
// test it had not reported yet is unaccounted for, so the run cannot be called green.
const unaccounted = silentFiles.filter((s) => s.outcome === 'passed');
for (const s of unaccounted) console.error(`run-tests: ${relative(root, s.file)} ended without reporting its tests (its process exited part-way): counted as a failure`);
process.exit(unaccounted.length > 0 ? 1 : (r.status ?? 1));

/**
 * Local sandboxes outlive the process that created them (the daemon's restart relies on it), so a
 * test file that failed half-way leaves its sandboxes running. Tests name their cgroup scopes
 * `agentbox/test-…-PID` (bench: `bench-…-PID`), microVM tests their home tag (`agentbox-vm/test-…-PID`),
 * after their own process: once that process is gone,
 * whatever is left in such a scope is killed and its cgroups removed. Scopes of live processes (a
 * test someone else is running) are left alone.
 */
function reapOrphanedTestScopes() {
  const cg = '/sys/fs/cgroup';
  // agentbox/ holds local sandboxes, agentbox-vm/ the microVMs' QEMU processes (per home tag).
  const roots = ['agentbox', 'agentbox-vm'];
  const bases = existsSync(join(cg, 'cgroup.controllers')) ? roots.map((r) => join(cg, r)) : ['memory', 'pids', 'cpu', 'freezer'].flatMap((c) => roots.map((r) => join(cg, c, r)));
  const dirs = (dir) => {
    try {
      return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
    } catch {
      return [];
    }
  };
  const tree = (dir) => [...dirs(dir).flatMap(tree), dir];
  const alive = (pid) => existsSync(`/proc/${pid}`);
  const orphaned = bases.flatMap((b) => dirs(b)).filter((d) => {
    const m = /^(?:test|bench)-.*-(\d+)$/.exec(d.slice(d.lastIndexOf('/') + 1));
    return m && !alive(Number(m[1]));
  });
  if (orphaned.length === 0) return;
  for (const scope of orphaned) {
    for (const d of tree(scope)) {
      for (const knob of ['freezer.state', 'cgroup.freeze']) {
        try {
          writeFileSync(join(d, knob), knob === 'freezer.state' ? 'THAWED' : '0');
        } catch {
          // not this hierarchy's knob
        }
      }
    }
  }
  const leftIn = new Set();
  for (let round = 0; round < 100; round++) {
    let left = 0;
    for (const scope of orphaned) {
      for (const d of tree(scope)) {
        let pids = [];
        try {
          pids = readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
        } catch {
          // gone
        }
        if (pids.length > 0) leftIn.add(scope.slice(scope.lastIndexOf('/') + 1));
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        try {
          rmdirSync(d);
        } catch {
          left++;
        }
      }
    }
    if (left === 0) break;
    spawnSync('sleep', ['0.05']);
  }
  // Empty scopes are only tidied; sandboxes left running are worth a line.
  if (leftIn.size > 0) console.error(`run-tests: killed the sandboxes tests left running in ${[...leftIn].join(', ')}`);
}
