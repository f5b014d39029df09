/** `agentbox token create|ls|revoke`: short-lived tokens scoped to one sandbox, for code inside it (ARCHITECTURE.md, "Sandbox tokens"). */
import type { Command } from 'commander';
import type { SandboxToken, SandboxTokenScope } from '../contract/tokens.js';
import { connectClient } from './connect.js';
import { collect } from './flags.js';
import { printJson, table } from './output.js';

function stateOf(t: SandboxToken): string {
  if (t.revokedAt !== null) return 'revoked';
  return Date.parse(t.expiresAt) > Date.now() ? 'live' : 'expired';
}

export function registerTokenCommands(program: Command): void {
  const token = program.command('token').description('short-lived tokens scoped to one sandbox (read, exec, files; never manage), for code running inside it');

  token
    .command('create')
    .description('mint a token for the sandbox and print it (shown only now); inside a sandbox with egress the API is http://agentbox.internal')
    .argument('<id>', 'sandbox id')
    .option('--scope <SCOPE>', 'read, exec or files (repeatable; default read)', collect)
    .option('--ttl <DUR>', 'how long it holds: at most 1h (default 15m)')
    .option('--inject', 'also write it into the sandbox at /tmp/.agentbox-token')
    .option('--json', 'print the token and its details as JSON')
    .action(async (id: string, flags: { scope?: string[]; ttl?: string; inject?: boolean; json?: boolean }) => {
      const created = await (await connectClient()).createToken(id, {
        // Checked by the daemon, which names a wrong one.
        scopes: (flags.scope && flags.scope.length > 0 ? flags.scope.flatMap((s) => s.split(',')).filter((s) => s !== '') : ['read']) as SandboxTokenScope[],
        ...(flags.ttl ? { ttl: flags.ttl } : {}),
        ...(flags.inject ? { inject: true } : {}),
      });
      if (flags.json) return printJson(created);
      process.stdout.write(`${created.token}\n`);
      const where = created.injectedPath ? `; written to ${created.injectedPath} inside` : '';
      const inside = created.apiUrl ? `; from inside: ${created.apiUrl}` : '; this sandbox has no egress: use it from outside';
      process.stderr.write(`${created.id}: ${created.scopes.join(',')} until ${created.expiresAt}${where}${inside}\n`);
    });

  token
    .command('ls')
    .description("the sandbox's tokens (never their secrets)")
    .argument('<id>', 'sandbox id')
    .option('--json', 'JSON output')
    .action(async (id: string, flags: { json?: boolean }) => {
      const list = await (await connectClient()).listTokens(id);
      if (flags.json) return printJson(list);
      table(['ID', 'SCOPES', 'STATE', 'EXPIRES'], list.map((t) => [t.id, t.scopes.join(','), stateOf(t), t.expiresAt]));
    });

  token
    .command('revoke')
    .description('revoke tokens of the sandbox now')
    .argument('<id>', 'sandbox id')
    .argument('<tokenId...>', 'token ids (sbt_...)')
    .action(async (id: string, tokenIds: string[]) => {
      const client = await connectClient();
      for (const t of tokenIds) process.stdout.write(`${(await client.revokeToken(id, t)).id}\n`);
    });
}
