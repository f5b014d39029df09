/**
 * A sandbox as an object: `const sb = await client.createSandbox(); await sb.exec(['ls']); await sb.delete()`.
 * With TypeScript's `await using sb = ...` (Symbol.asyncDispose, where the runtime defines it) it is
 * deleted when the block ends.
 */
import type { Readable } from 'node:stream';
import type { DirEntry, ExecResult, KillResult, ProcessInfo, Sandbox, SignalName } from '../contract/model.js';
import type { ExecRequest } from '../contract/requests.js';
import type { CreatedSandboxToken, CreateSandboxTokenRequest, SandboxToken } from '../contract/tokens.js';
import type { AgentboxClient, StreamEvent } from './client.js';

type ExecInput = string[] | ExecRequest;

function toRequest(input: ExecInput): ExecRequest {
  return Array.isArray(input) ? { cmd: input } : input;
}

const asyncDispose: symbol | undefined = (Symbol as { asyncDispose?: symbol }).asyncDispose;

export class SandboxRef {
  constructor(
    private readonly client: AgentboxClient,
    readonly info: Sandbox,
  ) {
    if (asyncDispose) (this as unknown as Record<symbol, () => Promise<void>>)[asyncDispose] = () => this.delete().then(() => undefined);
  }

  get id(): string {
    return this.info.id;
  }

  exec(input: ExecInput, signal?: AbortSignal): Promise<ExecResult> {
    return this.client.exec(this.id, toRequest(input), signal);
  }

  execStream(input: ExecInput, signal?: AbortSignal): AsyncIterable<StreamEvent> {
    return this.client.execStream(this.id, toRequest(input), signal);
  }

  readFile(path: string): Promise<Readable> {
    return this.client.readFile(this.id, path);
  }

  writeFile(path: string, data: Buffer | string | Readable): Promise<{ bytes: number }> {
    return this.client.writeFile(this.id, path, data);
  }

  listDir(path = '/workspace'): Promise<DirEntry[]> {
    return this.client.listDir(this.id, path);
  }

  removePath(path: string): Promise<void> {
    return this.client.removePath(this.id, path);
  }

  processes(): Promise<ProcessInfo[]> {
    return this.client.processes(this.id);
  }

  killProcess(pid: number, signal?: SignalName): Promise<KillResult> {
    return this.client.killProcess(this.id, pid, signal ? { signal } : {});
  }

  /** A short-lived token scoped to this sandbox, for code inside it (see AgentboxClient.createToken). */
  createToken(req: CreateSandboxTokenRequest): Promise<CreatedSandboxToken> {
    return this.client.createToken(this.id, req);
  }

  listTokens(): Promise<SandboxToken[]> {
    return this.client.listTokens(this.id);
  }

  revokeToken(tokenId: string): Promise<SandboxToken> {
    return this.client.revokeToken(this.id, tokenId);
  }

  refresh(): Promise<Sandbox> {
    return this.client.get(this.id);
  }

  delete(): Promise<Sandbox> {
    return this.client.delete(this.id);
  }
}
