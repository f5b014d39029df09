import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { Store } from '../../src/store/store.js';
import { runReplicaSuite } from './replica-suite.js';

const dir = mkdtempSync(join(tmpdir(), 'agentbox-replicas-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// SQLite: each replica opens the same file (WAL); on one machine, as the suite needs.
runReplicaSuite({ name: 'SQLite', openStore: (db) => Store.open(join(dir, `${db}.db`)) });
