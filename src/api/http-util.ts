/** Request/response helpers for the HTTP surface: bounded JSON bodies and the one error shape. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AgentboxError, BadRequestError, HTTP_STATUS } from '../contract/errors.js';

export const MAX_JSON_BODY = 1024 * 1024;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The wire form of an error: a typed error as itself, anything else as a bare `internal`. */
export function wireError(err: unknown): { code: string; message: string; hint?: string } {
  return err instanceof AgentboxError ? err.toJSON() : { code: 'internal', message: 'internal error', hint: 'see the daemon log' };
}

/** Typed errors go out as `{error:{code,message,hint}}`; anything else is a bare `internal`, logged here. */
export function sendError(res: ServerResponse, err: unknown, logger: Logger, statusOverride?: number): void {
  const known = err instanceof AgentboxError ? err : undefined;
  if (!known) logger.error({ err }, 'unhandled error');
  const body = wireError(err);
  const status = statusOverride ?? (known ? HTTP_STATUS[known.code] : 500);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (known?.retryAfterSec !== undefined) res.setHeader('retry-after', String(known.retryAfterSec));
  sendJson(res, status, { error: body });
}

export class PayloadTooLargeError extends BadRequestError {}

/** Read and parse a JSON body of at most `limit` bytes, then validate it with `schema`. */
export async function readJson<S extends z.ZodType>(req: IncomingMessage, schema: S, limit = MAX_JSON_BODY): Promise<z.infer<S>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new PayloadTooLargeError(`body of ${declared} bytes is over the ${limit} byte limit`, { hint: 'send files with PUT /files instead of inside JSON' });
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new PayloadTooLargeError(`body is over the ${limit} byte limit`, { hint: 'send files with PUT /files instead of inside JSON' });
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let value: unknown = {};
  if (text.trim().length > 0) {
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new BadRequestError(`malformed JSON: ${(err as Error).message}`, { hint: 'send a JSON object with content-type application/json' });
    }
  }
  return parseWith(schema, value);
}

/** Validate with a zod schema; the first problem becomes a bad_request naming the field. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'body';
  const extra = issue?.code === 'unrecognized_keys' ? `: ${issue.keys.join(', ')}` : '';
  throw new BadRequestError(`${where}: ${issue?.message ?? 'invalid'}${extra}`, { hint: 'see /v1/openapi.json for the request shape' });
}
