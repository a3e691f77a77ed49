/**
 * Prometheus text at `/metrics`, with our defaults over `effect/observability`
 * `PrometheusMetrics` (its formatter and its HTTP route; nothing here writes
 * the exposition format): the route on an `effect/http` `HttpRouter` for
 * servers that already have one ({@link layerHttp}), or a standalone Node HTTP
 * server that serves only the metrics ({@link layerServer}).
 *
 * Metric names already carry their prefix (see `SessionMetrics`), so no
 * formatter prefix is applied here. The endpoint renders every metric of the
 * `Metric.MetricRegistry` in its context, including the application's own.
 *
 * @since 0.1.0
 */
import { createServer } from "node:http"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import type * as HttpServerError from "effect/http/HttpServerError"
import * as Layer from "effect/Layer"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import * as Schema from "effect/Schema"

/**
 * The content type of the exposition served at `/metrics`.
 *
 * @category constants
 * @since 0.1.0
 */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

/**
 * The metrics of the current registry in the Prometheus text format.
 *
 * @category formatting
 * @since 0.1.0
 */
export const format: Effect.Effect<string> = PrometheusMetrics.format()

/**
 * Options of the route.
 *
 * @category config
 * @since 0.1.0
 */
export interface HttpOptions {
  /**
   * The path of the route; must start with `/`.
   * @default "/metrics"
   */
  readonly path?: `/${string}` | undefined
}

/**
 * Options of the standalone server.
 *
 * @category config
 * @since 0.1.0
 */
export interface ServerOptions extends HttpOptions {
  /** The TCP port (0–65535; 0 picks a free one). */
  readonly port: number
  /**
   * The interface to listen on. Metrics are operational data: keep them on
   * loopback or a private interface unless a proxy guards them.
   * @default "127.0.0.1"
   */
  readonly host?: string | undefined
}

/**
 * Raised when endpoint options are invalid; nothing listens.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidEndpointOptions extends Schema.TaggedError<InvalidEndpointOptions>()("InvalidEndpointOptions", {
  option: Schema.String,
  value: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `Invalid metrics endpoint option ${this.option} = ${this.value}: ${this.rule}.`
  }
}

const checkPath = (path: string | undefined): InvalidEndpointOptions | undefined =>
  path === undefined || /^\/[\x21-\x7e]*$/.test(path)
    ? undefined
    : new InvalidEndpointOptions({
      option: "path",
      value: JSON.stringify(path),
      rule: "a path must start with / and contain no spaces or control characters (for example /metrics)"
    })

/**
 * Adds `GET /metrics` (or `path`) to the application's `HttpRouter`, served by
 * `PrometheusMetrics.layerHttp`.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerHttp = (
  options?: HttpOptions
): Layer.Layer<never, InvalidEndpointOptions, HttpRouter.HttpRouter> => {
  const invalid = checkPath(options?.path)
  return invalid !== undefined
    ? Layer.effectDiscard(Effect.fail(invalid))
    : PrometheusMetrics.layerHttp({ path: options?.path ?? "/metrics" })
}

/**
 * A standalone HTTP server (Node) that serves only the metrics route, on
 * `host:port` (default host `127.0.0.1`). Provides the `HttpServer`, whose
 * `address` tells the port chosen for port 0.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerServer = (
  options: ServerOptions
): Layer.Layer<HttpServer.HttpServer, InvalidEndpointOptions | HttpServerError.ServeError> => {
  const { port } = options
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    return Layer.effect(
      HttpServer.HttpServer,
      Effect.fail(
        new InvalidEndpointOptions({ option: "port", value: String(port), rule: "must be an integer from 0 to 65535" })
      )
    )
  }
  return HttpRouter.serve(layerHttp(options), { disableListenLog: true, disableLogger: true }).pipe(
    Layer.provideMerge(nodeHttpServer({ port, host: options.host ?? "127.0.0.1" }))
  )
}

// `@effect/platform-node` is an optional peer: it is loaded when a standalone
// server is built, so importing this module (and its entry point) needs `effect` alone.
const nodeHttpServer = (options: { readonly port: number; readonly host: string }) =>
  Layer.unwrap(
    Effect.promise(() => import("@effect/platform-node/NodeHttpServer")).pipe(
      Effect.map((NodeHttpServer) => NodeHttpServer.layer(createServer, options))
    )
  )
