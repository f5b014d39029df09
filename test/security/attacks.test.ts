/**
 * The shipped attack suite, run as a user runs it: `agentbox doctor --attacks --json --runtime R`
 * (the real CLI, a child process, its own network namespace and daemon) for each runtime present,
 * one subtest per attack so that a failure names the attack. Absent runtimes are skipped with the reason.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { cliEntry } from '../../src/core/config.js';
import { presentRuntimes } from '../../src/doctor/runner.js';
import type { AttackLine } from '../../src/doctor/report.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

interface SuiteRun {
  code: number;
  lines: AttackLine[];
  summary: { passed: number; failed: number; skipped: number } | undefined;
  stderr: string;
}

function runSuite(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<SuiteRun> {
  const home = mkdtempSync(join(tmpdir(), 'ab-attacks-'));
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_LOG_LEVEL: 'silent', ...extraEnv };
  return new Promise((resolve) => {
    execFile(process.execPath, [cliEntry(), 'doctor', '--attacks', '--json', ...args], { env, timeout: 600_000, maxBuffer: 32 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const left = readdirSync(home);
      rmSync(home, { recursive: true, force: true });
      const lines: AttackLine[] = [];
      let summary: SuiteRun['summary'];
      for (const l of stdout.split('\n').filter(Boolean)) {
        const o = JSON.parse(l) as AttackLine & { summary?: boolean; passed: number; failed: number; skipped: number };
        if (o.summary) summary = { passed: o.passed, failed: o.failed, skipped: o.skipped };
        else lines.push(o);
      }
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, lines, summary, stderr: `${stderr}${left.length ? `\n(left in the home: ${left.join(' ')})` : ''}` });
    });
  });
}

describe('the shipped attack suite (agentbox doctor --attacks)', () => {
  let present: Map<string, string | null>;

  before(async () => {
    await testImages();
    present = await presentRuntimes();
  });

  for (const rt of ['local', 'docker', 'gvisor'] as const) {
    test(`every attack is blocked on ${rt}`, async (t) => {
      const absent = present.get(rt);
      if (absent) {
        t.skip(`${rt} is not present: ${absent}`);
        return;
      }
      const run = await runSuite(['--runtime', rt]);
      assert.ok(run.summary, `no summary line; stderr: ${run.stderr.slice(-500)}`);
      assert.ok(run.lines.length >= 40, `only ${run.lines.length} attack lines on ${rt}`);
      for (const line of run.lines) {
        await t.test(line.id, (st) => {
          if (line.status === 'SKIP') {
            st.skip(line.detail);
            return;
          }
          assert.equal(line.status, 'PASS', `${line.title}: ${line.detail}`);
        });
      }
      assert.equal(run.code, run.summary.failed === 0 ? 0 : 1, 'exit code 0 exactly when no attack got through');
      assert.equal(run.summary.failed, 0, `${run.summary.failed} attack(s) got through on ${rt}`);
    });
  }
});
