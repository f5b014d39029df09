/**
 * `agentbox doctor` and the attack suite's runner itself: a suite that cannot fail is a defect, so a
 * deliberately weakened target (the suite's own policy opening the metadata address) must be caught
 * by the real metadata attack, and attacks that get through, throw or hang must each be a FAIL.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { cliEntry } from '../../src/core/config.js';
import { runAttacks } from '../../src/doctor/runner.js';
import type { Attack } from '../../src/doctor/attacks/types.js';
import type { AttackLine } from '../../src/doctor/report.js';
import { runSuite } from '../helpers/attack-suite.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const canUnshare = process.getuid?.() === 0 && spawnSync('unshare', ['-n', 'true']).status === 0;

describe('agentbox doctor', () => {
  before(async () => {
    await testImages();
  });

  test('plain doctor: one line per host check, microvm\'s own, exit 0 when local works', () => {
    const home = mkdtempSync(join(tmpdir(), 'ab-doctor-'));
    try {
      const r = spawnSync(process.execPath, [cliEntry(), 'doctor'], { env: { PATH: process.env.PATH, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, encoding: 'utf8', timeout: 60_000 });
      const lines = r.stdout.trim().split('\n');
      assert.ok(lines.some((l) => /^ok\s+runtime local/.test(l)), r.stdout);
      assert.ok(lines.some((l) => /^(ok|FAIL|warn)\s+runtime microvm \(QEMU\)/.test(l)), r.stdout);
      assert.ok(lines.some((l) => /native helper/.test(l)), r.stdout);
      assert.equal(r.status, 0, r.stdout + r.stderr);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  test('a weakened target is caught: with the metadata address opened in the suite\'s own policy, the real metadata attack FAILs and the exit code is 1', { skip: canUnshare ? false : 'needs root and unshare -n (the metadata stand-in lives in the suite\'s own network namespace)' }, async () => {
    const weak = await runSuite(['--runtime', 'local', '--only', 'network.metadata-ip'], { AGENTBOX_DOCTOR_SELFTEST_OPEN_RANGES: '169.254.169.254/32' });
    const line = weak.lines.find((l) => l.id === 'network.metadata-ip');
    assert.ok(line, `no line for network.metadata-ip: ${weak.stderr.slice(-400)}`);
    assert.equal(line.status, 'FAIL', `the attack did not notice the opened metadata address: ${line.detail}`);
    assert.match(line.detail, /stand-in\(s\) metadata received|got through/);
    assert.equal(weak.code, 1);
    assert.ok(weak.summary && weak.summary.failed >= 1);
    // Control: the same attack against the suite's normal policy is blocked.
    const normal = await runSuite(['--runtime', 'local', '--only', 'network.metadata-ip']);
    assert.equal(normal.lines.find((l) => l.id === 'network.metadata-ip')?.status, 'PASS', JSON.stringify(normal.lines));
  });

  test('the runner: an attack that gets through, one that throws and one that hangs are FAILs; a missing stand-in is a SKIP; last line N passed, N failed', async () => {
    const fake = (id: string, run: Attack['run'], extra: Partial<Attack> = {}): Attack => ({ id, category: 'api', title: id, runtimes: ['local'], run, ...extra });
    const attacks: Attack[] = [
      fake('selftest.held', async () => ({ blocked: true, detail: 'held' })),
      fake('selftest.got-through', async (ctx) => {
        const r = await ctx.exec(ctx.sandboxes.busybox, ['echo', 'escaped']);
        return { blocked: false, detail: `ran: ${r.stdout.trim()}` };
      }),
      fake('selftest.throws', async () => {
        throw new Error('probe broke');
      }),
      fake('selftest.hangs', (ctx) => new Promise((_, reject) => ctx.signal?.addEventListener('abort', () => reject(new Error('aborted'))))),
      fake('selftest.scratch', async (ctx) => ({ blocked: true, detail: await ctx.scratch({ image: 'busybox' }) })),
      fake('selftest.needs-netns', async () => ({ blocked: true, detail: 'ran' }), { needs: ['isolatedNetwork'] }),
    ];
    const home = mkdtempSync(join(tmpdir(), 'ab-doctor-runner-'));
    const out: string[] = [];
    const saved = { home: process.env.AGENTBOX_HOME, images: process.env.AGENTBOX_IMAGES };
    process.env.AGENTBOX_HOME = home;
    process.env.AGENTBOX_IMAGES = TEST_IMAGES_DIR;
    try {
      const totals = await runAttacks({ attacks, runtimes: ['local'], json: false, write: (l) => out.push(l), perAttackTimeoutMs: 3000, isolationProblem: 'the test runs outside a private network namespace' });
      const of = (id: string): string => out.find((l) => l.includes(` ${id} `)) ?? `(no line for ${id})`;
      assert.match(of('selftest.held'), /^PASS local selftest\.held — /);
      assert.match(of('selftest.got-through'), /^FAIL local selftest\.got-through — .*ran: escaped/);
      assert.match(of('selftest.throws'), /^FAIL .*could not run.*probe broke/);
      assert.match(of('selftest.hangs'), /^FAIL .*no verdict within 3 s/);
      assert.match(of('selftest.scratch'), /^PASS .*sbx_/);
      if (!out.some((l) => l.includes('selftest.needs-netns') && l.startsWith('PASS'))) assert.match(of('selftest.needs-netns'), /^SKIP .*network namespace/);
      assert.match(of('runner.cleanup'), /^PASS local runner\.cleanup/);
      assert.equal(out.at(-1), `${totals.passed} passed, ${totals.failed} failed`);
      assert.equal(totals.failed, 3);
      assert.deepEqual(readdirSync(home), [], 'the suite left its temporary home behind');
    } finally {
      process.env.AGENTBOX_HOME = saved.home;
      process.env.AGENTBOX_IMAGES = saved.images;
      if (saved.home === undefined) delete process.env.AGENTBOX_HOME;
      if (saved.images === undefined) delete process.env.AGENTBOX_IMAGES;
      rmSync(home, { recursive: true, force: true });
    }
  });
});
