/**
 * How the cluster's egress proxy tells a daemon replica which sandbox a request for
 * `http://agentbox.internal` came from (ARCHITECTURE.md, "Egress in a cluster"): two headers, the
 * sandbox id and a proof only a holder of AGENTBOX_EGRESS_SECRET can make. The proxy sets them
 * (egress/api-relay.ts) after it checked the sandbox's proxy credential; the daemon checks them
 * (api/gateway-relay.ts) before it serves the request as that sandbox's gateway.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { MIN_EGRESS_SECRET_LENGTH } from '../runtime/egress-plumbing.js';

export const GATEWAY_SANDBOX_HEADER = 'x-agentbox-gateway-sandbox';
export const GATEWAY_PROOF_HEADER = 'x-agentbox-gateway-proof';
/** Every header with this prefix is the proxy's to set: a sandbox's own are dropped, a daemon refuses any it cannot verify. */
export const GATEWAY_HEADER_PREFIX = 'x-agentbox-gateway-';

const SANDBOX_ID = /^sbx_[a-z0-9]{1,40}$/;

/**
 * HMAC-SHA256(secret, "agentbox-gateway:" + id). Not the sandbox's egress credential
 * (egressCredential(), "agentbox-egress:" + id), although both are keyed by the same secret: that
 * credential is handed to the sandbox in its HTTP_PROXY URL, so code inside (or anything it leaks
 * it to) could then claim "this came through the proxy from sandbox X" to a daemon directly. The
 * different label keeps the proof something only the proxy and the daemons can compute. It is the
 * same for every request of a sandbox (no nonce): it adds no right beyond the sandbox token the
 * request must carry anyway, it only vouches that the proxy authenticated the sandbox.
 */
export function gatewayProof(secret: string, sandboxId: string): string {
  return createHmac('sha256', secret).update(`agentbox-gateway:${sandboxId}`).digest('base64url');
}

/** Whether `proof` is the gateway proof of `sandboxId` under `secret` (constant time; a short secret proves nothing). */
export function verifyGatewayProof(secret: string, sandboxId: string, proof: string): boolean {
  if (secret.length < MIN_EGRESS_SECRET_LENGTH || !SANDBOX_ID.test(sandboxId)) return false;
  const want = Buffer.from(gatewayProof(secret, sandboxId));
  const got = Buffer.from(proof);
  return got.length === want.length && timingSafeEqual(got, want);
}

/** Whether a header name is one of the proxy's gateway headers (any spelling: Node lower-cases them). */
export function isGatewayHeader(name: string): boolean {
  return name.toLowerCase().startsWith(GATEWAY_HEADER_PREFIX);
}
