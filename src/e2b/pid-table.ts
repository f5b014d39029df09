/** What envd's registries keep, by sandbox and by pid inside it (E2B addresses processes by pid). */
export class PidTable<E extends { readonly sandboxId: string; readonly pid: number }> {
  private readonly bySandbox = new Map<string, Map<number, E>>();

  get(sandboxId: string, pid: number): E | undefined {
    return this.bySandbox.get(sandboxId)?.get(pid);
  }

  /** A sandbox's entries, by pid. */
  of(sandboxId: string): E[] {
    return [...(this.bySandbox.get(sandboxId)?.values() ?? [])].sort((a, b) => a.pid - b.pid);
  }

  all(): E[] {
    return [...this.bySandbox.values()].flatMap((m) => [...m.values()]);
  }

  add(entry: E): void {
    let pids = this.bySandbox.get(entry.sandboxId);
    if (!pids) this.bySandbox.set(entry.sandboxId, (pids = new Map()));
    pids.set(entry.pid, entry);
  }

  /** Removes ENTRY, if it is still the one under its pid. */
  remove(entry: E): void {
    const pids = this.bySandbox.get(entry.sandboxId);
    if (pids?.get(entry.pid) !== entry) return;
    pids.delete(entry.pid);
    if (pids.size === 0) this.bySandbox.delete(entry.sandboxId);
  }
}
