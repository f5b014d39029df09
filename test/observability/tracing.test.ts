/**
 * OpenTelemetry traces (issue 19) against a real daemon on loopback TCP, local runtime, exporting
 * over OTLP/HTTP to a receiver in this file: the protocol is the contract, so the receiver is plain
 * node:http reading the exporter's JSON. A caller's traceparent is the parent of the request's span,
 * the manager's spans (create, exec, files) are its children; no traceparent or a malformed one is a
 * new trace; the SDK sends the active span's traceparent; egress connections are root spans; a daemon
 * with no endpoint exports nothing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { context, ROOT_CONTEXT, trace, TraceFlags, createTraceState } from '@opentelemetry/api';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { EgressService } from '../../src/egress/service.js';
import { systemResolver } from '../../src/egress/resolver.js';
import { EGRESS_SOCKET } from '../../src/runtime/egress-plumbing.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AlsContextManager, Tracing, tracingConfig } from '../../src/observability/tracing.js';
import { PolicySchema } from '../../src/policy/schema.js';
import { Store } from '../../src/store/store.js';
import { AgentboxClient, traceHeaders } from '../../src/sdk/client.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { localSkip } from '../helpers/local-sandbox.js';

type AnyValue = { stringValue?: string; intValue?: number | string; boolValue?: boolean; doubleValue?: number; arrayValue?: { values?: AnyValue[] } };
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: { key: string; value: AnyValue }[];
  status?: { code?: number };
}
interface Exported extends OtlpSpan {
  attrs: Record<string, unknown>;
  resource: Record<string, unknown>;
}

function plain(v: AnyValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(plain);
  return undefined;
}
const attrMap = (list: { key: string; value: AnyValue }[] | undefined): Record<string, unknown> => Object.fromEntries((list ?? []).map((a) => [a.key, plain(a.value)]));

/** An OTLP/HTTP traces receiver: POST /v1/traces with the exporter's JSON body, every span kept. */
class OtlpReceiver {
  readonly spans: Exported[] = [];
  readonly contentTypes: string[] = [];
  private constructor(private readonly server: Server) {
    server.on('request', (req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/v1/traces') {
          res.writeHead(404).end();
          return;
        }
        this.contentTypes.push(String(req.headers['content-type']));
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { resourceSpans?: { resource?: { attributes?: { key: string; value: AnyValue }[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[] };
        for (const rs of body.resourceSpans ?? []) {
          const resource = attrMap(rs.resource?.attributes);
          for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) this.spans.push({ ...s, attrs: attrMap(s.attributes), resource });
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
  }

  static async start(): Promise<OtlpReceiver> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new OtlpReceiver(server);
  }

  get base(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The spans `pick` chooses, once `pick` finds at least `n` of them (10 s at most). */
  async waitFor(pick: (s: Exported) => boolean, n = 1, ms = 10_000): Promise<Exported[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const got = this.spans.filter(pick);
      if (got.length >= n) return got;
      if (Date.now() > deadline) assert.fail(`${got.length} of ${n} spans within ${ms} ms; exported: ${this.spans.map((s) => `${s.name} ${s.traceId}`).join(', ') || 'none'}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const hex = (n: number): string => Array.from({ length: n }, () => Math.floor(Math.random() * 16).toString(16)).join('');
const newTrace = (): { traceId: string; spanId: string; header: string } => {
  const traceId = hex(32);
  const spanId = hex(16);
  return { traceId, spanId, header: `00-${traceId}-${spanId}-01` };
};

/** A JSON request to the daemon with the headers given. */
function call(port: number, method: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...(data ? { 'content-type': 'application/json', 'content-length': String(data.length) } : {}), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 64 }
  ttl: 1h
telemetry:
  serviceName: agentbox-tracing-test
`;

describe('traces (OTLP/HTTP)', { skip: localSkip }, () => {
  let receiver: OtlpReceiver;
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let client: AgentboxClient;

  before(async () => {
    await testImages();
    receiver = await OtlpReceiver.start();
    home = mkdtempSync(join(tmpdir(), 'agentbox-otel-'));
    const policyPath = join(home, 'policy.yaml');
    writeFileSync(policyPath, POLICY);
    daemon = await startDaemon({
      // The generic variable with no path: the exporter posts to /v1/traces.
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.base, OTEL_BSP_SCHEDULE_DELAY: '100' },
      logger: silentLogger(),
      policyPath,
      socket: null,
      tcp: { host: '127.0.0.1', port: 0 },
    });
    port = daemon.tcpAddress!.port;
    client = new AgentboxClient({ url: `http://127.0.0.1:${port}` });
  });

  after(async () => {
    await closeDaemonLeavingNothing(daemon, home, async () => {
      for (const sb of await client.list()) await client.delete(sb.id);
    });
    await receiver?.close();
  });

  test('a create and an exec with a traceparent: the request spans are its children, create and exec spans theirs, with their attributes', async () => {
    const t = newTrace();
    const created = await call(port, 'POST', '/v1/sandboxes', { image: 'busybox' }, { traceparent: t.header });
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const id = created.json.id as string;
    const ran = await call(port, 'POST', `/v1/sandboxes/${id}/exec`, { cmd: ['sh', '-c', 'echo hi; exit 3'] }, { traceparent: t.header });
    assert.equal(ran.status, 200);
    assert.equal(ran.json.exitCode, 3);

    const [createReq] = await receiver.waitFor((s) => s.traceId === t.traceId && s.name === 'HTTP POST /v1/sandboxes');
    const [execReq] = await receiver.waitFor((s) => s.traceId === t.traceId && s.name === 'HTTP POST /v1/sandboxes/{id}/exec');
    const [create] = await receiver.waitFor((s) => s.traceId === t.traceId && s.name === 'sandbox.create');
    const [exec] = await receiver.waitFor((s) => s.traceId === t.traceId && s.name === 'sandbox.exec');
    assert.ok(createReq && execReq && create && exec);

    // The caller's span is the parent of both request spans (server kind, route template, status).
    for (const [span, status] of [[createReq, 201], [execReq, 200]] as const) {
      assert.equal(span.parentSpanId, t.spanId);
      assert.equal(span.kind, 2, 'SPAN_KIND_SERVER');
      assert.equal(span.attrs['http.request.method'], 'POST');
      assert.equal(span.attrs['http.response.status_code'], status);
    }
    assert.equal(execReq.attrs['http.route'], '/v1/sandboxes/{id}/exec');
    assert.equal(execReq.attrs['agentbox.sandbox.id'], id);

    assert.equal(create.parentSpanId, createReq.spanId);
    assert.equal(create.attrs['agentbox.sandbox.id'], id);
    assert.equal(create.attrs['agentbox.tenant'], 'default');
    assert.equal(create.attrs['agentbox.runtime'], 'local');
    assert.equal(create.attrs['agentbox.isolation'], 'namespaces');
    assert.equal(create.attrs['agentbox.create.kind'], 'cold');
    assert.equal(create.attrs['container.image.name'], 'busybox');

    assert.equal(exec.parentSpanId, execReq.spanId);
    assert.deepEqual(exec.attrs['process.command_args'], ['sh', '-c', 'echo hi; exit 3']);
    assert.equal(exec.attrs['process.exit.code'], 3);
    assert.equal(exec.attrs['agentbox.exec.truncated'], false);
    assert.equal(exec.attrs['agentbox.exec.oom'], false);
    assert.equal(exec.attrs['agentbox.exec.timed_out'], false);
    assert.equal(typeof exec.attrs['agentbox.exec.duration_ms'], 'number');
    assert.equal(exec.attrs['agentbox.sandbox.id'], id);
    assert.equal(exec.attrs['agentbox.runtime'], 'local');

    // Resource: the policy's service name (no OTEL_SERVICE_NAME in the env), version, host.
    assert.equal(exec.resource['service.name'], 'agentbox-tracing-test');
    assert.equal(typeof exec.resource['service.version'], 'string');
    assert.equal(typeof exec.resource['host.name'], 'string');
    // The exporter's default encoding is JSON (what this receiver reads).
    assert.ok(receiver.contentTypes.every((c) => c.startsWith('application/json')), receiver.contentTypes.join());
  });

  test('no traceparent: a new trace, the request span a root', async () => {
    const sb = await client.create();
    const [span] = await receiver.waitFor((s) => s.name === 'sandbox.create' && s.attrs['agentbox.sandbox.id'] === sb.id);
    const [req] = await receiver.waitFor((s) => s.spanId === span!.parentSpanId);
    assert.equal(req!.name, 'HTTP POST /v1/sandboxes');
    assert.ok(!req!.parentSpanId, `a root span, not a child of ${req!.parentSpanId}`);
    assert.match(span!.traceId, /^[0-9a-f]{32}$/);
  });

  test('a malformed traceparent is ignored: the request succeeds in a new trace', async () => {
    const [sb] = await client.list();
    assert.ok(sb);
    const bad = `00-${'0'.repeat(32)}-${hex(16)}-01`; // the all-zero trace id is invalid
    for (const header of [bad, 'garbage', `01-${hex(32)}`]) {
      const ran = await call(port, 'POST', `/v1/sandboxes/${sb.id}/exec`, { cmd: ['echo', header] }, { traceparent: header });
      assert.equal(ran.status, 200, header);
      const [exec] = await receiver.waitFor((s) => s.name === 'sandbox.exec' && (s.attrs['process.command_args'] as string[])[1] === header);
      const [req] = await receiver.waitFor((s) => s.spanId === exec!.parentSpanId);
      assert.ok(!req!.parentSpanId, `${header}: a root span`);
      assert.notEqual(req!.traceId, '0'.repeat(32));
    }
  });

  test('file calls: write, read, list, remove spans with path and bytes', async () => {
    const [sb] = await client.list();
    assert.ok(sb);
    const t = newTrace();
    for (const [method, path, body] of [
      ['PUT', `/v1/sandboxes/${sb.id}/files?path=/workspace/t.txt`, 'hello traces'],
      ['GET', `/v1/sandboxes/${sb.id}/files?path=/workspace/t.txt`, undefined],
      ['GET', `/v1/sandboxes/${sb.id}/files/list?path=/workspace`, undefined],
      ['DELETE', `/v1/sandboxes/${sb.id}/files?path=/workspace/t.txt`, undefined],
    ] as const) {
      const status = await new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, method, path, headers: { traceparent: t.header, ...(body ? { 'content-type': 'application/octet-stream', 'content-length': String(body.length) } : {}) } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end(body);
      });
      assert.equal(status, 200, `${method} ${path}`);
    }
    const spans = await receiver.waitFor((s) => s.traceId === t.traceId && s.name.startsWith('sandbox.files.'), 4);
    const by = Object.fromEntries(spans.map((s) => [s.name, s]));
    assert.equal(by['sandbox.files.write']?.attrs['agentbox.file.bytes'], 12);
    assert.equal(by['sandbox.files.read']?.attrs['agentbox.file.bytes'], 12);
    assert.equal(by['sandbox.files.read']?.attrs['file.path'], '/workspace/t.txt');
    assert.equal(typeof by['sandbox.files.list']?.attrs['agentbox.file.entries'], 'number');
    assert.ok(by['sandbox.files.remove']);
    for (const s of spans) assert.equal(s.attrs['agentbox.sandbox.id'], sb.id);
  });

  test('the SDK sends the traceparent (and tracestate) of the active span', async () => {
    const [sb] = await client.list();
    assert.ok(sb);
    const t = newTrace();
    const active = trace.setSpan(ROOT_CONTEXT, trace.wrapSpanContext({ traceId: t.traceId, spanId: t.spanId, traceFlags: TraceFlags.SAMPLED, traceState: createTraceState('vendor=abc') }));
    const manager = new AlsContextManager();
    // Only in this test process: the application's own global context manager.
    context.setGlobalContextManager(manager);
    try {
      assert.deepEqual(traceHeaders(), {}, 'no active span: no header');
      const result = await context.with(active, () => {
        assert.deepEqual(traceHeaders(), { traceparent: t.header, tracestate: 'vendor=abc' });
        return client.exec(sb.id, { cmd: ['true'] });
      });
      assert.equal(result.exitCode, 0);
    } finally {
      context.disable();
    }
    const [req] = await receiver.waitFor((s) => s.traceId === t.traceId && s.name === 'HTTP POST /v1/sandboxes/{id}/exec');
    assert.equal(req!.parentSpanId, t.spanId);
    await receiver.waitFor((s) => s.traceId === t.traceId && s.name === 'sandbox.exec' && s.parentSpanId === req!.spanId);
  });

  test('egress connections: root spans with the sandbox id, host, rule, decision and bytes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agentbox-otel-egress-'));
    const store = Store.open(join(dir, 'db.sqlite'));
    const tracing = Tracing.create(tracingConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.base}/v1/traces`, OTEL_BSP_SCHEDULE_DELAY: '50' }), { version: 'test' });
    const site = createServer((_req, res) => res.end('a site on loopback'));
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    const sitePort = (site.address() as AddressInfo).port;
    const svc = new EgressService({ home: dir, policy: { globalDeny: [], allowRanges: ['127.0.0.0/8'], byteQuotaMb: 4 }, resolve: systemResolver({}), log: store.egress, logger: silentLogger(), tracing });
    const id = 'sbx_oteltest01';
    try {
      await svc.open({ id, tenant: 'acme', egress: { mode: 'allowlist', allow: [`127.0.0.1:${sitePort}`] } });
      const sock = join(svc.dirFor(id), EGRESS_SOCKET);
      const get = (url: string): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = request({ socketPath: sock, method: 'GET', path: url, headers: { host: new URL(url).host } }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
          req.on('error', reject);
          req.end();
        });
      assert.equal(await get('http://denied.example.test/'), 403);
      assert.equal(await get(`http://127.0.0.1:${sitePort}/`), 200);
      const [denied] = await receiver.waitFor((s) => s.name === 'egress.connection' && s.attrs['agentbox.sandbox.id'] === id && s.attrs['agentbox.egress.decision'] === 'denied');
      assert.equal(denied!.attrs['server.address'], 'denied.example.test');
      assert.equal(typeof denied!.attrs['agentbox.egress.rule'], 'string');
      assert.ok(!denied!.parentSpanId, 'a root span');
      const [allowed] = await receiver.waitFor((s) => s.name === 'egress.connection' && s.attrs['agentbox.sandbox.id'] === id && s.attrs['agentbox.egress.decision'] === 'allowed');
      assert.equal(allowed!.attrs['server.port'], sitePort);
      assert.equal(allowed!.attrs['agentbox.tenant'], 'acme');
      assert.ok((allowed!.attrs['agentbox.egress.bytes_down'] as number) > 0, 'bytes down counted');
      assert.equal(allowed!.attrs['agentbox.egress.bytes_up'], 0, 'a GET sends no body up');
    } finally {
      await svc.closeAll();
      await tracing.shutdown();
      site.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('traces off', { skip: localSkip }, () => {
  test('a daemon with no OTLP endpoint exports nothing: its requests with a traceparent reach no receiver', async () => {
    await testImages();
    const receiver = await OtlpReceiver.start();
    const home = mkdtempSync(join(tmpdir(), 'agentbox-otel-off-'));
    let daemon: Daemon | undefined;
    let client: AgentboxClient | undefined;
    try {
      daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
      const port = daemon.tcpAddress!.port;
      client = new AgentboxClient({ url: `http://127.0.0.1:${port}` });
      const t = newTrace();
      const created = await call(port, 'POST', '/v1/sandboxes', { image: 'busybox' }, { traceparent: t.header });
      assert.equal(created.status, 201);
      const ran = await call(port, 'POST', `/v1/sandboxes/${created.json.id as string}/exec`, { cmd: ['true'] }, { traceparent: t.header });
      assert.equal(ran.status, 200);
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(receiver.spans, []);
    } finally {
      await closeDaemonLeavingNothing(daemon, home, async () => {
        for (const sb of (await client?.list()) ?? []) await client!.delete(sb.id);
      });
      await receiver.close();
    }
  });
});

describe('tracing settings', () => {
  test('off without an endpoint; the environment wins over the policy; the generic endpoint gets /v1/traces', () => {
    assert.equal(tracingConfig({}), undefined);
    assert.equal(tracingConfig({}, { serviceName: 'x' }), undefined);
    assert.equal(Tracing.create(undefined, { version: 't' }).enabled, false);
    assert.equal(tracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })?.url, 'http://c:4318/v1/traces');
    assert.equal(tracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/base/' })?.url, 'http://c:4318/base/v1/traces');
    assert.equal(tracingConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/custom', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://d:4318' })?.url, 'http://c:4318/custom');
    assert.equal(tracingConfig({}, { otlpEndpoint: 'http://p:4318' })?.url, 'http://p:4318/v1/traces');
    assert.equal(tracingConfig({}, { otlpEndpoint: 'http://p:4318/v1/traces' })?.url, 'http://p:4318/v1/traces');
    const both = tracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://env:4318', OTEL_SERVICE_NAME: 'from-env', OTEL_EXPORTER_OTLP_HEADERS: 'x-key=env' }, { otlpEndpoint: 'http://p:4318', serviceName: 'from-policy', headers: { 'x-key': 'policy', 'x-team': 'a' } });
    assert.equal(both?.url, 'http://env:4318/v1/traces');
    assert.equal(both?.from, 'OTEL_EXPORTER_OTLP_ENDPOINT');
    assert.equal(both?.serviceName, 'from-env');
    assert.deepEqual(both?.headers, { 'x-key': 'env', 'x-team': 'a' });
    assert.equal(tracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' }), undefined);
    assert.equal(tracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' }), undefined);
    assert.equal(tracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })?.scheduledDelayMs, 1000);
  });

  test('the policy\'s telemetry block: an http(s) endpoint without credentials, nothing unknown', () => {
    assert.ok(PolicySchema.safeParse({ version: 1, telemetry: { otlpEndpoint: 'http://127.0.0.1:4318', serviceName: 'a', headers: { 'x-team': 'a' } } }).success);
    const problems = (telemetry: unknown): string => JSON.stringify(PolicySchema.safeParse({ version: 1, telemetry }).error?.issues.map((i) => i.message));
    assert.match(problems({ otlpEndpoint: 'ftp://c:4318' }), /http:\/\/ or https:\/\//);
    assert.match(problems({ otlpEndpoint: 'http://user:key@c:4318' }), /OTEL_EXPORTER_OTLP_HEADERS/);
    assert.match(problems({ otlpEndpoint: 'not a url' }), /not a URL/);
    assert.match(problems({ token: 'x' }), /Unrecognized key/);
  });
});
