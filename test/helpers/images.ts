/** Test images, built once per machine into a shared cache (busybox: instant; debian: ~20 s). */
import { ImageStore } from '../../src/images/image-store.js';

export const TEST_IMAGES_DIR = process.env.AGENTBOX_TEST_IMAGES ?? '/var/tmp/agentbox-test/images';

let ready: Promise<ImageStore> | undefined;

export function testImages(): Promise<ImageStore> {
  ready ??= (async () => {
    const store = new ImageStore(TEST_IMAGES_DIR);
    await store.ensure('busybox', {});
    if (process.env.AGENTBOX_TEST_DEBIAN !== '0') await store.ensure('debian', { packages: ['python3'] });
    return store;
  })();
  return ready;
}

export function hasDebian(): boolean {
  return process.env.AGENTBOX_TEST_DEBIAN !== '0';
}

let desktop: Promise<ImageStore> | undefined;

/**
 * The desktop image (`agentbox image build desktop`: Chromium, Xvnc, openbox; about 900 MB, 5-6
 * minutes from the mirror), built once per machine into the same cache and rebuilt only when its
 * recipe changed. Longer than a test's timeout (scripts/run-tests.mjs: 300 s): call it from a
 * `before` hook with a timeout of its own (DESKTOP_BUILD_TIMEOUT_MS).
 */
export function ensureDesktopImage(): Promise<ImageStore> {
  desktop ??= (async () => {
    const store = await testImages();
    await store.ensure('desktop', {});
    return store;
  })();
  return desktop;
}

export const DESKTOP_BUILD_TIMEOUT_MS = 30 * 60_000;
