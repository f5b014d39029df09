import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BadRequestError, ConflictError, NotFoundError, RuntimeUnavailableError } from '../../src/contract/errors.js';
import { hostMirror } from '../../src/images/build-debian.js';
import { isStaticElf } from '../../src/images/build-busybox.js';
import { checkListingLine } from '../../src/images/import-tar.js';
import type { ImageInfo } from '../../src/contract/images.js';
import { defaultImagesDir, ImageStore } from '../../src/images/image-store.js';
import { MOUNT_POINTS } from '../../src/images/rootfs.js';
import { runTool } from '../../src/images/run-tool.js';

const tempDirs: string[] = [];
function tempDir(prefix = 'agentbox-images-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function run(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Entries of the store dir other than images (temp, trash, lock files). */
function leftovers(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((e) => e.startsWith('.')) : [];
}

async function rejectsWith(p: Promise<unknown>, cls: abstract new (...args: never[]) => Error, re?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
    if (re) assert.match(err.message, re);
    return true;
  });
}

describe('defaultImagesDir', () => {
  test('AGENTBOX_IMAGES wins, then AGENTBOX_HOME/images, then ~/.agentbox/images', () => {
    assert.equal(defaultImagesDir({ AGENTBOX_IMAGES: '/x/imgs', AGENTBOX_HOME: '/h' }), '/x/imgs');
    assert.equal(defaultImagesDir({ AGENTBOX_HOME: '/h' }), '/h/images');
    assert.match(defaultImagesDir({}), /\/\.agentbox\/images$/);
  });
});

describe('busybox image', () => {
  let dir: string;
  let store: ImageStore;
  let info: ImageInfo;
  let rootfs: string;

  before(async () => {
    dir = tempDir();
    store = new ImageStore(join(dir, 'images'));
    const phases: string[] = [];
    const t0 = performance.now();
    info = await store.build('busybox', { onProgress: (p) => phases.push(p.phase) });
    const ms = performance.now() - t0;
    assert.ok(ms < 5000, `busybox build took ${ms} ms`);
    assert.ok(phases.includes('busybox'));
    rootfs = store.resolve('busybox').rootfs;
  });

  test('the host busybox is static', () => {
    assert.equal(isStaticElf('/bin/busybox'), true);
    assert.equal(isStaticElf(process.execPath), false); // node is dynamically linked
  });

  test('image.json describes it', () => {
    assert.equal(info.name, 'busybox');
    assert.equal(info.source, 'busybox');
    assert.deepEqual(info.packages, []);
    assert.match(info.id, /^sha256:[0-9a-f]{64}$/);
    assert.ok(info.sizeBytes > 500_000);
    assert.ok(!Number.isNaN(Date.parse(info.createdAt)));
    assert.deepEqual(store.get('busybox'), info);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'images', 'busybox', 'image.json'), 'utf8')), info);
  });

  test('applet links stay inside the image and run chrooted', () => {
    const target = readlinkSync(join(rootfs, 'bin', 'sh'));
    assert.ok(target === 'busybox' || target === '/bin/busybox', `bin/sh -> ${target}`);
    const r = run('chroot', [rootfs, '/bin/sh', '-c', 'echo hi; ls /usr/bin/env /sbin/ifconfig']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^hi\n/);
  });

  test('mount points exist as directories, the root is world-readable and root-owned', () => {
    for (const mp of MOUNT_POINTS) assert.ok(lstatSync(join(rootfs, mp)).isDirectory(), mp);
    const st = statSync(rootfs);
    assert.equal(st.mode & 0o777, 0o755);
    assert.equal(st.uid, 0);
    assert.equal(statSync(join(dir, 'images', 'busybox')).mode & 0o755, 0o755);
  });

  test('the sandbox user and the network files exist', () => {
    assert.match(readFileSync(join(rootfs, 'etc/passwd'), 'utf8'), /^sandbox:x:1000:1000:[^:]*:\/workspace:/m);
    assert.match(readFileSync(join(rootfs, 'etc/passwd'), 'utf8'), /^root:x:0:0:/m);
    assert.match(readFileSync(join(rootfs, 'etc/group'), 'utf8'), /^sandbox:x:1000:/m);
    assert.match(readFileSync(join(rootfs, 'etc/hosts'), 'utf8'), /^127\.0\.0\.1\s+localhost/m);
    assert.equal(readFileSync(join(rootfs, 'etc/resolv.conf'), 'utf8'), '');
    const r = run('chroot', [rootfs, '/bin/id', 'sandbox']);
    assert.match(r.stdout, /uid=1000\(sandbox\) gid=1000\(sandbox\)/);
  });

  test('list, rebuild (new id), export and remove', async () => {
    assert.deepEqual(store.list().map((i) => i.name), ['busybox']);
    const other = await store.build('tools', { base: 'busybox' });
    assert.deepEqual(store.list().map((i) => i.name), ['busybox', 'tools']);
    const rebuilt = await store.build('tools', { base: 'busybox' });
    assert.notEqual(rebuilt.id, other.id);
    const tar = join(dir, 'tools.tar');
    await store.exportTar('tools', tar);
    assert.match(run('tar', ['-tf', tar]).stdout, /^\.\/bin\/busybox$/m);
    store.remove('tools');
    assert.equal(store.get('tools'), undefined);
    assert.deepEqual(store.list().map((i) => i.name), ['busybox']);
    assert.deepEqual(leftovers(join(dir, 'images')), []);
    assert.throws(() => store.remove('tools'), NotFoundError);
  });
});

describe('names, lookups, failures', () => {
  test('bad names are rejected with a hint', async () => {
    const store = new ImageStore(tempDir());
    for (const bad of ['', 'Upper', '../x', '.hidden', 'a/b', 'x'.repeat(65), '-dash']) {
      await assert.rejects(store.build(bad, { base: 'busybox' }), (err: unknown) => err instanceof BadRequestError && typeof err.hint === 'string');
    }
    assert.throws(() => store.remove('../etc'), BadRequestError);
    assert.equal(store.get('../etc'), undefined);
  });

  test('resolve of a missing image is not_found with the build hint', () => {
    const store = new ImageStore(tempDir());
    assert.throws(
      () => store.resolve('nope'),
      (err: unknown) => err instanceof NotFoundError && err.code === 'not_found' && /agentbox image ls, or agentbox image build nope/.test(err.hint ?? ''),
    );
    assert.deepEqual(store.list(), []);
  });

  test('bad package names and busybox-with-packages are rejected', async () => {
    const store = new ImageStore(tempDir());
    await rejectsWith(store.build('x', { packages: ['--evil'] }), BadRequestError);
    await rejectsWith(store.build('x', { base: 'busybox', packages: ['python3'] }), BadRequestError);
  });

  test('a failed build leaves nothing behind', async () => {
    const dir = tempDir();
    const store = new ImageStore(dir);
    const controller = new AbortController();
    const p = store.build('busybox', {
      signal: controller.signal,
      onProgress: (pr) => {
        if (pr.message === 'installing applet links') controller.abort(new Error('stop here'));
      },
    });
    await assert.rejects(p, /stop here/);
    assert.equal(store.get('busybox'), undefined);
    assert.deepEqual(readdirSync(dir), []);
  });

  test('a build that dies leaves a temp dir the next build clears', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, '.tmp-busybox-0badc0de', 'rootfs'), { recursive: true });
    writeFileSync(join(dir, '.lock-busybox'), '999999999 1\n'); // no such pid: stale
    const store = new ImageStore(dir);
    await store.build('busybox');
    assert.deepEqual(readdirSync(dir), ['busybox']);
  });

  test('a missing tool is runtime_unavailable with its install hint; a failing one shows its stderr tail', async () => {
    await assert.rejects(runTool('agentbox-no-such-tool', [], { installHint: 'apt-get install mmdebstrap' }), (err: unknown) => {
      return err instanceof RuntimeUnavailableError && err.hint === 'apt-get install mmdebstrap';
    });
    await assert.rejects(runTool('sh', ['-c', 'echo one >&2; echo two >&2; exit 3']), /sh failed \(exit 3\): one \| two/);
  });

  test('the mirror comes from deb822 or one-line sources, else deb.debian.org', () => {
    const apt = tempDir();
    mkdirSync(join(apt, 'sources.list.d'));
    assert.equal(hostMirror('bookworm', apt), 'http://deb.debian.org/debian');
    writeFileSync(join(apt, 'sources.list'), 'deb [arch=amd64] http://one.example/debian bookworm main\n');
    assert.equal(hostMirror('bookworm', apt), 'http://one.example/debian');
    writeFileSync(
      join(apt, 'sources.list.d', 'debian.sources'),
      'Types: deb\n# a comment inside the stanza\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n' +
        'Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n',
    );
    assert.equal(hostMirror('bookworm', apt), 'http://mirror.example/debian');
  });
});

describe('concurrent builds', () => {
  test('two builds of one name in one process: the second waits, both succeed, one image', async () => {
    const dir = tempDir();
    const store = new ImageStore(dir);
    const [a, b] = await Promise.all([store.build('busybox'), store.build('busybox')]);
    assert.notEqual(a.id, b.id);
    assert.equal(store.get('busybox')?.id, b.id);
    assert.deepEqual(readdirSync(dir), ['busybox']);
  });

  test('ensure from two callers builds once', async () => {
    const dir = tempDir();
    const store = new ImageStore(dir);
    const [a, b] = await Promise.all([store.ensure('busybox'), store.ensure('busybox')]);
    assert.equal(a.id, b.id);
    assert.deepEqual(readdirSync(dir), ['busybox']);
  });

  test('a lock held by another live process: conflict after the wait', async () => {
    const dir = tempDir();
    const holder = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const stat = readFileSync(`/proc/${holder.pid}/stat`, 'utf8');
      const started = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
      writeFileSync(join(dir, '.lock-busybox'), `${holder.pid} ${started}\n`);
      const store = new ImageStore(dir, { lockWaitMs: 300 });
      await rejectsWith(store.build('busybox'), ConflictError, /being built by process/);
      assert.deepEqual(readdirSync(dir), ['.lock-busybox']);
    } finally {
      holder.kill();
    }
  });

  test('a lock whose pid was reused by another process is stale', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, '.lock-busybox'), `${process.pid} 1\n`); // our pid, wrong start time
    const store = new ImageStore(dir, { lockWaitMs: 300 });
    await store.build('busybox');
    assert.deepEqual(readdirSync(dir), ['busybox']);
  });
});

describe('importTar', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });

  function tarOf(name: string, build: (src: string) => void, args: string[] = ['.']): string {
    const src = join(dir, `${name}-src`);
    mkdirSync(src, { recursive: true });
    build(src);
    const tar = join(dir, `${name}.tar`);
    const r = run('tar', ['-C', src, '-cf', tar, ...args]);
    assert.equal(r.status, 0, r.stderr);
    return tar;
  }

  test('a plain rootfs tarball imports, keeps owners and gains mount points', async () => {
    const tar = tarOf('plain', (src) => {
      mkdirSync(join(src, 'bin'));
      writeFileSync(join(src, 'bin', 'hello'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
      writeFileSync(join(src, 'owned'), 'x');
      spawnSync('chown', ['123:456', join(src, 'owned')]);
      symlinkSync('/bin/hello', join(src, 'abs-link')); // absolute symlinks are fine: they resolve inside
    });
    const store = new ImageStore(join(dir, 'store'));
    const info = await store.importTar('plain', tar);
    assert.equal(info.source, 'import');
    const { rootfs } = store.resolve('plain');
    assert.equal(statSync(join(rootfs, 'owned')).uid, 123);
    assert.equal(statSync(join(rootfs, 'owned')).gid, 456);
    assert.equal(statSync(join(rootfs, 'bin', 'hello')).mode & 0o777, 0o755);
    assert.equal(statSync(rootfs).mode & 0o777, 0o755);
    for (const mp of MOUNT_POINTS) assert.ok(lstatSync(join(rootfs, mp)).isDirectory(), mp);
    assert.match(readFileSync(join(rootfs, 'etc/passwd'), 'utf8'), /^sandbox:x:1000:1000:/m);
  });

  test('a ../evil entry is refused and nothing is left behind', async () => {
    const tar = tarOf('evil', (src) => {
      mkdirSync(join(src, 'inner'));
      writeFileSync(join(src, 'evil'), 'x');
    }, ['-P', '-C', join(dir, 'evil-src', 'inner'), '../evil']); // -P: GNU tar strips ../ otherwise
    assert.match(run('tar', ['-tf', tar]).stdout, /^\.\.\/evil$/m);
    const storeDir = join(dir, 'evil-store');
    const store = new ImageStore(storeDir);
    await rejectsWith(store.importTar('evil', tar), BadRequestError, /unsafe path \.\.\/evil/);
    assert.equal(store.get('evil'), undefined);
    assert.deepEqual(leftovers(storeDir), []);
    assert.ok(!existsSync(join(dir, 'evil-src', '..', '..', 'evil')));
  });

  test('an image whose /etc is a symlink to the host is refused, not written through', async () => {
    const tar = tarOf('etclink', (src) => symlinkSync('/etc', join(src, 'etc')));
    const storeDir = join(dir, 'etclink-store');
    const before = readFileSync('/etc/passwd', 'utf8');
    await rejectsWith(new ImageStore(storeDir).importTar('etclink', tar), BadRequestError, /\/etc is a symlink/);
    assert.equal(readFileSync('/etc/passwd', 'utf8'), before);
    assert.deepEqual(leftovers(storeDir), []);
  });

  test('listing checks: absolute paths, device nodes, hard links out', () => {
    const t = '2026-01-01 00:00:00';
    assert.equal(checkListingLine(`-rw-r--r-- 0/0 5 ${t} ./etc/x`), undefined);
    assert.equal(checkListingLine(`lrwxrwxrwx 0/0 0 ${t} ./bin/sh -> /bin/busybox`), undefined);
    assert.equal(checkListingLine(`lrwxrwxrwx 0/0 0 ${t} ./lib -> ../usr/lib`), undefined);
    assert.match(checkListingLine(`-rw-r--r-- 0/0 5 ${t} /etc/passwd`) ?? '', /unsafe path/);
    assert.match(checkListingLine(`-rw-r--r-- 0/0 5 ${t} a/../../x`) ?? '', /unsafe path/);
    assert.match(checkListingLine(`crw-r--r-- 0/0 1,3 ${t} ./dev/null`) ?? '', /device node/);
    assert.match(checkListingLine(`brw-r--r-- 0/0 8, 0 ${t} ./dev/sda`) ?? '', /device node/);
    assert.match(checkListingLine(`hrw-r--r-- 0/0 0 ${t} ./x link to ../../etc/shadow`) ?? '', /hard link/);
    assert.match(checkListingLine(`lrwxrwxrwx 0/0 0 ${t} ../x -> y`) ?? '', /unsafe path/);
    assert.match(checkListingLine('garbage') ?? '', /unrecognised/);
  });

  test('a tarball with a device node is refused', async () => {
    const src = join(dir, 'dev-src');
    mkdirSync(join(src, 'dev'), { recursive: true });
    assert.equal(run('mknod', [join(src, 'dev', 'null'), 'c', '1', '3']).status, 0);
    const tar = join(dir, 'dev.tar');
    run('tar', ['-C', src, '-cf', tar, '.']);
    const storeDir = join(dir, 'dev-store');
    await rejectsWith(new ImageStore(storeDir).importTar('dev', tar), BadRequestError, /device node/);
    assert.deepEqual(leftovers(storeDir), []);
  });

  test('a missing tarball is not_found', async () => {
    await rejectsWith(new ImageStore(join(dir, 'x')).importTar('x', join(dir, 'nope.tar')), NotFoundError);
  });
});

describe('removal while in use', () => {
  test('a removed image stays on disk while a sandbox uses it, and goes at the next sweep', async (t) => {
    if (run('bwrap', ['--version']).status !== 0) return t.skip('bubblewrap is not installed');
    const dir = tempDir();
    const store = new ImageStore(dir);
    await store.build('busybox');
    const { rootfs } = store.resolve('busybox');
    const child = spawn('bwrap', ['--die-with-parent', '--ro-bind', rootfs, '/', '--proc', '/proc', '--dev', '/dev', '--unshare-pid', '/bin/sh', '-c', 'echo up; sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((res) => child.stdout.once('data', () => res()));
      store.remove('busybox');
      const trash = readdirSync(dir).filter((e) => e.startsWith('.trash-busybox-'));
      assert.equal(trash.length, 1);
      assert.ok(existsSync(join(dir, trash[0] as string, 'rootfs', 'bin', 'busybox')));
      assert.equal(store.sweep(), 1);
    } finally {
      child.kill('SIGKILL');
      await new Promise((res) => child.once('close', res));
    }
    assert.equal(store.sweep(), 0);
    assert.deepEqual(readdirSync(dir), []);
  });
});

describe('debian image (mmdebstrap)', { skip: process.env.AGENTBOX_TEST_DEBIAN === '0' ? 'AGENTBOX_TEST_DEBIAN=0' : false }, () => {
  // Shared with the rest of the suite (test/helpers/images.ts): built only when missing, never replaced.
  const cacheDir = process.env.AGENTBOX_TEST_IMAGES ?? '/var/tmp/agentbox-test/images';

  test('the host mirror comes from apt sources', () => {
    assert.match(hostMirror(), /^https?:\/\//);
  });

  test('bookworm minbase with python3 runs python', { timeout: 300_000 }, async () => {
    const store = new ImageStore(cacheDir);
    const progress: string[] = [];
    const info = await store.ensure('debian', { packages: ['python3'], onProgress: (p) => progress.push(`${p.phase}: ${p.message}`) });
    assert.equal(info.source, 'debian');
    assert.ok(info.packages.includes('python3'));
    const { rootfs } = store.resolve('debian');
    const r = run('chroot', [rootfs, 'python3', '-c', 'print(6*7)']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '42\n');
    for (const mp of MOUNT_POINTS) assert.ok(lstatSync(join(rootfs, mp)).isDirectory(), mp);
    assert.match(readFileSync(join(rootfs, 'etc/passwd'), 'utf8'), /^sandbox:x:1000:1000:/m);
    const st = statSync(rootfs);
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o777, 0o755);
  });
});
