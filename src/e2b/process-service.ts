/**
 * envd's `process.Process` Connect service over the process registry (commands: start with streamed
 * output and exit, connect by pid or tag, list, stdin send/stream/close, signals) and the PTY registry
 * (start with `pty`, pty input, Update's resize, connect and signals by pid). A pid names either kind;
 * what only fits the other kind (stdin to a PTY, a resize of a command) is FailedPrecondition, as
 * envd refuses it.
 */
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { ConflictError } from '../contract/errors.js';
import { EnvSchema } from '../contract/model.js';
import { TerminalResizeSchema } from '../contract/terminals.js';
import type { SandboxManager } from '../core/manager.js';
import { envdRequest, keepaliveMs, requireScope, withKeepalive, type EnvdRequest } from './envd-context.js';
import { toConnectError } from './errors.js';
import {
  ProcessEventSchema,
  Signal,
  type Process,
  type ProcessConfig as WireConfig,
  type ProcessEvent as WireEvent,
  type ProcessSelector,
} from './gen/process/process_pb.js';
import type { ProcessConfig, ProcessEvent, ProcessRegistry, TrackedProcess } from './process-registry.js';
import type { PtyEvent, PtyListener, PtyRegistry, TrackedPty } from './pty-registry.js';
import type { AsyncQueue } from '../core/async-queue.js';
import { sandboxPath } from './sandbox-paths.js';
import { parseWith } from '../api/http-util.js';

/** What a pid or tag selects: a command of the process registry or a PTY. */
type Target = { kind: 'process'; process: TrackedProcess } | { kind: 'pty'; pty: TrackedPty };

export function processService(manager: SandboxManager, registry: ProcessRegistry, ptys: PtyRegistry, logger: Logger): ServiceImpl<typeof Process> {
  const guard = async <T>(fn: () => Promise<T> | T): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw toConnectError(err, logger);
    }
  };

  const select = (r: EnvdRequest, selector: ProcessSelector | undefined): TrackedProcess => {
    const s = selector?.selector;
    if (s?.case === 'pid') return registry.find(r.sandboxId, { pid: s.value });
    if (s?.case === 'tag') return registry.find(r.sandboxId, { tag: s.value });
    throw new ConnectError('a process selector (pid or tag) is required', Code.InvalidArgument);
  };

  /** A PTY by pid, else a command by pid or tag (NotFound when neither runs). */
  const target = (r: EnvdRequest, selector: ProcessSelector | undefined): Target => {
    const s = selector?.selector;
    const pty = s?.case === 'pid' ? ptys.find(r.sandboxId, s.value) : undefined;
    return pty ? { kind: 'pty', pty } : { kind: 'process', process: select(r, selector) };
  };

  /** The start event, then the PTY's output (what it showed lately first) and end, with keepalives; lets go when the client goes. */
  async function* ptyStream(pty: TrackedPty, listener: PtyListener, ctx: HandlerContext): AsyncGenerator<{ event: WireEvent }> {
    try {
      yield { event: create(ProcessEventSchema, { event: { case: 'start', value: { pid: pty.pid } } }) };
      for await (const ev of withKeepalive(listener.events, keepaliveMs(ctx), ctx.signal)) yield { event: toWire(ev) };
    } finally {
      listener.close();
    }
  }

  /** The start event, then the command's events as envd's, with keepalives; stops listening when the client goes. */
  async function* stream(process: TrackedProcess, events: AsyncQueue<ProcessEvent>, ctx: HandlerContext): AsyncGenerator<{ event: WireEvent }> {
    try {
      yield { event: create(ProcessEventSchema, { event: { case: 'start', value: { pid: process.pid } } }) };
      for await (const ev of withKeepalive(events, keepaliveMs(ctx), ctx.signal)) yield { event: toWire(ev) };
    } finally {
      registry.unlisten(process, events);
    }
  }

  return {
    async *start(req, ctx) {
      const { r, config } = await guard(() => ({ r: envdRequest(ctx), config: toConfig(req.process) }));
      if (req.pty !== undefined) {
        const { pty, listener } = await guard(() => {
          if (req.tag !== undefined) throw new ConnectError('a PTY has no tag on agentbox: select it by its pid', Code.InvalidArgument);
          const size = terminalSize(req.pty?.size);
          // keepAlive: an E2B PTY runs on when the stream that started it ends.
          return ptys.open(r.sandboxId, r.caller, { config, ...size });
        });
        yield* ptyStream(pty, listener, ctx);
        return;
      }
      const { process, events } = await guard(() =>
        registry.start(r.sandboxId, r.caller, { config, ...(req.tag !== undefined ? { tag: req.tag } : {}), stdin: req.stdin ?? true }),
      );
      yield* stream(process, events, ctx);
    },

    async *connect(req, ctx) {
      const { r, t } = await guard(() => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        return { r, t: target(r, req.process) };
      });
      if (t.kind === 'pty') yield* ptyStream(t.pty, await guard(() => ptys.listen(t.pty, r.caller)), ctx);
      else yield* stream(t.process, registry.listen(t.process), ctx);
    },

    list: (_req, ctx) =>
      guard(() => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'read');
        return {
          // PTYs too: the SDK points pty.connect(pid) users to commands.list().
          processes: [...registry.list(r.sandboxId), ...ptys.list(r.sandboxId)]
            .sort((a, b) => a.pid - b.pid)
            .map((p) => ({
              pid: p.pid,
              ...('tag' in p && p.tag !== undefined ? { tag: p.tag } : {}),
              config: { cmd: p.config.cmd, args: p.config.args, envs: p.config.envs, ...(p.config.cwd !== undefined ? { cwd: p.config.cwd } : {}) },
            })),
        };
      }),

    sendInput: (req, ctx) =>
      guard(() => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        const t = target(r, req.process);
        const input = req.input?.input;
        if (input?.case === undefined) throw new ConnectError('input.stdin or input.pty is required', Code.InvalidArgument);
        send(t, input);
        return {};
      }),

    streamInput: (reqs, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        let t: Target | undefined;
        for await (const req of reqs) {
          const ev = req.event;
          if (ev.case === 'start') t = target(r, ev.value.process);
          else if (ev.case === 'data') {
            if (!t) throw new ConnectError('send the start event (the process) before data', Code.InvalidArgument);
            const input = ev.value.input?.input;
            if (input?.case !== undefined) send(t, input);
          }
        }
        return {};
      }),

    sendSignal: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        if (req.signal !== Signal.SIGKILL && req.signal !== Signal.SIGTERM) throw new ConnectError('signal must be SIGKILL or SIGTERM', Code.InvalidArgument);
        const s = req.process?.selector;
        const pty = s?.case === 'pid' ? ptys.find(r.sandboxId, s.value) : undefined;
        if (pty) {
          // E2B's pty.kill is SIGKILL: the terminal is hung up, so nothing it started is left.
          if (req.signal === Signal.SIGKILL) ptys.kill(pty);
          else ptys.signal(pty, 'TERM');
          return {};
        }
        const tracked = s?.case === 'tag' || (s?.case === 'pid' && registry.list(r.sandboxId).some((p) => p.pid === s.value)) ? select(r, req.process) : undefined;
        // A tracked command killed takes everything it started along (its exec's whole tree).
        if (tracked && req.signal === Signal.SIGKILL) registry.kill(tracked);
        else if (s?.case === 'pid' || tracked) await manager.killProcess(r.sandboxId, tracked?.pid ?? (s?.value as number), { signal: req.signal === Signal.SIGKILL ? 'KILL' : 'TERM' }, r.caller);
        else throw new ConnectError('a process selector (pid or tag) is required', Code.InvalidArgument);
        return {};
      }),

    closeStdin: (req, ctx) =>
      guard(() => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        const t = target(r, req.process);
        if (t.kind === 'pty') throw new ConflictError(`process ${t.pty.pid} is a PTY: it has no stdin to close`, { hint: 'send Ctrl-D (\\x04) or `exit` as pty input to end its shell' });
        registry.closeStdin(t.process);
        return {};
      }),

    /** Resize a PTY (the only update envd has). */
    update: (req, ctx) =>
      guard(() => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        const { cols, rows } = terminalSize(req.pty?.size);
        const t = target(r, req.process);
        if (t.kind !== 'pty') throw new ConflictError(`process ${t.process.pid} was not started with a PTY: it has no size`);
        ptys.resize(t.pty, cols, rows);
        return {};
      }),
  };

  /** Input where it fits: pty input to a PTY, stdin to a command (envd refuses the other way round too). */
  function send(t: Target, input: { case: 'stdin' | 'pty'; value: Uint8Array }): void {
    if (t.kind === 'pty') {
      if (input.case !== 'pty') throw new ConflictError(`process ${t.pty.pid} is a PTY: send its input as pty input`, { hint: 'use pty.sendInput(pid, data)' });
      ptys.write(t.pty, input.value);
    } else {
      if (input.case !== 'stdin') throw new ConflictError(`process ${t.process.pid} was not started with a PTY: send its input as stdin`, { hint: 'use commands.sendStdin(pid, data)' });
      registry.writeStdin(t.process, input.value);
    }
  }
}

/** A PTY's size as envd sends it (`pty.size`), checked as agentbox's terminals take it (1..1000 cells). */
function terminalSize(size: { cols: number; rows: number } | undefined): { cols: number; rows: number } {
  if (!size) throw new ConnectError('pty.size (cols and rows) is required', Code.InvalidArgument);
  return parseWith(TerminalResizeSchema, { cols: size.cols, rows: size.rows });
}

/** The request's command, checked: cmd required, env names as agentbox takes them, cwd inside the sandbox. */
function toConfig(wire: WireConfig | undefined): ProcessConfig {
  if (!wire || wire.cmd === '') throw new ConnectError('process.cmd is required', Code.InvalidArgument);
  const envs = parseWith(EnvSchema, { ...wire.envs });
  return { cmd: wire.cmd, args: [...wire.args], envs, ...(wire.cwd !== undefined && wire.cwd !== '' ? { cwd: sandboxPath(wire.cwd, 'cwd') } : {}) };
}

function toWire(ev: ProcessEvent | PtyEvent | undefined): WireEvent {
  if (ev === undefined) return create(ProcessEventSchema, { event: { case: 'keepalive', value: {} } });
  if (ev.type === 'end') {
    const { exitCode, exited, status, error } = ev.end;
    return create(ProcessEventSchema, { event: { case: 'end', value: { exitCode, exited, status, ...(error !== undefined ? { error } : {}) } } });
  }
  return create(ProcessEventSchema, { event: { case: 'data', value: { output: { case: ev.type, value: ev.data } } } });
}
