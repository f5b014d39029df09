/** The /v1/volumes routes (ARCHITECTURE.md, "Volumes"), registered into the route table by routes.ts. */
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { BadRequestError } from '../contract/errors.js';
import { DirEntrySchema } from '../contract/model.js';
import { CreateVolumeRequestSchema, VolumeSchema } from '../contract/volumes.js';
import { readJson, sendJson } from './http-util.js';
import type { RouteCtx, RouteDoc } from './routes.js';

export type RouteFn = (method: string, path: string, doc: RouteDoc, handler: (ctx: RouteCtx) => Promise<void>) => void;

function name(ctx: RouteCtx): string {
  return ctx.params.name as string;
}

function requirePath(ctx: RouteCtx): string {
  const path = ctx.query.get('path');
  if (!path) throw new BadRequestError('missing ?path=', { hint: 'give an absolute path inside the volume, e.g. ?path=/results/out.txt' });
  return path;
}

const PATH_DOC = { path: 'absolute path inside the volume (/ is its root)' };

export function registerVolumeRoutes(route: RouteFn): void {
  route('POST', '/v1/volumes', { summary: 'Create a named volume (a filesystem of sizeMb, the tenant\'s, outliving sandboxes)', body: CreateVolumeRequestSchema, response: VolumeSchema, status: 201 }, async (ctx) => {
    const body = await readJson(ctx.req, CreateVolumeRequestSchema);
    sendJson(ctx.res, 201, await ctx.manager.volumes.create(body, ctx.caller));
  });

  route('GET', '/v1/volumes', { summary: 'List the caller\'s tenant\'s volumes', response: z.object({ volumes: z.array(VolumeSchema) }) }, async (ctx) => {
    sendJson(ctx.res, 200, { volumes: ctx.manager.volumes.list(ctx.caller) });
  });

  route('GET', '/v1/volumes/{name}', { summary: 'Get a volume, with the sandboxes that mount it', response: VolumeSchema }, async (ctx) => {
    sendJson(ctx.res, 200, ctx.manager.volumes.get(name(ctx), ctx.caller));
  });

  route('DELETE', '/v1/volumes/{name}', { summary: 'Remove a volume and its files; conflict while a sandbox mounts it', response: VolumeSchema }, async (ctx) => {
    sendJson(ctx.res, 200, await ctx.manager.volumes.remove(name(ctx), ctx.caller));
  });

  route('PUT', '/v1/volumes/{name}/files', { summary: 'Write a file in a volume (raw bytes, streamed), creating parent directories; no sandbox needed', query: PATH_DOC, body: 'binary', response: z.object({ path: z.string(), bytes: z.number() }) }, async (ctx) => {
    const bytes = await ctx.manager.volumes.writeFile(name(ctx), requirePath(ctx), ctx.req, ctx.caller);
    sendJson(ctx.res, 200, { path: ctx.query.get('path'), bytes });
  });

  route('GET', '/v1/volumes/{name}/files', { summary: 'Read a file of a volume (raw bytes, streamed); no sandbox needed', query: PATH_DOC, response: 'binary' }, async (ctx) => {
    const stream = await ctx.manager.volumes.readFile(name(ctx), requirePath(ctx), ctx.caller);
    ctx.res.writeHead(200, { 'content-type': 'application/octet-stream' });
    await pipeline(stream, ctx.res);
  });

  route('DELETE', '/v1/volumes/{name}/files', { summary: 'Remove a file or directory tree of a volume', query: PATH_DOC, response: z.object({ path: z.string(), removed: z.boolean() }) }, async (ctx) => {
    await ctx.manager.volumes.removePath(name(ctx), requirePath(ctx), ctx.caller);
    sendJson(ctx.res, 200, { path: ctx.query.get('path'), removed: true });
  });

  route('GET', '/v1/volumes/{name}/files/list', { summary: 'List a directory of a volume', query: { path: 'absolute path inside the volume (default /)' }, response: z.object({ path: z.string(), entries: z.array(DirEntrySchema) }) }, async (ctx) => {
    const path = ctx.query.get('path') ?? '/';
    sendJson(ctx.res, 200, { path, entries: await ctx.manager.volumes.listDir(name(ctx), path, ctx.caller) });
  });
}
