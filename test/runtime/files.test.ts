/**
 * runtime/files.ts over a scripted transport: what every driver's files API does whatever carries
 * the operation (the drivers themselves are run by the conformance suite).
 */
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { test } from 'node:test';
import { BadRequestError, ConflictError, NotFoundError } from '../../src/contract/errors.js';
import { SandboxFiles, type FileOp, type FileOpProcess } from '../../src/runtime/files.js';
import type { SandboxHandle } from '../../src/runtime/types.js';

const handle: SandboxHandle = { id: 'sbx_files', runtime: 'local', data: {} };

interface Fake extends FileOpProcess {
  out: PassThrough;
  err: PassThrough;
  exit(code: number): void;
  aborted: number;
  calls: { op: FileOp; path: string; stdin: Readable | undefined }[];
}

/** A transport whose process the test drives: write to out/err, then exit(code). */
function fake(): { files: SandboxFiles; proc: Fake } {
  const out = new PassThrough();
  const err = new PassThrough();
  let resolve!: (n: number) => void;
  const exitCode = new Promise<number>((r) => (resolve = r));
  const proc: Fake = {
    out, err, stdout: out, stderr: err, exitCode, aborted: 0, calls: [],
    exit: (code) => {
      out.end();
      err.end();
      resolve(code);
    },
    abort: () => void proc.aborted++,
  };
  const files = new SandboxFiles(async (_h, op, path, stdin) => {
    proc.calls.push({ op, path, stdin });
    return proc;
  });
  return { files, proc };
}

test('paths are checked and normalised before the transport is asked', async () => {
  const { files, proc } = fake();
  await assert.rejects(files.readFile(handle, 'relative'), BadRequestError);
  await assert.rejects(files.listDir(handle, '/workspace/../etc'), BadRequestError);
  await assert.rejects(files.removePath(handle, '//'), BadRequestError);
  assert.equal(proc.calls.length, 0);
  const listing = files.listDir(handle, '/workspace//sub/');
  proc.out.write('f 3 644 0 b\0d 0 755 0 a\0');
  proc.exit(0);
  assert.deepEqual((await listing).map((e) => [e.name, e.type]), [['a', 'dir'], ['b', 'file']]);
  assert.deepEqual(proc.calls.map((c) => [c.op, c.path, c.stdin]), [['list', '/workspace/sub', undefined]]);
});

test('a read that fails before its first byte rejects with the typed error', async () => {
  const { files, proc } = fake();
  const read = files.readFile(handle, '/workspace/missing');
  proc.err.write('agentbox-file-error:ENOENT:read /workspace/missing: No such file or directory\n');
  proc.exit(1);
  await assert.rejects(read, NotFoundError);
});

test('a read streams; a reader that goes away aborts the operation', async () => {
  const { files, proc } = fake();
  const read = files.readFile(handle, '/workspace/f');
  proc.out.write('hello ');
  const stream = await read;
  stream.destroy();
  await new Promise((r) => setImmediate(r));
  assert.equal(proc.aborted, 1);

  const second = fake();
  const r2 = second.files.readFile(handle, '/workspace/f');
  second.proc.out.write('hello ');
  second.proc.out.write('world');
  second.proc.exit(0);
  assert.equal(await text(await r2), 'hello world');
  assert.equal(second.proc.aborted, 0);
});

test('an empty file is an empty stream, and a transport failure passes through', async () => {
  const { files, proc } = fake();
  const read = files.readFile(handle, '/workspace/empty');
  proc.exit(0);
  assert.equal(await text(await read), '');

  const broken = new SandboxFiles(async () => {
    throw new ConflictError('not running');
  });
  await assert.rejects(broken.writeFile(handle, '/workspace/x', Readable.from(['x'])), ConflictError);
});

test('a write counts the bytes it was given; a failing input aborts and is what is thrown', async () => {
  const { files, proc } = fake();
  const write = files.writeFile(handle, '/workspace/w', Readable.from([Buffer.from('abc'), Buffer.from('de')]));
  await new Promise((r) => setImmediate(r));
  const stdin = proc.calls[0]?.stdin;
  assert.ok(stdin);
  assert.equal(await text(stdin), 'abcde');
  proc.exit(0);
  assert.equal(await write, 5);

  const bad = fake();
  const input = new PassThrough();
  const failing = bad.files.writeFile(handle, '/workspace/w', input);
  await new Promise((r) => setImmediate(r));
  input.destroy(new Error('client went away'));
  await new Promise((r) => setImmediate(r));
  assert.equal(bad.proc.aborted, 1);
  bad.proc.exit(1);
  await assert.rejects(failing, /client went away/);
});
