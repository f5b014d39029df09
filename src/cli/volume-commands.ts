/** `agentbox volume ...` (ARCHITECTURE.md, "Volumes") and the `--volume` flag of create/run: thin over the SDK. */
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { BadRequestError } from '../contract/errors.js';
import { checkVolumeName, DEFAULT_VOLUME_MB, type Volume, type VolumeMountRequest } from '../contract/volumes.js';
import { connectClient } from './connect.js';
import { age, printJson, table } from './output.js';

const VOLUME_FLAG_HINT = 'e.g. --volume my-data:/data or --volume my-data:/data:ro (make one with agentbox volume create NAME)';

/** `NAME:/PATH[:ro|:rw]` of --volume; the target's rules are checked by the daemon (contract/volumes.ts). */
export function parseVolumeFlag(value: string): VolumeMountRequest {
  const m = /^([^:]+):(\/[^:]*)(?::(ro|rw))?$/.exec(value);
  if (!m) throw new BadRequestError(`--volume takes NAME:/PATH[:ro], got ${JSON.stringify(value)}`, { hint: VOLUME_FLAG_HINT });
  const name = checkVolumeName(m[1] as string);
  return { name, target: m[2] as string, ...(m[3] === 'ro' ? { readOnly: true } : {}) };
}

/** NAME:/PATH of volume cp, or undefined for a local file (or -). */
function volumeSide(arg: string): { name: string; path: string } | undefined {
  const m = /^([^:/]+):(\/.*)$/.exec(arg);
  return m ? { name: checkVolumeName(m[1] as string), path: m[2] as string } : undefined;
}

function sizeFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new BadRequestError(`--size takes a whole number of MiB, got ${value}`, { hint: `e.g. --size ${DEFAULT_VOLUME_MB}` });
  return n;
}

export function registerVolumeCommands(program: Command): void {
  const volume = program.command('volume').description('named volumes: filesystems of your tenant that outlive sandboxes (create --volume NAME:/data)');

  volume
    .command('create')
    .description('create a volume and print its name')
    .argument('<name>', 'lower-case letters, digits, . _ - (at most 63)')
    .option('--size <MB>', `size in MiB, its hard quota (default ${DEFAULT_VOLUME_MB})`)
    .option('--json', 'print the volume as JSON')
    .action(async (name: string, flags: { size?: string; json?: boolean }) => {
      checkVolumeName(name);
      const sizeMb = sizeFlag(flags.size);
      const v = await (await connectClient()).createVolume(name, sizeMb === undefined ? {} : { sizeMb });
      if (flags.json) printJson(v);
      else process.stdout.write(`${v.name}\n`);
    });

  volume
    .command('ls')
    .description('list volumes')
    .option('--json', 'JSON output')
    .action(async (flags: { json?: boolean }) => {
      const list = await (await connectClient()).listVolumes();
      if (flags.json) return printJson(list);
      table(['NAME', 'SIZE', 'AGE', 'USED BY'], list.map((v: Volume) => [v.name, `${v.sizeMb}M`, age(v.createdAt), v.usedBy.join(',')]));
    });

  volume
    .command('inspect')
    .description('print a volume as JSON, with the sandboxes that mount it')
    .argument('<name>')
    .action(async (name: string) => printJson(await (await connectClient()).getVolume(checkVolumeName(name))));

  volume
    .command('rm')
    .description('remove volumes and their files (refused while a sandbox mounts one)')
    .argument('<name...>')
    .action(async (names: string[]) => {
      names.forEach(checkVolumeName);
      const client = await connectClient();
      for (const name of names) process.stdout.write(`${(await client.deleteVolume(name)).name}\n`);
    });

  volume
    .command('cp')
    .description('copy a file into or out of a volume, no sandbox needed: cp LOCAL NAME:/PATH, or cp NAME:/PATH LOCAL (- is stdin/stdout)')
    .argument('<src>')
    .argument('<dst>')
    .action(async (src: string, dst: string) => {
      const from = volumeSide(src);
      const to = volumeSide(dst);
      if (Boolean(from) === Boolean(to)) throw new BadRequestError('exactly one side of volume cp must be NAME:/path', { hint: 'agentbox volume cp ./input.csv my-data:/input.csv, or agentbox volume cp my-data:/out.txt -' });
      const client = await connectClient();
      if (to) {
        const input = src === '-' ? process.stdin : createReadStream(src);
        const { bytes } = await client.writeVolumeFile(to.name, to.path, input);
        process.stderr.write(`${bytes} bytes\n`);
      } else if (from) {
        const stream = await client.readVolumeFile(from.name, from.path);
        await pipeline(stream, dst === '-' ? process.stdout : createWriteStream(dst));
      }
    });
}
