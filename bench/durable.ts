/**
 * Durable sandboxes, side by side with raw baselines in the same run:
 *  - create: a local sandbox with its disk-backed /workspace, the disk alone, and the raw baseline
 *    of what it replaced (mount + umount of a sized tmpfs)
 *  - snapshot (freeze, reflink clone, digest) and restore (verify, clone, mount) of 10 MB, 100 MB
 *    and 1 GB of workspace, vs `tar -c` and `tar -x` of the same files
 *  - fork of 1 and 10 children: latency and host disk per child
 * Usage: npm run bench:durable   (prints Markdown tables for BENCHMARKS.md)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { helperPath } from '../src/core/config.js';
import { ImageStore } from '../src/images/image-store.js';
import { LocalRuntime } from '../src/runtime/local/local-runtime.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';
import { SnapshotFiles } from '../src/storage/snapshot-files.js';
import { pct } from './stats.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 30);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);

async function timeIt(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

function row(name: string, values: number[], baseline?: number[]): string {
  const ratio = baseline ? `${(pct(values, 50) / pct(baseline, 50)).toFixed(2)}×` : '';
  return `| ${name} | ${pct(values, 50).toFixed(1)} | ${pct(values, 95).toFixed(1)} | ${ratio} |`;
}

function sh(cmd: string): void {
  execFileSync('sh', ['-c', cmd], { stdio: 'ignore' });
}

/** Bytes the store's filesystem uses (what forks and snapshots really cost on disk), once frees have settled. */
async function storeUsed(dir: string): Promise<number> {
  const used = (): number => {
    const st = statfsSync(dir);
    return (st.blocks - st.bfree) * st.bsize;
  };
  sh('sync');
  // XFS frees the blocks of removed files in the background: wait until the count holds still.
  let last = used();
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const now = used();
    if (now === last) return now;
    last = now;
  }
  return last;
}

async function main(): Promise<void> {
  const disks = scratchDiskStore();
  await disks.open();
  const snaps = new SnapshotFiles(disks);
  const images = new ImageStore(IMAGES);
  await images.ensure('busybox', {});
  const rt = new LocalRuntime({ disks, scope: `agentbox/bench-durable-${process.pid}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
  const limits = { cpus: 1, memoryMb: 256, pids: 128, diskMb: 1024 };
  let n = 0;
  const id = (): string => `sbx_bd${process.pid}x${++n}`;

  console.log(`Durable sandboxes, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, ${cpus()[0]?.model ?? ''}\n`);

  // --- create
  await disks.destroy((await disks.create(id(), 1024)).id); // the template of this size, made once
  const fullCreate: number[] = [];
  const writableCreate: number[] = [];
  const diskOnly: number[] = [];
  const tmpfs: number[] = [];
  const mnt = mkdtempSync(join(tmpdir(), 'bench-tmpfs-'));
  for (let i = 0; i < N; i++) {
    const sid = id();
    let h;
    fullCreate.push(await timeIt(async () => (h = await rt.create({ id: sid, image: 'busybox', isolation: 'namespaces', limits, labels: {} }))));
    await rt.destroy(h!);
    const wid = id();
    writableCreate.push(await timeIt(async () => (h = await rt.create({ id: wid, image: 'busybox', isolation: 'namespaces', limits, labels: {}, writableRoot: true }))));
    await rt.destroy(h!);
    const did = id();
    diskOnly.push(await timeIt(() => disks.create(did, 1024)));
    await disks.destroy(did);
    tmpfs.push(await timeIt(() => spawnSync('sh', ['-c', `mount -t tmpfs -o size=1024m tmpfs ${mnt} && umount ${mnt}`])));
  }
  rmSync(mnt, { recursive: true, force: true });
  console.log(`### Create (ms, ${N} each)\n\n| | p50 | p95 | vs baseline |\n|---|---|---|---|`);
  console.log(row('local sandbox, disk-backed /workspace + /tmp (create until an exec can enter)', fullCreate));
  console.log(row('the same with rootfs: writable (idmapped image + overlay, upper on the disk), vs the read-only root', writableCreate, fullCreate));
  console.log(row('its disk alone (reflink clone of the template + loop mount)', diskOnly, tmpfs));
  console.log(row('baseline: mount + umount of a 1 GB tmpfs (what /workspace was)', tmpfs));

  // --- snapshot and restore vs tar
  console.log(`\n### Snapshot and restore vs tar (ms, p50 of ${REPEAT}; random data in /workspace)\n`);
  console.log('| workspace | snapshot | of which frozen | tar -c | restore | tar -x | snapshot host disk |\n|---|---|---|---|---|---|---|');
  for (const mb of [10, 100, 1000]) {
    const src = await disks.create(id(), Math.max(1024, mb + 200));
    sh(`head -c ${mb * 1024 * 1024} /dev/urandom > ${src.root}/workspace/data && sync`);
    const snap: number[] = [];
    const frozenFor: number[] = [];
    const tarC: number[] = [];
    const restore: number[] = [];
    const tarX: number[] = [];
    let held = 0;
    for (let r = 0; r < REPEAT; r++) {
      const sid = `snap_bench${process.pid}x${r}m${mb}`;
      const before = await storeUsed(disks.storeDir);
      snap.push(await timeIt(() => snaps.take(sid, src.id, Math.max(1024, mb + 200))));
      frozenFor.push(await timeIt(async () => {
        await snaps.clone(`${sid}f`, src.id);
      }));
      await snaps.remove(`${sid}f`);
      held = (await storeUsed(disks.storeDir)) - before;
      const tarFile = join(disks.storeDir, 'scratch', `bench-${r}.tar`);
      tarC.push(await timeIt(() => sh(`tar -cf ${tarFile} -C ${src.root} workspace && sync`)));
      const rid = id();
      restore.push(await timeIt(async () => {
        await snaps.verify(sid);
        await disks.create(rid, Math.max(1024, mb + 200), snaps.layerPath(sid));
      }));
      await disks.destroy(rid);
      const xid = id();
      const empty = await disks.create(xid, Math.max(1024, mb + 200));
      tarX.push(await timeIt(() => sh(`tar -xf ${tarFile} -C ${empty.root} && sync`)));
      await disks.destroy(xid);
      rmSync(tarFile, { force: true });
      await snaps.remove(sid);
    }
    console.log(`| ${mb} MB | ${pct(snap, 50).toFixed(0)} | ${pct(frozenFor, 50).toFixed(0)} | ${pct(tarC, 50).toFixed(0)} | ${pct(restore, 50).toFixed(0)} | ${pct(tarX, 50).toFixed(0)} | ${(held / 2 ** 20).toFixed(1)} MB |`);
    await disks.destroy(src.id);
  }

  // --- fork
  console.log(`\n### Fork (p50 of ${REPEAT}; parent with 100 MB in /workspace; children are disks started from a frozen clone)\n`);
  console.log('| children | fork (ms) | per child (ms) | host disk per child | baseline: cp of the 100 MB workspace, per child (ms) |\n|---|---|---|---|---|');
  const parent = await disks.create(id(), 1024);
  sh(`head -c ${100 * 1024 * 1024} /dev/urandom > ${parent.root}/workspace/data && sync`);
  for (const count of [1, 10]) {
    const lat: number[] = [];
    const cp: number[] = [];
    let perChild = 0;
    for (let r = 0; r < REPEAT; r++) {
      const before = await storeUsed(disks.storeDir);
      const kids: string[] = [];
      lat.push(await timeIt(async () => {
        const src = await disks.cloneToScratch(parent.id);
        for (let k = 0; k < count; k++) kids.push((await disks.create(id(), 1024, src)).id);
        await disks.dropScratch(src);
      }));
      perChild = ((await storeUsed(disks.storeDir)) - before) / count;
      for (const k of kids) await disks.destroy(k);
      const copyDir = join(disks.storeDir, 'scratch', 'cp');
      mkdirSync(copyDir, { recursive: true });
      cp.push(await timeIt(() => sh(`cp -a --reflink=never ${parent.root}/workspace ${copyDir}/w && sync`)));
      rmSync(copyDir, { recursive: true, force: true });
    }
    console.log(`| ${count} | ${pct(lat, 50).toFixed(0)} | ${(pct(lat, 50) / count).toFixed(1)} | ${(perChild / 2 ** 20).toFixed(2)} MB | ${pct(cp, 50).toFixed(0)} |`);
  }
  await disks.destroy(parent.id);
  await rt.close();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
