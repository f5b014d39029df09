/**
 * How a sandbox with network reaches its egress proxy, the same on every runtime: the host
 * directory holding the proxy's Unix socket is bound read-only at EGRESS_MOUNT, and PID 1 inside
 * relays 127.0.0.1:EGRESS_PORT to EGRESS_MOUNT/EGRESS_SOCKET. The sandbox has no interface but
 * loopback, so no address, DNS server or IPv6 route exists around the proxy.
 */
export const EGRESS_MOUNT = '/run/agentbox';
export const EGRESS_SOCKET = 'proxy.sock';
export const EGRESS_PORT = 3128;

/** The arguments that make PID 1 (either init) run the relay. */
export function relayArgs(): string[] {
  return ['--egress-relay', String(EGRESS_PORT), `${EGRESS_MOUNT}/${EGRESS_SOCKET}`];
}
