/** The package's public API. Explicit names only: test/unit/sdk-public-exports.test.ts pins this list. */
export { AgentboxClient, type ClientOpts, type EgressLog, type ExecRecord, type StreamEvent } from './client.js';
export { SandboxRef } from './sandbox.js';
export { TerminalConnection } from './terminal.js';
export type { OpenTerminalRequest, Terminal } from '../contract/terminals.js';
export type { Desktop } from '../contract/desktop.js';
export type { GrantPortAccessRequest, PortAccess } from '../contract/ports.js';
export type { CreatedSandboxToken, CreateSandboxTokenRequest, SandboxToken, SandboxTokenScope } from '../contract/tokens.js';
export {
  AgentboxError,
  BadRequestError,
  ConflictError,
  ERROR_CODES,
  ForbiddenError,
  InternalError,
  NotFoundError,
  PolicyDeniedError,
  QuotaExceededError,
  RuntimeUnavailableError,
  TimeoutError,
  UnauthorizedError,
  type ErrorCode,
} from '../contract/errors.js';
export type { DeniedHost, DirEntry, Egress, EgressEvent, ExecResult, ExecSummary, KillResult, Limits, ProcessInfo, Sandbox, SandboxState, SignalName, Snapshot, EndReason } from '../contract/model.js';
export type { CreateSandboxRequest, CreateSnapshotRequest, ExecRequest, ForkRequest, KillProcessRequest, PauseRequest } from '../contract/requests.js';
export type { DaemonInfo } from '../contract/daemon.js';
export type { SandboxUsage, SandboxUsageReport, UsageOverview, UsageOverviewEntry, UsageSample } from '../contract/usage.js';
export type { CreateVolumeRequest, Volume, VolumeMount, VolumeMountRequest } from '../contract/volumes.js';
export { verifyWebhook, type VerifyWebhookOpts, type VerifyWebhookResult } from '../contract/webhook-signature.js';
export type { WebhookDelivery, WebhookEvent, WebhookEventType } from '../contract/webhooks.js';
