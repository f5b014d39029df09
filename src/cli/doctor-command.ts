/** `agentbox doctor [--attacks]`: what this host has, and the shipped attack suite against it. */
import type { Command } from 'commander';
import { BadRequestError } from '../contract/errors.js';

const RUNTIMES = ['local', 'docker', 'gvisor'] as const;
type RuntimeFlag = (typeof RUNTIMES)[number];

interface DoctorFlags {
  attacks?: boolean;
  runtime?: string[];
  only?: string[];
  json?: boolean;
  concurrency?: string;
}

export function registerDoctorCommand(program: Command, setExit: (code: number) => void): void {
  program
    .command('doctor')
    .description('check this host (kernel, cgroups, bubblewrap, user namespaces, helper, disk, images, dockerd, runsc, kvm) and print the fix for each failing check; exit 0 iff the local runtime can run. --attacks runs the attack suite against its runtimes')
    .option('--attacks', 'run the attack suite: one line per attack, then "N passed, N failed"; exit 0 only when none failed')
    .option('--runtime <name...>', 'with --attacks: only these runtimes (local, docker, gvisor); default every runtime present')
    .option('--only <substring...>', 'with --attacks: only attacks whose id contains one of these')
    .option('--json', 'JSON lines: one object per check or attack, the totals (for checks: {summary}) last')
    .option('--concurrency <n>', 'with --attacks: attacks run at once (floods always run alone)', '4')
    .action(async (flags: DoctorFlags) => {
      if (flags.attacks) setExit(await attacks(flags));
      else setExit(await checks(flags));
    });
}

async function checks(flags: DoctorFlags): Promise<number> {
  const { hostChecks } = await import('../doctor/host-checks.js');
  const { doctorExitCode, renderChecks, summarize } = await import('../doctor/host-probes.js');
  const list = await hostChecks();
  if (flags.json) {
    for (const c of list) process.stdout.write(`${JSON.stringify(c)}\n`);
    process.stdout.write(`${JSON.stringify({ summary: summarize(list) })}\n`);
  } else {
    process.stdout.write(renderChecks(list));
  }
  return doctorExitCode(list);
}

async function attacks(flags: DoctorFlags): Promise<number> {
  const runtimes = (flags.runtime ?? []).flatMap((r) => r.split(',')).filter(Boolean);
  for (const r of runtimes) {
    if (!(RUNTIMES as readonly string[]).includes(r)) throw new BadRequestError(`unknown runtime ${r}`, { hint: `use ${RUNTIMES.join(', ')}` });
  }
  const concurrency = Number(flags.concurrency ?? '4');
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 32) throw new BadRequestError(`bad --concurrency ${flags.concurrency}`, { hint: 'a number from 1 to 32' });
  const { reexecIsolated } = await import('../doctor/netns.js');
  const isolation = await reexecIsolated();
  if (isolation.exitCode !== null) return isolation.exitCode;
  const { runAttacks } = await import('../doctor/runner.js');
  const { allAttacks } = await import('../doctor/attacks/index.js');
  const totals = await runAttacks({
    attacks: allAttacks,
    runtimes: runtimes as RuntimeFlag[],
    ...(flags.only ? { only: flags.only } : {}),
    json: flags.json === true,
    write: (line) => process.stdout.write(`${line}\n`),
    ...('reason' in isolation && isolation.reason ? { isolationProblem: isolation.reason } : {}),
    concurrency,
    ...(process.env.AGENTBOX_DOCTOR_SELFTEST_OPEN_RANGES ? { weakenOpenRanges: process.env.AGENTBOX_DOCTOR_SELFTEST_OPEN_RANGES.split(',').filter(Boolean) } : {}),
  });
  return totals.failed === 0 ? 0 : 1;
}
