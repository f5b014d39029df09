/**
 * Who may see and do what. Enforced in the manager, not in a surface, so HTTP, MCP and the CLI
 * cannot differ: a token's scopes, its tenant, and (for a scoped token) its label selector.
 */
import type { Policy } from '../../policy/schema.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import { ConflictError, ForbiddenError, NotFoundError } from '../../contract/errors.js';
import type { Sandbox } from '../../contract/model.js';

export type Scope = 'read' | 'exec' | 'files' | 'manage';

export interface Caller {
  tenant: string;
  /** Who acts, for the audit log and `endedBy` (a token name, `cli`, `mcp`...). */
  actor: string;
  /** What a scoped token may do; absent = everything the tenant may. */
  scopes?: readonly Scope[];
  /** A scoped token sees only sandboxes with these labels, and its creates get them. */
  labels?: Record<string, string>;
  /**
   * A sandbox token's one sandbox (ARCHITECTURE.md, "Sandbox tokens"): every other id is not_found,
   * lists hold only it, and whatever spans the tenant (creates, snapshots, volumes, webhooks, the
   * usage overview, images) or needs `manage` is forbidden, whatever its scopes say.
   */
  sandboxId?: string;
}

const SCOPE_VERBS: Record<Scope, string> = { read: 'list or inspect sandboxes', exec: 'run commands', files: 'read or write files', manage: 'create, stop or delete sandboxes' };

/** Throws forbidden unless the caller's token has `scope` (a token without scopes has them all). */
export function need(caller: Caller, scope: Scope): void {
  if (scope === 'manage' && caller.sandboxId !== undefined) {
    throw new ForbiddenError(`a sandbox token may not ${SCOPE_VERBS.manage}, nor mint tokens`, { hint: 'use a token of the tenant for that' });
  }
  if (caller.scopes && !caller.scopes.includes(scope)) {
    throw new ForbiddenError(`this token may not ${SCOPE_VERBS[scope]}`, { hint: `it has the scopes ${caller.scopes.join(', ')}; ask for a token with the ${scope} scope` });
  }
}

/**
 * For operations that span the caller's tenant rather than one sandbox (snapshots, volumes, webhook
 * deliveries, the usage overview): `need(scope)`, and never for a sandbox token.
 */
export function needTenantWide(caller: Caller, scope: Scope, what: string): void {
  need(caller, scope);
  if (caller.sandboxId !== undefined) {
    throw new ForbiddenError(`a sandbox token may not ${what}: it reaches only its own sandbox`, { hint: 'use a token of the tenant for that' });
  }
}

/** Whether labels satisfy a selector (a scoped token's, a list filter); no selector: yes. */
export function labelsMatch(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  return !selector || Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/**
 * A sandbox the caller can see. Another tenant's sandbox, or one outside a scoped token's labels,
 * does not exist for the caller: not_found, never forbidden, so ids cannot be probed.
 */
export function findSandbox(store: Store, id: string, caller: Caller): StoredSandbox {
  const stored = visibleSandbox(store, id, caller);
  if (!stored) throw new NotFoundError(`no sandbox ${id}`, { hint: 'run agentbox ls to see your sandboxes' });
  return stored;
}

/** `findSandbox` without the error: undefined for what the caller cannot see. */
export function visibleSandbox(store: Store, id: string, caller: Caller): StoredSandbox | undefined {
  const stored = caller.sandboxId === undefined || caller.sandboxId === id ? store.getSandbox(id) : undefined;
  return stored && stored.sandbox.tenant === caller.tenant && labelsMatch(stored.sandbox.labels, caller.labels) ? stored : undefined;
}

/** A visible sandbox that is running; conflict (naming its state and end reason) otherwise. */
export function findRunning(store: Store, id: string, caller: Caller): StoredSandbox {
  const stored = findSandbox(store, id, caller);
  if (stored.sandbox.state !== 'running') {
    const why = stored.sandbox.endReason ? ` (${stored.sandbox.endReason})` : '';
    throw new ConflictError(`sandbox ${id} is ${stored.sandbox.state}${why}`, { hint: 'create a new one: agentbox create' });
  }
  return stored;
}

/** The caller's tenant's sandboxes matching `filter.labels` and, for a scoped token, its own labels. */
export function listVisible(store: Store, caller: Caller, filter: { labels?: Record<string, string>; all?: boolean }): Sandbox[] {
  const labels = filter.labels || caller.labels ? { ...filter.labels, ...caller.labels } : undefined;
  if (caller.sandboxId !== undefined) {
    const own = store.getSandbox(caller.sandboxId)?.sandbox;
    const shown = own && own.tenant === caller.tenant && labelsMatch(own.labels, labels) && ((filter.all ?? false) || own.state !== 'deleted');
    return shown ? [own] : [];
  }
  return store.listSandboxes({ tenant: caller.tenant, ...(labels ? { labels } : {}), includeEnded: filter.all ?? false }).map((s) => s.sandbox);
}

/**
 * Images are shared by every tenant, so only the host's operator manages them over the API:
 * a caller with the manage scope on a daemon without tenants.
 */
export function requireImageOperator(policy: Policy, caller: Caller): void {
  needTenantWide(caller, 'manage', 'manage images');
  if (policy.tenants !== undefined) {
    throw new ForbiddenError('images are shared by every tenant: only the host\'s operator pulls them', { hint: 'run agentbox image pull REF on the host' });
  }
}
