/**
 * The tag a shared runtime's objects carry (Paths.storeTag): every replica on one PostgreSQL database
 * shares it whatever its home, so they see one set of pods and one warm pool.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolvePaths } from '../../src/core/config.js';

test('store tag: one per database (not per home, user or password), the home\'s with SQLite', () => {
  const a = resolvePaths({ AGENTBOX_HOME: '/var/lib/a', AGENTBOX_DATABASE_URL: 'postgres://agentbox:one@db.example:5432/agentbox' });
  const b = resolvePaths({ AGENTBOX_HOME: '/srv/b', AGENTBOX_DATABASE_URL: 'postgresql://other:two@db.example/agentbox?sslmode=require' });
  assert.equal(a.storeTag, b.storeTag, 'replicas on one database got different tags');
  assert.notEqual(a.homeTag, b.homeTag);
  const otherDb = resolvePaths({ AGENTBOX_HOME: '/var/lib/a', AGENTBOX_DATABASE_URL: 'postgres://agentbox:one@db.example:5432/staging' });
  assert.notEqual(otherDb.storeTag, a.storeTag, 'two databases share a tag');
  const sqlite = resolvePaths({ AGENTBOX_HOME: '/var/lib/a' });
  assert.equal(sqlite.storeTag, sqlite.homeTag);
  assert.match(a.storeTag, /^[0-9a-f]{10}$/);
});
