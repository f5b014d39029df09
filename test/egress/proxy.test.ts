/**
 * One sandbox's egress proxy, driven from the host through its Unix socket, against a fake
 * internet in a network namespace this test creates (HTTP, HTTPS with a throwaway CA, a TCP
 * "SSH" banner). The sandbox side of the plumbing is tested in sandbox-egress.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { EgressService } from '../../src/egress/service.js';
import { systemResolver } from '../../src/egress/resolver.js';
import { EGRESS_SOCKET } from '../../src/runtime/egress-plumbing.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Store } from '../../src/store/store.js';
import { haveNetnsSupport, startFakeInternet, type FakeInternet } from '../helpers/fake-internet.js';

const noNetns = haveNetnsSupport();

async function until(fn: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Reply {
  status: number;
  reason: string;
  body: string;
}

function readReply(res: IncomingMessage): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.statusMessage ?? '', body: Buffer.concat(chunks).toString() }));
    res.on('error', reject);
  });
}

describe('egress proxy', { skip: noNetns ?? false }, () => {
  let net: FakeInternet;
  let dir: string;
  let store: Store;
  let svc: EgressService;
  const id = 'sbx_proxytest1';
  let sock: string;

  before(async () => {
    net = await startFakeInternet();
    dir = mkdtempSync(join(tmpdir(), 'ab-proxy-'));
    store = Store.open(join(dir, 'db.sqlite'));
    const overrides = new Map<string, string[]>([
      ...net.names.map((n) => [n, [net.siteAddress]] as [string, string[]]),
      ['meta.fake.test', ['169.254.169.254']],
      ['intranet.fake.test', ['10.0.0.1']],
      ['mixed.fake.test', ['10.0.0.1', net.siteAddress]],
    ]);
    svc = new EgressService({
      home: dir,
      policy: { globalDeny: ['blocked.fake.test'], allowRanges: [], byteQuotaMb: 4 },
      resolve: systemResolver({ overrides }),
      log: store.egress,
      logger: silentLogger(),
    });
    await svc.open({
      id,
      tenant: 'acme',
      egress: { mode: 'allowlist', allow: ['site.fake.test', 'blocked.fake.test', 'meta.fake.test', 'intranet.fake.test', 'mixed.fake.test', '127.0.0.1', 'nowhere.invalid'] },
    });
    sock = join(svc.dirFor(id), EGRESS_SOCKET);
  });

  after(async () => {
    await svc?.closeAll();
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await net?.close();
  });

  const viaHttp = (url: string, method = 'GET'): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const host = url.startsWith('http://') ? new URL(url).host : 'site.fake.test';
      const req = request({ socketPath: sock, method, path: url, headers: { host } }, (res) => void readReply(res).then(resolve, reject));
      req.on('error', reject);
      req.end();
    });

  /** CONNECT, then whatever `use` does with the tunnel; a refusal comes back as its reply. */
  const tunnel = (authority: string): Promise<{ reply: Reply; socket?: Socket }> =>
    new Promise((resolve, reject) => {
      const req = request({ socketPath: sock, method: 'CONNECT', path: authority });
      req.on('connect', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        if (res.statusCode === 200) {
          // Bytes the server sent right behind the 200 (an SSH banner) arrive in `head`: give them back.
          if (head.length > 0) socket.unshift(head);
          resolve({ reply: { status: 200, reason: res.statusMessage ?? '', body: '' }, socket });
        } else {
          const chunks: Buffer[] = [head];
          socket.on('data', (c: Buffer) => chunks.push(c));
          socket.on('close', () => resolve({ reply: { status: res.statusCode ?? 0, reason: res.statusMessage ?? '', body: Buffer.concat(chunks).toString() } }));
        }
      });
      req.on('error', reject);
      req.end();
    });

  const httpsGet = async (host: string, path: string): Promise<string> => {
    const { reply, socket } = await tunnel(`${host}:443`);
    assert.equal(reply.status, 200, `CONNECT refused: ${reply.reason} ${reply.body}`);
    return new Promise((resolve, reject) => {
      const tls = tlsConnect({ socket: socket as Socket, servername: host, ca: net.caPem }, () => {
        tls.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      });
      const chunks: Buffer[] = [];
      tls.on('data', (c: Buffer) => chunks.push(c));
      tls.on('end', () => resolve(Buffer.concat(chunks).toString()));
      tls.on('error', reject);
    });
  };

  test('an allowlisted host answers over plain HTTP and over HTTPS through CONNECT, and both are logged with bytes', async () => {
    const r = await viaHttp('http://site.fake.test/index.txt');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello-fake-internet\n');
    const https = await httpsGet('site.fake.test', '/host');
    assert.match(https, /^HTTP\/1\.1 200/);
    assert.match(https, /\r\n\r\nsite\.fake\.test$/);
    // An entry gets its byte counts when the connection has closed on both sides.
    await until(() => (store.egress.forSandbox(id)[0]?.bytesDown ?? 0) > 0);
    const [connectEntry, httpEntry] = store.egress.forSandbox(id);
    assert.equal(connectEntry?.kind, 'connect');
    assert.equal(connectEntry?.decision, 'allowed');
    assert.equal(connectEntry?.address, net.siteAddress);
    assert.equal(connectEntry?.rule, 'allow:site.fake.test');
    assert.ok((connectEntry?.bytesDown ?? 0) > 1000, 'the TLS handshake and answer were not counted');
    assert.equal(httpEntry?.kind, 'http');
    assert.equal(httpEntry?.method, 'GET');
    assert.equal(httpEntry?.tenant, 'acme');
    assert.ok((httpEntry?.bytesDown ?? 0) >= 20);
  });

  test('a host not on the allowlist gets a 403 that names it, the rule and how to ask', async () => {
    const r = await viaHttp('http://other.fake.test/index.txt');
    assert.equal(r.status, 403);
    assert.match(r.body, /other\.fake\.test:80/);
    assert.match(r.body, /not_allowlisted/);
    assert.match(r.body, new RegExp(`agentbox egress allow ${id} other\\.fake\\.test:80`));
    const c = await tunnel('other.fake.test:443');
    assert.equal(c.reply.status, 403);
    assert.match(c.reply.reason, /other\.fake\.test:443 denied \(not_allowlisted\)/, 'clients that hide the body still show the reason phrase');
    assert.match(c.reply.body, /POST \/v1\/sandboxes/);
    const denied = store.egress.deniedHosts(id);
    assert.deepEqual(denied.map((d) => `${d.host}:${d.port}:${d.rule}`).sort(), ['other.fake.test:443:not_allowlisted', 'other.fake.test:80:not_allowlisted']);
  });

  test('the global deny list wins over the allowlist', async () => {
    const r = await viaHttp('http://blocked.fake.test/index.txt');
    assert.equal(r.status, 403);
    assert.match(r.body, /global deny list/);
    assert.equal(store.egress.forSandbox(id, { limit: 1 })[0]?.rule, 'globalDeny:blocked.fake.test');
  });

  test('metadata and private addresses are refused after resolving, also behind an allowlisted name; a mixed answer connects to the public address only', async () => {
    const meta = await viaHttp('http://meta.fake.test/latest/meta-data/');
    assert.equal(meta.status, 403);
    assert.match(meta.body, /metadata/);
    assert.equal(store.egress.forSandbox(id, { limit: 1 })[0]?.address, '169.254.169.254');
    const priv = await viaHttp('http://intranet.fake.test/');
    assert.equal(priv.status, 403);
    assert.match(priv.body, /10\.0\.0\.1, a private address/);
    const loop = await viaHttp('http://127.0.0.1/');
    assert.equal(loop.status, 403);
    assert.equal(store.egress.forSandbox(id, { limit: 1 })[0]?.rule, 'range:loopback');
    const mixed = await viaHttp('http://mixed.fake.test/index.txt');
    assert.equal(mixed.status, 200);
    assert.equal(store.egress.forSandbox(id, { limit: 1 })[0]?.address, net.siteAddress);
  });

  test('an approval takes effect on the next connection, without restarting anything', async () => {
    assert.equal((await viaHttp('http://other.fake.test/index.txt')).status, 403);
    svc.allow(id, 'other.fake.test');
    const r = await viaHttp('http://other.fake.test/index.txt');
    assert.equal(r.status, 200);
    assert.equal(store.egress.forSandbox(id, { limit: 1 })[0]?.rule, 'allow:other.fake.test');
  });

  test('an allowlisted host:port tunnels non-HTTP traffic (an SSH banner, then an echo)', async () => {
    svc.allow(id, `site.fake.test:${net.echoPort}`);
    const { reply, socket } = await tunnel(`site.fake.test:${net.echoPort}`);
    assert.equal(reply.status, 200);
    const got = await new Promise<string>((resolve) => {
      let text = '';
      socket!.on('data', (c: Buffer) => {
        text += c.toString();
        if (text.includes('ping')) {
          socket!.end();
          resolve(text);
        }
      });
      socket!.write('ping');
    });
    assert.equal(got, 'SSH-2.0-fake\r\nping');
  });

  test('bad requests get a clear 400 or 502 and are not forwarded', async () => {
    const relative = await viaHttp('/index.txt');
    assert.equal(relative.status, 400);
    assert.match(relative.body, /absolute form/);
    const noPort = await tunnel('site.fake.test');
    assert.equal(noPort.reply.status, 400);
    const unknown = await viaHttp('http://nowhere.invalid/');
    assert.equal(unknown.status, 502);
    assert.match(store.egress.forSandbox(id, { limit: 1 })[0]?.rule ?? '', /^dns:/);
    // An allow entry without a port covers 80 and 443 only; a named port is allowed, and when
    // nothing listens there the sandbox is told so.
    const otherPort = await viaHttp('http://site.fake.test:81/');
    assert.equal(otherPort.status, 403);
    assert.match(otherPort.body, /not_allowlisted.*ports 80 and 443 only/s);
    svc.allow(id, 'site.fake.test:81');
    const closedPort = await viaHttp('http://site.fake.test:81/');
    assert.equal(closedPort.status, 502);
    assert.match(closedPort.body, /allowed but could not be reached/);
  });

  test('the byte quota cuts a download and refuses further connections', async () => {
    // 4 MiB quota for the whole sandbox; earlier tests used a few KiB of it.
    const big = await viaHttp('http://site.fake.test/bytes?n=8000000').catch((err: Error) => ({ status: -1, reason: err.message, body: '' }));
    assert.ok(big.status === -1 || big.body.length < 8_000_000, `the download went past the quota (${big.body.length} bytes)`);
    const after = await viaHttp('http://site.fake.test/index.txt');
    assert.equal(after.status, 403);
    assert.match(after.body, /quota of 4 MiB/);
    assert.ok(store.egress.bytesUsed(id) > 4 * 1024 * 1024 - 65536, 'bytes were not recorded');
  });

  test('closing the proxy removes its socket directory; reapOrphans removes directories nobody owns', async () => {
    const stray = svc.dirFor('sbx_gone');
    await svc.open({ id: 'sbx_other', tenant: 'acme', egress: { mode: 'allowlist', allow: [] } });
    assert.deepEqual(svc.reapOrphans(new Set([id])), ['sbx_gone']);
    assert.equal(existsSync(stray), false);
    assert.ok(existsSync(svc.dirFor('sbx_other')), 'a live proxy directory was reaped');
    await svc.close('sbx_other');
    assert.equal(existsSync(join(svc.baseDir, 'sbx_other')), false);
  });
});
