/**
 * OpenTelemetry traces, one tracer provider per daemon (tests run several daemons in one process, and
 * an embedder may have its own global provider: nothing here registers anything globally).
 *
 * Off unless an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
 * OTEL_EXPORTER_OTLP_ENDPOINT in the daemon's environment, else the policy's `telemetry.otlpEndpoint`;
 * the environment wins, as everywhere in OpenTelemetry). Off, `Tracing.disabled()` creates no
 * provider: every span is one shared non-recording span and `with()` just calls its function.
 *
 * Context: the API server extracts the caller's W3C `traceparent`/`tracestate`, starts the request's
 * span and runs the handler inside `with()`; the manager's spans take their parent from `active()`,
 * an AsyncLocalStorage of this daemon's own (`AlsContextManager`), not the global context.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { hostname } from 'node:os';
import type { IncomingHttpHeaders } from 'node:http';
import {
  defaultTextMapGetter,
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type ContextManager,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { ExportResultCode, parseKeyPairsIntoRecord, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { Logger } from 'pino';

export { SpanKind, SpanStatusCode, trace };
export type { Attributes, Span };

/** Longest string attribute value (a command line, a path); longer ones are cut by the provider. */
export const MAX_ATTRIBUTE_LENGTH = 1024;
/** Arguments of a command kept in `process.command_args`, and the length each is cut to. */
const MAX_ARGS = 32;
const MAX_ARG_LENGTH = 256;

/** The policy's `telemetry` block (src/policy/schema.ts), as far as tracing reads it. */
export interface TelemetryPolicy {
  otlpEndpoint?: string | undefined;
  serviceName?: string | undefined;
  headers?: Record<string, string> | undefined;
}

/** Where and how spans are exported; undefined when tracing is off. */
export interface TracingConfig {
  /** The traces URL the exporter POSTs to (…/v1/traces). */
  url: string;
  serviceName: string;
  headers: Record<string, string>;
  /** Which setting named the endpoint. */
  from: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' | 'OTEL_EXPORTER_OTLP_ENDPOINT' | 'policy';
  /** BatchSpanProcessor's delay between exports. @default 1000 ms (OTEL_BSP_SCHEDULE_DELAY) */
  scheduledDelayMs: number;
}

const nonEmpty = (s: string | undefined): string | undefined => (s !== undefined && s.trim() !== '' ? s.trim() : undefined);

/** A base endpoint as OTEL_EXPORTER_OTLP_ENDPOINT means it: `/v1/traces` appended (unless it ends so already). */
function tracesUrl(base: string): string {
  if (/\/v1\/traces\/?$/.test(new URL(base).pathname)) return base;
  return `${base.replace(/\/+$/, '')}/v1/traces`;
}

/**
 * The tracing settings from the daemon's environment and the policy, or undefined for off. The
 * environment wins over the policy (OpenTelemetry's rule: whoever starts the process can point it at
 * another collector without editing the policy). OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
 * turn tracing off whatever else is set.
 */
export function tracingConfig(env: NodeJS.ProcessEnv, telemetry?: TelemetryPolicy): TracingConfig | undefined {
  if (nonEmpty(env.OTEL_SDK_DISABLED)?.toLowerCase() === 'true') return undefined;
  if (nonEmpty(env.OTEL_TRACES_EXPORTER)?.toLowerCase() === 'none') return undefined;
  const specific = nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  const generic = nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT);
  const fromPolicy = nonEmpty(telemetry?.otlpEndpoint);
  let url: string;
  let from: TracingConfig['from'];
  // The signal-specific variable is used as it is (the OTLP exporter spec); the generic one and the policy's are bases.
  if (specific) [url, from] = [specific, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'];
  else if (generic) [url, from] = [tracesUrl(generic), 'OTEL_EXPORTER_OTLP_ENDPOINT'];
  else if (fromPolicy) [url, from] = [tracesUrl(fromPolicy), 'policy'];
  else return undefined;
  const delay = Number(nonEmpty(env.OTEL_BSP_SCHEDULE_DELAY) ?? Number.NaN);
  return {
    url,
    from,
    serviceName: nonEmpty(env.OTEL_SERVICE_NAME) ?? nonEmpty(telemetry?.serviceName) ?? 'agentbox',
    // Policy headers under the environment's (generic, then traces-specific), as the exporter merges them.
    headers: {
      ...telemetry?.headers,
      ...parseKeyPairsIntoRecord(env.OTEL_EXPORTER_OTLP_HEADERS),
      ...parseKeyPairsIntoRecord(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS),
    },
    scheduledDelayMs: Number.isFinite(delay) && delay >= 0 ? delay : 1000,
  };
}

/**
 * A ContextManager over node:async_hooks' AsyncLocalStorage (what @opentelemetry/context-async-hooks
 * does, in the few lines a daemon needs). Each daemon holds its own; a test may register one globally
 * (`context.setGlobalContextManager`) to make a span active for the SDK.
 */
export class AlsContextManager implements ContextManager {
  private readonly als = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.als.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.als.run(ctx, () => fn.apply(thisArg, args));
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    const als = this.als;
    return function (this: unknown, ...args: unknown[]) {
      return als.run(ctx, () => fn.apply(this, args));
    } as unknown as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.als.disable();
    return this;
  }
}

/** The one span handed out when tracing is off: records nothing, costs nothing. */
const NOOP_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
const propagator = new W3CTraceContextPropagator();

export interface StartSpanOpts {
  kind?: SpanKind;
  /** The parent: a context (the caller's, extracted), `'root'` for a new trace, else the active context. */
  parent?: Context | 'root';
}

/** A daemon's tracing: a tracer that exports to OTLP/HTTP, or nothing at all. */
export class Tracing {
  private readonly contexts = new AlsContextManager();

  private constructor(
    readonly enabled: boolean,
    private readonly tracer: Tracer | undefined,
    private readonly provider: BasicTracerProvider | undefined,
    readonly config: TracingConfig | undefined,
  ) {}

  private static readonly off = new Tracing(false, undefined, undefined, undefined);

  /** Tracing off: no provider, no exporter; spans are a shared no-op. */
  static disabled(): Tracing {
    return Tracing.off;
  }

  /** Tracing as `config` says (off when undefined): a BasicTracerProvider with a batch processor and the OTLP/HTTP (JSON) exporter. */
  static create(config: TracingConfig | undefined, opts: { version: string; logger?: Logger }): Tracing {
    if (!config) return Tracing.off;
    const exporter = loggedFailures(new OTLPTraceExporter({ url: config.url, headers: config.headers }), config.url, opts.logger);
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({
        [ATTR_SERVICE_NAME]: config.serviceName,
        [ATTR_SERVICE_VERSION]: opts.version,
        'host.name': hostname(),
        'process.pid': process.pid,
      }),
      spanLimits: { attributeValueLengthLimit: MAX_ATTRIBUTE_LENGTH, attributeCountLimit: 64, eventCountLimit: 16, linkCountLimit: 8 },
      spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: config.scheduledDelayMs, maxQueueSize: 4096, maxExportBatchSize: 512 })],
    });
    return new Tracing(true, provider.getTracer('agentbox', opts.version), provider, config);
  }

  /** The caller's trace context from W3C `traceparent`/`tracestate` headers; a missing or malformed one gives none (a new trace). */
  extract(headers: IncomingHttpHeaders): Context {
    if (!this.enabled || headers.traceparent === undefined) return ROOT_CONTEXT;
    return propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
  }

  /** The context of the request (or other operation) running now. */
  active(): Context {
    return this.enabled ? this.contexts.active() : ROOT_CONTEXT;
  }

  /** The span running now, if any (a part adds what only it knows: a create's warm claim). */
  activeSpan(): Span | undefined {
    return this.enabled ? trace.getSpan(this.contexts.active()) : undefined;
  }

  /** Run `fn` with `ctx` as the active context. */
  with<T>(ctx: Context, fn: () => T): T {
    return this.enabled ? this.contexts.with(ctx, fn) : fn();
  }

  /** A started span (end it); parented on `opts.parent`, else the active span. Off: the shared no-op span. */
  startSpan(name: string, attributes: Attributes, opts: StartSpanOpts = {}): Span {
    if (!this.tracer) return NOOP_SPAN;
    const parent = opts.parent === 'root' ? ROOT_CONTEXT : (opts.parent ?? this.contexts.active());
    return this.tracer.startSpan(name, { kind: opts.kind ?? SpanKind.INTERNAL, attributes, ...(opts.parent === 'root' ? { root: true } : {}) }, parent);
  }

  /** `fn` inside a new span that is active while it runs; a throw is recorded on the span (error status) and rethrown. */
  async inSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
    if (!this.tracer) return fn(NOOP_SPAN);
    const span = this.startSpan(name, attributes);
    try {
      return await this.contexts.with(trace.setSpan(this.contexts.active(), span), () => fn(span));
    } catch (err) {
      failSpan(span, err);
      throw err;
    } finally {
      span.end();
    }
  }

  /** Export what is buffered, then stop (daemon close). Bounded: a collector that does not answer does not hold the stop up. */
  async shutdown(timeoutMs = 5000): Promise<void> {
    if (!this.provider) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.provider.shutdown().catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }
}

/** An error on the span: status ERROR with the error's class and code (never its whole message: it may quote input). */
export function failSpan(span: Span, err: unknown): void {
  if (!span.isRecording()) return;
  const code = (err as { code?: unknown } | null)?.code;
  const type = typeof code === 'string' ? code : err instanceof Error ? err.name : 'error';
  span.setAttribute('error.type', bounded(type, 64));
  span.setStatus({ code: SpanStatusCode.ERROR, message: bounded(err instanceof Error ? err.message : String(err), 256) });
}

/** A string cut to `max` characters. */
export function bounded(s: string, max = MAX_ATTRIBUTE_LENGTH): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/** A command line as `process.command_args`: at most 32 arguments of at most 256 characters each. */
export function commandArgs(cmd: readonly string[]): string[] {
  const args = cmd.slice(0, MAX_ARGS).map((a) => bounded(a, MAX_ARG_LENGTH));
  if (cmd.length > MAX_ARGS) args.push(`… ${cmd.length - MAX_ARGS} more`);
  return args;
}

/** The per-sandbox attributes every sandbox span carries (one daemon serves many sandboxes, so they are span attributes, not resource ones). */
export function sandboxAttributes(sb: { id: string; tenant: string; runtime: string; isolation: string }): Attributes {
  return { 'agentbox.sandbox.id': sb.id, 'agentbox.tenant': sb.tenant, 'agentbox.runtime': sb.runtime, 'agentbox.isolation': sb.isolation };
}

/** The exporter, telling the daemon's log when exports fail (OpenTelemetry's own diag logger is off): the first failure, then at most once a minute. */
function loggedFailures(exporter: SpanExporter, url: string, logger: Logger | undefined): SpanExporter {
  if (!logger) return exporter;
  let lastWarn = 0;
  return {
    export(spans: ReadableSpan[], done) {
      exporter.export(spans, (result) => {
        if (result.code !== ExportResultCode.SUCCESS && Date.now() - lastWarn > 60_000) {
          lastWarn = Date.now();
          logger.warn({ url, spans: spans.length, err: result.error?.message }, 'could not export spans to the OTLP endpoint');
        }
        done(result);
      });
    },
    shutdown: () => exporter.shutdown(),
    ...(exporter.forceFlush ? { forceFlush: () => exporter.forceFlush!() } : {}),
  };
}
