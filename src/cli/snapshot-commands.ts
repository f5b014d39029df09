/** `agentbox snapshot create|ls|inspect|rm` and `agentbox fork`: a sandbox's files (and, forked, its memory) kept or branched, over the SDK. */
import type { Command } from 'commander';
import { BadRequestError } from '../contract/errors.js';
import type { Snapshot } from '../contract/model.js';
import { connectClient } from './connect.js';
import { age, formatBytes, printJson, table } from './output.js';

function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new BadRequestError(`--${flag} needs a whole number of at least 1, got ${value}`);
  return n;
}

export function registerSnapshotCommands(program: Command): void {
  const snapshot = program.command('snapshot').description("a sandbox's files (/workspace, /tmp) kept past its life; restore with agentbox create --snapshot");

  snapshot
    .command('create')
    .description('snapshot a running sandbox (frozen for a copy-on-write clone) and print the snapshot id')
    .argument('<id>', 'sandbox id')
    .option('--name <NAME>', 'a name to find it by (unique)')
    .option('--memory', 'keep its memory and running processes too (microvm); a restore goes on with them')
    .option('--json', 'print the snapshot as JSON')
    .action(async (id: string, flags: { name?: string; memory?: boolean; json?: boolean }) => {
      const snap = await (await connectClient()).snapshot(id, { ...(flags.name ? { name: flags.name } : {}), ...(flags.memory ? { memory: true } : {}) });
      if (flags.json) printJson(snap);
      else process.stdout.write(`${snap.id}\n`);
    });

  snapshot
    .command('ls')
    .description('your snapshots, newest first')
    .option('--json', 'JSON output')
    .action(async (flags: { json?: boolean }) => {
      const list = await (await connectClient()).listSnapshots();
      if (flags.json) return printJson(list);
      table(
        ['ID', 'NAME', 'FROM', 'IMAGE', 'DISK', 'SIZE', 'AGE'],
        list.map((s: Snapshot) => [s.id, s.name ?? '', s.sandboxId, s.image, `${s.diskMb}M`, formatBytes(s.bytes), age(s.createdAt)]),
      );
    });

  snapshot
    .command('inspect')
    .description('one snapshot as JSON')
    .argument('<snap>', 'snapshot id or name')
    .action(async (ref: string) => printJson(await (await connectClient()).getSnapshot(ref)));

  snapshot
    .command('rm')
    .description('remove snapshots and their files')
    .argument('<snap...>', 'snapshot ids or names')
    .action(async (refs: string[]) => {
      const client = await connectClient();
      for (const ref of refs) process.stdout.write(`${(await client.deleteSnapshot(ref)).id}\n`);
    });

  program
    .command('fork')
    .description("new sandboxes with a copy-on-write copy of a running sandbox's files (with --memory, also its running processes); prints their ids")
    .argument('<id>', 'sandbox id')
    .option('--count <N>', 'how many (at most 16)', '1')
    .option('--memory', 'children go on with its running processes and memory (gVisor or microvm, no egress or volumes; it stops while its memory is saved and restored)')
    .option('--json', 'print the new sandboxes as JSON')
    .action(async (id: string, flags: { count: string; memory?: boolean; json?: boolean }) => {
      const children = await (await connectClient()).fork(id, { count: positiveInt('count', flags.count), ...(flags.memory ? { memory: true } : {}) });
      if (flags.json) printJson(children);
      else for (const c of children) process.stdout.write(`${c.id}\n`);
    });
}
