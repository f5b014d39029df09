/**
 * The policy's webhooks with their secrets read: per tenant, the receivers and what each wants. Read
 * once when the daemon starts; a secret that cannot be read stops the start with the webhook named,
 * as an invalid policy does (nothing half-configured runs).
 */
import { readFileSync } from 'node:fs';
import { BadRequestError } from '../contract/errors.js';
import { WEBHOOK_EVENT_TYPES, type WebhookEventType } from '../contract/webhooks.js';
import { MIN_TOKEN_LENGTH, OPERATOR_TENANT, type Policy, type WebhookConfig } from '../policy/schema.js';

export interface WebhookTarget {
  url: string;
  secret: string;
  events: ReadonlySet<WebhookEventType>;
  format: 'agentbox' | 'e2b';
}

export type WebhookTargets = ReadonlyMap<string, readonly WebhookTarget[]>;

/** Secrets are as guessable as tokens below this length. */
export const MIN_SECRET_LENGTH = MIN_TOKEN_LENGTH;

export interface ResolveOpts {
  env: NodeJS.ProcessEnv;
  /** @default readFileSync(path, 'utf8') */
  readFile?: (path: string) => string;
}

/** Every tenant's webhooks (the operator's, tenant `default`, from the top-level `webhooks`), secrets read. */
export function resolveWebhookTargets(policy: Policy, opts: ResolveOpts): WebhookTargets {
  const out = new Map<string, WebhookTarget[]>();
  const add = (tenant: string, hooks: WebhookConfig[] | undefined, where: string) => {
    if (!hooks?.length) return;
    out.set(tenant, hooks.map((h, i) => ({
      url: h.url,
      secret: readSecret(h, `${where}[${i}]`, opts),
      events: new Set(h.events ?? WEBHOOK_EVENT_TYPES),
      format: h.format,
    })));
  };
  add(OPERATOR_TENANT, policy.webhooks, 'webhooks');
  (policy.tenants ?? []).forEach((t, i) => add(t.name, t.webhooks, `tenants[${i}] (${t.name}).webhooks`));
  return out;
}

function readSecret(h: WebhookConfig, where: string, opts: ResolveOpts): string {
  let secret: string;
  let from: string;
  let hint: string;
  if (h.secretEnv !== undefined) {
    from = `secretEnv ${h.secretEnv}`;
    hint = `set ${h.secretEnv} in the daemon's environment (e.g. ${h.secretEnv}=$(openssl rand -hex 32) agentbox serve), or give secretFile`;
    const v = opts.env[h.secretEnv];
    if (v === undefined || v === '') throw new BadRequestError(`policy ${where}: ${from} is not set in the daemon's environment`, { hint });
    secret = v;
  } else {
    const path = h.secretFile ?? '';
    from = `secretFile ${path}`;
    hint = `write the secret into ${path} (e.g. openssl rand -hex 32 > ${path}; chmod 600 ${path}), readable by the daemon`;
    try {
      secret = (opts.readFile ?? ((p: string) => readFileSync(p, 'utf8')))(path).replace(/\r?\n$/, '');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new BadRequestError(`policy ${where}: cannot read ${from} (${code})`, { hint });
    }
  }
  if (secret.length < MIN_SECRET_LENGTH) {
    throw new BadRequestError(`policy ${where}: the secret in ${from} is ${secret.length} characters; a webhook secret needs at least ${MIN_SECRET_LENGTH}`, { hint });
  }
  return secret;
}
