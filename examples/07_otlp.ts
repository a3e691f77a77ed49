/**
 * @title OTLP
 *
 * Metrics and traces exported over OTLP/HTTP by `OtelExporter.layer` (Effect's own `effect/observability`
 * exporters, no OpenTelemetry SDK). The runtime names its spans after the GenAI semantic conventions: each
 * turn is an `invoke_agent` span, each model call `chat {model}`, each tool call `execute_tool {tool}`
 * (`SpanAttributes`); session keys leave the process only as hashes. So that this
 * runs offline, the example starts its own OTLP receiver (`Receiver`, a small HTTP server that keeps what
 * it is sent) and points the exporter at it; in production the endpoint is your collector, e.g.
 * `http://localhost:4318`.
 *
 *   npx node examples/07_otlp.ts [--short]
 */
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Console, Context, Effect, Layer } from "effect"
import { FetchHttpClient, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import { OtlpExporter } from "effect/observability"
import { createServer } from "node:http"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import * as OtelExporter from "../src/OtelExporter.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

const short = process.env.EXAMPLE_SHORT === "1" || process.argv.includes("--short")

interface OtlpJson {
  readonly resourceMetrics?: ReadonlyArray<{ scopeMetrics: ReadonlyArray<{ metrics: ReadonlyArray<{ name: string }> }> }>
  readonly resourceSpans?: ReadonlyArray<{
    scopeSpans: ReadonlyArray<{
      spans: ReadonlyArray<{ name: string; attributes?: ReadonlyArray<{ key: string; value: { stringValue?: string } }> }>
    }>
  }>
}

/** A minimal OTLP/HTTP (JSON) receiver on a free local port that keeps every export it receives. */
class Receiver extends Context.Service<Receiver, {
  readonly url: string
  readonly metrics: Array<OtlpJson>
  readonly traces: Array<OtlpJson>
}>()("example/Receiver") {
  static readonly layer = Layer.unwrap(Effect.sync(() => {
    const metrics: Array<OtlpJson> = []
    const traces: Array<OtlpJson> = []
    const keep = (into: Array<OtlpJson>) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        into.push((yield* request.json) as OtlpJson)
        return HttpServerResponse.jsonUnsafe({})
      }).pipe(Effect.orDie)
    const routes = Layer.mergeAll(
      HttpRouter.add("POST", "/v1/metrics", keep(metrics)),
      HttpRouter.add("POST", "/v1/traces", keep(traces))
    )
    const receiver = Layer.effect(
      Receiver,
      Effect.map(HttpServer.HttpServer, (server) =>
        Receiver.of({ url: HttpServer.formatAddress(server.address), metrics, traces }))
    )
    return receiver.pipe(
      Layer.provideMerge(HttpRouter.serve(routes, { disableListenLog: true, disableLogger: true })),
      Layer.provide(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
    )
  }))
}

/** The exporter, pointed at the receiver. */
const Exporter = Layer.unwrap(Effect.map(Receiver, (receiver) =>
  OtelExporter.layer({
    endpoint: receiver.url,
    encoding: "json",
    serviceName: "example-agent",
    exportInterval: short ? "500 millis" : "5 seconds"
  }))).pipe(Layer.provide(FetchHttpClient.layer))

const Observability = Exporter.pipe(Layer.provideMerge(Receiver.layer))

const program = Effect.gen(function*() {
  const lanes = yield* SessionLanes
  const tracker = yield* ActivityTracker
  const receiver = yield* Receiver
  const session = SessionKey.makeUnsafe("agent:support:web:1")
  const turn = Effect.gen(function*() {
    yield* tracker.model({ provider: "openai", model: "gpt-4o" }, Effect.sleep("10 millis"))
    yield* tracker.tool({ name: "search" }, Effect.sleep("5 millis"))
  })
  for (let i = 0; i < 3; i++) yield* Effect.flatMap(lanes.submit(session, turn), (s) => s.result)

  const flusher = yield* OtlpExporter.Flusher
  yield* flusher.flush
  const metricNames = new Set(receiver.metrics.flatMap((m) =>
    (m.resourceMetrics ?? []).flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics.map((x) => x.name)))
  ))
  const spans = receiver.traces.flatMap((t) =>
    (t.resourceSpans ?? []).flatMap((r) => r.scopeSpans.flatMap((s) => s.spans))
  )
  yield* Console.log(`OTLP receiver at ${receiver.url} got:`)
  yield* Console.log(
    `  ${receiver.metrics.length} metric export(s), ${metricNames.size} metrics, e.g. ${
      [...metricNames].filter((n) => n.startsWith("session_runtime_turn") || n.startsWith("session_runtime_tool")).join(", ")
    }`
  )
  yield* Console.log(
    `  ${receiver.traces.length} trace export(s), ${spans.length} spans: ${[...new Set(spans.map((s) => s.name))].join(", ")}`
  )
  const conversation = spans.flatMap((s) => s.attributes ?? []).find((a) => a.key === "gen_ai.conversation.id")
  yield* Console.log(
    `  gen_ai.conversation.id = ${conversation?.value.stringValue} (the hash of ${session}, never the key itself)`
  )
})

program.pipe(
  Effect.provide(SessionRuntime.layer({ lock: { backend: "memory" } })),
  Effect.provide(Observability),
  NodeRuntime.runMain
)
