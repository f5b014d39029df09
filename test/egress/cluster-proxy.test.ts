/**
 * The cluster's egress proxy (egress/cluster-proxy.ts) over TCP, against a fake internet in a network
 * namespace this test creates: sandboxes are known by their credential, never by their address, and
 * get the same rules, deny list and connection log as on one machine, read from the shared store.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClusterEgressProxy, egressCredential, proxyCredentials, sandboxProxyUrl } from '../../src/egress/cluster-proxy.js';
import { systemResolver } from '../../src/egress/resolver.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Store } from '../../src/store/store.js';
import { sandbox, specOf } from '../helpers/store-rows.js';
import { haveNetnsSupport, startFakeInternet, type FakeInternet } from '../helpers/fake-internet.js';

const noNetns = haveNetnsSupport();
const SECRET = 'cluster-egress-test-secret-0123456789abcdef';

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

describe('cluster egress proxy', { skip: noNetns ?? false }, () => {
  let net: FakeInternet;
  let dir: string;
  let store: Store;
  let proxy: ClusterEgressProxy;
  let port: number;

  before(async () => {
    net = await startFakeInternet();
    dir = mkdtempSync(join(tmpdir(), 'ab-cluster-proxy-'));
    store = Store.open(join(dir, 'db.sqlite'));
    const overrides = new Map<string, string[]>([...net.names.map((n) => [n, [net.siteAddress]] as [string, string[]]), ['meta.fake.test', ['169.254.169.254']]]);
    proxy = new ClusterEgressProxy({
      store,
      secret: SECRET,
      policy: { globalDeny: ['blocked.fake.test'], allowRanges: [], byteQuotaMb: 4 },
      resolve: systemResolver({ overrides }),
      logger: silentLogger(),
    });
    port = (await proxy.listen(0, '127.0.0.1')).port;
    for (const [id, egress, state] of [
      ['sbx_clusterok1', { mode: 'allowlist', allow: ['site.fake.test', 'blocked.fake.test', 'meta.fake.test'] }, 'running'],
      ['sbx_clusterok2', { mode: 'allowlist', allow: ['other.fake.test'] }, 'running'],
      ['sbx_clusternone', { mode: 'none', allow: [] }, 'running'],
      ['sbx_clusterended', { mode: 'open', allow: [] }, 'stopped'],
    ] as const) {
      const sb = sandbox(id, { tenant: 'acme', state, egress: { mode: egress.mode, allow: [...egress.allow] } });
      store.insertSandbox(sb, specOf(sb), null);
    }
  });

  after(async () => {
    await proxy?.close();
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await net?.close();
  });

  const basic = (id: string, credential = egressCredential(SECRET, id)): string => `Basic ${Buffer.from(`${id}:${credential}`).toString('base64')}`;

  const get = (url: string, auth: string | undefined): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, agent: false, method: 'GET', path: url, headers: { host: new URL(url).host, ...(auth ? { 'proxy-authorization': auth } : {}) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      });
      req.on('error', reject);
      req.end();
    });

  test('cluster egress: a sandbox named by its credential reaches what its row allows, over HTTP and CONNECT, logged in the shared store', async () => {
    const r = await get('http://site.fake.test/index.txt', basic('sbx_clusterok1'));
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello-fake-internet\n');
    const tunnel = await new Promise<string>((resolve, reject) => {
      const s: Socket = connect(port, '127.0.0.1', () => s.write(`CONNECT site.fake.test:443 HTTP/1.1\r\nHost: site.fake.test:443\r\nProxy-Authorization: ${basic('sbx_clusterok1')}\r\n\r\n`));
      let got = '';
      s.on('data', (c: Buffer) => {
        got += c.toString();
        if (got.includes('\r\n\r\n')) {
          s.destroy();
          resolve(got);
        }
      });
      s.on('error', reject);
      setTimeout(() => reject(new Error(`no answer: ${got}`)), 10_000).unref();
    });
    assert.match(tunnel, /^HTTP\/1\.1 200/);
    const log = store.egress.forSandbox('sbx_clusterok1');
    assert.ok(log.some((e) => e.decision === 'allowed' && e.host === 'site.fake.test' && e.kind === 'http'), JSON.stringify(log));
  });

  test('cluster egress: each sandbox gets its own rules; the deny list and address checks hold; an approval in the store counts from the next connection', async () => {
    assert.equal((await get('http://other.fake.test/index.txt', basic('sbx_clusterok1'))).status, 403, 'a host only another sandbox may reach');
    assert.equal((await get('http://other.fake.test/index.txt', basic('sbx_clusterok2'))).status, 200);
    assert.equal((await get('http://blocked.fake.test/index.txt', basic('sbx_clusterok1'))).status, 403, 'the global deny list');
    assert.equal((await get('http://meta.fake.test/', basic('sbx_clusterok1'))).status, 403, 'a metadata address');
    store.setEgress('sbx_clusterok2', { mode: 'allowlist', allow: ['other.fake.test', 'site.fake.test'] });
    assert.equal((await get('http://site.fake.test/index.txt', basic('sbx_clusterok2'))).status, 200, 'an approval in the store did not count');
    const denied = store.egress.forSandbox('sbx_clusterok1').filter((e) => e.decision === 'denied').map((e) => e.host);
    assert.deepEqual(denied.sort(), ['blocked.fake.test', 'meta.fake.test', 'other.fake.test']);
  });

  test('cluster egress: no credential, a wrong one, another sandbox\'s, a forged id, two headers, a sandbox without network or ended: 407 and nothing logged', async () => {
    const before = store.egress.forSandbox('sbx_clusterok1').length;
    const refusals: [string, string | undefined][] = [
      ['none', undefined],
      ['wrong', basic('sbx_clusterok1', 'x'.repeat(43))],
      ['another sandbox\'s credential', basic('sbx_clusterok1', egressCredential(SECRET, 'sbx_clusterok2'))],
      ['another secret', basic('sbx_clusterok1', egressCredential(`${SECRET}-other`, 'sbx_clusterok1'))],
      ['not basic', `Bearer ${egressCredential(SECRET, 'sbx_clusterok1')}`],
      ['no network', basic('sbx_clusternone')],
      ['ended', basic('sbx_clusterended')],
      ['unknown', basic('sbx_clusternobody')],
    ];
    for (const [what, auth] of refusals) {
      const r = await get('http://site.fake.test/index.txt', auth);
      assert.equal(r.status, 407, what);
      assert.match(String(r.headers['proxy-authenticate']), /^Basic /, what);
    }
    const twice = await new Promise<string>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => s.write(`GET http://site.fake.test/ HTTP/1.1\r\nHost: site.fake.test\r\nProxy-Authorization: ${basic('sbx_clusterok2')}\r\nProxy-Authorization: ${basic('sbx_clusterok1')}\r\n\r\n`));
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    assert.match(twice, /^HTTP\/1\.1 407/);
    // A kept-alive connection: the first request names the sandbox, the second names nobody.
    const second = await new Promise<string>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => s.write(`GET http://site.fake.test/index.txt HTTP/1.1\r\nHost: site.fake.test\r\nProxy-Authorization: ${basic('sbx_clusterok1')}\r\n\r\nGET http://site.fake.test/index.txt HTTP/1.1\r\nHost: site.fake.test\r\n\r\n`));
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    assert.match(second, /^HTTP\/1\.1 200[\s\S]*HTTP\/1\.1 407/, 'a later request on a kept-alive connection went on without a credential');
    assert.equal(store.egress.forSandbox('sbx_clusterok1').length, before + 1, 'only the authenticated request is logged');
    assert.equal(store.egress.forSandbox('sbx_clusternone').length, 0);
  });

  test('cluster egress: the proxy URL a sandbox is given carries its id and credential, and the credential parses back', () => {
    const url = new URL(sandboxProxyUrl('http://agentbox-egress.agentbox.svc:3128', SECRET, 'sbx_clusterok1'));
    assert.equal(url.username, 'sbx_clusterok1');
    assert.equal(decodeURIComponent(url.password), egressCredential(SECRET, 'sbx_clusterok1'));
    assert.deepEqual(proxyCredentials(`GET / HTTP/1.1\r\nProxy-Authorization: ${basic('sbx_clusterok1')}`), { sandboxId: 'sbx_clusterok1', credential: egressCredential(SECRET, 'sbx_clusterok1') });
    assert.equal(proxyCredentials(`GET / HTTP/1.1\r\nProxy-Authorization: Basic ${Buffer.from('../etc:x').toString('base64')}`), undefined);
  });
});
