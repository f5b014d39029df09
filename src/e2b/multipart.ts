/**
 * A streaming multipart/form-data reader: each part's body is handed on as a stream while it
 * arrives, with backpressure, so a large upload never sits in memory. Only what uploads need:
 * part headers (Content-Disposition name and filename), bodies, the closing delimiter.
 */
import { PassThrough, type Readable } from 'node:stream';
import { once } from 'node:events';
import { BadRequestError } from '../contract/errors.js';

export interface PartInfo {
  name: string | undefined;
  filename: string | undefined;
}

const MAX_HEADER_BYTES = 16 * 1024;
const MAX_PARTS = 1000;
const CRLF2 = Buffer.from('\r\n\r\n');

/** The boundary of a multipart/form-data content type, or undefined when it is not one. */
export function multipartBoundary(contentType: string | undefined): string | undefined {
  if (!contentType || !/^multipart\/form-data\s*;/i.test(contentType)) return undefined;
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

/**
 * Read `body` part by part; `onPart` gets each part's info and body stream and must consume it.
 * Parts are handled one at a time, in order. A body that ends before its closing delimiter is a
 * bad_request (whatever `onPart` wrote for the unfinished part then fails with it).
 */
export async function forEachPart(body: AsyncIterable<Buffer>, boundary: string, onPart: (info: PartInfo, data: Readable) => Promise<void>): Promise<number> {
  // A CRLF in front makes the first delimiter look like every later one.
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  let buf: Buffer = Buffer.from('\r\n');
  let state = 'preamble' as 'preamble' | 'after-delimiter' | 'headers' | 'body' | 'done';
  let part: { stream: PassThrough; done: Promise<void> } | undefined;
  let parts = 0;

  const write = async (chunk: Buffer): Promise<void> => {
    if (!part || chunk.length === 0) return;
    if (!part.stream.write(chunk)) await Promise.race([once(part.stream, 'drain'), part.done]);
  };

  const step = async (): Promise<boolean> => {
    switch (state) {
      case 'preamble': {
        const i = buf.indexOf(delimiter);
        if (i === -1) {
          buf = buf.subarray(Math.max(0, buf.length - delimiter.length));
          return false;
        }
        buf = buf.subarray(i + delimiter.length);
        state = 'after-delimiter';
        return true;
      }
      case 'after-delimiter': {
        if (buf.length < 2) return false;
        if (buf[0] === 0x2d && buf[1] === 0x2d) {
          state = 'done';
          return false;
        }
        const eol = buf.indexOf('\r\n');
        if (eol === -1) {
          if (buf.length > 256) throw new BadRequestError('malformed multipart body: no line end after a delimiter');
          return false;
        }
        buf = buf.subarray(eol + 2);
        state = 'headers';
        return true;
      }
      case 'headers': {
        // Headers may be empty: then the blank line follows at once.
        const end = buf.subarray(0, 2).equals(Buffer.from('\r\n')) ? -2 : buf.indexOf(CRLF2);
        if (end === -1) {
          if (buf.length > MAX_HEADER_BYTES) throw new BadRequestError('multipart part headers are too large');
          return false;
        }
        const info = partInfo(end === -2 ? '' : buf.subarray(0, end).toString('utf8'));
        buf = buf.subarray(end === -2 ? 2 : end + 4);
        if (++parts > MAX_PARTS) throw new BadRequestError(`more than ${MAX_PARTS} parts in one upload`);
        const stream = new PassThrough();
        part = { stream, done: onPart(info, stream) };
        // A consumer that fails early must not leave us waiting for 'drain'.
        part.done.catch(() => stream.destroy());
        state = 'body';
        return true;
      }
      case 'body': {
        const i = buf.indexOf(delimiter);
        if (i === -1) {
          const keep = delimiter.length - 1;
          if (buf.length > keep) {
            await write(buf.subarray(0, buf.length - keep));
            buf = buf.subarray(buf.length - keep);
          }
          return false;
        }
        await write(buf.subarray(0, i));
        buf = buf.subarray(i + delimiter.length);
        const finished = part as { stream: PassThrough; done: Promise<void> };
        finished.stream.end();
        part = undefined;
        await finished.done;
        state = 'after-delimiter';
        return true;
      }
      case 'done':
        return false;
    }
  };

  try {
    for await (const chunk of body) {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (await step());
      if (state === 'done') break;
    }
    if (state !== 'done') throw new BadRequestError('the multipart body ended before its closing delimiter', { hint: 'send a complete multipart/form-data body' });
    return parts;
  } catch (err) {
    if (part) {
      part.stream.destroy(err instanceof Error ? err : new Error(String(err)));
      await part.done.catch(() => undefined);
    }
    throw err;
  }
}

function partInfo(headerText: string): PartInfo {
  let name: string | undefined;
  let filename: string | undefined;
  for (const line of headerText.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon === -1 || line.slice(0, colon).trim().toLowerCase() !== 'content-disposition') continue;
    const value = line.slice(colon + 1);
    name = /;\s*name="((?:[^"\\]|\\.)*)"/i.exec(value)?.[1] ?? name;
    const f = /;\s*filename="((?:[^"\\]|\\.)*)"/i.exec(value)?.[1];
    if (f !== undefined) filename = f.replace(/\\(.)/g, '$1');
  }
  return { name, filename };
}
