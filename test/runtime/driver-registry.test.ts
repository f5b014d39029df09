/**
 * The daemon's drivers agree with the tables policy checks requests against: a driver's `name` is
 * its key, and the isolations it states are the ones policy offers for it (policy never imports a
 * driver, so the two lists live apart). A new driver added to buildRuntimes is checked here too.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildRuntimes } from '../../src/daemon/compose.js';
import { resolvePaths } from '../../src/core/config.js';
import type { RuntimeName } from '../../src/contract/model.js';
import { ImageStore } from '../../src/images/image-store.js';
import { DiskStore } from '../../src/storage/disk-store.js';
import { RUNTIME_ISOLATIONS } from '../../src/policy/isolation.js';

test('every driver states the isolations policy offers for it, under its own name', async () => {
  const home = mkdtempSync(join(tmpdir(), 'agentbox-registry-'));
  try {
    const paths = resolvePaths({ AGENTBOX_HOME: home });
    const runtimes = buildRuntimes(paths, new ImageStore(paths.images), new DiskStore({ dir: paths.storage }));
    assert.deepEqual(Object.keys(runtimes).sort(), Object.keys(RUNTIME_ISOLATIONS).sort());
    for (const [name, rt] of Object.entries(runtimes) as [RuntimeName, NonNullable<(typeof runtimes)[RuntimeName]>][]) {
      assert.equal(rt.name, name);
      assert.deepEqual(rt.isolations, RUNTIME_ISOLATIONS[name], `${name}: isolations differ from policy/isolation.ts`);
      assert.equal(typeof rt.pause, typeof rt.resume, `${name}: pause and resume come together`);
      await rt.close();
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
