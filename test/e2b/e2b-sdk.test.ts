/**
 * The unmodified `e2b` SDK (2.51.0, a devDependency) against a real daemon on loopback, configured
 * only by its connection options (the same values E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY
 * carry): on the local runtime (bubblewrap) and on docker (skipped, saying why, without dockerd).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AuthenticationError, CommandExitError, NotFoundError, Sandbox, SandboxError } from 'e2b';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { ENVD_VERSION, NO_PORTS_DOMAIN } from '../../src/e2b/control-plane.js';
import { hasDebian, TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const ALICE = 'alice-token-0123456789';
const ALICE_READER = 'alice-reader-token-0123456789';
const BOB = 'bob-token-0123456789';

const POLICY = `version: 1
defaults:
  limits: { cpus: 1, memoryMb: 256, pids: 128, diskMb: 128 }
  ttl: 1h
  execTimeout: 2m
profiles:
  docker: { runtime: docker, image: debian }
tenants:
  - name: alice
    tokens: [${ALICE}]
    scopedTokens:
      - { token: ${ALICE_READER}, scopes: [read] }
  - name: bob
    tokens: [${BOB}]
`;

const skipAll = process.getuid?.() !== 0 ? 'sandboxes need root' : !hasDebian() ? 'the E2B base template needs the debian image (AGENTBOX_TEST_DEBIAN=0)' : undefined;

describe('the e2b SDK against agentbox', { skip: skipAll }, () => {
  let home: string;
  let daemon: Daemon | undefined;
  let base: string;
  let dockerSkip: string | undefined;
  /** What E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY would say. */
  const as = (apiKey: string) => ({ apiUrl: `${base}/e2b`, sandboxUrl: `${base}/e2b/envd`, apiKey });

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-e2b-'));
    writeFileSync(join(home, 'policy.yaml'), POLICY);
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: join(home, 'home'), AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath: join(home, 'policy.yaml'),
      socket: null,
      tcp: { host: '127.0.0.1', port: 0 },
      portsDomain: 'localhost',
    });
    base = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
    const docker = await daemon.manager.runtime('docker').then(() => undefined, (err: unknown) => (err as Error).message);
    dockerSkip = docker === undefined ? undefined : `dockerd is not reachable: ${docker}`;
  });

  after(async () => {
    if (!daemon) return rmSync(home, { recursive: true, force: true });
    for (const key of [ALICE, BOB]) {
      for (const info of await Sandbox.list(as(key)).nextItems()) await Sandbox.kill(info.sandboxId, as(key));
    }
    const runtimes = [await daemon.manager.runtime('local'), ...(dockerSkip ? [] : [await daemon.manager.runtime('docker')])];
    await daemon.close();
    for (const rt of runtimes) assert.deepEqual(await rt.list(), [], `${rt.name}: sandboxes left on the host`);
    rmSync(home, { recursive: true, force: true });
  });

  for (const runtime of ['local', 'docker'] as const) {
    const template = runtime === 'local' ? 'base' : 'docker';
    const skipped = (t: { skip(reason: string): void }): boolean => {
      if (runtime === 'docker' && dockerSkip) {
        t.skip(dockerSkip);
        return true;
      }
      return false;
    };

    test(`${runtime}: create with metadata and envs; commands.run with cwd and envs, output streamed before the end; exit 3 is CommandExitError`, async (t) => {
      if (skipped(t)) return;
      const sbx = await Sandbox.create(template, { ...as(ALICE), metadata: { purpose: 'e2b-test' }, envs: { FROM_CREATE: 'c1' } });
      try {
        const info = await sbx.getInfo();
        assert.equal(info.metadata.purpose, 'e2b-test');
        assert.equal(info.envdVersion, ENVD_VERSION);
        assert.equal(info.templateId, template);
        await sbx.files.makeDir('/workspace/sub');
        const r = await sbx.commands.run('echo "$FROM_CREATE $FROM_RUN $(pwd)"; command -v python3 >/dev/null && echo py', { cwd: '/workspace/sub', envs: { FROM_RUN: 'r1' } });
        assert.deepEqual([r.exitCode, r.stdout, r.stderr], [0, 'c1 r1 /workspace/sub\npy\n', '']);

        const t0 = performance.now();
        const chunks: { data: string; at: number }[] = [];
        const streamed = await sbx.commands.run('echo one; sleep 1.5; echo two >&2; echo three', { onStdout: (d) => void chunks.push({ data: d, at: performance.now() - t0 }) });
        const ended = performance.now() - t0;
        assert.equal(streamed.stdout, 'one\nthree\n');
        assert.equal(streamed.stderr, 'two\n');
        assert.equal(chunks[0]?.data, 'one\n');
        assert.ok(ended - (chunks[0]?.at ?? ended) > 1000, `first stdout at ${chunks[0]?.at} ms, command ended at ${ended} ms`);

        const err = await sbx.commands.run('echo before; echo oops >&2; exit 3').then(() => undefined, (e: unknown) => e);
        assert.ok(err instanceof CommandExitError, `got ${String(err)}`);
        assert.deepEqual([err.exitCode, err.stdout, err.stderr], [3, 'before\n', 'oops\n']);
      } finally {
        await sbx.kill();
      }
    });

    test(`${runtime}: background command, wait, reattach by pid from a second client, list, stdin, kill`, async (t) => {
      if (skipped(t)) return;
      const sbx = await Sandbox.create(template, as(ALICE));
      try {
        const early: string[] = [];
        const bg = await sbx.commands.run('echo start; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after-go; exit 5', { background: true, onStdout: (d) => void early.push(d) });
        assert.ok(bg.pid > 1);
        assert.deepEqual((await sbx.commands.list()).map((p) => [p.pid, p.cmd, p.args.at(-1)]), [[bg.pid, '/bin/bash', 'echo start; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after-go; exit 5']]);
        // `start` is out before anyone reattaches (bash -l may take a while under load).
        await waitFor(() => early.includes('start\n'), 'start from the background command');
        await bg.disconnect();

        // Another client, as another process would: Sandbox.connect, then commands.connect by pid.
        const second = await Sandbox.connect(sbx.sandboxId, as(ALICE));
        const seen: string[] = [];
        const again = await second.commands.connect(bg.pid, { onStdout: (d) => void seen.push(d) });
        await second.files.write('/tmp/go', '');
        const err = await again.wait().then(() => undefined, (e: unknown) => e);
        assert.ok(err instanceof CommandExitError, `got ${String(err)}`);
        assert.equal(err.exitCode, 5);
        assert.deepEqual(seen, ['after-go\n'], 'the reattached client gets the output from then on');
        assert.deepEqual(await sbx.commands.list(), []);
        await assert.rejects(second.commands.connect(bg.pid), NotFoundError);

        const cat = await sbx.commands.run('cat; echo done', { background: true, stdin: true });
        await sbx.commands.sendStdin(cat.pid, 'line one\n');
        await sbx.commands.sendStdin(cat.pid, 'line two\n');
        await sbx.commands.closeStdin(cat.pid);
        assert.equal((await cat.wait()).stdout, 'line one\nline two\ndone\n');
        const noStdin = await sbx.commands.run('sleep 30', { background: true });
        await assert.rejects(sbx.commands.sendStdin(noStdin.pid, 'x'), /without stdin/);

        assert.equal(await sbx.commands.kill(noStdin.pid), true);
        const killed = await noStdin.wait().then(() => undefined, (e: unknown) => e);
        assert.ok(killed instanceof CommandExitError, `got ${String(killed)}`);
        assert.equal(killed.exitCode, -1);
        assert.equal(await sbx.commands.kill(noStdin.pid), false, 'no such process any more');
        assert.deepEqual((await commandLines(sbx)).filter((l) => l.includes('sleep 30')), [], 'the killed command is gone from the sandbox');
      } finally {
        await sbx.kill();
      }
    });

    test(`${runtime}: pty: create on a tty with the SDK's envs and cwd, resize, a second client connects by pid (screen replayed, then live), list, exit 5 is CommandExitError`, async (t) => {
      if (skipped(t)) return;
      const sbx = await Sandbox.create(template, as(ALICE));
      try {
        const screen = terminalText();
        const pty = await sbx.pty.create({ cols: 80, rows: 24, cwd: '/tmp', onData: screen.onData });
        assert.ok(pty.pid > 1);
        assert.deepEqual((await sbx.commands.list()).map((p) => [p.pid, p.cmd, p.args, p.envs.TERM, p.cwd]), [[pty.pid, '/bin/bash', ['-i', '-l'], 'xterm-256color', '/tmp']]);

        // The echo of what is typed holds the expression, not its value: only the shell's answer matches.
        await sbx.pty.sendInput(pty.pid, bytes('[ -t 0 ] && echo tty-$((6*7))\n'));
        await waitFor(() => screen.text.includes('tty-42'), 'tty-42: stdin is a terminal');
        await sbx.pty.sendInput(pty.pid, bytes('echo "at-$(pwd)-$TERM-$LC_ALL" size-$(stty size | tr " " x)\n'));
        await waitFor(() => screen.text.includes('at-/tmp-xterm-256color-C.UTF-8 size-24x80'), 'cwd, envs and size 24x80');
        await sbx.pty.resize(pty.pid, { cols: 100, rows: 30 });
        await sbx.pty.sendInput(pty.pid, bytes('echo resized-$(stty size | tr " " x)\n'));
        await waitFor(() => screen.text.includes('resized-30x100'), 'size 30x100 after resize');

        // Another client, as another process would: its first data is what the terminal showed, then live output.
        const second = await Sandbox.connect(sbx.sandboxId, as(ALICE));
        const other = terminalText();
        const again = await second.pty.connect(pty.pid, { onData: other.onData });
        await waitFor(() => other.text.includes('resized-30x100'), 'the screen replayed to the second client');
        await second.pty.sendInput(pty.pid, bytes('echo from-second-$((1+1))\n'));
        await waitFor(() => other.text.includes('from-second-2') && screen.text.includes('from-second-2'), 'new output on both clients');

        // What fits only a command, or only a PTY, is refused; so are root and a read-only key.
        await assert.rejects(sbx.commands.sendStdin(pty.pid, 'x'), /is a PTY/);
        await assert.rejects(sbx.commands.closeStdin(pty.pid), /no stdin/);
        await assert.rejects(sbx.pty.resize(pty.pid, { cols: 0, rows: 30 }), /cols/);
        const cmd = await sbx.commands.run('sleep 30', { background: true, stdin: true });
        await assert.rejects(sbx.pty.resize(cmd.pid, { cols: 100, rows: 30 }), /not started with a PTY/);
        await assert.rejects(sbx.pty.sendInput(cmd.pid, bytes('x')), /not started with a PTY/);
        assert.equal(await sbx.commands.kill(cmd.pid), true);
        await assert.rejects(sbx.pty.create({ cols: 80, rows: 24, onData: () => undefined, user: 'root' }), /sandbox user/);
        await assert.rejects(sbx.commands.run('true', { user: 'root' }), /sandbox user/);
        const readOnly = await Sandbox.connect(sbx.sandboxId, as(ALICE_READER));
        await assert.rejects(readOnly.pty.sendInput(pty.pid, bytes('echo no\n')), /may not/);
        await assert.rejects(readOnly.pty.create({ cols: 80, rows: 24, onData: () => undefined }), /may not/);

        await sbx.pty.sendInput(pty.pid, bytes('exit 5\n'));
        for (const h of [pty, again]) {
          const err = await h.wait().then(() => undefined, (e: unknown) => e);
          assert.ok(err instanceof CommandExitError, `got ${String(err)}`);
          assert.equal(err.exitCode, 5);
        }
        assert.deepEqual(await sbx.commands.list(), []);
        await assert.rejects(second.pty.connect(pty.pid), NotFoundError);
        assert.equal(await sbx.pty.kill(pty.pid), false, 'no such process any more');
      } finally {
        await sbx.kill();
      }
    });

    test(`${runtime}: pty.kill hangs the terminal up: the shell and its background job are gone, wait() says killed`, async (t) => {
      if (skipped(t)) return;
      const sbx = await Sandbox.create(template, as(ALICE));
      try {
        const screen = terminalText();
        const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: screen.onData });
        await pty.disconnect();
        // A background job of the shell: a kill of the shell alone would leave it running.
        await sbx.pty.sendInput(pty.pid, bytes('sleep 3171 & echo job-$((40+2))\n'));
        const ours = async (): Promise<string[]> => (await commandLines(sbx)).filter((l) => l === 'sleep 3171' || l === '/bin/bash -i -l');
        const deadline = Date.now() + 5000;
        while ((await ours()).length !== 2 && Date.now() < deadline) await sleep(100);
        assert.deepEqual((await ours()).sort(), ['/bin/bash -i -l', 'sleep 3171'], 'the shell and its job run while nobody is connected');

        const watcher = await sbx.pty.connect(pty.pid, { onData: () => undefined });
        assert.equal(await sbx.pty.kill(pty.pid), true);
        const err = await watcher.wait().then(() => undefined, (e: unknown) => e);
        assert.ok(err instanceof CommandExitError, `got ${String(err)}`);
        assert.equal(err.exitCode, -1);
        assert.equal(err.error, 'signal: killed');
        assert.deepEqual(await sbx.commands.list(), []);
        assert.deepEqual(await ours(), [], 'nothing the terminal ran is left in the sandbox');
      } finally {
        await sbx.kill();
      }
    });

    test(`${runtime}: files write/read (text, 1 MiB binary by sha256), list, exists, makeDir, rename, remove, watchDir events`, async (t) => {
      if (skipped(t)) return;
      const sbx = await Sandbox.create(template, as(ALICE));
      try {
        const written = await sbx.files.write('/workspace/notes/hello.txt', 'hello e2b\n');
        assert.equal(written.path, '/workspace/notes/hello.txt');
        assert.equal(await sbx.files.read('/workspace/notes/hello.txt'), 'hello e2b\n');
        assert.equal(await sbx.files.read('notes/hello.txt'), 'hello e2b\n', 'a relative path is taken from the home, /workspace');
        const blob = randomBytes(1024 * 1024);
        await sbx.files.write('/tmp/blob.bin', blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.length));
        const back = await sbx.files.read('/tmp/blob.bin', { format: 'bytes' });
        assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(blob).digest('hex'));
        const streamed = Buffer.from(randomBytes(300_000));
        await sbx.files.write('/tmp/streamed.bin', new Blob([streamed]).stream());
        assert.ok(Buffer.from(await sbx.files.read('/tmp/streamed.bin', { format: 'bytes' })).equals(streamed), 'octet-stream upload');
        assert.equal((await sbx.commands.run('sha256sum /tmp/blob.bin')).stdout.split(' ')[0], createHash('sha256').update(blob).digest('hex'));

        const list = await sbx.files.list('/workspace/notes');
        assert.deepEqual(list.map((e) => [e.name, e.type, e.size, e.path]), [['hello.txt', 'file', 10, '/workspace/notes/hello.txt']]);
        assert.equal(await sbx.files.exists('/workspace/notes/hello.txt'), true);
        assert.equal(await sbx.files.exists('/workspace/notes/missing.txt'), false);
        assert.equal(await sbx.files.makeDir('/workspace/a/b'), true);
        assert.equal(await sbx.files.makeDir('/workspace/a/b'), false, 'already there');
        assert.equal((await sbx.files.getInfo('/workspace/a/b')).type, 'dir');
        const moved = await sbx.files.rename('/workspace/notes/hello.txt', '/workspace/a/b/moved.txt');
        assert.equal(moved.path, '/workspace/a/b/moved.txt');
        assert.equal(await sbx.files.exists('/workspace/notes/hello.txt'), false);
        await sbx.files.remove('/workspace/a');
        assert.equal(await sbx.files.exists('/workspace/a'), false);
        await assert.rejects(sbx.files.read('/workspace/nope.txt'), NotFoundError);
        await assert.rejects(sbx.files.read('/workspace/../etc/passwd'), /\.\./);

        const events: string[] = [];
        const watch = await sbx.files.watchDir('/workspace/notes', (e) => void events.push(`${e.type}:${e.name}`));
        await sbx.files.write('/workspace/notes/new.txt', 'one');
        await waitFor(() => events.includes('write:new.txt'), 'a write event');
        await sbx.files.remove('/workspace/notes/new.txt');
        await waitFor(() => events.includes('remove:new.txt'), 'a remove event');
        await watch.stop();
        assert.deepEqual(events, ['create:new.txt', 'write:new.txt', 'remove:new.txt']);
        await assert.rejects(sbx.files.watchDir('/workspace/missing', () => undefined), NotFoundError);
      } finally {
        await sbx.kill();
      }
    });
  }

  test('setTimeout shows in getInfo; list pages; kill, then connect and getInfo are NotFoundError', async () => {
    const created = [await Sandbox.create({ ...as(ALICE), metadata: { batch: 'paging' } }), await Sandbox.create({ ...as(ALICE), metadata: { batch: 'paging' } })];
    const [first] = created;
    assert.ok(first);
    await first.setTimeout(120_000);
    const left = ((await first.getInfo()).endAt.getTime() - Date.now()) / 1000;
    assert.ok(left > 110 && left <= 120, `endAt is ${left} s away`);
    await assert.rejects(first.setTimeout(2 * 3600_000), /longer than/, 'more than the policy allows is refused');

    const pager = Sandbox.list({ ...as(ALICE), query: { metadata: { batch: 'paging' } }, limit: 1 });
    const ids: string[] = [];
    while (pager.hasNext) ids.push(...(await pager.nextItems()).map((s) => s.sandboxId));
    assert.deepEqual(ids.sort(), created.map((s) => s.sandboxId).sort());
    assert.equal((await Sandbox.list({ ...as(ALICE), query: { metadata: { batch: 'other' } } }).nextItems()).length, 0);

    for (const s of created) assert.equal(await s.kill(), true);
    assert.equal(await Sandbox.kill(first.sandboxId, as(ALICE)), false);
    await assert.rejects(Sandbox.connect(first.sandboxId, as(ALICE)), NotFoundError);
    await assert.rejects(Sandbox.getInfo(first.sandboxId, as(ALICE)), NotFoundError);
    assert.equal(await first.isRunning(), false, 'envd says the sandbox is gone');
  });

  test('pause: frozen (local has no hibernate), shown as paused, a second pause is false; connect resumes it with its processes and files; metrics', async () => {
    const sbx = await Sandbox.create(as(ALICE));
    await sbx.commands.run('echo kept > /tmp/paused.txt; sleep 600 >/dev/null 2>&1 &');
    assert.equal(await Sandbox.pause(sbx.sandboxId, as(ALICE)), true);
    assert.equal((await Sandbox.getInfo(sbx.sandboxId, as(ALICE))).state, 'paused');
    assert.equal(await Sandbox.pause(sbx.sandboxId, as(ALICE)), false, 'paused already: the SDK reads the 409 as false');
    const back = await Sandbox.connect(sbx.sandboxId, as(ALICE));
    assert.equal((await Sandbox.getInfo(sbx.sandboxId, as(ALICE))).state, 'running');
    assert.equal((await back.commands.run('cat /tmp/paused.txt')).stdout, 'kept\n');
    assert.match((await back.commands.run('for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr "\\0" " "; echo; done')).stdout, /sleep 600/, 'its processes went on');
    await assert.rejects(Sandbox.pause('sbx_nosuchsandbox0000', as(ALICE)), NotFoundError);
    // Metrics: one sample now; a busy loop shows as CPU, a file written as disk used.
    await back.commands.run('dd if=/dev/zero of=/workspace/fill bs=1M count=8 2>/dev/null; (timeout 3 sh -c "while :; do :; done" &)');
    const [m] = await back.getMetrics();
    assert.ok(m, 'one sample');
    assert.equal(m.cpuCount, 1);
    assert.ok(m.cpuUsedPct > 20 && m.cpuUsedPct <= 100, `cpuUsedPct ${m.cpuUsedPct} while a loop spins`);
    assert.ok(m.memUsed > 0 && m.memUsed < m.memTotal, `memUsed ${m.memUsed} of ${m.memTotal}`);
    assert.ok(m.diskUsed >= 8 * 2 ** 20 && m.diskUsed < m.diskTotal, `diskUsed ${m.diskUsed} of ${m.diskTotal}`);
    assert.ok(Math.abs(m.timestamp.getTime() - Date.now()) < 10_000);
    await assert.rejects(Sandbox.getMetrics('sbx_nosuchsandbox0000', as(ALICE)), NotFoundError);
    await back.kill();
  });

  test('a wrong key is AuthenticationError; another tenant\'s sandbox is NotFoundError; a token opens only its own sandbox', async () => {
    await assert.rejects(Sandbox.create({ ...as('not-a-key-0123456789') }), AuthenticationError);
    await assert.rejects(Sandbox.list(as('not-a-key-0123456789')).nextItems(), AuthenticationError);
    const mine = await Sandbox.create(as(ALICE));
    const other = await Sandbox.create(as(ALICE));
    try {
      await assert.rejects(Sandbox.connect(mine.sandboxId, as(BOB)), NotFoundError);
      await assert.rejects(Sandbox.getInfo(mine.sandboxId, as(BOB)), NotFoundError);
      assert.equal(await Sandbox.kill(mine.sandboxId, as(BOB)), false);
      assert.deepEqual(await Sandbox.list(as(BOB)).nextItems(), []);

      // One sandbox's envd token, sent for another sandbox: refused before anything runs there.
      const tokenOfOther = (other as unknown as { envdAccessToken: string }).envdAccessToken;
      const res = await fetch(`${base}/e2b/envd/files?path=/etc/hostname`, { headers: { 'E2b-Sandbox-Id': mine.sandboxId, 'X-Access-Token': tokenOfOther } });
      assert.equal(res.status, 401);
      const forged = await Sandbox.connect(mine.sandboxId, as(ALICE));
      (forged as unknown as { envdAccessToken: string }).envdAccessToken = tokenOfOther;
      await assert.rejects(forged.commands.run('true'), AuthenticationError);

      // A read-only key's sandbox token cannot run commands.
      const readOnly = await Sandbox.connect(mine.sandboxId, as(ALICE_READER));
      await assert.rejects(readOnly.commands.run('true'), (e: unknown) => e instanceof SandboxError && /may not/.test(e.message));
      await assert.rejects(readOnly.files.exists('/workspace'), (e: unknown) => e instanceof SandboxError && /may not/.test(e.message));
      assert.equal((await readOnly.getInfo()).sandboxId, mine.sandboxId, 'but it may look');
    } finally {
      await mine.kill();
      await other.kill();
    }
  });

  test('getHost(port) reaches a server in the sandbox through the port proxy: public by default; allowPublicTraffic: false needs that sandbox\'s traffic token; 404 once killed', async () => {
    const port = daemon!.tcpAddress!.port;
    const pub = await Sandbox.create(as(ALICE));
    const priv = await Sandbox.create({ ...as(ALICE), network: { allowPublicTraffic: false } });
    const other = await Sandbox.create({ ...as(ALICE), network: { allowPublicTraffic: false } });
    // A sandbox made through agentbox's own API, reached from the E2B SDK: private, as agentbox's are.
    const own = await daemon!.manager.create({ image: 'debian' }, { tenant: 'alice', actor: 'test' });
    const ownSbx = await Sandbox.connect(own.id, as(ALICE));
    const all = [pub, priv, other, ownSbx];
    try {
      for (const sbx of [pub, priv, ownSbx]) {
        assert.equal(sbx.getHost(8000), `8000-${sbx.sandboxId}.localhost:${port}`);
        await sbx.files.write(`/workspace/listed-${sbx.sandboxId}.txt`, 'x');
        await sbx.commands.run('python3 -m http.server 8000 --bind 127.0.0.1', { background: true, cwd: '/workspace' });
      }
      assert.equal(pub.trafficAccessToken, undefined, 'public traffic: no token, as E2B');
      assert.equal(ownSbx.trafficAccessToken, undefined);
      const token = priv.trafficAccessToken;
      const otherToken = other.trafficAccessToken;
      assert.ok(token && otherToken && token !== otherToken, `tokens: ${token} ${otherToken}`);
      const traffic = (t: string): Record<string, string> => ({ 'e2b-traffic-access-token': t });

      // Public (E2B's default): anyone, with no credential at all.
      const listing = await untilServing(port, pub.getHost(8000), {});
      assert.equal(listing.status, 200, listing.body);
      assert.match(listing.body, new RegExp(`listed-${pub.sandboxId}\\.txt`));
      assert.ok(!listing.body.includes(priv.sandboxId));

      // allowPublicTraffic: false: the sandbox's own traffic token opens it; nothing else does.
      const opened = await untilServing(port, priv.getHost(8000), traffic(token));
      assert.equal(opened.status, 200, opened.body);
      assert.match(opened.body, new RegExp(`listed-${priv.sandboxId}\\.txt`));
      assert.equal((await httpGet(port, priv.getHost(8000), {})).status, 404, 'no token');
      assert.equal((await httpGet(port, priv.getHost(8000), traffic(otherToken))).status, 404, 'another sandbox\'s token');
      assert.equal((await httpGet(port, priv.getHost(8000), traffic(`${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`))).status, 404, 'a forged token');
      assert.equal((await httpGet(port, priv.getHost(8000), { 'agentbox-port-token': token })).status, 404, 'it is not an agentbox port token');
      const again = await Sandbox.connect(priv.sandboxId, as(ALICE));
      assert.equal(again.trafficAccessToken, token, 'connect gives a second client the same token');
      assert.equal((await again.getInfo()).network?.allowPublicTraffic, false);
      assert.equal((await pub.getInfo()).network?.allowPublicTraffic, true);

      // agentbox's own sandbox: private unless its owner grants (here: the owner's API token).
      assert.equal((await untilServing(port, ownSbx.getHost(8000), { authorization: `Bearer ${ALICE}` })).status, 200);
      assert.equal((await httpGet(port, ownSbx.getHost(8000), {})).status, 404, 'not public');
      assert.equal((await httpGet(port, ownSbx.getHost(8000), traffic(token))).status, 404);

      // Killed: nothing more gets through, token or not.
      assert.equal(await priv.kill(), true);
      assert.equal(await pub.kill(), true);
      assert.equal((await httpGet(port, priv.getHost(8000), traffic(token))).status, 404);
      assert.equal((await httpGet(port, pub.getHost(8000), {})).status, 404);
    } finally {
      for (const sbx of all) await sbx.kill().catch(() => undefined);
    }
  });

  test('without a ports domain, getHost names a host that cannot resolve, which says why', async () => {
    const plain = await startDaemon({
      env: { AGENTBOX_HOME: join(home, 'plain'), AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath: join(home, 'policy.yaml'),
      socket: null,
      tcp: { host: '127.0.0.1', port: 0 },
    });
    try {
      const at = `http://127.0.0.1:${plain.tcpAddress!.port}`;
      const sbx = await Sandbox.create({ apiUrl: `${at}/e2b`, sandboxUrl: `${at}/e2b/envd`, apiKey: ALICE });
      try {
        assert.equal(sbx.getHost(8000), `8000-${sbx.sandboxId}.${NO_PORTS_DOMAIN}`);
        assert.match(NO_PORTS_DOMAIN, /\.invalid$/, 'RFC 2606: never resolves, so never E2B\'s cloud');
        await assert.rejects(fetch(`http://${sbx.getHost(8000)}/`), (e: unknown) => (e as { cause?: { code?: string } }).cause?.code === 'ENOTFOUND');
      } finally {
        await sbx.kill();
      }
    } finally {
      await plain.close();
    }
  });

  test('bad input to the E2B routes: clear errors in E2B\'s shape, nothing left behind', async () => {
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      fetch(`${base}/e2b${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-api-key': ALICE, ...headers } });
    const expect = async (res: Response, status: number, message: RegExp): Promise<void> => {
      const body = (await res.json()) as { code: number; message: string };
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(body.code, status);
      assert.match(body.message, message);
    };
    await expect(await post('/v2/sandboxes', '{not json'), 400, /malformed JSON/);
    await expect(await post('/v2/sandboxes', '{}'), 400, /templateID/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', metadata: { 'bad key!': 'x' } })), 400, /^metadata\./);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', envVars: { '1X': 'x' } })), 400, /^envVars\./);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', timeout: 0 })), 400, /timeout/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', autoPause: true })), 400, /autoPause is not supported/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', network: { allowPublicTraffic: false, allowOut: ['1.1.1.1'] } })), 400, /^network\.allowOut: is not supported/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', network: { maskRequestHost: 'x' } })), 400, /^network\.maskRequestHost: is not supported/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', network: { allowPublicTraffic: 'no' } })), 400, /^network\.allowPublicTraffic/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'no-such-image' })), 404, /no-such-image/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base', timeout: 7200 })), 403, /longer than/);
    await expect(await post('/v2/sandboxes', `{"templateID":"base","metadata":{"k":"${'x'.repeat(2 * 1024 * 1024)}"}}`), 413, /over the .* limit/);
    await expect(await post('/v2/sandboxes', 'x', { 'content-type': 'text/plain' }), 415, /application\/json/);
    await expect(await post('/v2/sandboxes', JSON.stringify({ templateID: 'base' }), { 'x-api-key': '' }), 401, /X-API-KEY/);
    await expect(await fetch(`${base}/e2b/sandboxes/sbx_doesnotexist`, { headers: { 'x-api-key': ALICE } }), 404, /sbx_doesnotexist/);
    await expect(await post('/sandboxes/sbx_doesnotexist/timeout', JSON.stringify({ timeout: 30 })), 404, /sbx_doesnotexist/);
    await expect(await fetch(`${base}/e2b/v2/sandboxes?nextToken=garbage`, { headers: { 'x-api-key': ALICE } }), 400, /nextToken/);
    await expect(await fetch(`${base}/e2b/templates`, { headers: { 'x-api-key': ALICE } }), 404, /no GET \/templates/);
    await expect(await post('/sandboxes/sbx_x/pause', '{}'), 404, /no sandbox sbx_x/);
    await expect(await post('/sandboxes/sbx_x/pause', '{"memory":"yes"}'), 400, /memory/);
    await expect(await fetch(`${base}/e2b/sandboxes/sbx_x/metrics`, { headers: { 'x-api-key': ALICE } }), 404, /no sandbox sbx_x/);
    await expect(await fetch(`${base}/e2b/envd/health`), 400, /E2b-Sandbox-Id/);
    await expect(await fetch(`${base}/e2b/envd/health`, { headers: { 'E2b-Sandbox-Id': 'sbx_x', 'X-Access-Token': 'abx1.alice.*.' + 'A'.repeat(43) } }), 401, /invalid access token/);
    assert.deepEqual(await Sandbox.list(as(ALICE)).nextItems(), [], 'no sandbox was made by a bad request');
    assert.deepEqual(daemon!.store.listSandboxes({ states: ['creating', 'running'] }), []);
  });
});

/** The command lines of the sandbox's processes, from /proc (the debian image has no ps). */
async function commandLines(sbx: Sandbox): Promise<string[]> {
  const r = await sbx.commands.run('for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f" 2>/dev/null; echo; done');
  const lines = r.stdout.split('\n').map((l) => l.trim());
  assert.ok(lines.some((l) => l.includes('/proc/[0-9]*/cmdline')), `/proc did not show the listing shell itself: ${r.stdout.slice(0, 300)}`);
  return lines.filter((l) => l !== '');
}

/** What a terminal showed, as text, and the onData that collects it. */
function terminalText(): { readonly text: string; onData: (data: Uint8Array) => void } {
  const decoder = new TextDecoder();
  let text = '';
  return {
    get text() {
      return text;
    },
    onData: (data) => void (text += decoder.decode(data, { stream: true })),
  };
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A GET to the daemon at 127.0.0.1:PORT for HOST (Node cannot resolve *.localhost by itself here). */
function httpGet(port: number, host: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { ...headers, host } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** httpGet until the server inside listens (409 until then: nothing on the port), at most 15 s. */
async function untilServing(port: number, host: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await httpGet(port, host, headers);
    if (r.status !== 409 || Date.now() > deadline) return r;
    await sleep(100);
  }
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
