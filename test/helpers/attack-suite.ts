/** `agentbox doctor --attacks --json` as a user runs it: the real CLI in a child process, its JSON lines parsed. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEntry } from '../../src/core/config.js';
import type { AttackLine } from '../../src/doctor/report.js';
import { TEST_IMAGES_DIR } from './images.js';

export interface SuiteRun {
  code: number;
  lines: AttackLine[];
  summary: { passed: number; failed: number; skipped: number } | undefined;
  /** stderr, plus what the run left in its home (it must leave nothing) */
  stderr: string;
}

export function runSuite(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<SuiteRun> {
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
