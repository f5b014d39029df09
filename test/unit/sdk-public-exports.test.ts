import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as sdk from '../../src/sdk/index.js';

test('the package exports exactly the documented names', () => {
  assert.deepEqual(Object.keys(sdk).sort(), [
    'AgentboxClient',
    'AgentboxError',
    'BadRequestError',
    'ConflictError',
    'ERROR_CODES',
    'ForbiddenError',
    'InternalError',
    'NotFoundError',
    'PolicyDeniedError',
    'QuotaExceededError',
    'RuntimeUnavailableError',
    'SandboxRef',
    'TerminalConnection',
    'TimeoutError',
    'UnauthorizedError',
    'verifyWebhook',
  ]);
});

test('every error code has a class that carries it', () => {
  const byCode = [sdk.NotFoundError, sdk.UnauthorizedError, sdk.ForbiddenError, sdk.PolicyDeniedError, sdk.BadRequestError, sdk.ConflictError, sdk.QuotaExceededError, sdk.TimeoutError, sdk.RuntimeUnavailableError, sdk.InternalError].map((C) => new C('x').code);
  assert.deepEqual([...byCode].sort(), [...sdk.ERROR_CODES].sort());
  const e = new sdk.NotFoundError('gone', { hint: 'look elsewhere' });
  assert.ok(e instanceof sdk.AgentboxError);
  assert.equal(e.name, 'NotFoundError');
  assert.deepEqual(e.toJSON(), { code: 'not_found', message: 'gone', hint: 'look elsewhere' });
});
