/**
 * Which way an exec gets into a docker sandbox, fastest first:
 *  - runc: agentbox-helper enters the container directly (direct-entry.ts);
 *  - gVisor: the sandbox's exec agent, over a Unix socket (exec-agent.ts);
 *  - otherwise, or when neither can: an Engine exec, which always works.
 * Commands with a timeout and a tag run under agentbox-docker-init's `run` wrapper on the first and
 * last paths; the agent does the wrapper's job itself, which saves two process creations under gVisor.
 * A route is found once per container (at create, or from Docker after a daemon restart) and
 * checked on every use.
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { INIT_IN_CONTAINER } from './container-config.js';
import { directExec, entryTarget, targetAlive, type EntryTarget } from './direct-entry.js';
import type { EngineExec, EngineExecOpts } from './engine-exec.js';
import { AGENT_MOUNT, AGENT_SOCKET, AgentListener, agentExec, encodeRequest, MAX_REQUEST, type AgentExec } from './exec-agent.js';

type Route = { kind: 'direct'; target: EntryTarget } | { kind: 'agent'; listener: AgentListener } | { kind: 'engine' };

/** An exec as the driver asks for it; `run` puts it under a timeout and names it for `kill` and the OOM log. */
export interface ExecRequest extends EngineExecOpts {
  run?: { timeoutMs: number; tag: string };
}

export interface ExecRouterOpts {
  /** agentbox-helper, when direct entry is usable here (see directEntryUsable). */
  helper?: string;
  /** Where gVisor sandboxes' agent directories live; absent: gVisor execs go through the Engine. */
  agentDir?: string;
  inspect(containerId: string): Promise<Docker.ContainerInspectInfo>;
  /** Something went wrong that an Engine exec covers for; for the log. */
  onError(msg: string, err: unknown, containerId: string): void;
}

/** How long an exec waits for the agent of a sandbox just started (PID 1 starts it at once) before using the Engine. */
const STARTING_WAIT_MS = 3000;
/** How long it waits for a running agent's next idle connection (it redials at once; 64 sessions at most). */
const BUSY_WAIT_MS = 2000;

export class ExecRouter {
  private readonly routes = new Map<string, Promise<Route>>();
  /** Sandbox id → the agent listener of a container being created. */
  private readonly pending = new Map<string, AgentListener>();
  /** Container id → Engine execs in flight (each holds host descriptors inside a gVisor sandbox). */
  private readonly engineExecs = new Map<string, number>();

  constructor(private readonly opts: ExecRouterOpts) {}

  /**
   * Before a gVisor container is created, if agents are on: the host directory to bind at
   * AGENT_MOUNT, already listened on, so the agent's first dial is answered.
   */
  async prepareAgent(sandboxId: string, gvisor: boolean): Promise<string | undefined> {
    if (!gvisor || !this.opts.agentDir) return undefined;
    mkdirSync(this.opts.agentDir, { recursive: true, mode: 0o700 });
    const dir = join(this.opts.agentDir, sandboxId);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    this.pending.set(sandboxId, await AgentListener.listen(join(dir, AGENT_SOCKET)));
    return dir;
  }

  /** After the container started: remember its route. */
  started(containerId: string, sandboxId: string, gvisor: boolean, pid: number): void {
    const listener = this.pending.get(sandboxId);
    this.pending.delete(sandboxId);
    const route: Route = listener ? { kind: 'agent', listener } : gvisor ? { kind: 'engine' } : this.runcRoute(pid);
    this.routes.set(containerId, Promise.resolve(route));
  }

  /** A runc container: entered directly when the helper can, else through the Engine. */
  private runcRoute(pid: number): Route {
    const target = this.opts.helper ? entryTarget(pid) : undefined;
    return target ? { kind: 'direct', target } : { kind: 'engine' };
  }

  async start(containerId: string, req: ExecRequest, engine: (o: EngineExecOpts) => Promise<EngineExec>): Promise<EngineExec | AgentExec> {
    const route = await this.route(containerId);
    if (route.kind === 'agent') {
      const request = encodeRequest({ cmd: req.cmd, workingDir: req.workingDir, env: req.env, timeoutMs: req.run?.timeoutMs ?? 0 });
      if (request && request.length <= MAX_REQUEST) {
        const { listener } = route;
        const wait = listener.state === 'up' ? BUSY_WAIT_MS : listener.state === 'starting' ? STARTING_WAIT_MS : 0;
        const sock = await listener.take(wait);
        if (sock) return agentExec(sock, request, req.stdin);
        // Killed, say: PID 1 starts another within a second; until it dials in, the Engine serves.
        listener.markDown();
      }
    }
    const o: EngineExecOpts = { ...req, cmd: req.run ? [INIT_IN_CONTAINER, 'run', String(req.run.timeoutMs), req.run.tag, '--', ...req.cmd] : req.cmd };
    if (route.kind === 'direct' && this.opts.helper) return directExec(this.opts.helper, route.target, o);
    this.engineExecs.set(containerId, (this.engineExecs.get(containerId) ?? 0) + 1);
    const done = (): void => {
      const n = (this.engineExecs.get(containerId) ?? 1) - 1;
      if (n > 0) this.engineExecs.set(containerId, n);
      else this.engineExecs.delete(containerId);
    };
    try {
      const ex = await engine(o);
      void ex.exitCode.then(done, done);
      return ex;
    } catch (err) {
      done();
      throw err;
    }
  }

  private route(containerId: string): Promise<Route> {
    const known = this.routes.get(containerId);
    if (known) {
      return known.then((r) => {
        if (r.kind !== 'direct' || targetAlive(r.target)) return r;
        // The container's init is gone (or its pid was reused): let the Engine say what happened.
        const engine: Route = { kind: 'engine' };
        this.routes.set(containerId, Promise.resolve(engine));
        return engine;
      });
    }
    const found = this.discover(containerId);
    this.routes.set(containerId, found);
    return found;
  }

  /** A container this daemon did not start (it restarted since): find the route from Docker. */
  private async discover(containerId: string, evenStopped = false): Promise<Route> {
    try {
      const info = await this.opts.inspect(containerId);
      if (!info.State.Running && !evenStopped) return { kind: 'engine' };
      if (info.HostConfig.Runtime !== 'runsc') return this.runcRoute(info.State.Pid);
      const source = info.Mounts.find((m) => m.Destination === AGENT_MOUNT)?.Source;
      if (!source || !this.opts.agentDir) return { kind: 'engine' };
      // Its agent keeps redialling the same path: listen there again.
      return { kind: 'agent', listener: await AgentListener.listen(join(source, AGENT_SOCKET)) };
    } catch (err) {
      this.opts.onError('could not find how to enter a container', err, containerId);
      return { kind: 'engine' };
    }
  }

  /**
   * Before a checkpoint (hibernation.ts): the agent must hold no connection to this host, so stop
   * listening and wait until it has closed them all. False, with its route as it was, when an exec or
   * a file operation is using one (or an Engine exec, whose output descriptors are the host's, is in
   * flight) or the agent did not let go in time. Until `relisten`, the
   * container's route is the Engine's.
   */
  async park(containerId: string, timeoutMs: number): Promise<boolean> {
    const route = await this.route(containerId);
    if (this.engineExecs.has(containerId)) return false;
    if (route.kind !== 'agent') return true;
    const drained = await route.listener.drain(timeoutMs);
    if (drained === 'drained') {
      this.routes.set(containerId, Promise.resolve({ kind: 'engine' }));
      return true;
    }
    if (drained === 'timeout') await this.relisten(containerId);
    return false;
  }

  /** Listen for the container's agent again (after `park`, before its processes come back): its agent keeps redialling. */
  async relisten(containerId: string): Promise<void> {
    const old = await this.routes.get(containerId);
    if (old?.kind === 'agent') await old.listener.close();
    this.routes.delete(containerId);
    const found = this.discover(containerId, true);
    this.routes.set(containerId, found);
    await found;
  }

  /** Whether gVisor sandboxes get an exec agent (hibernation needs one: see hibernation.ts). */
  get agents(): boolean {
    return this.opts.agentDir !== undefined;
  }

  /** The container is gone: stop listening and remove its agent directory. */
  async forget(containerId: string | undefined, sandboxId: string): Promise<void> {
    if (containerId) {
      const route = await this.routes.get(containerId);
      this.routes.delete(containerId);
      if (route?.kind === 'agent') await route.listener.close();
    }
    await this.pending.get(sandboxId)?.close();
    this.pending.delete(sandboxId);
    if (this.opts.agentDir) rmSync(join(this.opts.agentDir, sandboxId), { recursive: true, force: true });
  }

  /** Removes agent directories of sandboxes that no longer have a container. */
  sweep(liveSandboxIds: ReadonlySet<string>): void {
    if (!this.opts.agentDir) return;
    let names: string[];
    try {
      names = readdirSync(this.opts.agentDir);
    } catch {
      return;
    }
    for (const name of names) if (!liveSandboxIds.has(name)) rmSync(join(this.opts.agentDir, name), { recursive: true, force: true });
  }

  /** Daemon shutdown: stop listening; the directories stay for containers that outlive the daemon. */
  async close(): Promise<void> {
    const listeners = [...(await Promise.all([...this.routes.values()])).flatMap((r) => (r.kind === 'agent' ? [r.listener] : [])), ...this.pending.values()];
    this.routes.clear();
    this.pending.clear();
    await Promise.all(listeners.map((l) => l.close()));
  }
}
