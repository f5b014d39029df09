/**
 * How a webhook delivery is signed, and how a receiver checks it (README, "Lifecycle webhooks").
 * `agentbox-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + raw body)>`. The time is
 * inside the signed bytes, so a receiver that refuses old timestamps refuses replays; the event id
 * header (the same on every retry) lets it drop duplicates.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** The `agentbox-signature` value for BODY sent at UNIXSEC. */
export function signWebhook(secret: string, body: string | Buffer, unixSec: number): string {
  return `t=${unixSec},v1=${webhookHmac(secret, body, unixSec)}`;
}

function webhookHmac(secret: string, body: string | Buffer, unixSec: number): string {
  return createHmac('sha256', secret).update(`${unixSec}.`).update(body).digest('hex');
}

export interface VerifyWebhookOpts {
  secret: string;
  /** The raw request body, exactly as received (not re-serialized JSON). */
  body: string | Buffer;
  /** The `agentbox-signature` header. */
  header: string | undefined;
  /** How old (or how far ahead) a signature may be, seconds. @default 300 */
  toleranceSec?: number;
  /** @default now */
  nowSec?: number;
}

export type VerifyWebhookResult = { ok: true; timestamp: number } | { ok: false; reason: 'missing' | 'malformed' | 'stale' | 'mismatch' };

/** Whether a delivery is genuine and fresh. Compare in constant time; several `v1=` (a secret being rotated) are accepted. */
export function verifyWebhook(opts: VerifyWebhookOpts): VerifyWebhookResult {
  if (opts.header === undefined || opts.header === '') return { ok: false, reason: 'missing' };
  let t: number | undefined;
  const sigs: string[] = [];
  for (const part of opts.header.split(',')) {
    const eq = part.indexOf('=');
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 't' && /^\d{1,12}$/.test(v)) t = Number(v);
    else if (k === 'v1' && /^[0-9a-f]{64}$/.test(v)) sigs.push(v);
  }
  if (t === undefined || sigs.length === 0) return { ok: false, reason: 'malformed' };
  const now = opts.nowSec ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - t) > (opts.toleranceSec ?? 300)) return { ok: false, reason: 'stale' };
  const want = Buffer.from(webhookHmac(opts.secret, opts.body, t), 'hex');
  return sigs.some((s) => timingSafeEqual(Buffer.from(s, 'hex'), want)) ? { ok: true, timestamp: t } : { ok: false, reason: 'mismatch' };
}

/** E2B's `e2b-signature` (format e2b): unpadded base64 of SHA-256 over the secret followed by the raw body. */
export function signE2bWebhook(secret: string, body: string | Buffer): string {
  return createHash('sha256').update(secret).update(body).digest('base64').replace(/=+$/, '');
}
