/**
 * How a sandbox with network reaches its egress proxy, the same on every runtime: the host
 * directory holding the proxy's Unix socket is bound read-only at EGRESS_MOUNT, and PID 1 inside
 * relays 127.0.0.1:EGRESS_PORT to EGRESS_MOUNT/EGRESS_SOCKET. The sandbox has no interface but
 * loopback, so no address, DNS server or IPv6 route exists around the proxy.
 */
import { createHmac } from 'node:crypto';

export const EGRESS_MOUNT = '/run/agentbox';
export const EGRESS_SOCKET = 'proxy.sock';
export const EGRESS_PORT = 3128;

/** The arguments that make PID 1 (either init) run the relay. */
export function relayArgs(): string[] {
  return ['--egress-relay', String(EGRESS_PORT), `${EGRESS_MOUNT}/${EGRESS_SOCKET}`];
}

/**
 * A cluster's sandboxes reach the internet through one shared proxy (egress/cluster-proxy.ts) that
 * knows each by a credential in its proxy URL: HMAC-SHA256 of the secret the daemon replicas and the
 * proxy share (AGENTBOX_EGRESS_SECRET) over the sandbox id.
 */
/** The least length of AGENTBOX_EGRESS_SECRET. */
export const MIN_EGRESS_SECRET_LENGTH = 32;

export function egressCredential(secret: string, sandboxId: string): string {
  return createHmac('sha256', secret).update(`agentbox-egress:${sandboxId}`).digest('base64url');
}

/** The HTTP(S)_PROXY of sandbox ID on the cluster proxy at PROXY (http://host:port): its id and credential in the URL. */
export function sandboxProxyUrl(proxy: string, secret: string, sandboxId: string): string {
  const u = new URL(proxy);
  u.username = sandboxId;
  u.password = egressCredential(secret, sandboxId);
  return u.toString().replace(/\/$/, '');
}

/** The environment of a command in a sandbox whose proxy is at URL. */
export function proxyEnvFor(url: string): Record<string, string> {
  const noProxy = 'localhost,127.0.0.1,::1';
  return { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NO_PROXY: noProxy, no_proxy: noProxy };
}
