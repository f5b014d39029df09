/**
 * This daemon as one replica of several on a shared store (ARCHITECTURE.md, "Replicas").
 *
 * A sandbox of a host-local runtime (local, docker, microvm) lives on the host of the replica that
 * created it: only that replica enters it, reconciles it, reaps it or ends it when it stops; the others
 * list and inspect it from the store and refuse the rest with a conflict naming the replica. A sandbox
 * of a shared runtime (`Runtime.shared`: a cluster) is served by every replica, and the jobs that must
 * run once (its reaper) run on the replica that holds the `reaper` lease.
 *
 * Without an identity (tests that build a manager on a bare store) there is one replica: everything is its own.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { ConflictError } from '../../contract/errors.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import type { Runtimes } from './runtimes.js';

export interface ReplicaIdentity {
  /** Stable across restarts of this replica (kept in its home, or AGENTBOX_REPLICA_ID). */
  id: string;
  /** Where the others' clients reach this replica's API (AGENTBOX_ADVERTISE_URL), for their hints. */
  url?: string | undefined;
}

/**
 * The jobs one replica runs for all: the reaper (ttl, idle and loss checks of shared sandboxes, the
 * sweep) and the making of shared warm-pool members. Separate leases, so each moves on its own.
 */
export const LEASED_JOBS = ['reaper', 'pools'] as const;
export type LeasedJob = (typeof LEASED_JOBS)[number];

/** How long a lease lasts without renewal; renewed on each reaper pass or pool tick. */
const LEASE_MS = 15_000;
/** A replica unseen this long is taken for dead: the leader records its unfinished execs as lost. */
export const REPLICA_STALE_MS = 60_000;

/** How often the leader looks for shared host objects no row knows. */
const SWEEP_MS = 60_000;

function fresh(seenAt: string, now: number): boolean {
  return Date.parse(seenAt) > now - REPLICA_STALE_MS;
}

/** Another replica's host-local sandbox and where that replica's API is (api/replica-forward.ts sends requests there). */
export interface ReplicaRoute {
  sandboxId: string;
  runtime: string;
  /** The replica that created it and alone enters it. */
  replica: string;
  /** Its advertised API (AGENTBOX_ADVERTISE_URL, from the replicas table), without a trailing slash. */
  url: string;
}

/**
 * The conflict of a request for another replica's host-local sandbox: it names the replica, and its
 * URL when advertised. `reason` says why this replica did not pass the request on (the holder did
 * not answer, was not seen lately, or the request had been forwarded once already).
 */
export class ElsewhereError extends ConflictError {
  constructor(
    readonly at: Omit<ReplicaRoute, 'url'> & { url?: string },
    readonly reason?: string,
  ) {
    super(`sandbox ${at.sandboxId} runs on replica ${at.replica}, on another host (its runtime, ${at.runtime}, is local to that host)`, {
      hint: at.url
        ? `send this request to ${at.url}${reason ? ` when it answers (not forwarded there: ${reason})` : ''}`
        : `send this request to that replica (it can say where with AGENTBOX_ADVERTISE_URL), or use a shared runtime such as kubernetes${reason ? ` (not forwarded: ${reason})` : ''}`,
    });
    this.name = 'ElsewhereError';
  }

  /** The same conflict, saying why the request was not forwarded. */
  because(reason: string): ElsewhereError {
    return new ElsewhereError(this.at, reason);
  }
}

export class ReplicaScope {
  private lastSweep = 0;

  constructor(private readonly d: { store: Store; runtimes: Runtimes; logger: Logger; identity?: ReplicaIdentity | undefined }) {}

  /** This replica's id, null without an identity. */
  get id(): string | null {
    return this.d.identity?.id ?? null;
  }

  /** Created by this replica (or by none named: a row from before replicas, or a single anonymous daemon). */
  mine(stored: StoredSandbox): boolean {
    return stored.replica === null || this.id === null || stored.replica === this.id;
  }

  /** Its runtime is one every replica reaches. */
  shared(stored: StoredSandbox): boolean {
    return this.d.runtimes.find(stored.sandbox.runtime)?.shared === true;
  }

  /** This replica may enter it (run, read, write, end). */
  reaches(stored: StoredSandbox): boolean {
    return this.mine(stored) || this.shared(stored);
  }

  /**
   * Whether this replica should look after it in the periodic and start-up passes: its own host-local
   * sandboxes always, shared ones while it leads (LEADS: the caller's `leads()` of this pass).
   */
  tends(stored: StoredSandbox, leads: boolean): boolean {
    return this.shared(stored) ? leads : this.mine(stored);
  }

  /** A conflict naming the replica that holds it (ElsewhereError), unless this replica reaches it. */
  requireReach(stored: StoredSandbox, now = Date.now()): void {
    if (this.reaches(stored)) return;
    const owner = stored.replica ?? 'another replica';
    const row = this.d.store.replicas.get(owner);
    const url = row?.url ?? undefined;
    const stale = row !== undefined && url !== undefined && !fresh(row.seenAt, now);
    throw new ElsewhereError({ sandboxId: stored.sandbox.id, runtime: stored.sandbox.runtime, replica: owner, ...(url ? { url } : {}) }, stale ? `it was last seen at ${row.seenAt}` : undefined);
  }

  /**
   * Where a request about STORED can be sent instead of refused: its holder's advertised URL, when
   * this replica cannot enter it, the holder said where it listens (the replicas table, never the
   * request) and it beat within REPLICA_STALE_MS. Undefined otherwise: the request is served here
   * (a read from the row, or the conflict).
   */
  forwardTo(stored: StoredSandbox, now = Date.now()): ReplicaRoute | undefined {
    if (this.reaches(stored) || stored.replica === null) return undefined;
    const row = this.d.store.replicas.get(stored.replica);
    if (!row?.url || !fresh(row.seenAt, now)) return undefined;
    return { sandboxId: stored.sandbox.id, runtime: stored.sandbox.runtime, replica: row.id, url: row.url };
  }

  /** Say this replica has started (a new row, or its old one renewed). */
  start(): void {
    if (!this.d.identity) return;
    this.d.store.replicas.heartbeat(this.record(this.d.identity), new Date().toISOString(), true);
  }

  /** Still alive (each reaper pass). */
  beat(): void {
    if (!this.d.identity) return;
    this.d.store.replicas.heartbeat(this.record(this.d.identity), new Date().toISOString(), false);
  }

  /**
   * Whether this replica runs JOB, one of the once-across-replicas jobs, now: it takes or renews the
   * job's lease (one atomic statement), so two replicas never both run it. Without an identity, always.
   */
  leads(job: LeasedJob = 'reaper', now = new Date()): boolean {
    const id = this.id;
    return id === null || this.d.store.replicas.tryLease(job, id, now, LEASE_MS);
  }

  /** Whether another replica has been seen lately (then shared sandboxes outlive this one's stop). */
  othersAlive(now = Date.now()): boolean {
    const id = this.id;
    if (id === null) return false;
    return this.d.store.replicas.list().some((r) => r.id !== id && fresh(r.seenAt, now));
  }

  /**
   * The leader's part: replicas unseen for REPLICA_STALE_MS died; the execs they ran are recorded as
   * lost (their results will never come) and their rows dropped. Their host-local sandboxes are left
   * for them: a replica that comes back on the same home adopts its own.
   */
  buryStale(now = Date.now()): void {
    const id = this.id;
    if (id === null) return;
    for (const r of this.d.store.replicas.list()) {
      if (r.id === id || fresh(r.seenAt, now)) continue;
      const lost = this.d.store.loseUnfinishedExecs(new Date(now).toISOString(), r.id, { unnamed: false });
      this.d.store.replicas.remove(r.id);
      this.d.logger.warn({ replica: r.id, host: r.host, seen_at: r.seenAt, lost_execs: lost }, 'a replica stopped answering: its unfinished execs are recorded as lost');
    }
  }

  /** Whether the leader's sweep of shared orphans is due (then it counts as done now). */
  sweepDue(now = Date.now()): boolean {
    if (now - this.lastSweep < SWEEP_MS) return false;
    this.lastSweep = now;
    return true;
  }

  /** A clean stop: the lease goes back at once and the others stop counting this replica. */
  stop(): void {
    const id = this.id;
    if (id === null) return;
    for (const job of LEASED_JOBS) this.d.store.replicas.releaseLease(job, id);
    this.d.store.replicas.remove(id);
  }

  private record(identity: ReplicaIdentity): { id: string; url: string | null; host: string; pid: number } {
    return { id: identity.id, url: identity.url ?? null, host: hostname(), pid: process.pid };
  }
}
