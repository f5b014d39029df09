/** The usage routes (README, "Metrics and Grafana"), registered into the route table by routes.ts. */
import { z } from 'zod';
import { SandboxUsageReportSchema, UsageOverviewSchema } from '../contract/usage.js';
import { parseWith, sendJson } from './http-util.js';
import type { RouteFn } from './volume-routes.js';

const PointsSchema = z.coerce.number().int().min(1).max(150);

export function registerUsageRoutes(route: RouteFn): void {
  route(
    'GET',
    '/v1/sandboxes/{id}/usage',
    {
      summary: 'A running sandbox\'s usage now (CPU of its limit, memory, processes, disk) and its samples of the last minutes; reading keeps it sampled for a minute; a paused sandbox is not woken',
      response: SandboxUsageReportSchema,
    },
    async (ctx) => {
      sendJson(ctx.res, 200, await ctx.manager.usageReport(ctx.params.id as string, ctx.caller));
    },
  );
  route(
    'GET',
    '/v1/usage',
    {
      summary: 'Every running sandbox the caller sees: its latest usage sample and the last CPU and memory samples (for a list\'s sparklines); answered from memory',
      query: { points: 'samples per sandbox (default 30, at most 150)' },
      response: UsageOverviewSchema,
    },
    async (ctx) => {
      const raw = ctx.query.get('points');
      sendJson(ctx.res, 200, ctx.manager.usageOverview(ctx.caller, raw === null ? 30 : parseWith(PointsSchema, raw)));
    },
  );
}
