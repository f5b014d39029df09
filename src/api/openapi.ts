/** The OpenAPI 3.1 document, generated from the route table and the same zod schemas the handlers use. */
import { z } from 'zod';
import { ERROR_CODES } from '../contract/errors.js';
import { VERSION } from '../core/config.js';
import type { Route } from './routes.js';

const ErrorBodySchema = z.object({
  error: z.object({
    code: z.enum(ERROR_CODES).describe('Stable code: branch on this, never on the message'),
    message: z.string(),
    hint: z.string().optional().describe('What to do about it'),
  }),
});

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { unrepresentable: 'any', io: 'input' }) as Record<string, unknown>;
  return rest;
}

function content(body: z.ZodType | 'binary'): Record<string, unknown> {
  return body === 'binary'
    ? { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } }
    : { 'application/json': { schema: jsonSchema(body) } };
}

const DESCRIPTION = [
  'Self-hosted sandboxes for AI agents.',
  '',
  'Auth: `Authorization: Bearer <token>` (a policy tenant\'s token, or AGENTBOX_TOKEN for the host\'s operator). Over TCP a token is required on every request as soon as any is configured; only the owner-only Unix socket treats a request without one as the operator.',
  'Browsers: requests with a Host the daemon does not serve (403), a cross-origin Origin or Sec-Fetch-Site cross-site/same-site (403), or a JSON route\'s body sent as anything but application/json (415) are refused.',
  'Tenancy: another tenant\'s sandbox, exec or MCP session is 404, as an id that does not exist. /metrics shows a tenant only its own series (tenant-labelled families); the operator sees everything. /healthz says only {ok} except to the operator, who also gets `checks`.',
].join('\n');

export function openApiDocument(routes: readonly Route[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const params = [
      ...r.keys.map((k) => {
        const schema = r.doc.params?.[k];
        return { name: k, in: 'path', required: true, ...(schema?.description ? { description: schema.description } : {}), schema: schema ? jsonSchema(schema) : { type: 'string' } };
      }),
      ...Object.entries(r.doc.query ?? {}).map(([name, description]) => ({ name, in: 'query', required: name === 'path' && r.path.endsWith('/files'), description, schema: { type: 'string' } })),
    ];
    const ok: Record<string, unknown> = { description: 'success', ...(r.doc.response ? { content: content(r.doc.response) } : {}) };
    if (r.doc.sse && ok.content) (ok.content as Record<string, unknown>)['text/event-stream'] = { schema: { type: 'string', description: 'server-sent events' } };
    const op = {
      summary: r.doc.summary,
      ...(params.length ? { parameters: params } : {}),
      ...(r.doc.body ? { requestBody: { required: true, content: content(r.doc.body) } } : {}),
      responses: {
        [String(r.doc.status ?? 200)]: ok,
        default: { description: 'error', content: { 'application/json': { schema: jsonSchema(ErrorBodySchema) } } },
      },
      security: [{ bearer: [] }],
    };
    (paths[r.path] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'agentbox', version: VERSION, description: DESCRIPTION },
    servers: [{ url: '/' }],
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    paths,
  };
}
