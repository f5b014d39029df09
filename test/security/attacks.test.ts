/**
 * The shipped attack suite, run as a user runs it: `agentbox doctor --attacks --json --runtime R`
 * (the real CLI, a child process, its own network namespace and daemon) for each runtime present,
 * one subtest per attack so that a failure names the attack. Absent runtimes are skipped with the reason.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { presentRuntimes } from '../../src/doctor/runner.js';
import type { AttackLine } from '../../src/doctor/report.js';
import { runSuite } from '../helpers/attack-suite.js';
import { testImages } from '../helpers/images.js';

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
      const { passed, failed, skipped } = run.summary;
      assert.equal(run.lines.length, passed + failed + skipped, 'one line for every attack the summary counts');
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
