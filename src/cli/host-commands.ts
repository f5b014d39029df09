/** Commands that act on this host directly rather than through a daemon: serve, image, policy. */
import type { Command } from 'commander';
import { resolvePaths } from '../core/config.js';
import { BadRequestError } from '../contract/errors.js';
import type { ImageStore } from '../images/image-store.js';
import { RECIPES } from '../images/recipes.js';
import { age, formatBytes, printJson, progressPrinter, table } from './output.js';

// These commands pull in the daemon, SQLite, zod and YAML: loaded only when used, so that the
// everyday client commands start fast.
const lazy = {
  daemon: () => import('../daemon/compose.js'),
  logger: () => import('../observability/logger.js'),
  images: () => import('../images/image-store.js'),
  policy: () => import('../policy/load.js'),
};

export function registerHostCommands(program: Command, setExit: (code: number) => void): void {
  program
    .command('serve')
    .description('run the daemon in the foreground: HTTP API on loopback and the home\'s Unix socket')
    .option('--host <addr>', 'TCP address to bind (non-loopback needs tokens)', '127.0.0.1')
    .option('--port <n>', 'TCP port', '8080')
    .option('--socket-only', 'only the Unix socket under AGENTBOX_HOME (what the CLI starts)')
    .option('--policy <file>', 'policy file (default: AGENTBOX_POLICY)')
    .option('--allowed-host <name>', 'another Host name the TCP listener answers to, e.g. a reverse proxy\'s (repeatable; default: AGENTBOX_ALLOWED_HOSTS)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--ports-domain <domain>', 'serve sandboxes\' ports at PORT-ID.<domain> (e.g. localhost; default: AGENTBOX_PORTS_DOMAIN)')
    .action(async (flags: { host: string; port: string; socketOnly?: boolean; policy?: string; allowedHost?: string[]; portsDomain?: string }) => {
      const { startDaemon } = await lazy.daemon();
      const logger = (await lazy.logger()).createLogger();
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new BadRequestError(`bad --port ${flags.port}`);
      const daemon = await startDaemon({
        logger,
        ...(flags.policy ? { policyPath: flags.policy } : {}),
        ...(flags.allowedHost ? { allowedHosts: flags.allowedHost } : {}),
        ...(flags.portsDomain ? { portsDomain: flags.portsDomain } : {}),
        ...(flags.socketOnly ? {} : { tcp: { host: flags.host, port } }),
      });
      const { DAEMON_STOP_SIGNALS } = await import('../contract/daemon.js');
      if (daemon.tcpAddress) process.stderr.write(`agentbox: listening on http://${daemon.tcpAddress.host}:${daemon.tcpAddress.port} and ${daemon.paths.socket}\n`);
      await new Promise<void>((resolve) => {
        let stopping = false;
        for (const [signal, sandboxes] of Object.entries(DAEMON_STOP_SIGNALS)) {
          process.once(signal, () => {
            if (stopping) return;
            stopping = true;
            logger.info({ signal, sandboxes }, 'shutting down');
            void daemon.close({ sandboxes }).finally(resolve);
          });
        }
      });
      logger.flush();
      setExit(0);
      setTimeout(() => process.exit(0), 100).unref();
    });

  program
    .command('egress-proxy')
    .description('run a cluster\'s egress proxy in the foreground: the only way out of kubernetes sandboxes (needs AGENTBOX_EGRESS_SECRET and the replicas\' store; AGENTBOX_API_URL, the daemon API, to serve their http://agentbox.internal)')
    .option('--host <addr>', 'TCP address to bind', '0.0.0.0')
    .option('--port <n>', 'TCP port', '3128')
    .option('--policy <file>', 'policy file whose egress section applies (default: AGENTBOX_POLICY)')
    .action(async (flags: { host: string; port: string; policy?: string }) => {
      const { startEgressProxy } = await import('../daemon/egress-proxy-main.js');
      const logger = (await lazy.logger()).createLogger();
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new BadRequestError(`bad --port ${flags.port}`);
      const proxy = await startEgressProxy({ host: flags.host, port, policyPath: flags.policy, logger });
      process.stderr.write(`agentbox: egress proxy on ${proxy.address.address}:${proxy.address.port}\n`);
      await new Promise<void>((resolve) => {
        for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void proxy.close().finally(resolve));
      });
      logger.flush();
      setExit(0);
      setTimeout(() => process.exit(0), 100).unref();
    });

  program
    .command('mcp')
    .description('speak MCP over stdio (tools sandbox_create, sandbox_exec, ...): to the local daemon, or AGENTBOX_URL')
    .action(async () => {
      const { connectClient } = await import('./connect.js');
      const { clientOps } = await import('../mcp/ops.js');
      const { runStdioServer } = await import('../mcp/stdio.js');
      await runStdioServer(clientOps(await connectClient()));
    });

  const image = program.command('image').description('images in the local image store (AGENTBOX_IMAGES)');
  const store = async (): Promise<ImageStore> => new (await lazy.images()).ImageStore(resolvePaths().images);

  image
    .command('ls')
    .description('list images')
    .option('--json', 'JSON output')
    .action(async (flags: { json?: boolean }) => {
      const list = (await store()).list();
      if (flags.json) return printJson(list);
      table(['NAME', 'SOURCE', 'SIZE', 'CREATED', 'PACKAGES'], list.map((i) => [i.name, i.ref ? (i.ref.startsWith('recipe:') ? i.ref : `pull ${i.ref}`) : i.source, formatBytes(i.sizeBytes), age(i.createdAt), i.packages.join(',')]));
    });

  image
    .command('build')
    .description('build an image: busybox (instant), a Debian minbase with --packages (mmdebstrap, ~20 s), or a named recipe')
    .argument('<name>')
    .addHelpText('after', `\nRecipes (agentbox image build NAME, no flags; src/images/recipes.ts):\n${Object.values(RECIPES).map((r) => `  ${r.description}`).join('\n')}\n`)
    .option('--packages <list>', 'comma-separated Debian packages, e.g. python3,git')
    .option('--base <base>', 'busybox | debian')
    .action(async (name: string, flags: { packages?: string; base?: string }) => {
      const packages = flags.packages ? flags.packages.split(',').map((p) => p.trim()).filter(Boolean) : undefined;
      if (flags.base && flags.base !== 'busybox' && flags.base !== 'debian') throw new BadRequestError(`unknown --base ${flags.base}`, { hint: 'use busybox or debian' });
      const info = await (await store()).build(name, {
        ...(packages ? { packages } : {}),
        ...(flags.base ? { base: flags.base as 'busybox' | 'debian' } : {}),
        onProgress: progressPrinter(),
      });
      if (process.stderr.isTTY) process.stderr.write('\n');
      process.stdout.write(`${info.name}\n`);
    });

  image
    .command('import')
    .description('import a root filesystem tarball as an image')
    .argument('<name>')
    .argument('<tar>')
    .action(async (name: string, tar: string) => {
      const info = await (await store()).importTar(name, tar, { onProgress: progressPrinter() });
      process.stdout.write(`${info.name}\n`);
    });

  image
    .command('pull')
    .description('pull an image from a registry through dockerd and keep it as an agentbox image (both runtimes)')
    .argument('<ref>', 'e.g. python:3.12-slim or registry.example.com/team/tool:1.2')
    .option('--name <name>', 'agentbox image name (default: from the reference, python:3.12-slim -> python-3.12-slim)')
    .action(async (ref: string, flags: { name?: string }) => {
      const { pullImage } = await import('../images/pull.js');
      const info = await pullImage(await store(), ref, { ...(flags.name ? { name: flags.name } : {}), onProgress: progressPrinter() });
      if (process.stderr.isTTY) process.stderr.write('\n');
      process.stdout.write(`${info.name}\n`);
    });

  image
    .command('rm')
    .description('remove an image')
    .argument('<name...>')
    .action(async (names: string[]) => {
      const images = await store();
      for (const n of names) {
        images.remove(n);
        process.stdout.write(`${n}\n`);
      }
    });

  program
    .command('policy')
    .description('policy file tools')
    .command('check')
    .description('validate a policy file; prints file:line: problem and exits 1 when invalid')
    .argument('[file]', 'policy file (default: AGENTBOX_POLICY)')
    .action(async (file: string | undefined) => {
      const { formatPolicyProblem, loadPolicyFile } = await lazy.policy();
      const path = file ?? process.env.AGENTBOX_POLICY;
      if (!path) throw new BadRequestError('no policy file given', { hint: 'agentbox policy check policy.yaml' });
      const result = loadPolicyFile(path);
      if (result.kind === 'ok') {
        const p = result.policy;
        const n = (count: number, noun: string): string => `${count} ${noun}${count === 1 ? '' : 's'}`;
        process.stdout.write(`ok: ${path}: ${n(Object.keys(p.profiles ?? {}).length, 'profile')}, ${n((p.tenants ?? []).length, 'tenant')}, ${n((p.pools ?? []).length, 'pool')}\n`);
        return;
      }
      process.stderr.write(`${formatPolicyProblem(result)}\n`);
      setExit(1);
    });
}
