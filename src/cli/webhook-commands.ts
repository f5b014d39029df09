/** `agentbox webhook deliveries`: the tenant's lifecycle webhook delivery log, over the SDK. */
import type { Command } from 'commander';
import { BadRequestError } from '../contract/errors.js';
import { WEBHOOK_DELIVERY_STATES, type WebhookDelivery } from '../contract/webhooks.js';
import { connectClient } from './connect.js';
import { age, printJson, table } from './output.js';

function row(d: WebhookDelivery): string[] {
  const outcome = d.state === 'delivered' ? `${d.lastStatus ?? ''}` : d.lastError ?? (d.lastStatus === null ? '' : `HTTP ${d.lastStatus}`);
  const when = d.state === 'pending' && d.nextAttemptAt ? `next in ${age(new Date().toISOString(), Date.parse(d.nextAttemptAt))}` : `${age(d.createdAt)} ago`;
  return [d.eventId, d.sandboxId, d.eventType, d.state, String(d.attempts), when, d.url, outcome.slice(0, 80)];
}

export function registerWebhookCommands(program: Command): void {
  const webhook = program.command('webhook').description('lifecycle webhooks (configured in the policy file): the delivery log');

  webhook
    .command('deliveries')
    .description('webhook deliveries of your sandboxes, newest first: event, receiver, state, attempts, last outcome')
    .option('--sandbox <id>', 'only this sandbox\'s')
    .option('--state <state>', `only ${WEBHOOK_DELIVERY_STATES.join(' | ')}`)
    .option('--limit <N>', 'at most this many (1-1000)', '100')
    .option('--json', 'print JSON')
    .action(async (flags: { sandbox?: string; state?: string; limit: string; json?: boolean }) => {
      const state = flags.state;
      if (state !== undefined && !isState(state)) throw new BadRequestError(`--state ${state}: expected ${WEBHOOK_DELIVERY_STATES.join(', ')}`, { hint: 'e.g. agentbox webhook deliveries --state failed' });
      const deliveries = await (await connectClient()).webhookDeliveries({ ...(flags.sandbox ? { sandboxId: flags.sandbox } : {}), ...(state ? { state } : {}), limit: Number(flags.limit) || 100 });
      if (flags.json) return printJson(deliveries);
      if (deliveries.length === 0) {
        process.stdout.write('no webhook deliveries\n');
        return;
      }
      table(['EVENT', 'SANDBOX', 'TYPE', 'STATE', 'ATTEMPTS', 'WHEN', 'URL', 'LAST'], deliveries.map(row));
    });
}

function isState(s: string): s is WebhookDelivery['state'] {
  return (WEBHOOK_DELIVERY_STATES as readonly string[]).includes(s);
}
