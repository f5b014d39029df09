/**
 * What the manager tells the world about a sandbox's life: created, paused, resumed, ended
 * (ARCHITECTURE.md, "Lifecycle, reaper, reconcile"). Core knows only this sink; what listens
 * (webhooks, src/webhooks/) is wired in by the composition root.
 */
import type { Logger } from 'pino';
import type { EndReason, Sandbox } from '../contract/model.js';

export type LifecycleEvent =
  | { type: 'created'; sandbox: Sandbox; at: string }
  | { type: 'paused'; sandbox: Sandbox; at: string; pauseMode: 'freeze' | 'hibernate' }
  | { type: 'resumed'; sandbox: Sandbox; at: string }
  | { type: 'ended'; sandbox: Sandbox; at: string; endReason: EndReason; endedBy: string | null };

export interface LifecycleEvents {
  /**
   * Called after the change is recorded, on the lifecycle operation's own path: it must return at
   * once (queue, never send) and never throw; a sink that does anyway is logged and ignored.
   */
  emit(ev: LifecycleEvent): void;
}

/** Hand an event to the sink, if there is one; whatever the sink does, the lifecycle operation goes on. */
export function tell(events: LifecycleEvents | undefined, ev: LifecycleEvent, logger: Logger): void {
  if (!events) return;
  try {
    events.emit(ev);
  } catch (err) {
    logger.error({ sandbox_id: ev.sandbox.id, event: ev.type, err: err instanceof Error ? err.message : String(err) }, 'lifecycle event sink failed');
  }
}
