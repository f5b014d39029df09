/**
 * The shape of one attack of the shipped attack suite (`agentbox doctor --attacks`, test/security/).
 * An attack tries to get through one of agentbox's boundaries, against a sandbox of one runtime, and
 * reports whether the boundary held. An attack that gets through is a failed check and a bug.
 */
import type { AgentboxClient } from '../../sdk/client.js';
import type { ExecResult } from '../../contract/model.js';

export type AttackRuntime = 'local' | 'docker' | 'gvisor';

export type AttackCategory = 'filesystem' | 'privilege' | 'resources' | 'network' | 'cross-sandbox' | 'api' | 'supply-chain';

/** Sandboxes the runner created for one runtime before the attacks start; every attack may use them, none may delete them. */
export interface AttackSandboxes {
  /** busybox, egress none, tenant A */
  busybox: string;
  /** debian with python3, egress none, tenant A: the usual attacker */
  debian: string;
  /** debian, tenant A: a second sandbox of the same tenant (cross-sandbox target) */
  neighbour: string;
  /** debian, tenant B: another tenant's sandbox (cross-tenant target) */
  otherTenant: string;
  /** debian, tenant A, egress open (everything not denied) */
  egressOpen: string;
  /** debian, tenant A, egress allowlist naming only the stand-in `allowed.attack.test:80` */
  egressAllow: string;
}

/** Listeners the runner binds itself, inside its own network namespace: the only places a leaked packet can go. */
export interface StandIns {
  /** name -> address, as the egress proxies see them (the runner's AGENTBOX_EGRESS_HOSTS file) */
  hosts: Record<string, string>;
  /** TCP listeners, `address:port` each; `hits(key)` counts connections that reached one (a hit = a leak, except for `allowed`) */
  listeners: Record<'metadata' | 'private' | 'loopback' | 'allowed' | 'ipv6Loopback', { address: string; port: number }>;
  hits(key: keyof StandIns['listeners']): number;
  /** (optional, runner-provided) more listeners beyond the five above, e.g. `denied`: a host that only a name-level rule keeps out */
  extra?: Record<string, { address: string; port: number }>;
  /** (optional, runner-provided) connections that reached `address:port`, any listener the runner bound */
  hitsAt?(address: string, port: number): number;
  /** (optional, runner-provided) the stand-ins (listener names) that got `marker` in the first bytes of a connection or datagram: attributes a leak to one attack when several run at once */
  received?(marker: string): string[];
  /** (optional, runner-provided) why the non-loopback stand-ins are missing (not root, no unshare); absent when they are bound */
  unavailable?: string;
}

export interface AttackContext {
  runtime: AttackRuntime;
  sandboxes: AttackSandboxes;
  /** tenant A (full token), over TCP */
  client: AgentboxClient;
  /** tenant B (full token), over TCP */
  otherClient: AgentboxClient;
  /** the daemon over TCP: base URL (`http://127.0.0.1:PORT`) and raw tokens, for hand-made requests */
  api: { url: string; port: number; tokenA: string; tokenReadOnlyA: string; tokenB: string; socketPath: string };
  standIns: StandIns;
  /** (optional, runner-provided) a secret the runner put in the daemon's environment (`envName`) and in a host file only root can read (`hostFile`): must never show inside a sandbox */
  canary?: { value: string; envName: string; hostFile: string };
  /** (optional, runner-provided) aborted when the attack's time is up: pass it on to long calls */
  signal?: AbortSignal;
  /** Runs argv in a sandbox as tenant A (default timeout 60 s); never throws for a non-zero exit. */
  exec(sandboxId: string, cmd: string[], opts?: { stdin?: string; timeoutMs?: number; env?: Record<string, string> }): Promise<ExecResult>;
  /**
   * Creates a throwaway sandbox on this runtime (tenant A), deleted by the runner after the attack.
   * Profiles of the suite's policy: none, open, allow (egress), writable (rootfs: writable, debian).
   */
  scratch(req?: { image?: string; profile?: string; limits?: { memoryMb?: number; pids?: number; diskMb?: number }; egress?: { mode: 'none' | 'allowlist' | 'open'; allow?: string[] }; volumes?: { name: string; target: string; readOnly?: boolean }[] }): Promise<string>;
}

export interface AttackOutcome {
  /** true when the boundary held */
  blocked: boolean;
  /** one line: what happened (shown after the attack's title) */
  detail: string;
}

export interface Attack {
  /** stable id, `category.short-name` */
  id: string;
  category: AttackCategory;
  /** one line: what is tried */
  title: string;
  /** runtimes this attack applies to; absent = all */
  runtimes?: readonly AttackRuntime[];
  /**
   * (optional) what the attack needs; the runner prints SKIP with the reason when it is missing.
   * `python3`: the debian image (assumed when absent, except for category api); `isolatedNetwork`: the
   * non-loopback stand-ins (metadata, private, allowed), bound only inside the runner's own network namespace.
   */
  needs?: readonly ('python3' | 'isolatedNetwork')[];
  /** (optional) run alone, not beside other attacks (floods that would disturb them); default: resources alone */
  exclusive?: boolean;
  run(ctx: AttackContext): Promise<AttackOutcome>;
}
