/**
 * Daemon replicas on one PostgreSQL database (a private cluster, test/helpers/postgres.ts): the
 * replica suite that test/core/replicas.test.ts runs on a shared SQLite file, each replica on its own
 * connection, so leases and heartbeats really cross connections.
 */
import { after, test } from 'node:test';
import { Store } from '../../src/store/store.js';
import { runReplicaSuite } from '../core/replica-suite.js';
import { postgresBin, startPostgres, type PostgresCluster } from '../helpers/postgres.js';

const found = postgresBin();
const cluster: PostgresCluster | undefined = 'skip' in found ? undefined : await startPostgres({ settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' } });
after(() => cluster?.stop());

if (cluster === undefined) {
  test('daemon replicas on one PostgreSQL store', { skip: 'skip' in found ? found.skip : '' }, () => undefined);
} else {
  const pgc = cluster;
  const urls = new Map<string, Promise<string>>();
  runReplicaSuite({
    name: 'PostgreSQL',
    openStore: async (db) => {
      let url = urls.get(db);
      if (!url) urls.set(db, (url = pgc.createDatabase()));
      return Store.connect(await url);
    },
  });
}
