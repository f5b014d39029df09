/**
 * `agentbox doctor --attacks`: the shipped attack suite against this host's own runtimes.
 * For each runtime present it creates the attack sandboxes, runs every applicable attack (several at
 * a time, floods alone, each with a time limit: a hang is a failure, not a stuck suite), prints one
 * line per attack, deletes everything and checks that nothing is left.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { buildRuntimes } from '../daemon/compose.js';
import { resolvePaths } from '../core/config.js';
import type { CreateSandboxRequest } from '../contract/requests.js';
import { ImageStore } from '../images/image-store.js';
import { DiskStore } from '../storage/disk-store.js';
import { silentLogger } from '../observability/logger.js';
import { AgentboxClient } from '../sdk/client.js';
import type { Attack, AttackContext, AttackRuntime, AttackSandboxes } from './attacks/types.js';
import { prepareNamespace, isIsolated } from './netns.js';
import { Reporter, type Totals } from './report.js';
import { StandInSet } from './stand-ins.js';
import { startSuiteDaemon, type SuiteDaemon } from './suite-daemon.js';
import { setMaxListeners } from 'node:events';

export const ALL_RUNTIMES: readonly AttackRuntime[] = ['local', 'docker', 'gvisor'];
export const DEBIAN_HINT = 'agentbox image build debian --packages python3';

export interface RunAttacksOpts {
  attacks: readonly Attack[];
  /** Runtimes asked for; default: every runtime present. */
  runtimes?: readonly AttackRuntime[];
  /** Only attacks whose id contains one of these. */
  only?: readonly string[];
  json: boolean;
  write: (line: string) => void;
  /** Why the suite has no private network namespace (from the re-exec step), if it has none. */
  isolationProblem?: string;
  perAttackTimeoutMs?: number;
  concurrency?: number;
  logger?: Logger;
  /**
   * The suite's self-test only (AGENTBOX_DOCTOR_SELFTEST_OPEN_RANGES): ranges the suite's own temporary
   * policy opens on purpose, a deliberately weakened target whose attacks must FAIL. Never the user's policy.
   */
  weakenOpenRanges?: readonly string[];
}

const SCRATCH_LABEL = 'agentbox-doctor';

export function runtimeRequest(rt: AttackRuntime): Pick<CreateSandboxRequest, 'runtime' | 'isolation'> {
  if (rt === 'local') return { runtime: 'local' };
  return { runtime: 'docker', isolation: rt === 'docker' ? 'container' : 'gvisor' };
}

/** Which runtimes answer on this host, and why the others do not. */
export async function presentRuntimes(): Promise<Map<AttackRuntime, string | null>> {
  const paths = resolvePaths();
  const rts = buildRuntimes(paths, new ImageStore(paths.images), new DiskStore({ dir: paths.storage }));
  const out = new Map<AttackRuntime, string | null>();
  const local = await rts.local?.probe();
  out.set('local', local?.ok ? null : `${local?.reason ?? 'unavailable'} (${local?.hint ?? ''})`);
  const docker = await rts.docker?.probe();
  if (docker?.ok) {
    out.set('docker', null);
    const listed = String(docker.details?.runtimes ?? '').split(' ');
    out.set('gvisor', listed.includes('runsc') ? null : 'dockerd does not list the runsc runtime (gVisor not installed)');
  } else {
    const why = `docker unavailable: ${docker?.reason ?? 'dockerd not reachable'}`;
    out.set('docker', why);
    out.set('gvisor', why);
  }
  return out;
}

function hasPython(images: ImageStore): boolean {
  try {
    return existsSync(join(images.resolve('debian').rootfs, 'usr', 'bin', 'python3'));
  } catch {
    return false;
  }
}

class TimeUp extends Error {}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // Settle first: an attack that reacts to the abort must not win the race with its own error.
        reject(new TimeUp(`no verdict within ${Math.round(ms / 1000)} s (a hang counts as a failure)`));
        onTimeout();
      }, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function message(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** Runs the suite; returns the totals (the caller exits 0 only when none failed). */
export async function runAttacks(opts: RunAttacksOpts): Promise<Totals> {
  const reporter = new Reporter({ json: opts.json, write: opts.write });
  const logger = opts.logger ?? silentLogger();
  let isolated = isIsolated();
  let isolationProblem = opts.isolationProblem;
  if (isolated) {
    const problem = prepareNamespace();
    if (problem) {
      isolated = false;
      isolationProblem = `could not set up the stand-in addresses: ${problem}`;
    }
  } else isolationProblem ??= 'not in a private network namespace';
  if (!isolated) reporter.note(`note: ${isolationProblem}; attacks that need a metadata or private-range stand-in are skipped`);

  const present = await presentRuntimes();
  const wanted = opts.runtimes && opts.runtimes.length > 0 ? opts.runtimes : ALL_RUNTIMES.filter((r) => present.get(r) === null);
  const attacks = opts.attacks.filter((a) => !opts.only || opts.only.length === 0 || opts.only.some((s) => a.id.includes(s)));

  const standIns = await StandInSet.start(isolated, isolationProblem);
  let suite: SuiteDaemon | undefined;
  try {
    if (opts.weakenOpenRanges?.length) reporter.note(`note: self-test: the suite's own policy opens ${opts.weakenOpenRanges.join(', ')} on purpose; attacks on them must fail`);
    suite = await startSuiteDaemon({ logger, isolated, ...(opts.weakenOpenRanges ? { weakenOpenRanges: opts.weakenOpenRanges } : {}) });
    const python = hasPython(suite.daemon.images);
    if (!python) reporter.note(`note: the debian image with python3 is missing; build it with: ${DEBIAN_HINT} (attacks that need python3 are skipped)`);
    for (const rt of wanted) {
      const absent = present.get(rt);
      if (absent) {
        for (const a of attacks.filter((x) => !x.runtimes || x.runtimes.includes(rt))) {
          reporter.add({ status: 'SKIP', runtime: rt, id: a.id, category: a.category, title: a.title, detail: `runtime unavailable: ${absent}`, durationMs: 0 });
        }
        continue;
      }
      await runRuntime(rt, { suite, standIns, attacks, reporter, python, isolated, isolationProblem: isolationProblem ?? '', opts });
    }
  } finally {
    await suite?.close().catch((err: unknown) => reporter.note(`note: stopping the suite's daemon failed: ${message(err)}`));
    await standIns.close();
  }
  reporter.finish();
  return reporter.totals;
}

interface RuntimeRun {
  suite: SuiteDaemon;
  standIns: StandInSet;
  attacks: readonly Attack[];
  reporter: Reporter;
  python: boolean;
  isolated: boolean;
  isolationProblem: string;
  opts: RunAttacksOpts;
}

async function runRuntime(rt: AttackRuntime, r: RuntimeRun): Promise<void> {
  const { suite, reporter } = r;
  const A = new AgentboxClient({ url: suite.url, token: suite.tokenA });
  const B = new AgentboxClient({ url: suite.url, token: suite.tokenB });
  const rtReq = runtimeRequest(rt);
  const image = r.python ? 'debian' : 'busybox';
  const labels = { [SCRATCH_LABEL]: 'base' };
  const t0 = Date.now();
  let sandboxes: AttackSandboxes;
  try {
    const [busybox, debian, neighbour, otherTenant, egressOpen, egressAllow] = await Promise.all([
      A.create({ ...rtReq, image: 'busybox', egress: { mode: 'none' }, labels }),
      A.create({ ...rtReq, profile: 'none', image, labels }),
      A.create({ ...rtReq, profile: 'none', image, labels }),
      B.create({ ...rtReq, profile: 'none', image, labels }),
      A.create({ ...rtReq, profile: 'open', image, labels }),
      A.create({ ...rtReq, profile: 'allow', image, labels }),
    ]);
    sandboxes = { busybox: busybox.id, debian: debian.id, neighbour: neighbour.id, otherTenant: otherTenant.id, egressOpen: egressOpen.id, egressAllow: egressAllow.id };
  } catch (err) {
    reporter.add({ status: 'FAIL', runtime: rt, id: 'runner.setup', category: 'runner', title: 'create the attack sandboxes', detail: message(err), durationMs: Date.now() - t0 });
    await deleteAll(A, B);
    return;
  }

  const timeoutMs = r.opts.perAttackTimeoutMs ?? 150_000;
  const runOne = async (attack: Attack): Promise<void> => {
    const started = Date.now();
    const line = (status: 'PASS' | 'FAIL' | 'SKIP', detail: string): void =>
      reporter.add({ status, runtime: rt, id: attack.id, category: attack.category, title: attack.title, detail, durationMs: Date.now() - started });
    const needs = attack.needs ?? (attack.category === 'api' ? [] : ['python3']);
    if (needs.includes('python3') && !r.python) return line('SKIP', `needs python3 in the debian image: ${DEBIAN_HINT}`);
    if (needs.includes('isolatedNetwork') && !r.isolated) return line('SKIP', `needs the suite's own network namespace: ${r.isolationProblem}`);
    const ac = new AbortController();
    // One signal per attack, shared by every exec it runs (some run dozens at once): not a leak.
    setMaxListeners(256, ac.signal);
    const scratchIds: string[] = [];
    const ctx: AttackContext = {
      runtime: rt,
      sandboxes,
      client: A,
      otherClient: B,
      api: { url: suite.url, port: suite.port, tokenA: suite.tokenA, tokenReadOnlyA: suite.tokenReadOnlyA, tokenB: suite.tokenB, socketPath: suite.socketPath },
      standIns: r.standIns,
      canary: suite.canary,
      signal: ac.signal,
      exec: (id, cmd, o = {}) =>
        A.exec(id, { cmd, timeoutMs: o.timeoutMs ?? 60_000, ...(o.stdin !== undefined ? { stdin: o.stdin } : {}), ...(o.env ? { env: o.env } : {}) }, ac.signal),
      scratch: async (req = {}) => {
        const sb = await A.create({
          ...rtReq,
          image: req.image ?? image,
          egress: req.egress ?? { mode: 'none' },
          ...(req.limits ? { limits: req.limits } : {}),
          ...(req.volumes ? { volumes: req.volumes } : {}),
          ...(req.profile ? { profile: req.profile } : {}),
          labels: { [SCRATCH_LABEL]: 'scratch' },
        });
        scratchIds.push(sb.id);
        return sb.id;
      },
    };
    try {
      const outcome = await withTimeout(attack.run(ctx), timeoutMs, () => ac.abort());
      line(outcome.blocked ? 'PASS' : 'FAIL', outcome.detail);
    } catch (err) {
      line('FAIL', err instanceof TimeUp ? err.message : `the attack could not run (${message(err)}); the boundary is unproven`);
    } finally {
      ac.abort();
      await Promise.all(scratchIds.map((id) => A.delete(id).catch(() => undefined)));
    }
  };

  const applicable = r.attacks.filter((a) => !a.runtimes || a.runtimes.includes(rt));
  const alone = applicable.filter((a) => a.exclusive ?? a.category === 'resources');
  const together = applicable.filter((a) => !alone.includes(a));
  await pool(together, r.opts.concurrency ?? 4, runOne);
  for (const a of alone) await runOne(a);

  await deleteAll(A, B, new AgentboxClient({ url: `unix:${suite.socketPath}` }));
  const left = await leftovers(rt, suite);
  reporter.add({
    status: left.length === 0 ? 'PASS' : 'FAIL',
    runtime: rt,
    id: 'runner.cleanup',
    category: 'runner',
    title: 'every sandbox of the suite deleted, nothing left on the host',
    detail: left.length === 0 ? `no sandbox, container or cgroup of the suite left (${Math.round((Date.now() - t0) / 1000)} s on ${rt})` : left.join('; '),
    durationMs: Date.now() - t0,
  });
}

async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(n, items.length)) }, worker));
}

async function deleteAll(...clients: AgentboxClient[]): Promise<void> {
  for (const c of clients) {
    const list = await c.list().catch(() => []);
    await Promise.all(list.filter((s) => s.state !== 'deleted').map((s) => c.delete(s.id).catch(() => undefined)));
  }
}

/** What of the suite is still on the host after everything was deleted. */
async function leftovers(rt: AttackRuntime, suite: SuiteDaemon): Promise<string[]> {
  const out: string[] = [];
  const live = suite.daemon.store.listSandboxes({ states: ['creating', 'running'] });
  if (live.length > 0) out.push(`${live.length} sandbox(es) still live: ${live.map((s) => s.sandbox.id).join(' ')}`);
  const tag = suite.daemon.paths.homeTag;
  if (rt === 'local') {
    for (const base of cgroupScopes(tag)) {
      let groups: string[] = [];
      try {
        groups = readdirSync(base, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
      } catch {
        continue;
      }
      if (groups.length > 0) out.push(`cgroups left under ${base}: ${groups.join(' ')}`);
    }
  } else {
    const ps = spawnSync('docker', ['ps', '-aq', '--filter', `label=agentbox.home=${tag}`], { encoding: 'utf8', timeout: 20_000 });
    const ids = (ps.stdout ?? '').split('\n').filter(Boolean);
    if (ids.length > 0) out.push(`containers left: ${ids.join(' ')}`);
  }
  return out;
}

function cgroupScopes(tag: string): string[] {
  const root = '/sys/fs/cgroup';
  const scope = join('agentbox', tag);
  if (existsSync(join(root, 'cgroup.controllers'))) return [join(root, scope)];
  return ['memory', 'pids', 'cpu', 'freezer', 'cpu,cpuacct'].map((c) => join(root, c, scope)).filter((p, i, all) => all.indexOf(p) === i);
}
