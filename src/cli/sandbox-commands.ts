/** Sandbox commands: thin over the SDK, so they behave exactly like the API. */
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { BadRequestError } from '../contract/errors.js';
import { EXIT_KILLED, EXIT_TIMED_OUT } from '../contract/exit-codes.js';
import { ISOLATIONS, RUNTIME_NAMES, type ExecSummary, type Sandbox } from '../contract/model.js';
import type { AgentboxClient } from '../sdk/client.js';
import { connectClient } from './connect.js';
import { runTerminal } from './terminal-commands.js';
import { collect, createRequest, execRequest, killRequest, type CreateFlags, type ExecFlags } from './flags.js';
import { age, printJson, table } from './output.js';

/** commander keeps the `--` that separates our flags from the command: drop it. */
function commandArgs(cmd: string[]): string[] {
  return cmd[0] === '--' ? cmd.slice(1) : cmd;
}

function addCreateFlags(cmd: Command): Command {
  return cmd
    .option('--image <name>', 'image (see agentbox image ls)')
    .option('--profile <name>', 'policy profile')
    .option('--runtime <name>', RUNTIME_NAMES.join(' | '))
    .option('--isolation <level>', ISOLATIONS.join(' | '))
    .option('--memory <MB>', 'memory limit in MiB')
    .option('--cpus <N>', 'CPU cores')
    .option('--pids <N>', 'process limit')
    .option('--disk <MB>', 'size of /workspace + /tmp on disk in MiB (writes past it: ENOSPC)')
    .option('--snapshot <SNAP>', 'start with the files of this snapshot (id or name; see agentbox snapshot ls)')
    .option('--ttl <DUR>', 'hard lifetime, e.g. 10m')
    .option('--label <k=v>', 'label (repeatable)', collect)
    .option('--egress <mode>', 'none | allowlist | open')
    .option('--allow <HOST[:PORT]>', 'host reachable in allowlist mode (repeatable)', collect)
    .option('--volume <NAME:/PATH[:ro]>', 'mount a named volume (repeatable; see agentbox volume)', collect);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

/** Stream an exec to our stdout/stderr; returns the command's summary. */
async function streamExec(client: AgentboxClient, id: string, cmd: string[], flags: ExecFlags, signal: AbortSignal): Promise<ExecSummary> {
  const stdin = flags.i ? await readStdin() : undefined;
  let result: ExecSummary | undefined;
  for await (const ev of client.execStream(id, execRequest(cmd, flags, stdin), signal)) {
    if (ev.type === 'stdout') await write(process.stdout, ev.data);
    else if (ev.type === 'stderr') await write(process.stderr, ev.data);
    else if (ev.type === 'exit') result = ev.result;
  }
  if (!result) throw new BadRequestError('the exec ended without a result', { hint: 'see the daemon log' });
  if (result.timedOut) process.stderr.write(`agentbox: command timed out after ${flags.timeout ?? 'the exec timeout'} (exit ${EXIT_TIMED_OUT})\n`);
  if (result.oomKilled) process.stderr.write(`agentbox: command killed by the OOM killer (exit ${EXIT_KILLED}); ask for more with --memory\n`);
  if (result.truncated) process.stderr.write('agentbox: output truncated at the policy outputLimitBytes\n');
  return result;
}

function write(stream: NodeJS.WriteStream, data: Buffer): Promise<void> | undefined {
  if (stream.write(data)) return undefined;
  return new Promise((resolve) => stream.once('drain', () => resolve()));
}

/** Abort the exec on Ctrl-C, so the sandbox command is killed rather than orphaned. */
function interruptible(): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const onSignal = (): void => ac.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    signal: ac.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export function registerSandboxCommands(program: Command, setExit: (code: number) => void): void {
  addCreateFlags(program.command('run').description('create a sandbox, run one command in it, remove it'))
    .option('--env <K=V>', 'environment variable (repeatable)', collect)
    .option('--timeout <DUR>', `kill the command after this long (exit ${EXIT_TIMED_OUT})`)
    .option('--cwd <DIR>', 'working directory inside the sandbox')
    .option('-i', 'forward stdin to the command')
    .option('--keep', 'keep the sandbox and print its id on stderr')
    .option('--json', 'print the exec result as JSON instead of streaming')
    .argument('<cmd...>', 'command and arguments (after --)')
    .action(async (rawCmd: string[], flags: CreateFlags & ExecFlags & { keep?: boolean; json?: boolean }) => {
      const cmd = commandArgs(rawCmd);
      const client = await connectClient();
      const sb = await client.create(createRequest(flags));
      const intr = interruptible();
      try {
        const execFlags: ExecFlags = { ...(flags.timeout ? { timeout: flags.timeout } : {}), ...(flags.cwd ? { cwd: flags.cwd } : {}), ...(flags.i ? { i: true } : {}) };
        if (flags.json) {
          const result = await client.exec(sb.id, execRequest(cmd, execFlags, flags.i ? await readStdin() : undefined), intr.signal);
          printJson(result);
          setExit(result.exitCode);
        } else {
          setExit((await streamExec(client, sb.id, cmd, execFlags, intr.signal)).exitCode);
        }
      } finally {
        intr.dispose();
        if (flags.keep) process.stderr.write(`${sb.id}\n`);
        else await client.delete(sb.id).catch(() => undefined);
      }
    });

  addCreateFlags(program.command('create').description('create a sandbox and print its id'))
    .option('--env <K=V>', 'environment variable for every exec (repeatable)', collect)
    .option('--json', 'print the whole sandbox as JSON')
    .action(async (flags: CreateFlags & { json?: boolean }) => {
      const sb = await (await connectClient()).create(createRequest(flags));
      if (flags.json) printJson(sb);
      else process.stdout.write(`${sb.id}\n`);
    });

  program
    .command('exec')
    .description('run a command in a sandbox; exits with its exit code')
    .argument('<id>', 'sandbox id')
    .argument('<cmd...>', 'command and arguments (after --)')
    .option('--env <K=V>', 'environment variable (repeatable)', collect)
    .option('--timeout <DUR>', `kill the command after this long (exit ${EXIT_TIMED_OUT})`)
    .option('--cwd <DIR>', 'working directory inside the sandbox')
    .option('-i', 'forward stdin to the command')
    .option('-t', 'run it on a terminal inside the sandbox (with -i: interactive, as agentbox shell)')
    .option('--json', 'print the exec result as JSON')
    .action(async (id: string, rawCmd: string[], flags: ExecFlags & { json?: boolean; t?: boolean }) => {
      const cmd = commandArgs(rawCmd);
      const client = await connectClient();
      if (flags.t) {
        if (flags.json || flags.timeout) throw new BadRequestError('-t runs the command on a terminal: --json and --timeout do not apply', { hint: 'drop -t for a plain exec' });
        setExit(await runTerminal(client, id, cmd, { ...flags, interactive: flags.i === true }));
        return;
      }
      const intr = interruptible();
      try {
        if (flags.json) {
          const result = await client.exec(id, execRequest(cmd, flags, flags.i ? await readStdin() : undefined), intr.signal);
          printJson(result);
          setExit(result.exitCode);
        } else setExit((await streamExec(client, id, cmd, flags, intr.signal)).exitCode);
      } finally {
        intr.dispose();
      }
    });

  program
    .command('ls')
    .description('list sandboxes')
    .option('-a, --all', 'include ended sandboxes')
    .option('--label <k=v>', 'only sandboxes with this label (repeatable)', collect)
    .option('--json', 'JSON output')
    .action(async (flags: { all?: boolean; label?: string[]; json?: boolean }) => {
      const labels = flags.label ? Object.fromEntries(flags.label.map((l) => l.split('=', 2) as [string, string])) : undefined;
      const list = await (await connectClient()).list({ ...(labels ? { labels } : {}), ...(flags.all ? { all: true } : {}) });
      if (flags.json) return printJson(list);
      table(
        ['ID', 'IMAGE', 'RUNTIME', 'STATE', 'AGE', 'MEMORY', 'LABELS'],
        list.map((s: Sandbox) => [s.id, s.image, `${s.runtime}/${s.isolation}`, s.endReason ? `${s.state} (${s.endReason})` : s.state, age(s.createdAt), `${s.limits.memoryMb}M`, Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(',')]),
      );
    });

  program
    .command('watch')
    .description('live table of sandboxes (refreshes every second; Ctrl-C ends)')
    .option('--interval <ms>', 'refresh interval', '1000')
    .action(async (flags: { interval: string }) => {
      const client = await connectClient();
      const every = Math.max(200, Number(flags.interval) || 1000);
      const intr = interruptible();
      while (!intr.signal.aborted) {
        const list = await client.list();
        if (process.stdout.isTTY) process.stdout.write('\x1b[H\x1b[2J');
        process.stdout.write(`${new Date().toISOString()}  ${list.length} sandbox(es)\n`);
        table(['ID', 'IMAGE', 'STATE', 'AGE', 'IDLE', 'MEMORY'], list.map((s: Sandbox) => [s.id, s.image, s.state, age(s.createdAt), age(s.lastActiveAt), `${s.limits.memoryMb}M`]));
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, every);
          intr.signal.addEventListener('abort', () => {
            clearTimeout(t);
            resolve();
          }, { once: true });
        });
      }
      intr.dispose();
    });

  program
    .command('inspect')
    .description('print a sandbox as JSON (with endReason once it ended)')
    .argument('<id>')
    .action(async (id: string) => printJson(await (await connectClient()).get(id)));

  program
    .command('stop')
    .description('stop a sandbox (its processes end; the record stays)')
    .argument('<id...>')
    .action(async (ids: string[]) => {
      const client = await connectClient();
      for (const id of ids) process.stdout.write(`${(await client.stop(id)).id}\n`);
    });

  program
    .command('pause')
    .description('pause a sandbox: its processes stop (frozen), or with --hibernate its memory goes to disk; any later call into it resumes it')
    .argument('<id>')
    .option('--hibernate', 'save its memory to disk and free it (gVisor, microvm)')
    .action(async (id: string, flags: { hibernate?: boolean }) => {
      const sb = await (await connectClient()).pause(id, { mode: flags.hibernate ? 'hibernate' : 'freeze' });
      process.stdout.write(`${sb.id} ${sb.paused ?? 'running'}\n`);
    });

  program
    .command('resume')
    .description('resume a paused sandbox now')
    .argument('<id>')
    .action(async (id: string) => {
      process.stdout.write(`${(await (await connectClient()).resume(id)).id}\n`);
    });

  program
    .command('rm')
    .description('delete sandboxes')
    .argument('<id...>')
    .action(async (ids: string[]) => {
      const client = await connectClient();
      for (const id of ids) process.stdout.write(`${(await client.delete(id)).id}\n`);
    });

  program
    .command('ps')
    .description('processes of a running sandbox: pid inside it, user, the exec that started each, command line')
    .argument('<id>')
    .option('--json', 'JSON output')
    .action(async (id: string, flags: { json?: boolean }) => {
      const list = await (await connectClient()).processes(id);
      if (flags.json) return printJson(list);
      table(['PID', 'PPID', 'USER', 'EXEC', 'COMMAND'], list.map((p) => [String(p.pid), String(p.ppid), p.user ?? String(p.uid), p.execId ?? '-', p.command]));
    });

  program
    .command('kill')
    .description('send a signal (TERM unless --signal) to one process of a sandbox, by its pid inside it (agentbox ps); PID 1 cannot be killed')
    .argument('<id>')
    .argument('<pid>')
    .option('-s, --signal <SIG>', 'TERM, KILL, INT, HUP, QUIT, USR1, USR2, STOP or CONT')
    .action(async (id: string, pid: string, flags: { signal?: string }) => {
      const req = killRequest(pid, flags);
      const r = await (await connectClient()).killProcess(id, req.pid, req.body);
      process.stdout.write(`${r.pid} ${r.signal}\n`);
    });

  program
    .command('logs')
    .description('exec history of a sandbox; with an exec id, that exec\'s output; -f follows it (default: the newest exec)')
    .argument('<id>')
    .argument('[execId]')
    .option('-f, --follow', 'stream the exec\'s output until it ends')
    .option('--json', 'JSON output')
    .action(async (id: string, execId: string | undefined, flags: { json?: boolean; follow?: boolean }) => {
      const client = await connectClient();
      if (flags.follow) {
        const target = execId ?? (await client.execs(id))[0]?.execId;
        if (!target) throw new BadRequestError(`sandbox ${id} has run no command yet`, { hint: `agentbox exec ${id} -- CMD` });
        if ((await client.execRecord(id, target)).state === 'lost') {
          process.stderr.write(`agentbox: exec ${target} was lost: the daemon stopped while it ran, so its exit status and the end of its output are unknown\n`);
        }
        for await (const ev of client.followExec(id, target)) {
          if (ev.type === 'stdout') await write(process.stdout, ev.data);
          else if (ev.type === 'stderr') await write(process.stderr, ev.data);
          else if (ev.type === 'exit') setExit(ev.result.exitCode);
        }
        return;
      }
      if (execId) {
        const rec = await client.execRecord(id, execId);
        if (flags.json) return printJson(rec);
        process.stdout.write(rec.stdout ?? '');
        process.stderr.write(rec.stderr ?? '');
        return;
      }
      const execs = await client.execs(id);
      if (flags.json) return printJson(execs);
      table(['EXEC', 'STARTED', 'EXIT', 'MS', 'COMMAND'], execs.map((e) => [e.execId, e.startedAt, e.exitCode === null ? e.state : String(e.exitCode), String(e.durationMs ?? ''), e.cmd.join(' ').slice(0, 60)]));
    });

  program
    .command('cp')
    .description('copy a file into or out of a sandbox: cp LOCAL ID:PATH, or cp ID:PATH LOCAL (- is stdin/stdout)')
    .argument('<src>')
    .argument('<dst>')
    .action(async (src: string, dst: string) => {
      const remote = (s: string): { id: string; path: string } | undefined => {
        const m = /^(sbx_[A-Za-z0-9]+):(\/.*)$/.exec(s);
        return m ? { id: m[1] as string, path: m[2] as string } : undefined;
      };
      const from = remote(src);
      const to = remote(dst);
      if (Boolean(from) === Boolean(to)) throw new BadRequestError('exactly one side of cp must be ID:/path', { hint: 'agentbox cp ./local.txt sbx_abc:/workspace/local.txt' });
      const client = await connectClient();
      if (to) {
        const input = src === '-' ? process.stdin : createReadStream(src);
        const { bytes } = await client.writeFile(to.id, to.path, input);
        process.stderr.write(`${bytes} bytes\n`);
      } else if (from) {
        const stream = await client.readFile(from.id, from.path);
        await pipeline(stream, dst === '-' ? process.stdout : createWriteStream(dst));
      }
    });
}
