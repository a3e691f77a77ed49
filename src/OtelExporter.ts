/**
 * OTLP/HTTP export of metrics and traces through `effect/observability` (no
 * OpenTelemetry SDK needed): every metric of the registry (ours from
 * `SessionMetrics`, and the application's) to `<endpoint>/v1/metrics`, and
 * every span (turns, tool calls and model calls named after the GenAI
 * conventions by `SpanAttributes`, plus each `Effect.fn` span) to
 * `<endpoint>/v1/traces`, on an export interval, with a final flush when the
 * layer's scope closes.
 *
 * Privacy: the layer sets the `SpanAttributes.SpanPolicy` for the program and,
 * as a second line of defence, the tracer it installs rewrites attributes (of
 * spans and of span events, which carry log annotations) whose names say they
 * hold a session key (`sessionKey`, `session.key`, ...) to the key's hash, and
 * those that hold a call, marker, run or turn id to a hash too, unless the
 * user opts in with `includeSessionKeys` / `includeCallIds`. Log messages and
 * error messages are exported as written: do not interpolate keys into them
 * (annotate instead). Logs are not exported.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Headers from "effect/http/Headers"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import type * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpMetrics from "effect/observability/OtlpMetrics"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import * as SpanAttributes from "./SpanAttributes.ts"

/**
 * Options of the exporter.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /** The OTLP/HTTP base URL, e.g. `http://localhost:4318`; signals go to `/v1/metrics` and `/v1/traces` below it. */
  readonly endpoint: string
  /**
   * The resource's `service.name`.
   * @default OTEL_SERVICE_NAME, else "effect-session-runtime"
   */
  readonly serviceName?: string | undefined
  /** The resource's `service.version`. */
  readonly serviceVersion?: string | undefined
  /** More resource attributes (for example `deployment.environment.name`). */
  readonly resourceAttributes?: Record<string, unknown> | undefined
  /** Headers sent with every export (for example an API key). */
  readonly headers?: Headers.Input | undefined
  /**
   * How often metrics are exported and buffered spans are sent.
   * @default "10 seconds"
   */
  readonly exportInterval?: Duration.Input | undefined
  /**
   * Export metrics.
   * @default true
   */
  readonly metrics?: boolean | undefined
  /**
   * Export traces.
   * @default true
   */
  readonly traces?: boolean | undefined
  /**
   * The OTLP body encoding.
   * @default "protobuf"
   */
  readonly encoding?: "protobuf" | "json" | undefined
  /**
   * Metric aggregation temporality.
   * @default "cumulative"
   */
  readonly temporality?: "cumulative" | "delta" | undefined
  /**
   * Request compression.
   * @default "none"
   */
  readonly compression?: "gzip" | "none" | undefined
  /**
   * How long the final flush may take when the layer closes.
   * @default "3 seconds"
   */
  readonly shutdownTimeout?: Duration.Input | undefined
  /**
   * Export raw session keys in span attributes instead of their hashes.
   * @default false
   */
  readonly includeSessionKeys?: boolean | undefined
  /**
   * Export tool call, marker, run and turn ids in span attributes instead of
   * leaving them out or hashing them.
   * @default false
   */
  readonly includeCallIds?: boolean | undefined
}

/**
 * Raised when exporter options are invalid; nothing is exported.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidExporterOptions extends Schema.TaggedError<InvalidExporterOptions>()("InvalidExporterOptions", {
  option: Schema.String,
  value: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `Invalid OTLP exporter option ${this.option} = ${this.value}: ${this.rule}.`
  }
}

const digest = (value: string): string => createHash("sha256").update(value, "utf8").digest("hex").slice(0, 16)

const sessionKeyName = /(^|[._-])session[._-]?key$|^sessionKey$/i
const callIdName = /(call|marker|run|turn)[._-]?id$/i

/**
 * Rewrites one span attribute under a policy: session-key attributes become
 * the key's hash, id attributes (call, marker, run, turn) become a hash,
 * unless the policy opts in. Other attributes pass unchanged.
 *
 * @category privacy
 * @since 0.1.0
 */
export const scrubAttribute = (policy: SpanAttributes.SpanPolicy, key: string, value: unknown): unknown => {
  if (typeof value !== "string") return value
  if (!policy.includeSessionKeys && sessionKeyName.test(key)) return digest(value)
  if (!policy.includeCallIds && callIdName.test(key)) return digest(value)
  return value
}

/**
 * Wraps a tracer so that every attribute set on its spans, and on their
 * events, goes through {@link scrubAttribute}.
 *
 * @category privacy
 * @since 0.1.0
 */
export const scrubbingTracer = (tracer: Tracer.Tracer, policy: SpanAttributes.SpanPolicy): Tracer.Tracer => {
  if (policy.includeSessionKeys && policy.includeCallIds) return tracer
  const scrubRecord = (attributes: Record<string, unknown> | undefined) => {
    if (attributes === undefined) return undefined
    const out: Record<string, unknown> = {}
    for (const key in attributes) out[key] = scrubAttribute(policy, key, attributes[key])
    return out
  }
  return Tracer.make({
    span(options) {
      const span = tracer.span(options)
      return new Proxy(span, {
        get(target, property) {
          if (property === "attribute") {
            return (key: string, value: unknown) => target.attribute(key, scrubAttribute(policy, key, value))
          }
          if (property === "event") {
            return (name: string, startTime: bigint, attributes?: Record<string, unknown>) =>
              target.event(name, startTime, scrubRecord(attributes))
          }
          const value = Reflect.get(target, property, target)
          return typeof value === "function" ? value.bind(target) : value
        }
      })
    },
    ...(tracer.context === undefined ? {} : { context: tracer.context })
  })
}

const validate = (options: Options) => {
  let url: URL
  try {
    url = new URL(options.endpoint)
  } catch {
    return new InvalidExporterOptions({
      option: "endpoint",
      value: JSON.stringify(options.endpoint),
      rule: "must be an absolute http(s) URL such as http://localhost:4318"
    })
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return new InvalidExporterOptions({
      option: "endpoint",
      value: JSON.stringify(options.endpoint),
      rule: "must use http or https"
    })
  }
  const interval = Duration.fromInput(options.exportInterval ?? "10 seconds")
  if (interval._tag === "None" || Duration.toMillis(interval.value) <= 0 || !Duration.isFinite(interval.value)) {
    return new InvalidExporterOptions({
      option: "exportInterval",
      value: String(options.exportInterval),
      rule: "must be a positive, finite duration such as \"10 seconds\""
    })
  }
  return { base: url.href.replace(/\/+$/, ""), interval: interval.value }
}

/**
 * The exporter: OTLP metrics and traces as configured, the span policy, and
 * the `Flusher` that drains both on demand. Needs an `HttpClient` (for
 * example `FetchHttpClient.layer`); see {@link layerFetch}.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<OtlpExporter.Flusher, InvalidExporterOptions, HttpClient.HttpClient> =>
  Layer.unwrap(Effect.gen(function*() {
    const valid = validate(options)
    if (valid instanceof InvalidExporterOptions) return yield* valid
    const serviceName = options.serviceName ??
      (yield* Config.String("OTEL_SERVICE_NAME").pipe(Config.withDefault("effect-session-runtime"), Effect.orDie))
    const resource = {
      serviceName,
      serviceVersion: options.serviceVersion,
      ...(options.resourceAttributes === undefined ? {} : { attributes: options.resourceAttributes })
    }
    const policy: SpanAttributes.SpanPolicy = {
      includeSessionKeys: options.includeSessionKeys ?? false,
      includeCallIds: options.includeCallIds ?? false
    }
    const common = {
      resource,
      headers: options.headers,
      compression: options.compression,
      exportInterval: valid.interval,
      shutdownTimeout: options.shutdownTimeout ?? "3 seconds"
    }
    const metrics = options.metrics === false ? OtlpExporter.layerFlusher : OtlpMetrics.layer({
      ...common,
      url: `${valid.base}/v1/metrics`,
      temporality: options.temporality
    })
    const traces = options.traces === false ? OtlpExporter.layerFlusher : Layer.effect(
      Tracer.Tracer,
      Effect.map(OtlpTracer.make({ ...common, url: `${valid.base}/v1/traces` }), (tracer) =>
        scrubbingTracer(tracer, policy))
    ).pipe(Layer.provideMerge(OtlpExporter.layerFlusher))
    return Layer.mergeAll(metrics, traces, SpanAttributes.layerPolicy(policy)).pipe(
      Layer.provide(options.encoding === "json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf)
    )
  }))

/**
 * {@link layer} over the platform's `fetch`.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerFetch = (options: Options): Layer.Layer<OtlpExporter.Flusher, InvalidExporterOptions> =>
  layer(options).pipe(Layer.provide(FetchHttpClient.layer))
