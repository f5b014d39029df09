/**
 * The FAKE cluster the kubernetes runtime's tests run against: the fake API server
 * (fake-apiserver.ts) over a real local runtime, and a kubeconfig that points at it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { helperPath } from '../../src/core/config.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { KubernetesRuntime, type KubernetesRuntimeOpts } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';
import { testImages } from '../helpers/images.js';
import { FakeApiServer, type FakeApiServerOpts } from './fake-apiserver.js';

export const FAKE_NAMESPACE = 'agentbox-test';

export interface FakeCluster {
  fake: FakeApiServer;
  local: LocalRuntime;
  kubeconfig: string;
  homeTag: string;
  /** A driver pointed at the fake API server. */
  newRuntime(extra?: Partial<KubernetesRuntimeOpts>): KubernetesRuntime;
  /** Stops the fake (destroying every local sandbox it still has) and removes the kubeconfig. */
  close(): Promise<void>;
}

/** `docker.io/library/busybox:1.36` → `busybox`, when the test image store has it. */
function imageResolver(resolve: (name: string) => unknown): (ref: string) => string | undefined {
  return (ref) => {
    const name = ref.replace(/^.*\//, '').replace(/[:@].*$/, '');
    try {
      resolve(name);
      return name;
    } catch {
      return undefined;
    }
  };
}

export async function startFakeCluster(extra: Partial<Omit<FakeApiServerOpts, 'local' | 'resolveImage'>> = {}): Promise<FakeCluster> {
  const images = await testImages();
  const local = new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/test-k8s-${process.pid}`, resolveRootfs: (image) => images.resolve(image).rootfs, helper: helperPath() });
  const fake = new FakeApiServer({ local, resolveImage: imageResolver((n) => images.resolve(n)), namespaces: ['default', FAKE_NAMESPACE], ...extra });
  await fake.start();
  const dir = mkdtempSync(join(tmpdir(), 'ab-fake-k8s-'));
  const kubeconfig = fake.writeKubeconfig(dir, FAKE_NAMESPACE);
  const homeTag = `test-k8s-${process.pid}`;
  return {
    fake,
    local,
    kubeconfig,
    homeTag,
    newRuntime: (more = {}) => new KubernetesRuntime({ homeTag, kubeconfig, namespace: FAKE_NAMESPACE, ...more }),
    close: async () => {
      await fake.close();
      await local.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
