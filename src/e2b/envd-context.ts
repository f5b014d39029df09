/**
 * What every envd request carries once the envd router accepted it: the sandbox it is routed to and
 * the caller its access token stands for (the sandbox's tenant, with the scopes of the key that
 * obtained the token). Handed to the Connect services as a context value.
 */
import { createContextKey, type HandlerContext } from '@connectrpc/connect';
import { ForbiddenError, InternalError } from '../contract/errors.js';
import type { Caller, Scope } from '../core/manager.js';
import { checkSandboxUser, userFromBasicAuth } from './sandbox-user.js';

export interface EnvdRequest {
  sandboxId: string;
  caller: Caller;
}

export const ENVD_REQUEST = createContextKey<EnvdRequest | undefined>(undefined, { description: 'the sandbox and caller of an envd request' });

/** The request's sandbox and caller; the user it names (Basic auth) must be the sandbox user. */
export function envdRequest(ctx: HandlerContext): EnvdRequest {
  const r = ctx.values.get(ENVD_REQUEST);
  if (!r) throw new InternalError('envd request without its sandbox (routing bug)');
  checkSandboxUser(userFromBasicAuth(ctx.requestHeader.get('authorization')));
  return r;
}

/** For what the manager does not check itself (the registry's processes): the token must have `scope`. */
export function requireScope(caller: Caller, scope: Scope): void {
  if (caller.scopes && !caller.scopes.includes(scope)) {
    throw new ForbiddenError(`this sandbox's access token may not ${scope === 'exec' ? 'run or signal commands' : scope}`, {
      hint: `it was obtained with a key that has the scopes ${caller.scopes.join(', ') || 'none'}`,
    });
  }
}

/** The client's keepalive interval (`Keepalive-Ping-Interval`, seconds), bounded to 5..60 s; default 50 s. */
export function keepaliveMs(ctx: HandlerContext): number {
  const asked = Number(ctx.requestHeader.get('keepalive-ping-interval'));
  return Number.isFinite(asked) && asked > 0 ? Math.min(60, Math.max(5, asked)) * 1000 : 50_000;
}

/**
 * The items of `source`, with `undefined` in between whenever nothing came for `intervalMs` (a
 * keepalive), until the source ends or `signal` aborts (then it just stops).
 */
export async function* withKeepalive<T>(source: AsyncIterable<T>, intervalMs: number, signal: AbortSignal): AsyncGenerator<T | undefined> {
  const it = source[Symbol.asyncIterator]();
  let pending: Promise<IteratorResult<T>> | undefined;
  const aborted = new Promise<'aborted'>((resolve) => {
    if (signal.aborted) resolve('aborted');
    else signal.addEventListener('abort', () => resolve('aborted'), { once: true });
  });
  try {
    for (;;) {
      pending ??= it.next();
      let timer: NodeJS.Timeout | undefined;
      const tick = new Promise<'tick'>((resolve) => (timer = setTimeout(() => resolve('tick'), intervalMs)));
      const r = await Promise.race([pending, tick, aborted]);
      clearTimeout(timer);
      if (r === 'aborted') return;
      if (r === 'tick') {
        yield undefined;
        continue;
      }
      pending = undefined;
      if (r.done) return;
      yield r.value;
    }
  } finally {
    void it.return?.();
  }
}
