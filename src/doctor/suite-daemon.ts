/**
 * The daemon the attack suite attacks: started in-process in a temporary home of its own
 * (`$AGENTBOX_HOME/doctor-<random>`, removed afterwards), images from the environment, TCP on
 * 127.0.0.1:0 plus the home's Unix socket, and a generated policy: tenant A (full token and a
 * read-only scoped token), tenant B, quotas, profiles with egress none / open / allowlist, and the
 * stand-in names in an AGENTBOX_EGRESS_HOSTS file.
 * Canaries (a secret in the daemon's environment and in a host file) let attacks prove that
 * nothing of the host's reaches a sandbox.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { startDaemon, type Daemon } from '../daemon/compose.js';
import { resolvePaths } from '../core/config.js';
import { STAND_IN_ADDRESSES, standInHostsFile } from './stand-ins.js';

export interface SuiteDaemon {
  daemon: Daemon;
  home: string;
  url: string;
  port: number;
  socketPath: string;
  tokenA: string;
  tokenReadOnlyA: string;
  tokenB: string;
  canary: { value: string; envName: string; hostFile: string };
  close(): Promise<void>;
}

export const CANARY_ENV = 'AGENTBOX_DOCTOR_CANARY';

function policyYaml(t: { a: string; ro: string; b: string }, isolated: boolean, extraRanges: readonly string[]): string {
  const ranges = [...(isolated ? [`${STAND_IN_ADDRESSES.allowed}/32`, `${STAND_IN_ADDRESSES.denied}/32`] : []), ...extraRanges];
  return `version: 1
defaults:
  runtime: local
  image: busybox
  ttl: 30m
  idleTimeout: 30m
  execTimeout: 2m
  egress: { mode: open }
images: [busybox, debian]
profiles:
  none: { image: debian, egress: { mode: none } }
  open: { image: debian, egress: { mode: open } }
  allow: { image: debian, egress: { mode: allowlist, allow: ["allowed.attack.test:80"] } }
  writable: { image: debian, egress: { mode: none }, rootfs: writable, limits: { diskMb: 256 } }
egress:
  globalDeny: [metadata.google.internal, internal.attack.test, "*.internal.attack.test", c2.attack.test]
  allowRanges: [${ranges.join(', ')}]
  byteQuotaMb: 64
tenants:
  - name: tenant-a
    tokens: [${t.a}]
    scopedTokens:
      - { token: ${t.ro}, scopes: [read] }
    quotas: { sandboxes: 60, memoryMb: 65536, requestsPerMinute: 100000 }
  - name: tenant-b
    tokens: [${t.b}]
    quotas: { sandboxes: 10, memoryMb: 16384, requestsPerMinute: 100000 }
`;
}

export async function startSuiteDaemon(opts: {
  logger: Logger;
  isolated: boolean;
  env?: NodeJS.ProcessEnv;
  /** The suite's self-test only: ranges its own policy opens on purpose, so that attacks on them must be caught. */
  weakenOpenRanges?: readonly string[];
}): Promise<SuiteDaemon> {
  const env = opts.env ?? process.env;
  const base = resolvePaths(env);
  const home = join(base.home, `doctor-${randomBytes(4).toString('hex')}`);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const rnd = (p: string): string => `${p}-${randomBytes(16).toString('hex')}`;
  const tokens = { a: rnd('doctor-a'), ro: rnd('doctor-a-ro'), b: rnd('doctor-b') };
  const canaryValue = rnd('canary');
  const hostFile = join(home, 'host-secret.txt');
  writeFileSync(hostFile, `${canaryValue}\n`, { mode: 0o600 });
  writeFileSync(join(home, 'policy.yaml'), policyYaml(tokens, opts.isolated, opts.weakenOpenRanges ?? []), { mode: 0o600 });
  writeFileSync(join(home, 'egress-hosts'), standInHostsFile(opts.isolated));
  // The daemon runs in this process: its environment is process.env. The canary goes there, where
  // a leak of the daemon's environment into a sandbox would carry it.
  const previousCanary = process.env[CANARY_ENV];
  process.env[CANARY_ENV] = canaryValue;
  const daemonEnv: NodeJS.ProcessEnv = { ...env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: base.images, AGENTBOX_EGRESS_HOSTS: join(home, 'egress-hosts') };
  for (const k of ['AGENTBOX_TOKEN', 'AGENTBOX_URL', 'AGENTBOX_POLICY', 'AGENTBOX_REQUIRE_POLICY'] as const) delete daemonEnv[k];
  const removeHome = (): void => {
    if (previousCanary === undefined) delete process.env[CANARY_ENV];
    else process.env[CANARY_ENV] = previousCanary;
    rmSync(home, { recursive: true, force: true });
  };
  let daemon: Daemon;
  try {
    daemon = await startDaemon({ env: daemonEnv, logger: opts.logger, policyPath: join(home, 'policy.yaml'), tcp: { host: '127.0.0.1', port: 0 } });
  } catch (err) {
    removeHome();
    throw err;
  }
  const port = daemon.tcpAddress?.port ?? 0;
  return {
    daemon,
    home,
    url: `http://127.0.0.1:${port}`,
    port,
    socketPath: daemon.paths.socket,
    tokenA: tokens.a,
    tokenReadOnlyA: tokens.ro,
    tokenB: tokens.b,
    canary: { value: canaryValue, envName: CANARY_ENV, hostFile },
    async close() {
      await daemon.close();
      removeHome();
    },
  };
}
