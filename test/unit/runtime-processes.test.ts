/** The TS side of the processes protocol (src/runtime/processes.ts) over a scripted transport: parsing, error lines, PID 1. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BadRequestError, ForbiddenError, InternalError, NotFoundError } from '../../src/contract/errors.js';
import { parseProcessList, procError, SandboxProcesses, type ProcOpResult } from '../../src/runtime/processes.js';
import type { SandboxHandle } from '../../src/runtime/types.js';

const handle: SandboxHandle = { id: 'sbx_unit', runtime: 'local', data: {} };
const record = (...fields: string[]): string => fields.map((f) => `${f}\0`).join('');

test('ps records: fields, empty user and exec id as null, argv with spaces kept, sorted by pid, a cut record dropped', () => {
  const buf = Buffer.from(
    record('7', '1', '1000', 'sandbox', 'exe_abc', '3', 'sh', '-c', 'echo a b') +
      record('1', '0', '0', 'root', '', '2', '/.agentbox/init', 'init') +
      record('9', '7', '4242', '', '', '1', '[kworker]') +
      record('12', '1', '1000', 'sandbox', 'exe_x', '4', 'only-one'),
  );
  assert.deepEqual(parseProcessList(buf), [
    { pid: 1, ppid: 0, uid: 0, user: 'root', command: '/.agentbox/init init', argv: ['/.agentbox/init', 'init'], execId: null },
    { pid: 7, ppid: 1, uid: 1000, user: 'sandbox', command: 'sh -c echo a b', argv: ['sh', '-c', 'echo a b'], execId: 'exe_abc' },
    { pid: 9, ppid: 7, uid: 4242, user: null, command: '[kworker]', argv: ['[kworker]'], execId: null },
  ]);
  assert.deepEqual(parseProcessList(Buffer.alloc(0)), []);
});

test('signal error lines map to typed errors naming the pid and the sandbox', () => {
  assert.ok(procError('agentbox-proc-error:not_found:process 5: No such process\n', 'sbx_a', 5) instanceof NotFoundError);
  const denied = procError('agentbox-proc-error:forbidden:process 5: Operation not permitted\n', 'sbx_a', 5);
  assert.ok(denied instanceof ForbiddenError && /process 5 of sandbox sbx_a/.test(denied.message));
  assert.ok(procError('agentbox-proc-error:bad_request:cannot send X to 5\n', 'sbx_a', 5) instanceof BadRequestError);
  assert.ok(procError('agentbox-helper: setns pid: Invalid argument\n', 'sbx_a', undefined) instanceof InternalError);
});

test('PID 1 is refused before anything runs in the sandbox; a failure of the transport is the command\'s error', async () => {
  const calls: string[][] = [];
  let answer: ProcOpResult = { stdout: Buffer.alloc(0), stderr: '', exitCode: 0 };
  const procs = new SandboxProcesses(async (_h, args) => {
    calls.push([...args]);
    return answer;
  });
  await assert.rejects(procs.signalProcess(handle, 1, 'KILL'), (err: unknown) => err instanceof ForbiddenError && /agentbox stop sbx_unit/.test(err.hint ?? ''));
  assert.deepEqual(calls, []);
  await procs.signalProcess(handle, 42, 'TERM');
  assert.deepEqual(calls, [['signal', 'TERM', '42']]);
  answer = { stdout: Buffer.alloc(0), stderr: 'agentbox-proc-error:not_found:process 43: No such process\n', exitCode: 1 };
  await assert.rejects(procs.signalProcess(handle, 43, 'TERM'), NotFoundError);
  answer = { stdout: Buffer.from(record('1', '0', '0', 'root', '', '1', 'init')), stderr: '', exitCode: 0 };
  assert.equal((await procs.processes(handle))[0]?.pid, 1);
});
