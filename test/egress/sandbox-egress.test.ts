/**
 * Egress from inside real sandboxes, the same tests on every runtime (local, docker, docker +
 * gVisor, microvm): the proxy is the only way out, and it lets through exactly what the policy says.
 * The "internet" is a network namespace this test makes (test/helpers/fake-internet.ts); the
 * daemon's resolver maps the test names to it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test, type TestContext } from 'node:test';
import { VERSION, helperPath } from '../../src/core/config.js';
import { PolicyDeniedError } from '../../src/contract/errors.js';
import { SandboxManager, type Caller } from '../../src/core/manager.js';
import type { Isolation, RuntimeName, Sandbox } from '../../src/contract/model.js';
import { systemResolver } from '../../src/egress/resolver.js';
import { EgressService } from '../../src/egress/service.js';
import { silentLogger } from '../../src/observability/logger.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { MicroVmRuntime } from '../../src/runtime/microvm/microvm-runtime.js';
import { QEMU_BINARY } from '../../src/runtime/microvm/vm.js';
import type { Runtime } from '../../src/runtime/types.js';
import { Store } from '../../src/store/store.js';
import { hasDebian, testImages } from '../helpers/images.js';
import { haveNetnsSupport, startFakeInternet, type FakeInternet } from '../helpers/fake-internet.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const caller: Caller = { tenant: 'default', actor: 'test' };
const REPO = join(import.meta.dirname, '..', '..', '..');

/** Run inside the sandbox: `probe.py get URL` prints `STATUS BODY` or `ERR ...`; the other verbs try a way around the proxy. */
const PROBE = String.raw`
import os, socket, ssl, sys, urllib.request
verb, arg = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ''
try:
    if verb == 'get':
        ctx = ssl.create_default_context(cafile='/workspace/ca.pem')
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
        try:
            r = opener.open(arg, timeout=10)
            print(r.status, r.read().decode().strip())
        except urllib.error.HTTPError as e:
            print('ERR', e.code, e.read().decode()[:400])
    elif verb == 'tcp':
        host, port = arg.rsplit(':', 1)
        socket.create_connection((host.strip('[]'), int(port)), 3)
        print('OPEN')
    elif verb == 'dns':
        print('RESOLVED', socket.getaddrinfo(arg, 80))
    elif verb == 'udp53':
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04fake\x04test\x00\x00\x01\x00\x01', (arg, 53))
        print('ANSWER', s.recvfrom(512))
    elif verb == 'connect':
        s = socket.create_connection(('127.0.0.1', 3128), 10)
        s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (arg, arg)).encode())
        data = b''
        while b'\r\n' not in data:
            c = s.recv(4096)
            if not c:
                break
            data += c
        print(data.split(b'\r\n')[0].decode('latin1') or '(no answer)')
    elif verb == 'ifaces':
        print(' '.join(sorted(n for _, n in socket.if_nameindex())))
except Exception as e:
    print('ERR', type(e).__name__, e)
`;

interface Variant {
  name: string;
  runtime: RuntimeName;
  isolation: Isolation;
  make: () => Promise<Runtime | string>;
}

const homeTag = `test-egress-${process.pid}`;
const variants: Variant[] = [
  {
    name: 'local',
    runtime: 'local',
    isolation: 'namespaces',
    make: async () => {
      const images = await testImages();
      return new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/${homeTag}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
    },
  },
  ...(['container', 'gvisor'] as const).map((isolation) => ({
    name: `docker (${isolation === 'gvisor' ? 'gVisor' : 'runc'})`,
    runtime: 'docker' as const,
    isolation,
    make: async (): Promise<Runtime | string> => {
      const rt = new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag, version: VERSION });
      const probe = await rt.probe();
      if (!probe.ok) return `${probe.reason} (${probe.hint})`;
      if (isolation === 'gvisor' && !(probe.details?.runtimes ?? '').split(' ').includes('runsc')) return 'runsc is not registered with dockerd';
      return rt;
    },
  })),
  {
    name: 'microvm',
    runtime: 'microvm',
    isolation: 'vm',
    make: async () => {
      if (spawnSync(QEMU_BINARY, ['--version']).error) return `${QEMU_BINARY} is not installed`;
      const runRoot = join(tmpdir(), `ab-vm-egress-${process.pid}`);
      mkdirSync(runRoot, { recursive: true });
      process.once('exit', () => rmSync(runRoot, { recursive: true, force: true }));
      // The conformance suite's guest and root disks (kept between runs, fingerprinted).
      return new MicroVmRuntime({ images: await testImages(), homeTag, dir: join(tmpdir(), 'agentbox-test-microvm'), runRoot, disks: scratchDiskStore(), accel: 'tcg' });
    },
  },
];

const noNetns = haveNetnsSupport();
const skipAll = noNetns ?? (hasDebian() ? false : 'needs the debian test image (python3)');

for (const v of variants) {
  describe(`sandbox egress: ${v.name}`, { skip: skipAll }, () => {
    let net: FakeInternet;
    let dir: string;
    let store: Store;
    let manager: SandboxManager;
    let skipReason: string | undefined;
    /** A daemon over the store and home: the test's, and a restarted one. */
    let startManager: (rt: Runtime) => Promise<void>;
    const made: Sandbox[] = [];

    const policyText = (): string => `
version: 1
defaults: { runtime: ${v.runtime}, image: debian, ttl: 10m }
profiles:
  web:
    runtime: ${v.runtime}
    isolation: ${v.isolation}
    egress: { mode: allowlist, allow: ["*.fake.test", "*.fake.test:${net.echoPort}"] }
  openweb: { runtime: ${v.runtime}, isolation: ${v.isolation}, egress: { mode: open } }
  offline: { runtime: ${v.runtime}, isolation: ${v.isolation} }
egress:
  globalDeny: [blocked.fake.test]
pools:
  - { image: debian, profile: web, size: 1 }
`;

    before(async () => {
      const rt = await v.make();
      if (typeof rt === 'string') {
        skipReason = rt;
        return;
      }
      net = await startFakeInternet();
      dir = mkdtempSync(join(tmpdir(), 'ab-egress-'));
      store = Store.open(join(dir, 'db.sqlite'));
      const parsed = parsePolicyText(policyText(), 'egress-test.yaml');
      if (parsed.kind !== 'ok') throw new Error(`bad test policy: ${JSON.stringify(parsed)}`);
      const overrides = new Map<string, string[]>([
        ...net.names.map((n) => [n, [net.siteAddress]] as [string, string[]]),
        ['meta.fake.test', ['169.254.169.254']],
        ['intranet.fake.test', ['10.0.0.1']],
      ]);
      startManager = async (runtime) => {
        const egress = new EgressService({ home: dir, policy: parsed.policy.egress, resolve: systemResolver({ overrides }), log: store.egress, logger: silentLogger() });
        // The runtimes' disk store, so forks work (the variants run one after another: none sees another's disks).
        manager = new SandboxManager({ policy: parsed.policy, store, runtimes: { [v.runtime]: runtime }, logger: silentLogger(), egress, disks: scratchDiskStore(), reapIntervalMs: 60_000 });
        await manager.start();
      };
      await startManager(rt);
    });

    after(async () => {
      for (const sb of made) await manager?.delete(sb.id, caller).catch(() => undefined);
      await manager?.close();
      store?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
      await net?.close();
    });

    const it = (name: string, fn: (t: TestContext) => Promise<void>): void => {
      test(name, async (t) => {
        if (skipReason) return t.skip(skipReason);
        await fn(t);
      });
    };

    const create = async (req: Parameters<SandboxManager['create']>[0]): Promise<Sandbox> => {
      const sb = await manager.create(req, caller);
      made.push(sb);
      await manager.writeFile(sb.id, '/workspace/probe.py', Readable.from([Buffer.from(PROBE)]), caller);
      await manager.writeFile(sb.id, '/workspace/ca.pem', Readable.from([Buffer.from(net.caPem)]), caller);
      return sb;
    };
    const probe = async (sb: Sandbox, verb: string, arg = ''): Promise<string> => {
      const r = await manager.exec(sb.id, { cmd: ['python3', '/workspace/probe.py', verb, arg], timeoutMs: 30_000 }, caller);
      return `${r.stdout}${r.stderr}`.trim();
    };

    let web: Sandbox;

    it('an allowlisted host answers over HTTP and HTTPS through the proxy', async () => {
      web = await create({ profile: 'web' });
      assert.equal(await probe(web, 'get', 'http://site.fake.test/index.txt'), '200 hello-fake-internet');
      assert.equal(await probe(web, 'get', 'https://site.fake.test/host'), '200 site.fake.test');
    });

    it('a host not on the allowlist, a deny-listed host, metadata and private addresses are refused with the reason', async () => {
      const limited = await create({ profile: 'web', egress: { allow: ['site.fake.test'] } });
      const other = await probe(limited, 'get', 'http://other.fake.test/index.txt');
      assert.match(other, /^ERR 403 .*other\.fake\.test:80.*not_allowlisted/);
      assert.match(await probe(limited, 'get', 'https://other.fake.test/index.txt'), /ERR .*403.*other\.fake\.test:443 denied/);
      // The profile's wildcard covers these names; the deny list and the address checks still win.
      assert.match(await probe(web, 'get', 'http://blocked.fake.test/index.txt'), /^ERR 403 .*global deny list/);
      assert.match(await probe(web, 'get', 'http://meta.fake.test/latest/meta-data/'), /^ERR 403 .*metadata/);
      assert.match(await probe(web, 'get', 'http://intranet.fake.test/'), /^ERR 403 .*private address/);
      await assert.rejects(manager.create({ profile: 'web', egress: { allow: ['blocked.fake.test'] } }, caller), PolicyDeniedError);
    });

    it('there is no way around the proxy: no direct connection, no DNS, no IPv6, no interface but loopback', async () => {
      assert.match(await probe(web, 'tcp', `${net.siteAddress}:80`), /^ERR /);
      assert.match(await probe(web, 'tcp', '[2001:db8::1]:80'), /^ERR /);
      assert.match(await probe(web, 'dns', 'site.fake.test'), /^ERR gaierror/);
      assert.match(await probe(web, 'udp53', net.siteAddress), /^ERR /);
      if (v.isolation !== 'gvisor') assert.equal(await probe(web, 'ifaces'), 'lo');
    });

    it('egress none has no proxy at all: no listener, no socket, no proxy variables', async () => {
      const offline = await create({ profile: 'offline' });
      assert.equal(offline.egress.mode, 'none');
      assert.match(await probe(offline, 'tcp', '127.0.0.1:3128'), /^ERR .*(refused|Errno)/);
      assert.match(await probe(offline, 'get', 'http://site.fake.test/index.txt'), /^ERR /);
      const r = await manager.exec(offline.id, { cmd: ['sh', '-c', 'ls /run/agentbox 2>&1; env | grep -ci proxy'] }, caller);
      assert.match(r.stdout, /No such file|cannot access/);
      assert.equal(r.stdout.trim().split('\n').at(-1), '0');
    });

    it('an approval made while the sandbox runs lets the next request through, and every attempt is in the log', async () => {
      const sb = await create({ profile: 'web', egress: { allow: ['site.fake.test'] } });
      assert.match(await probe(sb, 'get', 'http://other.fake.test/index.txt'), /^ERR 403/);
      const denied = manager.egressLog(sb.id, caller, { denied: true }).denied ?? [];
      assert.deepEqual(denied.map((d) => `${d.host}:${d.port}`), ['other.fake.test:80']);
      const updated = manager.allowEgress(sb.id, 'other.fake.test', caller);
      assert.deepEqual(updated.egress.allow, ['site.fake.test', 'other.fake.test']);
      assert.equal(await probe(sb, 'get', 'http://other.fake.test/index.txt'), '200 hello-fake-internet');
      assert.equal(manager.get(sb.id, caller).egress.allow.includes('other.fake.test'), true, 'the approval was not stored');
      const log = manager.egressLog(sb.id, caller).log;
      assert.deepEqual(log.map((e) => `${e.decision} ${e.host}:${e.port} ${e.rule}`), ['allowed other.fake.test:80 allow:other.fake.test', 'denied other.fake.test:80 not_allowlisted']);
      assert.throws(() => manager.allowEgress(sb.id, 'blocked.fake.test', caller), PolicyDeniedError);
    });

    it('a warm-pool sandbox of an allowlist profile gets its proxy at claim time', async () => {
      await manager.poolsFull();
      const sb = await create({ profile: 'web' });
      assert.ok(manager.poolStatus().some((p) => p.profile === 'web'));
      assert.equal(await probe(sb, 'get', 'https://site.fake.test/index.txt'), '200 hello-fake-internet');
    });

    it('an allowlisted host:port tunnels non-HTTP traffic with the README recipe (examples/egress-connect.py)', async () => {
      const sb = await create({ profile: 'web', egress: { allow: [`site.fake.test:${net.echoPort}`] } });
      await manager.writeFile(sb.id, '/workspace/egress-connect.py', createReadStream(join(REPO, 'examples', 'egress-connect.py')), caller);
      const ok = await manager.exec(sb.id, { cmd: ['python3', '/workspace/egress-connect.py', 'site.fake.test', String(net.echoPort)], stdin: 'ping', timeoutMs: 20_000 }, caller);
      assert.equal(ok.stdout, 'SSH-2.0-fake\r\nping');
      assert.equal(ok.exitCode, 0, `the tunnel did not end when both sides had (the sandbox's half-close must reach the far end): ${ok.stderr}`);
      // Megabytes both ways through the tunnel arrive whole and in order (flow control on every hop).
      const big = randomBytes(3 << 20).toString('base64');
      const echoed = await manager.exec(sb.id, { cmd: ['sh', '-c', 'python3 /workspace/egress-connect.py site.fake.test "$0" > /tmp/echoed; wc -c < /tmp/echoed; sha256sum < /tmp/echoed', String(net.echoPort)], stdin: big, timeoutMs: 60_000 }, caller);
      assert.equal(echoed.exitCode, 0, echoed.stderr);
      const [bytes, sum] = echoed.stdout.trim().split('\n');
      const want = `SSH-2.0-fake\r\n${big}`;
      assert.equal(`${bytes} ${sum?.split(' ')[0]}`, `${want.length} ${createHash('sha256').update(want).digest('hex')}`, 'the echo came back short or changed');
      const refused = await manager.exec(sb.id, { cmd: ['python3', '/workspace/egress-connect.py', 'site.fake.test', '22'], stdin: '', timeoutMs: 20_000 }, caller);
      assert.notEqual(refused.exitCode, 0);
      assert.match(refused.stderr, /403 Egress to site\.fake\.test:22 denied \(not_allowlisted\)/);
    });

    it('egress open: CONNECT to host loopback in IPv4-mapped IPv6 (hex or dotted) or any other spelling is refused by the proxy', async () => {
      let reached = 0;
      const listener = createServer((s) => {
        reached++;
        s.destroy();
      });
      await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
      const port = (listener.address() as AddressInfo).port;
      try {
        const sb = await create({ profile: 'openweb' });
        assert.equal(sb.egress.mode, 'open');
        for (const t of [`[::ffff:7f00:1]:${port}`, `[0:0:0:0:0:ffff:7f00:1]:${port}`, `[::ffff:127.0.0.1]:${port}`, `[64:ff9b::7f00:1]:${port}`, `2130706433:${port}`, `0x7f.1:${port}`, `127.1:${port}`, `[::]:${port}`, `0.0.0.0:${port}`]) {
          assert.match(await probe(sb, 'connect', t), /^HTTP\/1\.1 (403|400) /, t);
        }
        assert.equal(reached, 0, 'a CONNECT from the sandbox reached the listener on host loopback');
        // The same sandbox still reaches the (public-addressed) fake internet.
        assert.match(await probe(sb, 'connect', `site.fake.test:443`), /^HTTP\/1\.1 200 /);
      } finally {
        await new Promise((r) => listener.close(r));
      }
    });

    it('after a daemon restart a running sandbox reaches out again without anyone entering it first', async () => {
      const sb = await create({ profile: 'web' });
      // A job in the sandbox that fetches every 300 ms, across the restart.
      const loop = 'while :; do python3 /workspace/probe.py get http://site.fake.test/index.txt >/dev/null 2>&1; sleep 0.3; done';
      await manager.exec(sb.id, { cmd: ['sh', '-c', `setsid sh -c '${loop}' >/dev/null 2>&1 &`] }, caller);
      const attempts = (): number => manager.egressLog(sb.id, caller).log.length;
      const deadline = async (ok: () => boolean, what: string): Promise<void> => {
        for (const until = Date.now() + 30_000; !ok(); await new Promise((r) => setTimeout(r, 200))) if (Date.now() > until) assert.fail(what);
      };
      await deadline(() => attempts() > 0, 'the job never reached the proxy');
      await manager.close({ sandboxes: 'leave' });
      const rt = await v.make();
      assert.ok(typeof rt !== 'string', String(rt));
      await startManager(rt);
      const before = attempts();
      // Nothing enters the sandbox here: only the restarted daemon's own reconcile may bring egress back.
      await deadline(() => attempts() > before + 2, 'the sandbox\'s requests no longer reach its proxy after the restart');
      assert.ok(manager.egressLog(sb.id, caller).log.slice(0, attempts() - before).every((e) => e.decision === 'allowed'));
    });

    it('a fork with memory: each child reaches out through its own proxy, and the parent again after it', async (t) => {
      const rt = await manager.runtime(v.runtime);
      const can = await rt.canHibernate?.({ isolation: v.isolation, network: true, volumes: false });
      if (!can?.ok) return t.skip(`${v.name} does not save a sandbox with egress: ${can?.reason ?? 'no hibernate capability'}`);
      const parent = await create({ profile: 'web' });
      await manager.exec(parent.id, { cmd: ['sh', '-c', 'sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/pid'] }, caller);
      const pid = (await manager.exec(parent.id, { cmd: ['cat', '/tmp/pid'] }, caller)).stdout.trim();
      const children = await manager.fork(parent.id, { count: 2, memory: true }, caller);
      made.push(...children);
      for (const child of children) {
        assert.equal((await manager.exec(child.id, { cmd: ['sh', '-c', `kill -0 ${pid} && echo alive`] }, caller)).stdout, 'alive\n', 'the child does not go on with the parent\'s process');
        assert.equal(await probe(child, 'get', 'https://site.fake.test/index.txt'), '200 hello-fake-internet');
        assert.deepEqual(manager.egressLog(child.id, caller).log.map((e) => `${e.decision} ${e.host}`), ['allowed site.fake.test'], 'the child\'s request is not in its own log');
      }
      assert.equal(await probe(parent, 'get', 'http://site.fake.test/index.txt'), '200 hello-fake-internet');
      assert.deepEqual(manager.egressLog(parent.id, caller).log.map((e) => `${e.decision} ${e.host}`), ['allowed site.fake.test'], 'a child\'s request went through the parent\'s proxy');
    });

    it('deleting a sandbox stops its proxy and removes its socket directory', async () => {
      const sb = await create({ profile: 'web' });
      const sockDir = join(dir, 'egress', sb.id);
      assert.ok(existsSync(sockDir));
      await manager.delete(sb.id, caller);
      assert.equal(existsSync(sockDir), false);
    });
  });
}
