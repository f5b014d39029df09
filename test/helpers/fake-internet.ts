/**
 * A small "fake internet" for egress-proxy tests: HTTP, HTTPS and a TCP echo server running inside a
 * network namespace this harness creates, reachable from the host only over a veth pair with addresses
 * in TEST-NET-2 (198.51.100.0/24, one /30 per instance). Nothing here touches a real network: the netns
 * has no default route and the host only gains a /30 route via the veth.
 *
 * Needs root, iproute2 (`ip netns`) and the `openssl` CLI; check with haveNetnsSupport() first.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';

export interface FakeInternet {
  /** name of the netns, e.g. `abfake-<6 hex>` */
  netns: string;
  /** host-side address of the veth (the host reaches the fake internet through it) */
  hostAddress: string;
  /** the address the servers listen on inside the netns */
  siteAddress: string;
  /** PEM of the throwaway CA that signed the HTTPS server's certificate */
  caPem: string;
  /** absolute path of a file holding caPem (inside a temp dir owned by the harness) */
  caFile: string;
  /** hostnames the certificate covers, all meant to map to siteAddress */
  names: string[];
  httpPort: number;
  httpsPort: number;
  /** plain TCP: writes "SSH-2.0-fake\r\n" on connect, then echoes whatever it receives */
  echoPort: number;
  /** Stops the servers and removes the netns, the veth pair and the temp dir. Idempotent. */
  close(): Promise<void>;
}

const FAKE_NAMES = ['site.fake.test', 'other.fake.test', 'denied.fake.test', 'blocked.fake.test'];
const HTTP_PORT = 80;
const HTTPS_PORT = 443;
const ECHO_PORT = 2222;
const SUBNET_PREFIX = '198.51.100.';
const SUBNET_SLOTS = 64; // 198.51.100.0/24 holds 64 /30s
const READY_TIMEOUT_MS = 10_000;
const STDERR_CAP = 16 * 1024;

// ---------------------------------------------------------------------------------------------------
// small process helpers

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const detail = stderr.trim() || err.message;
        reject(new Error(`\`${cmd} ${args.join(' ')}\` failed: ${detail}`));
      } else resolve({ stdout, stderr });
    });
  });
}

/** Runs a command and swallows any failure (cleanup paths). */
async function tryRun(cmd: string, args: string[]): Promise<void> {
  try {
    await run(cmd, args);
  } catch {
    /* best effort */
  }
}

function trySync(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  } catch {
    /* best effort */
  }
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------------
// support probe

let supportCache: string | null | undefined;

/** null when this process can create network namespaces with veth pairs and run openssl; else why not. */
export function haveNetnsSupport(): string | null {
  if (supportCache !== undefined) return supportCache;
  supportCache = probeSupport();
  return supportCache;
}

function probeSupport(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'the fake internet needs root (ip netns, veth)';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 10_000 });
  } catch (e) {
    return `\`ip netns\` (iproute2) is not usable: ${errorMessage(e)}`;
  }
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore', timeout: 10_000 });
  } catch (e) {
    return `the openssl CLI is not usable: ${errorMessage(e)}`;
  }
  // Root is not always enough (containers without CAP_SYS_ADMIN/CAP_NET_ADMIN, no veth module): try it.
  const ns = `abprobe-${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', ns], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
  } catch (e) {
    return `cannot create a network namespace: ${stderrOf(e)}`;
  }
  try {
    execFileSync('ip', ['-n', ns, 'link', 'add', 'abpa', 'type', 'veth', 'peer', 'name', 'abpb'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 10_000,
    });
    return null;
  } catch (e) {
    return `cannot create a veth pair: ${stderrOf(e)}`;
  } finally {
    trySync('ip', ['netns', 'del', ns]);
  }
}

function stderrOf(e: unknown): string {
  if (typeof e === 'object' && e !== null && 'stderr' in e) {
    const s = (e as { stderr: unknown }).stderr;
    const text = Buffer.isBuffer(s) ? s.toString('utf8') : typeof s === 'string' ? s : '';
    if (text.trim()) return text.trim();
  }
  return errorMessage(e);
}

// ---------------------------------------------------------------------------------------------------
// synchronous cleanup on process exit (a crashed test must not leave a netns behind)

const exitCleanups = new Set<() => void>();
let exitHookInstalled = false;

function registerExitCleanup(fn: () => void): void {
  exitCleanups.add(fn);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const f of exitCleanups) {
        try {
          f();
        } catch {
          /* best effort */
        }
      }
      exitCleanups.clear();
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// addressing

function addr(slot: number, host: number): string {
  return `${SUBNET_PREFIX}${slot * 4 + host}`;
}

/** Slots taken by harness instances of this process (their address may not be on the host yet). */
const reservedSlots = new Set<number>();

/** Which host interfaces hold an IPv4 address in each /30 slot of 198.51.100.0/24. */
async function slotOwners(): Promise<Map<number, Set<string>>> {
  const { stdout } = await run('ip', ['-4', '-o', 'addr', 'show']);
  const owners = new Map<number, Set<string>>();
  for (const line of stdout.split('\n')) {
    // e.g. "12: abfh1a2b    inet 198.51.100.5/30 brd 198.51.100.7 scope global abfh1a2b"
    const m = /^\d+:\s+(\S+)\s+inet 198\.51\.100\.(\d+)\//.exec(line);
    if (!m) continue;
    const dev = (m[1] ?? '').split('@')[0] ?? '';
    const slot = Math.floor(Number(m[2]) / 4);
    let set = owners.get(slot);
    if (!set) owners.set(slot, (set = new Set()));
    set.add(dev);
  }
  return owners;
}

function validateSlot(requested: number): void {
  if (!Number.isInteger(requested) || requested < 0 || requested >= SUBNET_SLOTS) {
    throw new Error(`subnetIndex must be an integer in 0..${SUBNET_SLOTS - 1}, got ${requested}`);
  }
}

/**
 * Reserves a /30 and puts hostAddress on hostIf. With no subnetIndex, starts at pid % 60 and moves on
 * past slots in use; after adding the address it re-checks, so two processes that raced for the same
 * slot both notice and move on (at random) instead of sharing it.
 */
async function claimSlot(requested: number | undefined, hostIf: string): Promise<number> {
  const tried = new Set<number>();
  for (let attempt = 0; attempt < 8; attempt++) {
    const owners = await slotOwners();
    const free = (k: number): boolean => !owners.has(k) && !reservedSlots.has(k) && !tried.has(k);
    let slot: number | undefined;
    if (requested !== undefined) {
      validateSlot(requested);
      if (!free(requested)) {
        throw new Error(`${addr(requested, 0)}/30 (subnetIndex ${requested}) is already in use on this host`);
      }
      slot = requested;
    } else if (attempt === 0 && free(process.pid % 60)) {
      slot = process.pid % 60;
    } else {
      const candidates: number[] = [];
      for (let k = 0; k < SUBNET_SLOTS; k++) if (free(k)) candidates.push(k);
      if (candidates.length > 0) slot = candidates[randomInt(candidates.length)];
    }
    if (slot === undefined) break;
    reservedSlots.add(slot);
    tried.add(slot);
    await run('ip', ['addr', 'add', `${addr(slot, 1)}/30`, 'dev', hostIf]);
    const others = [...((await slotOwners()).get(slot) ?? [])].filter((d) => d !== hostIf);
    if (others.length === 0) return slot;
    await tryRun('ip', ['addr', 'del', `${addr(slot, 1)}/30`, 'dev', hostIf]);
    reservedSlots.delete(slot);
    if (requested !== undefined) {
      throw new Error(`${addr(slot, 0)}/30 (subnetIndex ${slot}) was taken concurrently by ${others.join(', ')}`);
    }
  }
  throw new Error('found no free /30 in 198.51.100.0/24 on this host');
}

async function linkExists(name: string): Promise<boolean> {
  try {
    await run('ip', ['link', 'show', 'dev', name]);
    return true;
  } catch {
    return false;
  }
}

async function netnsList(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

// ---------------------------------------------------------------------------------------------------
// certificates

function opensslConfig(siteAddress: string): string {
  const san = [...FAKE_NAMES.map((n) => `DNS:${n}`), `IP:${siteAddress}`].join(',');
  return [
    '[req]',
    'distinguished_name = dn',
    'prompt = no',
    '[dn]',
    'CN = agentbox fake internet',
    '[ca_ext]',
    'basicConstraints = critical,CA:TRUE',
    'keyUsage = critical,keyCertSign,cRLSign',
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid:always',
    '[server_ext]',
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature',
    'extendedKeyUsage = serverAuth',
    `subjectAltName = ${san}`,
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid:always',
    '',
  ].join('\n');
}

interface CertFiles {
  caPem: string;
  caFile: string;
  keyFile: string;
  certFile: string;
}

async function makeCertificates(dir: string, siteAddress: string, tag: string): Promise<CertFiles> {
  const cfg = join(dir, 'openssl.cnf');
  const caKey = join(dir, 'ca.key');
  const caFile = join(dir, 'ca.pem');
  const keyFile = join(dir, 'server.key');
  const csrFile = join(dir, 'server.csr');
  const certFile = join(dir, 'server.pem');
  await writeFile(cfg, opensslConfig(siteAddress));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req', '-x509', '-config', cfg, '-extensions', 'ca_ext', ...ec,
    '-keyout', caKey, '-out', caFile, '-days', '1', '-sha256',
    '-subj', `/O=agentbox tests/CN=agentbox fake internet CA ${tag}`,
  ]);
  await run('openssl', [
    'req', '-new', '-config', cfg, ...ec,
    '-keyout', keyFile, '-out', csrFile, '-sha256',
    '-subj', `/O=agentbox tests/CN=${FAKE_NAMES[0] ?? 'site.fake.test'}`,
  ]);
  await run('openssl', [
    'x509', '-req', '-in', csrFile, '-CA', caFile, '-CAkey', caKey,
    '-set_serial', `0x${randomBytes(16).toString('hex')}`,
    '-days', '1', '-sha256', '-extfile', cfg, '-extensions', 'server_ext', '-out', certFile,
  ]);
  await chmod(caKey, 0o600);
  await chmod(keyFile, 0o600);
  await chmod(caFile, 0o644);
  const caPem = await readFile(caFile, 'utf8');
  return { caPem, caFile, keyFile, certFile };
}

// ---------------------------------------------------------------------------------------------------
// the server child (CommonJS, runs with `ip netns exec <ns> node server.cjs <config json>`)

const SERVER_SCRIPT = String.raw`'use strict';
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const fs = require('node:fs');

const cfg = JSON.parse(process.argv[2]);
const CHUNK = Buffer.alloc(64 * 1024, 0x61);
const MAX_BYTES = 1024 * 1024 * 1024;

function fail(what, err) {
  process.stderr.write('fake internet: ' + what + ': ' + (err && err.stack ? err.stack : String(err)) + '\n');
  process.exit(1);
}

function handler(req, res) {
  let url;
  try {
    url = new URL(req.url, 'http://fake.invalid');
  } catch (e) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end('bad request\n');
    return;
  }
  const isGet = req.method === 'GET' || req.method === 'HEAD';
  if (isGet && url.pathname === '/index.txt') {
    const body = 'hello-fake-internet\n';
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
    return;
  }
  if (isGet && url.pathname === '/host') {
    const body = req.headers.host || '';
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
    return;
  }
  if (isGet && url.pathname === '/bytes') {
    const raw = url.searchParams.get('n');
    const n = raw !== null && /^[0-9]+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n) || n > MAX_BYTES) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('n must be an integer in 0..' + MAX_BYTES + '\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(n) });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    let left = n;
    let closed = false;
    res.on('close', () => { closed = true; });
    const pump = () => {
      while (!closed && left > 0) {
        const len = Math.min(left, CHUNK.length);
        left -= len;
        if (!res.write(len === CHUNK.length ? CHUNK : CHUNK.subarray(0, len))) {
          res.once('drain', pump);
          return;
        }
      }
      if (!closed) res.end();
    };
    pump();
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
}

const httpServer = http.createServer(handler);
const httpsServer = https.createServer({ key: fs.readFileSync(cfg.keyFile), cert: fs.readFileSync(cfg.certFile) }, handler);
const echoServer = net.createServer((sock) => {
  sock.on('error', () => {});
  sock.write('SSH-2.0-fake\r\n');
  sock.pipe(sock);
});

let listening = 0;
function up() {
  if (++listening === 3) process.stdout.write('ready\n');
}
httpServer.on('error', (e) => fail('http server', e));
httpsServer.on('error', (e) => fail('https server', e));
echoServer.on('error', (e) => fail('echo server', e));
httpsServer.on('tlsClientError', () => {});
httpServer.listen(cfg.httpPort, cfg.address, up);
httpsServer.listen(cfg.httpsPort, cfg.address, up);
echoServer.listen(cfg.echoPort, cfg.address, up);

// Exit when the harness goes away (its end of our stdin closes), even if it was SIGKILLed.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
`;

function waitForReady(child: ChildProcess, stderrText: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onData = (d: Buffer): void => {
      buf += d.toString('utf8');
      if (buf.split('\n').some((l) => l.trim() === 'ready')) finish();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      finish(new Error(`server process exited before it was ready (code ${code}, signal ${signal}); stderr: ${stderrText() || '(empty)'}`));
    };
    const onError = (e: Error): void => {
      finish(new Error(`cannot start the server process: ${e.message}; stderr: ${stderrText() || '(empty)'}`));
    };
    const timer = setTimeout(() => {
      finish(new Error(`server process not ready after ${READY_TIMEOUT_MS} ms; stderr: ${stderrText() || '(empty)'}`));
    }, READY_TIMEOUT_MS);
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

function unrefStream(s: unknown): void {
  if (s instanceof Socket) s.unref();
}

// ---------------------------------------------------------------------------------------------------

export async function startFakeInternet(opts: { subnetIndex?: number } = {}): Promise<FakeInternet> {
  const hex = randomBytes(3).toString('hex');
  const netns = `abfake-${hex}`;
  const hostIf = `abfh${hex.slice(0, 4)}`;
  const nsIf = `abfn${hex.slice(0, 4)}`;

  // What has been made so far, so a failure halfway (or process exit) removes exactly that.
  const state: {
    dir: string | undefined;
    netnsCreated: boolean;
    linkCreated: boolean;
    child: ChildProcess | undefined;
    childExit: Promise<unknown> | undefined;
    slot: number | undefined;
  } = { dir: undefined, netnsCreated: false, linkCreated: false, child: undefined, childExit: undefined, slot: undefined };

  const syncCleanup = (): void => {
    const c = state.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (state.linkCreated) trySync('ip', ['link', 'del', 'dev', hostIf]);
    if (state.netnsCreated) trySync('ip', ['netns', 'del', netns]);
    if (state.dir) rmSync(state.dir, { recursive: true, force: true });
  };

  const asyncCleanup = async (): Promise<void> => {
    const c = state.child;
    if (c && state.childExit) {
      if (c.exitCode === null && c.signalCode === null) {
        c.ref(); // keep the event loop alive until it has really gone
        c.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
        }, 2_000);
        try {
          await state.childExit;
        } finally {
          clearTimeout(timer);
        }
      }
    }
    state.child = undefined;
    // Deleting the host end removes both ends at once; `ip netns del` alone tears the pair down
    // asynchronously (when the kernel destroys the namespace), which could leave it visible briefly.
    if (state.linkCreated) {
      await tryRun('ip', ['link', 'del', 'dev', hostIf]);
      state.linkCreated = false;
    }
    if (state.netnsCreated) {
      await tryRun('ip', ['netns', 'del', netns]);
      state.netnsCreated = false;
    }
    if (state.dir) {
      await rm(state.dir, { recursive: true, force: true });
      state.dir = undefined;
    }
    if (state.slot !== undefined) {
      reservedSlots.delete(state.slot);
      state.slot = undefined;
    }
    exitCleanups.delete(syncCleanup);

    const leftovers: string[] = [];
    if ((await netnsList()).includes(netns)) leftovers.push(`netns ${netns}`);
    if (await linkExists(hostIf)) leftovers.push(`link ${hostIf}`);
    if (leftovers.length > 0) throw new Error(`fake internet: could not remove ${leftovers.join(', ')}`);
  };

  registerExitCleanup(syncCleanup);

  let hostAddress = '';
  let siteAddress = '';
  let certs: CertFiles;
  let step = 'creating the network namespace';
  try {
    if ((await netnsList()).includes(netns)) throw new Error(`netns ${netns} already exists`);
    if ((await linkExists(hostIf)) || (await linkExists(nsIf))) throw new Error(`link ${hostIf} or ${nsIf} already exists`);
    await run('ip', ['netns', 'add', netns]);
    state.netnsCreated = true;

    step = 'creating the veth pair';
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', netns]);
    state.linkCreated = true;

    step = 'choosing a subnet';
    const slot = await claimSlot(opts.subnetIndex, hostIf);
    state.slot = slot;
    hostAddress = addr(slot, 1);
    siteAddress = addr(slot, 2);

    step = 'configuring addresses';
    await run('ip', ['link', 'set', 'dev', hostIf, 'up']);
    await run('ip', ['-n', netns, 'link', 'set', 'dev', 'lo', 'up']);
    await run('ip', ['-n', netns, 'addr', 'add', `${siteAddress}/30`, 'dev', nsIf]);
    await run('ip', ['-n', netns, 'link', 'set', 'dev', nsIf, 'up']);

    step = 'creating the temp dir';
    state.dir = await mkdtemp(join(tmpdir(), 'abfake-'));
    await chmod(state.dir, 0o755); // so caFile can be read (or bind-mounted) by unprivileged sandboxes

    step = 'generating certificates';
    certs = await makeCertificates(state.dir, siteAddress, hex);

    step = 'starting the servers';
    const script = join(state.dir, 'server.cjs');
    await writeFile(script, SERVER_SCRIPT);
    const config = JSON.stringify({
      address: siteAddress,
      httpPort: HTTP_PORT,
      httpsPort: HTTPS_PORT,
      echoPort: ECHO_PORT,
      keyFile: certs.keyFile,
      certFile: certs.certFile,
    });
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, script, config], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    state.child = child;
    state.childExit = once(child, 'exit').catch(() => undefined);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      if (stderr.length < STDERR_CAP) stderr += d.toString('utf8');
    });
    child.stdout?.on('data', () => {
      /* keep draining */
    });
    child.stdin?.on('error', () => {
      /* child gone */
    });
    await waitForReady(child, () => stderr.trim());
    // Don't keep the test process alive on our account; the exit hook cleans up if close() is never called.
    child.unref();
    unrefStream(child.stdin);
    unrefStream(child.stdout);
    unrefStream(child.stderr);
  } catch (e) {
    try {
      await asyncCleanup();
    } catch {
      /* report the original failure */
    }
    throw new Error(`fake internet: setup failed while ${step}: ${errorMessage(e)}`);
  }

  let closing: Promise<void> | undefined;
  return {
    netns,
    hostAddress,
    siteAddress,
    caPem: certs.caPem,
    caFile: certs.caFile,
    names: [...FAKE_NAMES],
    httpPort: HTTP_PORT,
    httpsPort: HTTPS_PORT,
    echoPort: ECHO_PORT,
    close(): Promise<void> {
      closing ??= asyncCleanup();
      return closing;
    },
  };
}
