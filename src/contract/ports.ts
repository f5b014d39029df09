/**
 * Reaching a sandbox's ports from a browser (ARCHITECTURE.md, "Terminals and ports"): the daemon
 * proxies `PORT-ID.<ports domain>` to PORT inside sandbox ID for whoever holds an access token of
 * that port, or for anyone once its owner made it public.
 */
import { z } from 'zod';
import { DurationInputSchema } from './requests.js';

export const PortNumberSchema = z.number().int().min(1).max(65535).describe('a TCP port inside the sandbox');

export const GrantPortAccessRequestSchema = z
  .object({
    public: z.boolean().default(false).describe('anyone who knows the address may reach the port (no token)'),
    ttl: DurationInputSchema.optional().describe('how long the token (or the public grant) holds; default 1h for a token, until revoked for public'),
  })
  .strict();
export type GrantPortAccessRequest = z.input<typeof GrantPortAccessRequestSchema>;

export const PortAccessSchema = z.object({
  sandboxId: z.string(),
  port: z.number().int(),
  public: z.boolean(),
  /** Shown once, when made: only its sha256 is kept. */
  token: z.string().optional().describe('the access token (shown only now): send it as the agentbox-port-token header, or once as ?agentbox_port_token= (a browser then keeps it as a cookie of that host)'),
  expiresAt: z.string().nullable(),
  /** Where the port is reached, when the daemon has a ports domain. */
  url: z.string().nullable(),
});
export type PortAccess = z.infer<typeof PortAccessSchema>;
