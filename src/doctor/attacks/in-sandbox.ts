/**
 * Running a probe inside a sandbox and reading its verdict, for the in-sandbox attacks (filesystem, privilege,
 * resources, cross-sandbox). A probe prints one line `RESULT {"blocked": bool, "detail": str}`; a probe that
 * prints none did not run, and that counts as a failed attack: an attack must never pass by breaking.
 *
 * A probe must stay harmless when it gets through: the suite runs on users' hosts, where a broken boundary means the
 * probe runs against the host itself. So a probe proves a permission without using it: it creates only uniquely named
 * files and removes them, sets a mode or a hostname to the value it already has, asks for MNT_EXPIRE instead of an
 * unmount, uses PTRACE_SEIZE (which stops nothing), signals only processes it has identified, and bounds its floods.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { ExecResult } from '../../contract/model.js';
import type { AttackContext, AttackOutcome } from './types.js';

/**
 * Python helpers every probe starts with: `sc(nr, *args)` makes a raw x86_64 syscall and returns (rc, errno name),
 * `done(blocked, detail)` prints the verdict and exits, `try_open(path, flags)` returns '' or the errno name.
 */
export const PY_PRELUDE = String.raw`
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def _arg(x):
    if isinstance(x, int): return ctypes.c_long(x)
    if isinstance(x, bytes): return ctypes.c_char_p(x)
    return x
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
    e = ctypes.get_errno() if r < 0 else 0
    return r, (errno.errorcode.get(e, str(e)) if e else '')
def done(blocked, detail):
    print('RESULT ' + json.dumps({'blocked': bool(blocked), 'detail': str(detail)[:600]}))
    sys.stdout.flush()
    os._exit(0)
def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__
def try_open(path, flags=os.O_RDONLY):
    try:
        fd = os.open(path, flags)
        os.close(fd)
        return ''
    except Exception as e:
        return ename(e)
`;

/** The verdict a probe printed, or a failed outcome that says why there is none. */
export function verdictOf(r: ExecResult): AttackOutcome {
  const line = r.stdout
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('RESULT '));
  if (line) {
    try {
      const v = JSON.parse(line.slice('RESULT '.length)) as { blocked?: unknown; detail?: unknown };
      if (typeof v.blocked === 'boolean') return { blocked: v.blocked, detail: String(v.detail ?? '') };
    } catch {
      /* fall through: not a verdict */
    }
  }
  const why = r.timedOut ? 'timed out' : r.oomKilled ? 'was OOM-killed' : `exited ${r.exitCode}`;
  return { blocked: false, detail: `the probe did not run to its verdict (${why}): ${clip(r.stderr || r.stdout)}` };
}

/** Runs a Python probe (PY_PRELUDE + body) with python3 in a sandbox and returns its verdict. */
export async function pyProbe(ctx: AttackContext, sandboxId: string, body: string, opts: { timeoutMs?: number; args?: string[] } = {}): Promise<AttackOutcome> {
  const r = await ctx.exec(sandboxId, ['python3', '-c', PY_PRELUDE + body, ...(opts.args ?? [])], { timeoutMs: opts.timeoutMs ?? 30_000 });
  return verdictOf(r);
}

/** Runs a Python probe and returns the raw result (for attacks that judge the exec result itself). */
export function pyRun(ctx: AttackContext, sandboxId: string, body: string, opts: { timeoutMs?: number; args?: string[] } = {}): Promise<ExecResult> {
  return ctx.exec(sandboxId, ['python3', '-c', PY_PRELUDE + body, ...(opts.args ?? [])], { timeoutMs: opts.timeoutMs ?? 30_000 });
}

/** Runs a busybox-sh probe; it prints `RESULT {...}` itself (see shResult). */
export async function shProbe(ctx: AttackContext, sandboxId: string, script: string, timeoutMs = 30_000): Promise<AttackOutcome> {
  return verdictOf(await ctx.exec(sandboxId, ['sh', '-c', script], { timeoutMs }));
}

export function clip(s: string, n = 240): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > n ? `${one.slice(0, n)}…` : one;
}

/** A random token for markers that must not be guessable or collide between runs. */
export function marker(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}${Date.now().toString(36)}`;
}

/** Python string literal of a JS string (JSON strings are valid Python literals for the ASCII we use). */
export function pyStr(s: string): string {
  return JSON.stringify(s);
}

/** Host processes whose command line contains `needle` (docker/local sandboxes' processes show in the host's /proc). */
export function hostProcessesWith(needle: string): number[] {
  const found: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(needle)) found.push(Number(p));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return found;
}
