/** The webhook delivery log as a tenant sees it: its own rows only; a label-scoped token only those of its sandboxes. */
import type { Store } from '../../store/store.js';
import type { WebhookDelivery } from '../../contract/webhooks.js';
import { labelsMatch, type Caller } from './access.js';

export interface DeliveryFilter {
  sandboxId?: string;
  state?: WebhookDelivery['state'];
  /** @default 100, at most 1000 */
  limit?: number;
}

export const MAX_DELIVERY_PAGE = 1000;

export function listDeliveries(store: Store, caller: Caller, filter: DeliveryFilter): WebhookDelivery[] {
  const limit = Math.min(Math.max(filter.limit ?? 100, 1), MAX_DELIVERY_PAGE);
  const rows = store.webhooks.list({ tenant: caller.tenant, limit, ...(filter.sandboxId ? { sandboxId: filter.sandboxId } : {}), ...(filter.state ? { state: filter.state } : {}) });
  if (!caller.labels) return rows;
  // A row whose sandbox is gone from the store cannot be shown to be the token's: left out.
  const visible = new Map<string, boolean>();
  const sees = (id: string): boolean => {
    let v = visible.get(id);
    if (v === undefined) {
      const sb = store.getSandbox(id)?.sandbox;
      v = sb !== undefined && sb.tenant === caller.tenant && labelsMatch(sb.labels, caller.labels);
      visible.set(id, v);
    }
    return v;
  };
  return rows.filter((r) => sees(r.sandboxId));
}
