/**
 * MCP tools for named volumes: list them and make one. Mounting is sandbox_create's `volumes`;
 * removing (which deletes data) is left to the CLI and the API, where a person decides.
 */
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { CreateVolumeRequestSchema, DEFAULT_VOLUME_MB, type CreateVolumeRequest, type Volume } from '../contract/volumes.js';

export const VOLUME_TOOL_NAMES = ['volume_list', 'volume_create'] as const;

/** Errors are the typed classes of contract/errors. */
export interface VolumeOps {
  list(): Promise<Volume[]>;
  create(req: CreateVolumeRequest): Promise<Volume>;
}

type Run = <A>(fn: (args: A, extra: { signal: AbortSignal }) => Promise<CallToolResult>) => (args: A, extra: { signal: AbortSignal }) => Promise<CallToolResult>;

function ok(summary: string, data: unknown): CallToolResult {
  return { content: [{ type: 'text', text: summary }, { type: 'text', text: JSON.stringify(data) }] };
}

function describe(v: Volume): string {
  return `${v.name}: ${v.sizeMb} MiB${v.usedBy.length ? `, mounted by ${v.usedBy.join(', ')}` : ''}`;
}

/** `run` wraps a handler as the sandbox tools' (busy count, errors as isError results). */
export function registerVolumeTools(server: McpServer, ops: VolumeOps, run: Run): void {
  server.registerTool(
    'volume_list',
    {
      title: 'List volumes',
      description: 'List your named volumes as JSON (name, sizeMb, createdAt, usedBy: the sandboxes mounting it). A volume is a directory tree that outlives sandboxes: mount it with sandbox_create\'s volumes, e.g. [{"name": "data", "target": "/data"}].',
      inputSchema: z.object({}).strict(),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    run(async () => {
      const list = await ops.list();
      return ok(list.length === 0 ? 'no volumes' : [`${list.length} volume${list.length === 1 ? '' : 's'}:`, ...list.map(describe)].join('\n'), { volumes: list });
    }),
  );

  server.registerTool(
    'volume_create',
    {
      title: 'Create a volume',
      description: [
        `Create a named volume: an empty filesystem of sizeMb (default ${DEFAULT_VOLUME_MB}; writes past it fail with ENOSPC) that outlives sandboxes.`,
        'Mount it with sandbox_create (volumes: [{"name": NAME, "target": "/data"}], readOnly optional); several sandboxes may mount it at once and see each other\'s files at once.',
        'Fails with conflict when the name exists (then just mount it).',
      ].join(' '),
      inputSchema: CreateVolumeRequestSchema,
      annotations: { destructiveHint: false, idempotentHint: false, openWorldHint: false },
    },
    run(async (args: CreateVolumeRequest) => {
      const v = await ops.create(args);
      return ok(`created volume ${describe(v)}`, v);
    }),
  );
}
