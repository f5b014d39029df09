/**
 * envd's `/files` routes: GET downloads one file; POST uploads one or more, as multipart/form-data
 * (each part's filename is its path; the SDK's default) or as the raw body (`?path=`, any other
 * content type; gzip content-encoding is undone). Answers with the written files as EntryInfo JSON.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { BadRequestError } from '../contract/errors.js';
import type { SandboxManager } from '../core/manager.js';
import type { EnvdRequest } from './envd-context.js';
import { forEachPart, multipartBoundary } from './multipart.js';
import { sandboxPath } from './sandbox-paths.js';
import { checkSandboxUser } from './sandbox-user.js';

interface WrittenFile {
  name: string;
  type: 'file';
  path: string;
}

export async function downloadFile(manager: SandboxManager, r: EnvdRequest, query: URLSearchParams, res: ServerResponse): Promise<void> {
  checkSandboxUser(query.get('username'));
  const path = sandboxPath(query.get('path') ?? '');
  const data = await manager.readFile(r.sandboxId, path, r.caller);
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-disposition': `attachment; filename="${encodeURIComponent(posix.basename(path))}"` });
  await pipeline(data, res);
}

export async function uploadFiles(manager: SandboxManager, r: EnvdRequest, query: URLSearchParams, req: IncomingMessage, res: ServerResponse): Promise<void> {
  checkSandboxUser(query.get('username'));
  const queryPath = query.get('path');
  const written: WrittenFile[] = [];
  const write = async (rawPath: string, data: Readable): Promise<void> => {
    const path = sandboxPath(rawPath);
    await manager.writeFile(r.sandboxId, path, data, r.caller);
    written.push({ name: posix.basename(path), type: 'file', path });
  };
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding !== 'identity' && encoding !== 'gzip') throw new BadRequestError(`content-encoding ${encoding} is not supported`, { hint: 'send the body as is, or gzip' });
  const body: Readable = encoding === 'gzip' ? req.pipe(createGunzip()) : req;
  const boundary = multipartBoundary(req.headers['content-type']);
  if (boundary !== undefined) {
    await forEachPart(body, boundary, async (info, data) => {
      const path = info.filename || queryPath;
      if (!path) throw new BadRequestError('a multipart part has no filename and the request no ?path=', { hint: 'name each part\'s file with its path in the sandbox' });
      await write(path, data);
    });
    if (written.length === 0) throw new BadRequestError('the multipart body holds no file', { hint: 'send at least one part with a filename' });
  } else {
    if (!queryPath) throw new BadRequestError('?path= is required for an upload that is not multipart', { hint: 'pass the file\'s path in the sandbox as ?path=' });
    await write(queryPath, body);
  }
  const text = JSON.stringify(written);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
