/**
 * The forwarder of requests to the replica holding a sandbox (src/api/replica-forward.ts), between
 * plain local servers: what the holder is sent (Host, credentials kept, Origin and hop-by-hop headers
 * dropped, the loop header, the URL's path prefix), and a holder that refuses or never finishes its
 * TLS handshake: reported within the connect timeout, with nothing of the request read.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { FORWARDED_BY_HEADER, forwardRequest } from '../../src/api/replica-forward.js';
import type { ReplicaRoute } from '../../src/core/manager.js';
import { silentLogger } from '../../src/observability/logger.js';

const servers: (Server | NetServer)[] = [];
after(() => {
  for (const s of servers) s.close();
});

async function listen<S extends Server | NetServer>(s: S): Promise<number> {
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return (s.address() as AddressInfo).port;
}

/** A replica that forwards every request to `url` and, when that fails, answers the reason and the body it still has. */
async function forwarder(url: string, connectTimeoutMs = 2000): Promise<number> {
  const to: ReplicaRoute = { sandboxId: 'sbx_x', runtime: 'local', replica: 'rep-a', url };
  return listen(
    createHttpServer((req: IncomingMessage, res: ServerResponse) => {
      void forwardRequest(req, res, to, { self: 'rep-b', logger: silentLogger(), connectTimeoutMs }).then(async (r) => {
        if (!r) return;
        const chunks: Buffer[] = [];
        for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
        res.writeHead(599, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ reason: r.reason, body: Buffer.concat(chunks).toString() }));
      });
    }),
  );
}

function send(port: number, path: string, headers: Record<string, string>, body: string): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('the holder gets the request with its own Host, the credentials, the loop header and the body; the client gets its answer', async () => {
  let seen: { method?: string; url?: string; headers: IncomingHttpHeaders; body: string } | undefined;
  const holder = await listen(
    createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen = { method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() };
        res.writeHead(201, { 'x-from': 'holder', 'keep-alive': 'timeout=5' });
        res.end('made');
      });
    }),
  );
  const port = await forwarder(`http://127.0.0.1:${holder}/prefix`);
  const r = await send(port, '/v1/sandboxes/sbx_x/files?path=%2Fa%20b', { authorization: 'Bearer tok', origin: 'http://b.example', 'x-drop-me': '1', connection: 'x-drop-me', 'x-forwarded-for': '10.9.9.9', 'content-type': 'application/octet-stream' }, 'payload');
  assert.deepEqual([r.status, r.body, r.headers['x-from']], [201, 'made', 'holder']);
  assert.ok(seen);
  assert.equal(seen.method, 'POST');
  assert.equal(seen.url, '/prefix/v1/sandboxes/sbx_x/files?path=%2Fa%20b');
  assert.equal(seen.body, 'payload');
  assert.equal(seen.headers.host, `127.0.0.1:${holder}`);
  assert.equal(seen.headers.authorization, 'Bearer tok');
  assert.equal(seen.headers[FORWARDED_BY_HEADER], 'rep-b');
  assert.equal(seen.headers['x-forwarded-for'], '10.9.9.9, 127.0.0.1');
  assert.equal(seen.headers.origin, undefined, 'Origin was passed on: the holder would refuse it as another site');
  assert.equal(seen.headers['x-drop-me'], undefined, 'a header the Connection header names was passed on');
});

test('a holder that refuses: reported at once, and the request body is still there to serve here', async () => {
  const closed = await listen(createNetServer());
  await new Promise((resolve) => servers.pop()!.close(resolve));
  const port = await forwarder(`http://127.0.0.1:${closed}`);
  const r = await send(port, '/v1/sandboxes/sbx_x/exec', {}, '{"cmd":["true"]}');
  assert.equal(r.status, 599);
  assert.deepEqual(JSON.parse(r.body), { reason: 'connection refused', body: '{"cmd":["true"]}' });
});

test('a holder whose TLS handshake never finishes: given up after the connect timeout, never hung on', async () => {
  const held: Socket[] = [];
  const silent = await listen(createNetServer((s) => held.push(s)));
  const port = await forwarder(`https://127.0.0.1:${silent}`, 300);
  const started = Date.now();
  const r = await send(port, '/v1/sandboxes/sbx_x/exec', {}, 'body');
  const took = Date.now() - started;
  for (const s of held) s.destroy();
  assert.equal(r.status, 599);
  assert.deepEqual(JSON.parse(r.body), { reason: 'no connection within 300 ms', body: 'body' });
  assert.ok(took >= 250 && took < 2000, `took ${took} ms`);
});

test('an advertised URL that is not plain http(s) is never connected to', async () => {
  const port = await forwarder('http://user:secret@127.0.0.1:1');
  const r = await send(port, '/v1/sandboxes/sbx_x/exec', {}, 'b');
  assert.equal(r.status, 599);
  assert.match(JSON.parse(r.body).reason, /not a plain http\(s\) URL/);
});
