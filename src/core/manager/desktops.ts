/**
 * Desktop sessions (ARCHITECTURE.md, "Desktops"). A create request has no start-up command, so the
 * session starts on demand: `ensure` runs `agentbox-desktop start` as an ordinary exec (recorded in
 * the history, under the sandbox's exec timeout) which returns once Xvnc accepts; its X server,
 * window manager and Chromium are in sessions of their own and outlive that exec, as any background
 * job does (an exec ends when its leader exits), until the sandbox ends or `agentbox-desktop stop`.
 *
 * Looking (`status`) runs no exec and marks nothing active: a dashboard polling it must not keep a
 * sandbox from idling out, nor fill its exec history. Ports are probed from inside, as the port
 * routes reach them (`Runtime.openPort`); a paused sandbox is not looked at.
 */
import type { Readable } from 'node:stream';
import type { Runtime, SandboxHandle } from '../../runtime/types.js';
import { AgentboxError, ConflictError, InternalError } from '../../contract/errors.js';
import type { ExecResult } from '../../contract/model.js';
import { DESKTOP_DEVTOOLS_PORT, DESKTOP_DISPLAY, DESKTOP_GEOMETRY_FILE, DESKTOP_SCRIPT_PATH, DESKTOP_VNC_PORT, type Desktop } from '../../contract/desktop.js';

/** How long the start exec may take (the script waits up to 15 s for each of Xvnc and Chromium). */
export const DESKTOP_START_TIMEOUT_MS = 60_000;

/** What a desktop operation needs of one running sandbox. */
export interface DesktopTarget {
  id: string;
  image: string;
  rt: Runtime;
  handle: SandboxHandle;
}

export function vncPath(id: string): string {
  return `/v1/sandboxes/${id}/desktop/vnc`;
}

/** Whether something accepts connections on PORT inside the sandbox (a connection made and closed at once). */
async function listening(t: DesktopTarget, port: number): Promise<boolean> {
  if (!t.rt.openPort) return false;
  try {
    const conn = await t.rt.openPort(t.handle, port);
    conn.destroy();
    return true;
  } catch (err) {
    if (err instanceof AgentboxError && err.code === 'conflict') return false; // nothing listens there
    throw err;
  }
}

async function hasScript(t: DesktopTarget): Promise<boolean> {
  const slash = DESKTOP_SCRIPT_PATH.lastIndexOf('/');
  try {
    const entries = await t.rt.listDir(t.handle, DESKTOP_SCRIPT_PATH.slice(0, slash));
    return entries.some((e) => e.name === DESKTOP_SCRIPT_PATH.slice(slash + 1) && e.type === 'file');
  } catch (err) {
    if (err instanceof AgentboxError && err.code === 'not_found') return false;
    throw err;
  }
}

async function readSmall(stream: Readable, max = 256): Promise<string> {
  let out = '';
  for await (const chunk of stream) {
    out += String(chunk);
    if (out.length > max) {
      stream.destroy();
      break;
    }
  }
  return out;
}

async function geometry(t: DesktopTarget): Promise<{ width: number; height: number } | undefined> {
  try {
    const m = /^(\d{2,5})x(\d{2,5})\s*$/.exec(await readSmall(await t.rt.readFile(t.handle, DESKTOP_GEOMETRY_FILE)));
    return m ? { width: Number(m[1]), height: Number(m[2]) } : undefined;
  } catch {
    return undefined; // not written (yet), or unreadable: the size is unknown
  }
}

function noDesktop(t: DesktopTarget): ConflictError {
  return new ConflictError(`sandbox ${t.id} has no desktop: its image ${t.image} has no ${DESKTOP_SCRIPT_PATH}`, {
    hint: 'create the sandbox from the desktop image: agentbox image build desktop, then agentbox create --profile desktop',
  });
}

export class Desktops {
  /** Starts in flight per sandbox: concurrent callers share one (the script also takes a lock). */
  private readonly starting = new Map<string, Promise<void>>();

  /** What the sandbox's desktop looks like now; PAUSED: not looked at. */
  async status(t: DesktopTarget, paused: boolean): Promise<Desktop> {
    const base = { sandboxId: t.id, paused, display: DESKTOP_DISPLAY, vncPort: DESKTOP_VNC_PORT, vncPath: vncPath(t.id), devtoolsPort: DESKTOP_DEVTOOLS_PORT };
    if (paused) return { ...base, available: false, running: false, width: null, height: null, chromium: false };
    const available = await hasScript(t);
    const running = available && (await listening(t, DESKTOP_VNC_PORT));
    const size = running ? await geometry(t) : undefined;
    const chromium = running && (await listening(t, DESKTOP_DEVTOOLS_PORT));
    return { ...base, available, running, width: size?.width ?? null, height: size?.height ?? null, chromium };
  }

  /**
   * Make sure the desktop runs: nothing to do when Xvnc accepts already; else `agentbox-desktop
   * start` through RUN (the manager's exec: recorded, limited, the sandbox's user and env).
   * ConflictError when the image has no desktop; InternalError (with the script's words) when it
   * did not come up.
   */
  async ensure(t: DesktopTarget, run: (cmd: string[], timeoutMs: number) => Promise<ExecResult>): Promise<void> {
    const inflight = this.starting.get(t.id);
    if (inflight) return inflight;
    const p = this.start(t, run).finally(() => this.starting.delete(t.id));
    this.starting.set(t.id, p);
    return p;
  }

  private async start(t: DesktopTarget, run: (cmd: string[], timeoutMs: number) => Promise<ExecResult>): Promise<void> {
    if (!t.rt.openPort) throw new ConflictError(`the ${t.rt.name} runtime cannot reach a sandbox's ports, so not its desktop either`, { hint: 'use a sandbox of another runtime' });
    if (await listening(t, DESKTOP_VNC_PORT)) return;
    if (!(await hasScript(t))) throw noDesktop(t);
    const r = await run([DESKTOP_SCRIPT_PATH, 'start'], DESKTOP_START_TIMEOUT_MS);
    if (r.exitCode !== 0 || !(await listening(t, DESKTOP_VNC_PORT))) {
      const said = r.stderr.trim().split('\n').slice(-5).join(' | ').slice(0, 500);
      throw new InternalError(`the desktop of sandbox ${t.id} did not start (exit ${r.exitCode}${said ? `: ${said}` : ''})`, {
        hint: `its logs are in /tmp/agentbox-desktop/ inside the sandbox (agentbox exec ${t.id} -- tail /tmp/agentbox-desktop/xvnc.log); exec ${r.execId} has the whole output`,
      });
    }
  }
}
