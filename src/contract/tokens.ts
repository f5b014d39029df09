/**
 * Sandbox tokens (ARCHITECTURE.md, "Sandbox tokens"): a short-lived API token scoped to one sandbox,
 * for code running inside it to call back into agentbox for exactly its scopes. It never has
 * `manage`: it cannot create sandboxes, mint tokens or reach any other sandbox.
 */
import { z } from 'zod';
import { DurationInputSchema } from './requests.js';

/** What a sandbox token may be given; `manage` never. */
export const SANDBOX_TOKEN_SCOPES = ['read', 'exec', 'files'] as const;
export type SandboxTokenScope = (typeof SANDBOX_TOKEN_SCOPES)[number];

/** Every sandbox token starts with this, so the daemon knows to look it up in the store. */
export const SANDBOX_TOKEN_PREFIX = 'abx_sbt_';
/** @default 15m */
export const DEFAULT_SANDBOX_TOKEN_TTL = '15m';
export const MAX_SANDBOX_TOKEN_TTL_MS = 3_600_000;
/** Where `inject: true` writes the token inside the sandbox (its /tmp: on the sandbox's disk, every runtime has it). */
export const SANDBOX_TOKEN_PATH = '/tmp/.agentbox-token';
/** The API's address from inside a sandbox with egress: its egress proxy forwards this host to the daemon. */
export const SANDBOX_API_HOST = 'agentbox.internal';
export const SANDBOX_API_URL = `http://${SANDBOX_API_HOST}`;

export const SandboxTokenScopeSchema = z.enum(SANDBOX_TOKEN_SCOPES).describe('read: get the sandbox, its execs and egress log; exec: run commands, terminals, ports; files: read and write files');

export const CreateSandboxTokenRequestSchema = z
  .object({
    scopes: z
      .array(
        z.enum(SANDBOX_TOKEN_SCOPES, {
          error: (issue) =>
            issue.input === 'manage'
              ? 'manage is not allowed for a sandbox token: it can never create, stop or delete sandboxes, nor mint tokens'
              : `unknown scope ${JSON.stringify(issue.input).slice(0, 40)}: read, exec or files`,
        }),
      )
      .min(1, 'at least one scope')
      .max(3)
      .transform((scopes) => SANDBOX_TOKEN_SCOPES.filter((s) => scopes.includes(s)))
      .describe('What the token may do on its sandbox: read, exec, files (not manage)'),
    ttl: DurationInputSchema.optional().describe('How long it holds: at most 1h; default 15m'),
    inject: z.boolean().optional().describe(`Also write it into the sandbox at ${SANDBOX_TOKEN_PATH} (owned by the sandbox user, mode 0600 where the image has chmod)`),
  })
  .strict();
export type CreateSandboxTokenRequest = z.input<typeof CreateSandboxTokenRequestSchema>;

export const SandboxTokenSchema = z.object({
  id: z.string().describe('sbt_...: names the token for listing and revoking'),
  sandboxId: z.string(),
  scopes: z.array(SandboxTokenScopeSchema),
  createdAt: z.string(),
  expiresAt: z.string(),
  revokedAt: z.string().nullable(),
});
export type SandboxToken = z.infer<typeof SandboxTokenSchema>;

export const CreatedSandboxTokenSchema = SandboxTokenSchema.extend({
  token: z.string().describe(`The token (shown only now; only its sha256 is kept): Authorization: Bearer <token>. Starts with ${SANDBOX_TOKEN_PREFIX}`),
  injectedPath: z.string().optional().describe('Where it was written inside the sandbox, with inject: true'),
  apiUrl: z.string().nullable().describe(`The API's address from inside the sandbox (${SANDBOX_API_URL}, through its egress proxy), or null for a sandbox without egress (use the token from outside)`),
});
export type CreatedSandboxToken = z.infer<typeof CreatedSandboxTokenSchema>;

export const SandboxTokenListSchema = z.object({ tokens: z.array(SandboxTokenSchema) });
