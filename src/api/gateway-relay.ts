/**
 * The daemon's side of `http://agentbox.internal` on a cluster
 * (ARCHITECTURE.md, "Egress in a cluster"): the cluster's egress proxy relays a sandbox's request
 * here with the sandbox's id and a proof only a holder of AGENTBOX_EGRESS_SECRET can make
 * (egress/gateway-proof.ts). Once the proof
 * holds, the request is served by the very gateway a daemon's own proxies use (sandbox-gateway.ts),
 * so only a live token of that sandbox gets anywhere and only /v1 routes exist.
 *
 * A request carrying any gateway header is a relayed one, on every listener: verified or refused
 * (401/403) before any route runs, never served as an ordinary API request. So a tenant's or the
 * operator's token cannot be passed off through it, nor a proof for one sandbox used for another.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ForbiddenError, UnauthorizedError } from '../contract/errors.js';
import { GATEWAY_PROOF_HEADER, GATEWAY_SANDBOX_HEADER, isGatewayHeader, verifyGatewayProof } from '../egress/gateway-proof.js';
import { MIN_EGRESS_SECRET_LENGTH } from '../runtime/egress-plumbing.js';
import type { SandboxGateway } from './sandbox-gateway.js';

/** Serve a relayed request, or throw the typed refusal (the server sends it in the one error shape). */
export type GatewayRelay = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/** Whether a request says it was relayed by a cluster egress proxy (any of the proxy's headers). */
export function isRelayed(req: IncomingMessage): boolean {
  return Object.keys(req.headers).some(isGatewayHeader);
}

/**
 * The relay for a daemon with the egress secret `secret` (AGENTBOX_EGRESS_SECRET). Without one
 * (or one too short to be the proxy's) every relayed request is refused: nothing could be verified.
 */
export function createGatewayRelay(opts: { secret: string | undefined; gateway: SandboxGateway }): GatewayRelay {
  const secret = opts.secret ?? '';
  return async (req, res) => {
    if (secret.length < MIN_EGRESS_SECRET_LENGTH) {
      throw new ForbiddenError('this daemon does not take requests relayed by a cluster egress proxy: it has no AGENTBOX_EGRESS_SECRET', {
        hint: `give the daemon the same AGENTBOX_EGRESS_SECRET as agentbox egress-proxy (at least ${MIN_EGRESS_SECRET_LENGTH} characters)`,
      });
    }
    const ids = req.headersDistinct[GATEWAY_SANDBOX_HEADER] ?? [];
    const proofs = req.headersDistinct[GATEWAY_PROOF_HEADER] ?? [];
    const id = ids[0] ?? '';
    // One of each, and a proof of that very id: two of either could disagree about who is asking.
    if (ids.length !== 1 || proofs.length !== 1 || !verifyGatewayProof(secret, id, proofs[0] ?? '')) {
      throw new UnauthorizedError('not a request relayed by this cluster\'s egress proxy: its sandbox proof is missing or wrong', {
        hint: `only agentbox egress-proxy sets ${GATEWAY_SANDBOX_HEADER} and ${GATEWAY_PROOF_HEADER} (with the daemon's AGENTBOX_EGRESS_SECRET); other clients send neither`,
      });
    }
    await opts.gateway(id, req, res);
  };
}
