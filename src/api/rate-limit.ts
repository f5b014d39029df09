/** Per-tenant token buckets: a burst up to the per-minute allowance, refilled continuously. */
import { QuotaExceededError } from '../contract/errors.js';

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly perMinute: (tenant: string) => number | undefined) {}

  /** Take one request from the tenant's bucket, or throw quota_exceeded with a Retry-After. */
  take(tenant: string, now = Date.now()): void {
    const limit = this.perMinute(tenant);
    if (limit === undefined) return;
    const b = this.buckets.get(tenant) ?? { tokens: limit, at: now };
    b.tokens = Math.min(limit, b.tokens + ((now - b.at) / 60_000) * limit);
    b.at = now;
    this.buckets.set(tenant, b);
    if (b.tokens < 1) {
      const waitSec = Math.max(1, Math.ceil(((1 - b.tokens) * 60) / limit));
      throw new QuotaExceededError(`tenant ${tenant} is over its ${limit} requests per minute`, { hint: `slow down; retry in ${waitSec} s`, retryAfterSec: waitSec });
    }
    b.tokens -= 1;
  }
}
