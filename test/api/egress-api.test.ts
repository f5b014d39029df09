/**
 * Egress through the surfaces: the HTTP routes (log, denied hosts, live approval), their bad
 * input, tenants and scopes, the metrics, and `agentbox egress log|allow` from the CLI. A real
 * daemon; a loopback HTTP server stands in for a site, opened by egress.allowRanges and named in
 * an AGENTBOX_EGRESS_HOSTS file; busybox wget inside the sandboxes uses http_proxy.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { cliEntry } from '../../src/core/config.js';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError, PolicyDeniedError } from '../../src/contract/errors.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const policy = (port: number): string => `version: 1
defaults: { image: busybox, ttl: 10m }
profiles:
  web: { egress: { mode: allowlist, allow: ["*.egress.test", "*.egress.test:${port}"] } }
  open: { egress: { mode: open } }
egress:
  allowRanges: [127.0.0.1/32]
  globalDeny: [blocked.egress.test]
tenants:
  - name: alice
    tokens: [alice-token-0123456789]
    scopedTokens:
      - { token: alice-reader-token-0123456789, scopes: [read, exec] }
  - name: bob
    tokens: [bob-token-0123456789]
# site port ${port}
`;

const OPERATOR_TOKEN = 'operator-token-0123456789';

describe('egress through the API, the SDK and the CLI', () => {
  let home: string;
  let daemon: Daemon;
  let site: Server;
  let sitePort: number;
  let url: string;
  let alice: AgentboxClient;

  before(async () => {
    await testImages();
    site = createServer((req, res) => res.end(`site says ${req.url}\n`));
    await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
    sitePort = (site.address() as AddressInfo).port;
    home = mkdtempSync(join(tmpdir(), 'ab-egress-api-'));
    writeFileSync(join(home, 'policy.yaml'), policy(sitePort));
    writeFileSync(join(home, 'hosts'), '127.0.0.1 site.egress.test other.egress.test blocked.egress.test elsewhere.example\n');
    // What a crashed daemon may leave: a proxy directory for a sandbox nobody knows.
    mkdirSync(join(home, 'h', 'egress', 'sbx_stale'), { recursive: true });
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: join(home, 'h'), AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_EGRESS_HOSTS: join(home, 'hosts'), AGENTBOX_TOKEN: OPERATOR_TOKEN },
      logger: silentLogger(),
      policyPath: join(home, 'policy.yaml'),
      socket: null,
      tcp: { host: '127.0.0.1', port: 0 },
    });
    url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
    alice = new AgentboxClient({ url, token: 'alice-token-0123456789' });
  });

  after(async () => {
    for (const sb of await alice.list()) await alice.delete(sb.id);
    await daemon.close();
    assert.deepEqual(readdirSync(join(home, 'h', 'egress')), [], 'egress proxy directories left after the daemon closed');
    rmSync(home, { recursive: true, force: true });
    await new Promise((r) => site.close(r));
  });

  const wget = async (id: string, host: string): Promise<string> => {
    const r = await alice.exec(id, { cmd: ['sh', '-c', `wget -q -O - http://${host}:${sitePort}/index 2>&1`], timeoutMs: 20_000 });
    return r.stdout.trim();
  };

  test('the log shows every attempt, ?denied=1 the refused hosts, and an approval works on the next request', async () => {
    const sb = await alice.create({ profile: 'web', egress: { allow: [`site.egress.test:${sitePort}`] } });
    assert.equal(await wget(sb.id, 'site.egress.test'), 'site says /index');
    assert.match(await wget(sb.id, 'other.egress.test'), /403/);
    assert.match(await wget(sb.id, 'blocked.egress.test'), /403/);

    const all = await alice.egressLog(sb.id);
    assert.deepEqual(all.log.map((e) => `${e.decision} ${e.host} ${e.rule}`), [
      'denied blocked.egress.test globalDeny:blocked.egress.test',
      'denied other.egress.test not_allowlisted',
      `allowed site.egress.test allow:site.egress.test:${sitePort} allowRanges:127.0.0.1/32`,
    ]);
    assert.equal(all.log[2]?.address, '127.0.0.1');
    assert.ok((all.log[2]?.bytesDown ?? 0) > 0);
    const denied = await alice.egressLog(sb.id, { denied: true });
    assert.deepEqual(denied.log.map((e) => e.decision), ['denied', 'denied']);
    assert.deepEqual(denied.denied?.map((d) => `${d.host}:${d.port} ${d.attempts}`), [`blocked.egress.test:${sitePort} 1`, `other.egress.test:${sitePort} 1`]);

    const updated = await alice.allowEgress(sb.id, `other.egress.test:${sitePort}`);
    assert.deepEqual(updated.egress.allow, [`site.egress.test:${sitePort}`, `other.egress.test:${sitePort}`]);
    assert.equal(await wget(sb.id, 'other.egress.test'), 'site says /index');
    assert.equal((await alice.get(sb.id)).egress.allow.length, 2);
  });

  test('approvals refuse bad input, the deny list, the profile ceiling, egress none, other tenants and read-only tokens', async () => {
    const sb = await alice.create({ profile: 'web', egress: { allow: ['site.egress.test'] } });
    await assert.rejects(alice.allowEgress(sb.id, '*'), BadRequestError);
    await assert.rejects(alice.allowEgress(sb.id, 'has space'), BadRequestError);
    await assert.rejects(alice.allowEgress(sb.id, 'blocked.egress.test'), PolicyDeniedError);
    await assert.rejects(alice.allowEgress(sb.id, 'example.com'), (e: unknown) => e instanceof PolicyDeniedError && /profile "web"/.test(e.message));
    await assert.rejects(alice.allowEgress('sbx_doesnotexist', 'site.egress.test'), NotFoundError);
    const offline = await alice.create({});
    await assert.rejects(alice.allowEgress(offline.id, 'site.egress.test'), ConflictError);
    const bob = new AgentboxClient({ url, token: 'bob-token-0123456789' });
    await assert.rejects(bob.allowEgress(sb.id, 'other.egress.test'), NotFoundError);
    await assert.rejects(bob.egressLog(sb.id), NotFoundError);
    const reader = new AgentboxClient({ url, token: 'alice-reader-token-0123456789' });
    await assert.rejects(reader.allowEgress(sb.id, 'other.egress.test'), ForbiddenError);
    assert.equal((await reader.egressLog(sb.id)).sandboxId, sb.id);

    for (const [body, want] of [
      ['{"host":', /not valid JSON|malformed/i],
      ['{"host":"a","extra":1}', /extra|unrecognized/i],
      ['{}', /host/],
    ] as const) {
      const r = await raw('POST', `/v1/sandboxes/${sb.id}/egress/allow`, body);
      assert.equal(r.status, 400, body);
      assert.match(JSON.parse(r.body).error.message, want);
    }
    assert.deepEqual((await alice.get(sb.id)).egress.allow, ['site.egress.test'], 'a refused approval changed the sandbox');
  });

  test('a stale proxy directory is removed at start; mode open reaches any host but the denied ones', async () => {
    assert.equal(existsSync(join(home, 'h', 'egress', 'sbx_stale')), false);
    const sb = await alice.create({ profile: 'open' });
    assert.equal(sb.egress.mode, 'open');
    assert.equal(await wget(sb.id, 'elsewhere.example'), 'site says /index');
    assert.match(await wget(sb.id, 'blocked.egress.test'), /403/);
    assert.equal((await alice.egressLog(sb.id)).log[1]?.rule, 'mode:open allowRanges:127.0.0.1/32');
    await assert.rejects(alice.create({ egress: { mode: 'open' } }), PolicyDeniedError);
  });

  test('metrics count allowed and denied attempts by tenant (the operator sees all, the tenant its own)', async () => {
    const r = await raw('GET', '/metrics', undefined, OPERATOR_TOKEN);
    assert.match(r.body, /agentbox_egress_connections_total\{decision="allowed",kind="http",tenant="alice"\} [1-9]/);
    assert.match(r.body, /agentbox_egress_connections_total\{decision="denied",kind="http",tenant="alice"\} [1-9]/);
    assert.match(r.body, /agentbox_egress_bytes_total\{direction="down",tenant="alice"\} [1-9]/);
    const own = await raw('GET', '/metrics', undefined, 'alice-token-0123456789');
    assert.match(own.body, /agentbox_egress_connections_total\{decision="denied",kind="http",tenant="alice"\} [1-9]/);
    assert.doesNotMatch(own.body, /tenant="(?!alice")/);
  });

  test('agentbox egress log and allow from the CLI', async () => {
    const sb = await alice.create({ profile: 'web', egress: { allow: ['site.egress.test'] } });
    assert.match(await wget(sb.id, 'other.egress.test'), /403/);
    const env = { ...process.env, AGENTBOX_URL: url, AGENTBOX_TOKEN: 'alice-token-0123456789' };
    // Not spawnSync: the daemon answering the CLI lives in this process.
    const cli = (...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        execFile(process.execPath, [cliEntry(), ...args], { env, encoding: 'utf8' }, (err, stdout, stderr) => {
          resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
        });
      });
    const log = await cli('egress', 'log', sb.id, '--denied');
    assert.equal(log.status, 0, log.stderr);
    assert.match(log.stdout, /DENY\s+GET\s+other\.egress\.test:\d+\s+-\s+not_allowlisted/);
    assert.match(log.stdout, /refused hosts/);
    const allow = await cli('egress', 'allow', sb.id, `other.egress.test:${sitePort}`);
    assert.equal(allow.status, 0, allow.stderr);
    assert.match(allow.stdout, /site\.egress\.test, other\.egress\.test/);
    assert.equal(await wget(sb.id, 'other.egress.test'), 'site says /index');
    const bad = await cli('egress', 'allow', sb.id, 'blocked.egress.test');
    assert.equal(bad.status, 125);
    assert.match(bad.stderr, /global deny list/);
    assert.doesNotMatch(bad.stderr, /at .*\.js:\d+/, 'a stack trace for a user mistake');
  });

  function raw(method: string, path: string, body?: string, token = 'alice-token-0123456789'): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, async (res) => {
        resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString() });
      });
      req.on('error', reject);
      req.end(body);
    });
  }
});
