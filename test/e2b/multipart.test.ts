/** The streaming multipart reader behind envd's uploads: any chunking gives the same parts; bad bodies are refused. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { BadRequestError } from '../../src/contract/errors.js';
import { forEachPart, multipartBoundary } from '../../src/e2b/multipart.js';
import { EnvdTokens } from '../../src/e2b/envd-token.js';

const BOUNDARY = '----agentboxTestBoundary7MA4YWxk';

function body(parts: { filename: string; data: Buffer }[], boundary = BOUNDARY): Buffer {
  const chunks: Buffer[] = [Buffer.from('preamble to ignore\r\n')];
  for (const p of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${p.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`), p.data, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

async function* chunked(buf: Buffer, sizes: () => number): AsyncIterable<Buffer> {
  for (let i = 0; i < buf.length; ) {
    const n = Math.max(1, sizes());
    yield buf.subarray(i, i + n);
    i += n;
  }
}

async function parse(src: AsyncIterable<Buffer>): Promise<{ filename: string | undefined; data: Buffer }[]> {
  const out: { filename: string | undefined; data: Buffer }[] = [];
  await forEachPart(src, BOUNDARY, async (info, data) => {
    const chunks: Buffer[] = [];
    for await (const c of data) chunks.push(c as Buffer);
    out.push({ filename: info.filename, data: Buffer.concat(chunks) });
  });
  return out;
}

describe('multipart uploads', () => {
  // Data that holds the delimiter's prefix and CRLFs, so a reader that splits wrongly would show it.
  const tricky = Buffer.concat([Buffer.from(`\r\n--${BOUNDARY.slice(0, 10)}\r\n`), randomBytes(70_000), Buffer.from('\r\n--')]);
  const parts = [
    { filename: '/workspace/a.txt', data: Buffer.from('hello\n') },
    { filename: 'rel/b.bin', data: tricky },
    { filename: '/tmp/empty', data: Buffer.alloc(0) },
  ];

  for (const [name, sizes] of [
    ['one chunk', () => 1 << 30],
    ['byte by byte', () => 1],
    ['random chunks', () => Math.floor(Math.random() * 97)],
  ] as const) {
    test(`the same parts, ${name}`, async () => {
      const got = await parse(chunked(body(parts), sizes));
      assert.deepEqual(got.map((p) => p.filename), parts.map((p) => p.filename));
      for (const [i, p] of parts.entries()) assert.ok(got[i]?.data.equals(p.data), `part ${i} differs`);
    });
  }

  test('a body cut before its closing delimiter is a bad_request, and the open part sees the failure', async () => {
    const whole = body(parts);
    let partFailed = false;
    await assert.rejects(
      forEachPart(chunked(whole.subarray(0, whole.length - 200), () => 1000), BOUNDARY, async (_info, data) => {
        try {
          for await (const _ of data) void _;
        } catch {
          partFailed = true;
          throw new Error('part failed');
        }
      }),
      BadRequestError,
    );
    assert.equal(partFailed, true);
  });

  test('the boundary comes from the content type', () => {
    assert.equal(multipartBoundary(`multipart/form-data; boundary=${BOUNDARY}`), BOUNDARY);
    assert.equal(multipartBoundary('multipart/form-data; boundary="quoted b"'), 'quoted b');
    assert.equal(multipartBoundary('application/octet-stream'), undefined);
  });
});

describe('envd access tokens', () => {
  const tokens = EnvdTokens.withKey(randomBytes(32));

  test('a token opens its own sandbox with its tenant and scopes, and no other sandbox', () => {
    const t = tokens.issue('sbx_one', 'alice', ['read', 'files']);
    assert.deepEqual(tokens.verify('sbx_one', t), { tenant: 'alice', scopes: ['read', 'files'] });
    assert.deepEqual(tokens.verify('sbx_one', tokens.issue('sbx_one', 'alice', undefined)), { tenant: 'alice', scopes: undefined });
    assert.equal(tokens.verify('sbx_two', t), null);
    assert.equal(tokens.verify('sbx_one', t.replace('.read+files.', '.read+files+exec+manage.')), null, 'scopes cannot be widened');
    assert.equal(tokens.verify('sbx_one', t.replace('abx1.alice.', 'abx1.bob.')), null, 'the tenant cannot be changed');
    assert.equal(EnvdTokens.withKey(randomBytes(32)).verify('sbx_one', t), null, 'another key');
    assert.equal(tokens.verify('sbx_one', 'garbage'), null);
  });
});
