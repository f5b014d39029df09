/**
 * `agentbox dashboard`: the loopback relay to the home's Unix socket that lets the host's operator
 * use the web dashboard. Everything that reads or acts needs the relay's one-time token (bearer
 * header, or a page's WebSocket subprotocol), which never reaches the daemon: the caller there is
 * the operator because no credential arrives over the socket. Real daemon, real socket, real CLI.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { cliEntry, resolvePaths } from '../../src/core/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { startOperatorProxy, type OperatorProxy } from '../../src/cli/operator-proxy.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { localSkip } from '../helpers/local-sandbox.js';

function raw(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      void readAll(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b.toString('utf8') }), reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A page's WebSocket: Origin of the relay, the given subprotocols; resolves open or the refusal's status. */
function pageSocket(url: string, port: number, protocols: string[], headers: Record<string, string> = {}): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers: { origin: `http://127.0.0.1:${port}`, ...headers }, perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('error', reject);
  });
}

describe('agentbox dashboard: the operator\'s relay', { skip: localSkip }, () => {
  let home: string;
  let daemon: Daemon | undefined;
  let relay: OperatorProxy;
  let operator: AgentboxClient;
  let sbx: string;

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-dash-relay-'));
    const paths = resolvePaths({ AGENTBOX_HOME: home });
    daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), socket: paths.socket });
    operator = new AgentboxClient({ url: `unix:${paths.socket}` });
    sbx = (await operator.create({ image: 'busybox' })).id;
    relay = await startOperatorProxy({ socketPath: paths.socket });
  });

  after(async () => {
    await relay?.close();
    await closeDaemonLeavingNothing(daemon, home, async () => {
      for (const s of await operator.list()) await operator.delete(s.id);
    });
  });

  test('with the token a request is the operator\'s (the token never reaches the daemon); without it nothing that reads or acts gets through', async () => {
    const auth = { authorization: `Bearer ${relay.token}` };
    assert.match(relay.url, new RegExp(`^http://127\\.0\\.0\\.1:${relay.port}/#token=`));
    const listed = await raw(relay.port, 'GET', '/v1/sandboxes', auth);
    assert.equal(listed.status, 200, listed.body);
    assert.ok((JSON.parse(listed.body) as { sandboxes: { id: string }[] }).sandboxes.some((s) => s.id === sbx));
    // GET /v1/daemon is for the host's operator only: a forwarded bearer would make the caller a tenant.
    assert.equal((await raw(relay.port, 'GET', '/v1/daemon', auth)).status, 200);
    const exec = await raw(relay.port, 'POST', `/v1/sandboxes/${sbx}/exec`, { ...auth, 'content-type': 'application/json' }, '{"cmd":["echo","relayed"]}');
    assert.equal(exec.status, 200, exec.body);
    assert.match(exec.body, /relayed/);

    for (const [method, path] of [['GET', '/v1/sandboxes'], ['GET', '/v1/daemon'], ['GET', '/metrics'], ['GET', '/healthz'], ['POST', '/mcp'], ['GET', '/e2b/sandboxes'], ['DELETE', `/v1/sandboxes/${sbx}`], ['POST', '/anything'], ['GET', '/v1%2fsandboxes'], ['GET', '//v1/sandboxes']] as const) {
      const r = await raw(relay.port, method, path);
      // '//v1/...' and '/v1%2f...' are not data paths of the daemon either: whatever it answers, it is no list.
      if (path.startsWith('//') || path.includes('%2f')) assert.ok(!r.body.includes(sbx), `${method} ${path} listed the sandbox without the token`);
      else assert.equal(r.status, 401, `${method} ${path} without the token: ${r.status} ${r.body}`);
    }
    for (const bad of ['Bearer nope', `Bearer ${relay.token}x`, `Basic ${relay.token}`, relay.token]) {
      assert.equal((await raw(relay.port, 'GET', '/v1/sandboxes', { authorization: bad })).status, 401, bad);
    }
    // Another host name (DNS rebinding) or another port in Host is refused, token or not.
    for (const host of ['evil.example', `evil.example:${relay.port}`, `127.0.0.1:${relay.port + 1}`, `localhost.evil.example:${relay.port}`]) {
      assert.equal((await raw(relay.port, 'GET', '/v1/sandboxes', { ...auth, host })).status, 403, host);
    }
    // A foreign page: the daemon's own guard refuses its Origin.
    assert.equal((await raw(relay.port, 'GET', '/v1/sandboxes', { ...auth, origin: 'http://evil.example' })).status, 403);
    // The dashboard's own files need no token (they hold no data): whatever the daemon answers, not the relay's 401.
    assert.notEqual((await raw(relay.port, 'GET', '/')).status, 401);
  });

  test('a page\'s terminal WebSocket with the token as its subprotocol reaches the operator\'s terminal; without it, 401', async () => {
    const t = await operator.openTerminal(sbx, { keepAlive: true });
    const url = `ws://127.0.0.1:${relay.port}/v1/sandboxes/${sbx}/terminals/${t.terminalId}/attach`;
    const bearer = (tok: string): string => `agentbox.bearer.${Buffer.from(tok).toString('base64url')}`;
    const ws = await pageSocket(url, relay.port, ['agentbox.v1', bearer(relay.token)]);
    assert.ok(ws instanceof WebSocket, `refused: ${String(ws)}`);
    assert.equal(ws.protocol, 'agentbox.v1');
    let shown = '';
    ws.on('message', (d: Buffer, isBinary: boolean) => {
      if (isBinary) shown += d.toString('utf8');
    });
    ws.send(Buffer.from('echo relay-$((6*7))\r'));
    const deadline = Date.now() + 10_000;
    while (!shown.includes('relay-42') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(shown.includes('relay-42'), `the terminal showed ${JSON.stringify(shown.slice(-200))}`);
    ws.close();
    for (const protocols of [['agentbox.v1'], ['agentbox.v1', bearer('wrong-token')], ['agentbox.v1', bearer(relay.token), bearer('another-token')]]) {
      assert.equal(await pageSocket(url, relay.port, protocols), 401, JSON.stringify(protocols));
    }
    assert.equal(await pageSocket(url, relay.port, ['agentbox.v1', bearer(relay.token)], { host: 'evil.example' }), 403);
    await operator.closeTerminal(sbx, t.terminalId);
  });

  test('the CLI prints the address with the token in its fragment and stops on SIGINT', async () => {
    const child = spawn(process.execPath, [cliEntry(), 'dashboard', '--port', '0'], { env: { ...process.env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_URL: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const deadline = Date.now() + 15_000;
    while (!/#token=/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const m = /^http:\/\/127\.0\.0\.1:(\d+)\/#token=([A-Za-z0-9_-]+)$/m.exec(out);
    assert.ok(m, `printed ${JSON.stringify(out)}`);
    const r = await raw(Number(m[1]), 'GET', '/v1/sandboxes', { authorization: `Bearer ${m[2]}` });
    assert.equal(r.status, 200, r.body);
    child.kill('SIGINT');
    assert.equal(await exited, 0);
  });
});
