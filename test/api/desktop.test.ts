/**
 * Desktop sandboxes through a real daemon on the local runtime: the desktop image and profile, the
 * session started on demand, VNC over the WebSocket route spoken as noVNC would (RFB 3.8 by hand: a
 * full frame in Raw, checked to show something and saved as test-artifacts/desktop-vnc.png), and
 * Chromium's DevTools reached through openPort (computer use); refusals as plain HTTP; cleanup.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PNG } from 'pngjs';
import WebSocket from 'ws';
import { ConflictError, NotFoundError } from '../../src/contract/errors.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { artifactPath, browserSkip, distinctColours, launchChromium, pngColours } from '../helpers/browser.js';
import { DESKTOP_BUILD_TIMEOUT_MS, ensureDesktopImage, TEST_IMAGES_DIR } from '../helpers/images.js';

const skip = process.getuid?.() !== 0 ? 'the local runtime needs root' : process.env.AGENTBOX_TEST_DESKTOP === '0' ? 'AGENTBOX_TEST_DESKTOP=0' : undefined;
const ARTIFACTS = new URL('../../../test-artifacts/', import.meta.url).pathname;

const ALICE = 'alice-token-0123456789';
const BOB = 'bob-token-0123456789';
const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 32 }
  ttl: 1h
  idleTimeout: 15m
  execTimeout: 2m
tenants:
  - name: alice
    tokens: [${ALICE}]
  - name: bob
    tokens: [${BOB}]
`;

// The callbacks given to page.evaluate() run in the page; the root tsconfig has no DOM lib.
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: any;

const bearer = (token: string): string => `agentbox.bearer.${Buffer.from(token).toString('base64url')}`;

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_r, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)))]).finally(() => clearTimeout(timer));
}

/** Bytes of a WebSocket's binary messages, read exactly: an RFB stream. */
class RfbStream {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  closed = false;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      assert.ok(isBinary, 'the daemon sends RFB as binary messages');
      this.buf = Buffer.concat([this.buf, Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)]);
      this.wake?.();
    });
    ws.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`the socket closed with ${this.buf.length} of ${n} bytes`);
      await within(new Promise<void>((r) => (this.wake = r)), 30_000, `${n} bytes of RFB`);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  send(bytes: Buffer): void {
    this.ws.send(bytes, { binary: true });
  }
}

interface Frame {
  width: number;
  height: number;
  name: string;
  /** RGBA, as pngjs wants it. */
  rgba: Buffer;
}

/** The RFB 3.8 handshake with security None, then full frames in Raw until ACCEPT says one will do. */
async function rfbFrame(rfb: RfbStream, accept: (f: Frame) => boolean, deadlineMs = 60_000): Promise<Frame> {
  const version = (await rfb.read(12)).toString('latin1');
  assert.match(version, /^RFB 003\.00[3-8]\n$/, 'the server speaks RFB');
  rfb.send(Buffer.from('RFB 003.008\n', 'latin1'));
  const nTypes = (await rfb.read(1))[0]!;
  assert.ok(nTypes > 0, 'the server offers a security type');
  const types = [...(await rfb.read(nTypes))];
  assert.ok(types.includes(1), `security None offered (got ${types.join(',')}): only the daemon reaches the server`);
  rfb.send(Buffer.from([1]));
  assert.equal((await rfb.read(4)).readUInt32BE(0), 0, 'SecurityResult ok');
  rfb.send(Buffer.from([1])); // ClientInit, shared
  const init = await rfb.read(24);
  const width = init.readUInt16BE(0);
  const height = init.readUInt16BE(2);
  const name = (await rfb.read(init.readUInt32BE(20))).toString('utf8');
  // SetPixelFormat: 32 bpp, depth 24, little endian, true colour, 8 bits each at shifts 16/8/0.
  const pf = Buffer.alloc(20);
  pf.writeUInt8(0, 0);
  pf.writeUInt8(32, 4);
  pf.writeUInt8(24, 5);
  pf.writeUInt8(0, 6);
  pf.writeUInt8(1, 7);
  pf.writeUInt16BE(255, 8);
  pf.writeUInt16BE(255, 10);
  pf.writeUInt16BE(255, 12);
  pf.writeUInt8(16, 14);
  pf.writeUInt8(8, 15);
  pf.writeUInt8(0, 16);
  rfb.send(pf);
  const enc = Buffer.alloc(8);
  enc.writeUInt8(2, 0);
  enc.writeUInt16BE(1, 2);
  enc.writeInt32BE(0, 4); // Raw only
  rfb.send(enc);
  const rgba = Buffer.alloc(width * height * 4);
  const started = Date.now();
  for (;;) {
    const req = Buffer.alloc(10);
    req.writeUInt8(3, 0);
    req.writeUInt8(0, 1); // not incremental: the whole screen
    req.writeUInt16BE(width, 6);
    req.writeUInt16BE(height, 8);
    rfb.send(req);
    let updated = false;
    while (!updated) {
      const type = (await rfb.read(1))[0]!;
      if (type === 2) continue; // Bell
      if (type === 3) {
        const head = await rfb.read(7);
        await rfb.read(head.readUInt32BE(3)); // ServerCutText
        continue;
      }
      assert.equal(type, 0, `a FramebufferUpdate (got message type ${type})`);
      const n = (await rfb.read(3)).readUInt16BE(1);
      for (let i = 0; i < n; i++) {
        const r = await rfb.read(12);
        const [x, y, w, h, encoding] = [r.readUInt16BE(0), r.readUInt16BE(2), r.readUInt16BE(4), r.readUInt16BE(6), r.readInt32BE(8)];
        assert.equal(encoding, 0, 'Raw, the only encoding asked for');
        const px = await rfb.read(w * h * 4);
        for (let row = 0; row < h; row++) {
          for (let col = 0; col < w; col++) {
            const s = (row * w + col) * 4;
            const d = ((y + row) * width + (x + col)) * 4;
            rgba[d] = px[s + 2]!; // little endian 0x00RRGGBB: B G R x
            rgba[d + 1] = px[s + 1]!;
            rgba[d + 2] = px[s]!;
            rgba[d + 3] = 255;
          }
        }
      }
      updated = true;
    }
    const frame = { width, height, name, rgba };
    if (accept(frame) || Date.now() - started > deadlineMs) return frame;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

describe('desktop sandboxes', { skip }, () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let alice: AgentboxClient;
  let bob: AgentboxClient;
  let sbx: string;
  let plain: string;

  const vncUrl = (id: string): string => `ws://127.0.0.1:${port}/v1/sandboxes/${id}/desktop/vnc`;
  const page = (): Record<string, string> => ({ origin: `http://127.0.0.1:${port}` });

  /** A WebSocket as a page of the daemon's origin opens it (noVNC's wsProtocols), or the refusal. */
  function openVnc(id: string, headers: Record<string, string>, protocols: string[]): Promise<{ ws: WebSocket; rfb: RfbStream } | { status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(vncUrl(id), protocols, { headers, perMessageDeflate: false });
      // Read from 'open' on: the server speaks first, and ws may deliver that in the same tick.
      ws.once('open', () => resolve({ ws, rfb: new RfbStream(ws) }));
      ws.once('unexpected-response', (_req, res) => void readAll(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b.toString('utf8') }), reject));
      ws.once('error', reject);
    });
  }

  before(async () => {
    await ensureDesktopImage();
    home = mkdtempSync(join(tmpdir(), 'agentbox-desktop-api-'));
    writeFileSync(join(home, 'policy.yaml'), POLICY);
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath: join(home, 'policy.yaml'),
      socket: join(home, 'agentbox.sock'),
      tcp: { host: '127.0.0.1', port: 0 },
    });
    port = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: ALICE });
    bob = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: BOB });
    const sb = await alice.create({ profile: 'desktop' });
    assert.equal(sb.image, 'desktop', 'the built-in desktop profile names the desktop image');
    assert.equal(sb.limits.memoryMb, 2048);
    assert.equal(sb.egress.mode, 'none', 'the sandbox has no network');
    sbx = sb.id;
    plain = (await alice.create({ image: 'busybox' })).id;
  }, { timeout: DESKTOP_BUILD_TIMEOUT_MS });

  after(async () => {
    if (daemon) {
      for (const sb of await alice.list()) await alice.delete(sb.id);
      const runtime = await daemon.manager.runtime('local');
      await daemon.close();
      assert.deepEqual(await runtime.list(), [], 'sandboxes left on the host');
    }
    if (home) rmSync(home, { recursive: true, force: true });
  });

  test('before anything connects the desktop is there but not running; POST starts it once, a second POST finds it running', async () => {
    const before = await alice.desktop(sbx);
    assert.equal(before.available, true);
    assert.equal(before.running, false, 'nothing starts it at create');
    assert.equal(before.vncPath, `/v1/sandboxes/${sbx}/desktop/vnc`);
    const t0 = Date.now();
    const started = await alice.startDesktop(sbx);
    const startMs = Date.now() - t0;
    assert.equal(started.running, true);
    assert.deepEqual([started.width, started.height], [1280, 800]);
    assert.equal(started.chromium, true, "Chromium's DevTools port is up");
    const xvnc = (await alice.processes(sbx)).filter((p) => p.argv[0] === 'Xvnc');
    assert.equal(xvnc.length, 1, 'one X server');
    await alice.startDesktop(sbx);
    assert.deepEqual((await alice.processes(sbx)).filter((p) => p.argv[0] === 'Xvnc').map((p) => p.pid), xvnc.map((p) => p.pid), 'a second start does nothing');
    const starts = (await alice.execs(sbx)).filter((e) => e.cmd.join(' ') === '/usr/local/bin/agentbox-desktop start');
    assert.equal(starts.length, 1, 'the start is an exec of the history, run once');
    console.log(`desktop session start: ${startMs} ms`);
  });

  test('a page of the daemon\'s origin sees the desktop over the VNC route: RFB 3.8, a full frame that shows something (test-artifacts/desktop-vnc.png)', async () => {
    const opened = await openVnc(sbx, page(), ['agentbox.v1', bearer(ALICE)]);
    assert.ok('ws' in opened, `refused: ${'status' in opened ? `${opened.status} ${opened.body}` : ''}`);
    assert.equal(opened.ws.protocol, 'agentbox.v1', 'the daemon answers agentbox.v1, never the bearer protocol');
    const rfb = opened.rfb;
    const frame = await rfbFrame(rfb, (f) => distinctColours(f.rgba) > 200);
    assert.deepEqual([frame.width, frame.height], [1280, 800]);
    mkdirSync(ARTIFACTS, { recursive: true });
    const png = new PNG({ width: frame.width, height: frame.height });
    frame.rgba.copy(png.data);
    writeFileSync(join(ARTIFACTS, 'desktop-vnc.png'), PNG.sync.write(png));
    const colours = distinctColours(frame.rgba);
    console.log(`VNC frame ${frame.width}x${frame.height} "${frame.name}": ${colours} distinct colours`);
    assert.ok(colours > 200, `the frame shows the desktop and Chromium's page, not one colour (${colours} colours)`);
    opened.ws.close();
    await within(new Promise((r) => opened.ws.once('close', r)), 10_000, 'the socket closing');
  });

  test('the dashboard shows the live desktop: noVNC in real Chromium, its canvas screenshot is the desktop (test-artifacts/dashboard-desktop.png)', { skip: browserSkip() }, async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 900 });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`http://127.0.0.1:${port}/`, { waitUntil: 'load' });
      await (await page.waitForSelector('input[type=password]', { timeout: 10_000 }))!.type(ALICE);
      await page.click('button[type=submit]');
      await page.waitForSelector(`a[href="/sandboxes/${sbx}"]`, { timeout: 10_000 });
      await page.click(`a[href="/sandboxes/${sbx}"]`);
      const tab = await page.waitForFunction(() => [...document.querySelectorAll('[role=tab]')].find((t: any) => t.textContent.trim() === 'Desktop') ?? null, { timeout: 10_000 });
      await (tab.asElement() as any).click();
      await page.waitForFunction(() => document.body.innerText.includes('Connected to the desktop.'), { timeout: 60_000 });
      const canvas = await page.waitForSelector('.desktop canvas', { timeout: 10_000 });
      // noVNC draws as frames arrive: wait until the canvas holds a picture, not the first blank.
      let colours = 0;
      const deadline = Date.now() + 30_000;
      const path = artifactPath('dashboard-desktop.png');
      while (Date.now() < deadline) {
        await canvas!.screenshot({ path });
        colours = pngColours(path);
        if (colours > 200) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      await page.screenshot({ path: artifactPath('dashboard-desktop-page.png') });
      console.log(`noVNC canvas in Chromium: ${colours} distinct colours`);
      assert.ok(colours > 200, `the canvas shows the desktop, not a blank (${colours} colours; see ${path})`);
      assert.deepEqual(errors, [], 'no page errors');
    } finally {
      await browser.close().catch(() => undefined);
    }
  });

  test("the agent reaches Chromium's DevTools through openPort: /json/version", async () => {
    const conn = await alice.openPort(sbx, 9222);
    // Not end(): Chromium's DevTools server drops a connection whose client half-closed.
    conn.write('GET /json/version HTTP/1.1\r\nHost: 127.0.0.1:9222\r\nConnection: close\r\n\r\n');
    // Read the head and Content-Length bytes: the server may keep the connection open.
    let got = Buffer.alloc(0);
    const raw = await within(
      new Promise<string>((resolve, reject) => {
        conn.on('data', (c: Buffer) => {
          got = Buffer.concat([got, c]);
          const text = got.toString('utf8');
          const head = text.indexOf('\r\n\r\n');
          const length = /content-length:\s*(\d+)/i.exec(text)?.[1];
          if (head >= 0 && length !== undefined && got.length >= Buffer.byteLength(text.slice(0, head + 4)) + Number(length)) resolve(text);
        });
        conn.once('error', reject);
        conn.once('end', () => resolve(got.toString('utf8')));
      }),
      15_000,
      'the DevTools answer',
    );
    conn.destroy();
    assert.match(raw, /^HTTP\/1\.1 200/);
    const version = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Record<string, string>;
    assert.match(version.Browser ?? '', /^Chrome\/\d+/);
    assert.match(version.webSocketDebuggerUrl ?? '', /^ws:\/\/127\.0\.0\.1:9222\/devtools\/browser\//);
  });

  test('refusals are plain HTTP before the upgrade: another tenant 404, no desktop 409 with a hint, no token 401, a foreign Origin 403', async () => {
    const other = await openVnc(sbx, page(), ['agentbox.v1', bearer(BOB)]);
    assert.ok('status' in other && other.status === 404, 'status' in other ? other.body : 'upgraded');
    await assert.rejects(bob.desktop(sbx), NotFoundError);
    await assert.rejects(bob.startDesktop(sbx), NotFoundError);
    const none = await openVnc(plain, page(), ['agentbox.v1', bearer(ALICE)]);
    assert.ok('status' in none && none.status === 409, 'status' in none ? none.body : 'upgraded');
    const body = JSON.parse(none.body) as { error: { code: string; message: string; hint: string } };
    assert.equal(body.error.code, 'conflict');
    assert.match(body.error.message, /has no desktop/);
    assert.match(body.error.hint, /agentbox image build desktop/);
    await assert.rejects(alice.startDesktop(plain), (e: Error) => e instanceof ConflictError && /has no desktop/.test(e.message));
    assert.equal((await alice.desktop(plain)).available, false);
    const anonymous = await openVnc(sbx, page(), ['agentbox.v1']);
    assert.ok('status' in anonymous && anonymous.status === 401, 'status' in anonymous ? anonymous.body : 'upgraded');
    const foreign = await openVnc(sbx, { origin: 'http://evil.example' }, ['agentbox.v1', bearer(ALICE)]);
    assert.ok('status' in foreign && foreign.status === 403, 'status' in foreign ? foreign.body : 'upgraded');
  });

  test('closing the socket leaves no process behind: only the desktop session', async () => {
    const key = (ps: { pid: number; command: string }[]): string[] => ps.map((p) => `${p.pid} ${p.command}`).sort();
    // Chromium may still be starting helpers: wait for a steady set first.
    let baseline = key(await alice.processes(sbx));
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const now = key(await alice.processes(sbx));
      if (now.join('\n') === baseline.join('\n')) break;
      baseline = now;
    }
    const opened = await openVnc(sbx, page(), ['agentbox.v1', bearer(ALICE)]);
    assert.ok('ws' in opened);
    const rfb = opened.rfb;
    assert.match((await rfb.read(12)).toString('latin1'), /^RFB /);
    assert.ok(key(await alice.processes(sbx)).length > baseline.length, 'the connection has its relay inside while open');
    opened.ws.close();
    for (let i = 0; i < 50; i++) {
      const now = key(await alice.processes(sbx));
      if (now.join('\n') === baseline.join('\n')) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(key(await alice.processes(sbx)), baseline, 'the processes after the socket closed');
  });

  test('deleting the sandbox ends the session: no Xvnc or Chromium of it is left on the host', async () => {
    const inside = (await alice.processes(sbx)).filter((p) => p.argv[0] === 'Xvnc');
    assert.equal(inside.length, 1);
    const hostXvnc = (): string[] => {
      try {
        return execFileSync('pgrep', ['-a', '-x', 'Xvnc'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes('-desktop agentbox'));
      } catch {
        return []; // pgrep: none
      }
    };
    // Other sandboxes on this host may have desktops too: ours is the one that goes.
    const before = hostXvnc();
    assert.ok(before.length >= 1, 'the X server runs on the host');
    await alice.delete(sbx);
    for (let i = 0; i < 50 && hostXvnc().length >= before.length; i++) await new Promise((r) => setTimeout(r, 100));
    const left = hostXvnc();
    assert.equal(left.length, before.length - 1, `an Xvnc of a deleted sandbox runs on: ${left.join('; ')}`);
    assert.ok(left.every((l) => before.includes(l)));
  });
});
