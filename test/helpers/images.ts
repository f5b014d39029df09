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
