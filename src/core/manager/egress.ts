/**
 * A sandbox's way out: the per-sandbox proxies that any egress other than none needs, the egress
 * log, hosts approved while a sandbox runs, and the proxies restarted after a daemon restart.
 */
import type { Logger } from 'pino';
import type { EgressService } from '../../egress/service.js';
import { resolveEgressApproval } from '../../policy/resolve.js';
import type { Policy } from '../../policy/schema.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import { ConflictError, RuntimeUnavailableError } from '../../contract/errors.js';
import type { DeniedHost, Egress, EgressEvent, Sandbox } from '../../contract/model.js';
import type { Caller } from './access.js';
import { ACTIVE } from './lifecycle.js';

/** The egress proxies, or runtime_unavailable: a daemon without them can only make egress none. */
export function requireEgress(egress: EgressService | undefined): EgressService {
  if (!egress) {
    throw new RuntimeUnavailableError('this agentbox runs without egress proxies, so sandboxes can only have egress none', { hint: 'ask for egress none, or run the full daemon (agentbox serve)' });
  }
  return egress;
}

export interface SandboxEgressLog {
  sandboxId: string;
  egress: Egress;
  log: EgressEvent[];
  denied?: DeniedHost[];
}

/** The sandbox's egress log (newest first) and, with `denied`, the hosts it was refused. */
export function egressLogOf(store: Store, sb: Sandbox, opts: { denied?: boolean; limit?: number }): SandboxEgressLog {
  const events = store.egress;
  return {
    sandboxId: sb.id,
    egress: sb.egress,
    log: events.forSandbox(sb.id, { ...(opts.denied ? { decision: 'denied' as const } : {}), limit: opts.limit ?? 200 }),
    ...(opts.denied ? { denied: events.deniedHosts(sb.id) } : {}),
  };
}

/**
 * Approve one more host for a running sandbox; its proxy lets it through from the next
 * connection on, without a restart. The policy still applies: the global deny list wins and a
 * profile's allowlist ceiling holds, exactly as for a create that had named the host.
 */
export function approveEgressHost(
  d: { policy: Policy; store: Store; egress?: EgressService | undefined; logger: Logger },
  sb: Sandbox,
  host: string,
  caller: Caller,
): Sandbox {
  const id = sb.id;
  if (sb.egress.mode === 'none') {
    throw new ConflictError(`sandbox ${id} was created with egress none: it has no network path to open`, {
      hint: 'create a sandbox with --egress allowlist --allow HOST instead',
    });
  }
  const checked = resolveEgressApproval(d.policy, sb.profile, sb.egress.mode, host);
  const added = checked.allow.filter((h) => !sb.egress.allow.includes(h));
  const egress: Egress = { mode: sb.egress.mode, allow: [...sb.egress.allow, ...added] };
  d.store.setEgress(id, egress);
  for (const h of added) d.egress?.allow(id, h);
  d.store.audit({ tenant: sb.tenant, actor: caller.actor, action: 'egress_allow', sandboxId: id, detail: { host } });
  d.logger.info({ sandbox_id: id, host, by: caller.actor }, 'egress host approved');
  return { ...sb, egress };
}

/**
 * After a restart: sandboxes that outlived the daemon get their proxy back on the same directory (the
 * sandbox binds the directory, so the new socket appears inside); directories of the gone are
 * removed. Returns the ids whose proxy could not be reopened.
 */
export async function reconcileEgress(d: {
  store: Store;
  egress?: EgressService | undefined;
  logger: Logger;
  /** Whether this daemon runs the sandbox's proxy (replica.ts: its own host-local ones). @default all */
  here?: ((stored: StoredSandbox) => boolean) | undefined;
}): Promise<string[]> {
  const egress = d.egress;
  if (!egress) return [];
  const failed: string[] = [];
  const sandboxes = d.store.listSandboxes({ states: ACTIVE }).filter((s) => !d.here || d.here(s));
  for (const { sandbox } of sandboxes) {
    if (sandbox.egress.mode === 'none') continue;
    await egress.open(sandbox).catch((err: unknown) => {
      d.logger.error({ sandbox_id: sandbox.id, err }, 'could not restart the egress proxy');
      failed.push(sandbox.id);
    });
  }
  for (const id of egress.reapOrphans(new Set(sandboxes.map((s) => s.sandbox.id)))) {
    d.logger.warn({ sandbox_id: id }, 'removed an orphaned egress proxy directory');
  }
  return failed;
}
