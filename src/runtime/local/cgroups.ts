/**
 * cgroup v1 and v2 behind one small interface: a group per sandbox with its limits, a leaf for
 * its PID 1 and one per exec (processes inherit the cgroup of their parent, so each entry joins
 * its leaf before it enters), plus OOM counters, the freezer and tree kill.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Limits } from '../../contract/model.js';

const CG_ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS = ['memory', 'pids', 'cpu', 'freezer'] as const;

export interface CgroupLayout {
  version: 1 | 2;
  /** One base directory per hierarchy this driver uses (one on v2, one per controller on v1). */
  bases: string[];
}

/** Which cgroup version this host offers for the controllers we need, or why none. */
export function detectCgroups(): { ok: true; version: 1 | 2 } | { ok: false; reason: string } {
  const v2Controllers = join(CG_ROOT, 'cgroup.controllers');
  if (existsSync(v2Controllers)) {
    const have = readFileSync(v2Controllers, 'utf8').trim().split(/\s+/);
    const missing = ['memory', 'pids', 'cpu'].filter((c) => !have.includes(c));
    if (missing.length === 0) return { ok: true, version: 2 };
    return { ok: false, reason: `cgroup v2 lacks the ${missing.join(', ')} controller(s)` };
  }
  const missing = V1_CONTROLLERS.filter((c) => !existsSync(join(CG_ROOT, c, 'cgroup.procs')));
  if (missing.length === 0) return { ok: true, version: 1 };
  return { ok: false, reason: `no cgroup v2 and cgroup v1 lacks ${missing.join(', ')}` };
}

function writeKnob(dir: string, knob: string, value: string): void {
  writeFileSync(join(dir, knob), value);
}

function readKnob(dir: string, knob: string): string | undefined {
  try {
    return readFileSync(join(dir, knob), 'utf8');
  } catch {
    return undefined;
  }
}

function counterIn(text: string | undefined, name: string): number {
  const m = text?.match(new RegExp(`^${name} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

function pidsIn(dir: string): number[] {
  const text = readKnob(dir, 'cgroup.procs');
  if (!text) return [];
  return text.split('\n').filter(Boolean).map(Number);
}

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

/** Depth-first list of a group and all groups below it. */
function tree(dir: string): string[] {
  return [...subdirs(dir).flatMap(tree), dir];
}

export class Cgroups {
  readonly version: 1 | 2;
  /** Base of this daemon's groups inside each hierarchy, e.g. agentbox/<home tag>. */
  private readonly bases: string[];

  constructor(version: 1 | 2, scope: string) {
    this.version = version;
    this.bases = version === 2 ? [join(CG_ROOT, scope)] : V1_CONTROLLERS.map((c) => join(CG_ROOT, c, scope));
    for (const base of this.bases) this.ensureGroup(base);
  }

  /** Make a directory group; on v2 also hand the controllers down to it. */
  private ensureGroup(dir: string): void {
    if (this.version === 2) {
      const rel = dir.slice(CG_ROOT.length + 1).split('/');
      let cur = CG_ROOT;
      for (const part of rel) {
        try {
          writeKnob(cur, 'cgroup.subtree_control', '+memory +pids +cpu');
        } catch {
          // a parent that already delegates them, or holds processes itself, refuses: checked below
        }
        cur = join(cur, part);
        mkdirSync(cur, { recursive: true });
      }
    } else {
      mkdirSync(dir, { recursive: true });
    }
  }

  private dirs(id: string, leaf?: string): string[] {
    return this.bases.map((b) => (leaf ? join(b, id, leaf) : join(b, id)));
  }

  private controllerDir(id: string, controller: (typeof V1_CONTROLLERS)[number]): string {
    const index = this.version === 2 ? 0 : V1_CONTROLLERS.indexOf(controller);
    return join(this.bases[index] as string, id);
  }

  /** Create the sandbox's group with its limits; returns the leaf directories its PID 1 joins. */
  create(id: string, limits: Limits): string[] {
    const memBytes = String(limits.memoryMb * 1024 * 1024);
    const quota = Math.max(1000, Math.round(limits.cpus * 100_000));
    for (const dir of this.dirs(id)) this.ensureGroup(dir);
    if (this.version === 2) {
      const dir = this.controllerDir(id, 'memory');
      writeKnob(dir, 'memory.max', memBytes);
      if (existsSync(join(dir, 'memory.swap.max'))) writeKnob(dir, 'memory.swap.max', '0');
      writeKnob(dir, 'pids.max', String(limits.pids));
      writeKnob(dir, 'cpu.max', `${quota} 100000`);
      this.ensureGroup(join(dir, 'init'));
    } else {
      const mem = this.controllerDir(id, 'memory');
      writeKnob(mem, 'memory.limit_in_bytes', memBytes);
      // Without this the limit is memory only and a process could swap instead of being OOM-killed.
      if (existsSync(join(mem, 'memory.memsw.limit_in_bytes'))) writeKnob(mem, 'memory.memsw.limit_in_bytes', memBytes);
      writeKnob(this.controllerDir(id, 'pids'), 'pids.max', String(limits.pids));
      const cpu = this.controllerDir(id, 'cpu');
      writeKnob(cpu, 'cpu.cfs_period_us', '100000');
      writeKnob(cpu, 'cpu.cfs_quota_us', String(quota));
      for (const dir of this.dirs(id, 'init')) mkdirSync(dir, { recursive: true });
    }
    return this.dirs(id, 'init');
  }

  /** A fresh leaf for one exec or file operation. */
  leaf(id: string, name: string): string[] {
    const dirs = this.dirs(id, name);
    for (const dir of dirs) mkdirSync(dir, { recursive: true });
    return dirs;
  }

  exists(id: string): boolean {
    return existsSync(this.dirs(id)[0] as string);
  }

  /** Ids of all sandbox groups under this daemon's scope. */
  list(): string[] {
    const base = this.bases[0] as string;
    return subdirs(base).map((d) => d.slice(base.length + 1));
  }

  /** Processes in the group (any leaf). */
  pids(id: string, leaf?: string): number[] {
    const dir = leaf ? join(this.controllerDir(id, 'pids'), leaf) : this.controllerDir(id, 'pids');
    return tree(dir).flatMap(pidsIn);
  }

  /** OOM kills in the group and its leaves (v1 counts a kill only in the victim's own group). */
  oomKills(id: string): number {
    const knob = this.version === 2 ? 'memory.events.local' : 'memory.oom_control';
    return tree(this.controllerDir(id, 'memory')).reduce((sum, dir) => sum + counterIn(readKnob(dir, knob), 'oom_kill'), 0);
  }

  memoryBytes(id: string): number {
    const dir = this.controllerDir(id, 'memory');
    const text = this.version === 2 ? readKnob(dir, 'memory.current') : readKnob(dir, 'memory.usage_in_bytes');
    return Number(text?.trim() ?? 0);
  }

  cpuMs(id: string): number {
    if (this.version === 2) {
      return Math.round(counterIn(readKnob(this.controllerDir(id, 'cpu'), 'cpu.stat'), 'usage_usec') / 1000);
    }
    const ns = readKnob(this.controllerDir(id, 'cpu'), 'cpuacct.usage');
    if (ns) return Math.round(Number(ns.trim()) / 1e6);
    // cpuacct mounted apart from cpu (no group of ours there): the CPU time of the processes alive
    // now, and what they reaped. Enough for a rate over a short window; not a lifetime total.
    return this.pids(id).reduce((sum, pid) => sum + processCpuMs(pid), 0);
  }

  freeze(id: string): void {
    if (this.version === 2) writeKnob(this.controllerDir(id, 'memory'), 'cgroup.freeze', '1');
    else writeKnob(this.controllerDir(id, 'freezer'), 'freezer.state', 'FROZEN');
  }

  thaw(id: string): void {
    if (this.version === 2) writeKnob(this.controllerDir(id, 'memory'), 'cgroup.freeze', '0');
    else writeKnob(this.controllerDir(id, 'freezer'), 'freezer.state', 'THAWED');
  }

  /** Every task of the group stopped (the kernel freezes asynchronously: v1 says FREEZING until then). */
  fullyFrozen(id: string): boolean {
    if (this.version === 2) return this.frozen(id);
    return (readKnob(this.controllerDir(id, 'freezer'), 'freezer.state') ?? '').trim() === 'FROZEN';
  }

  frozen(id: string): boolean {
    if (this.version === 2) return counterIn(readKnob(this.controllerDir(id, 'memory'), 'cgroup.events'), 'frozen') === 1;
    return (readKnob(this.controllerDir(id, 'freezer'), 'freezer.state') ?? '').trim() !== 'THAWED';
  }

  /** SIGKILL every process of a leaf (or the whole group), until none is left or time runs out. */
  async kill(id: string, leaf?: string, waitMs = 2000): Promise<boolean> {
    const deadline = Date.now() + waitMs;
    if (!leaf && this.exists(id) && this.frozen(id)) this.thaw(id);
    for (;;) {
      const pids = this.pids(id, leaf);
      if (pids.length === 0) return true;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      if (Date.now() > deadline) return false;
      await sleep(5);
    }
  }

  /** Remove this daemon's scope directories when no sandbox group is left in them. */
  removeScopeIfEmpty(): void {
    for (const base of this.bases) if (subdirs(base).length === 0) rmQuiet(base);
  }

  /** Remove the sandbox's groups; processes must be gone. Returns false if some remain. */
  async remove(id: string): Promise<boolean> {
    for (let attempt = 0; attempt < 50; attempt++) {
      let left = 0;
      for (const dir of this.dirs(id)) {
        for (const d of tree(dir)) if (!rmQuiet(d)) left++;
      }
      if (left === 0) return true;
      await sleep(10);
    }
    return false;
  }
}

function rmQuiet(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' || !isDir(dir);
  }
}

function isDir(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** USER_HZ: the unit of /proc/PID/stat's times (100 on every Linux agentbox runs on). */
const CLOCK_TICKS_PER_S = 100;

/** utime + stime + cutime + cstime of a process, in ms; 0 when it is gone. */
function processCpuMs(pid: number): number {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return 0;
  }
  // Fields after the command (which may hold spaces and parentheses): state is field 3, utime 14.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
  return (ticks * 1000) / CLOCK_TICKS_PER_S;
}
