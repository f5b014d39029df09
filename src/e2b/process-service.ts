/**
 * envd's `process.Process` Connect service over the process registry: start (streamed output and
 * exit), connect by pid or tag, list, stdin (send, stream, close) and signals. PTY (start with
 * `pty`, Update, pty input) is not offered yet: it answers Unimplemented.
 */
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { EnvSchema } from '../contract/model.js';
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
import type { AsyncQueue } from '../core/async-queue.js';
import { sandboxPath } from './sandbox-paths.js';
import { parseWith } from '../api/http-util.js';

const NO_PTY = 'PTY is not available on agentbox\'s E2B surface yet: run the command without pty (commands.run), or use agentbox\'s own terminal';

export function processService(manager: SandboxManager, registry: ProcessRegistry, logger: Logger): ServiceImpl<typeof Process> {
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
      const r = envdRequest(ctx);
      if (req.pty !== undefined) throw new ConnectError(NO_PTY, Code.Unimplemented);
      const config = await guard(() => toConfig(req.process));
      const { process, events } = await guard(() =>
        registry.start(r.sandboxId, r.caller, { config, ...(req.tag !== undefined ? { tag: req.tag } : {}), stdin: req.stdin ?? true }),
      );
      yield* stream(process, events, ctx);
    },

    async *connect(req, ctx) {
      const r = envdRequest(ctx);
      const process = await guard(() => {
        requireScope(r.caller, 'exec');
        return select(r, req.process);
      });
      yield* stream(process, registry.listen(process), ctx);
    },

    list: (_req, ctx) =>
      guard(() => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'read');
        return {
          processes: registry.list(r.sandboxId).map((p) => ({
            pid: p.pid,
            ...(p.tag !== undefined ? { tag: p.tag } : {}),
            config: { cmd: p.config.cmd, args: p.config.args, envs: p.config.envs, ...(p.config.cwd !== undefined ? { cwd: p.config.cwd } : {}) },
          })),
        };
      }),

    sendInput: (req, ctx) =>
      guard(() => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        const process = select(r, req.process);
        const input = req.input?.input;
        if (input?.case === 'pty') throw new ConnectError(NO_PTY, Code.Unimplemented);
        if (input?.case !== 'stdin') throw new ConnectError('input.stdin is required', Code.InvalidArgument);
        registry.writeStdin(process, input.value);
        return {};
      }),

    streamInput: (reqs, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        requireScope(r.caller, 'exec');
        let process: TrackedProcess | undefined;
        for await (const req of reqs) {
          const ev = req.event;
          if (ev.case === 'start') process = select(r, ev.value.process);
          else if (ev.case === 'data') {
            if (!process) throw new ConnectError('send the start event (the process) before data', Code.InvalidArgument);
            const input = ev.value.input?.input;
            if (input?.case === 'pty') throw new ConnectError(NO_PTY, Code.Unimplemented);
            if (input?.case === 'stdin') registry.writeStdin(process, input.value);
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
        registry.closeStdin(select(r, req.process));
        return {};
      }),

    update: () => {
      throw new ConnectError(NO_PTY, Code.Unimplemented);
    },
  };
}

/** The request's command, checked: cmd required, env names as agentbox takes them, cwd inside the sandbox. */
function toConfig(wire: WireConfig | undefined): ProcessConfig {
  if (!wire || wire.cmd === '') throw new ConnectError('process.cmd is required', Code.InvalidArgument);
  const envs = parseWith(EnvSchema, { ...wire.envs });
  return { cmd: wire.cmd, args: [...wire.args], envs, ...(wire.cwd !== undefined && wire.cwd !== '' ? { cwd: sandboxPath(wire.cwd, 'cwd') } : {}) };
}

function toWire(ev: ProcessEvent | undefined): WireEvent {
  if (ev === undefined) return create(ProcessEventSchema, { event: { case: 'keepalive', value: {} } });
  if (ev.type === 'end') {
    const { exitCode, exited, status, error } = ev.end;
    return create(ProcessEventSchema, { event: { case: 'end', value: { exitCode, exited, status, ...(error !== undefined ? { error } : {}) } } });
  }
  return create(ProcessEventSchema, { event: { case: 'data', value: { output: { case: ev.type, value: ev.data } } } });
}
