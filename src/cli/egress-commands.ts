/** `agentbox egress log|allow`: a sandbox's connection log and live approval of a host, over the SDK. */
import type { Command } from 'commander';
import type { EgressEvent } from '../contract/model.js';
import { connectClient } from './connect.js';
import { age, formatBytes, printJson, table } from './output.js';

function target(e: { host: string; port: number }): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

function row(e: EgressEvent): string[] {
  return [
    e.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    e.decision === 'allowed' ? 'ALLOW' : 'DENY',
    e.kind === 'connect' ? 'CONNECT' : (e.method ?? 'HTTP'),
    target(e),
    e.address ?? '-',
    e.rule,
    e.decision === 'allowed' ? `${formatBytes(e.bytesUp)} up, ${formatBytes(e.bytesDown)} down` : '',
  ];
}

export function registerEgressCommands(program: Command): void {
  const egress = program.command('egress').description("a sandbox's egress: connection log and live approvals");

  egress
    .command('log')
    .description('every connection attempt of a sandbox through its proxy, oldest first')
    .argument('<id>')
    .option('--denied', 'only refusals, followed by the refused hosts')
    .option('--limit <N>', 'at most this many entries (newest)', '200')
    .option('--json', 'print JSON')
    .action(async (id: string, flags: { denied?: boolean; limit: string; json?: boolean }) => {
      const log = await (await connectClient()).egressLog(id, { ...(flags.denied ? { denied: true } : {}), limit: Number(flags.limit) || 200 });
      if (flags.json) return printJson(log);
      process.stdout.write(`${log.sandboxId}: egress ${log.egress.mode}${log.egress.allow.length ? ` (${log.egress.allow.join(', ')})` : ''}\n`);
      if (log.log.length === 0) process.stdout.write('no connection attempts\n');
      else table(['TIME', 'DECISION', 'KIND', 'TARGET', 'ADDRESS', 'RULE', 'BYTES'], [...log.log].reverse().map(row));
      if (log.denied?.length) {
        process.stdout.write('\nrefused hosts (approve one with: agentbox egress allow ID HOST:PORT)\n');
        table(['TARGET', 'ATTEMPTS', 'LAST', 'RULE'], log.denied.map((d) => [target(d), String(d.attempts), `${age(d.lastAt)} ago`, d.rule]));
      }
    });

  egress
    .command('allow')
    .description('let a running sandbox reach one more host, from its next connection on (the global deny list still wins)')
    .argument('<id>')
    .argument('<host>', 'HOST, HOST:PORT or *.DOMAIN')
    .action(async (id: string, host: string) => {
      const sb = await (await connectClient()).allowEgress(id, host);
      process.stdout.write(`${sb.id}: egress ${sb.egress.mode} (${sb.egress.allow.join(', ')})\n`);
    });
}
