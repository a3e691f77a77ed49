import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Metric, Schedule } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpExporter } from "effect/observability"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as MetricsFromEvents from "../src/MetricsFromEvents.ts"
import * as OtelExporter from "../src/OtelExporter.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"
import * as SpanAttributes from "../src/SpanAttributes.ts"
import * as Scenario from "./utils/observabilityScenario.ts"

interface Received {
  readonly path: string
  readonly contentType: string | undefined
  readonly body: string
}

// A loopback OTLP/HTTP receiver: records every POST and answers 200 `{}`.
const startReceiver = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{ url: string; received: Array<Received>; close: () => Promise<void> }>((resolve) => {
      const received: Array<Received> = []
      const server = createServer((request, response) => {
        const chunks: Array<Buffer> = []
        request.on("data", (chunk: Buffer) => chunks.push(chunk))
        request.on("end", () => {
          received.push({
            path: request.url ?? "",
            contentType: request.headers["content-type"],
            body: Buffer.concat(chunks).toString("utf8")
          })
          response.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        resolve({
          url: `http://127.0.0.1:${port}`,
          received,
          close: () =>
            new Promise((done) => {
              server.closeAllConnections()
              server.close(() => done())
            })
        })
      })
    })
  ),
  (receiver) => Effect.promise(receiver.close)
)

const stack = (options: OtelExporter.Options) =>
  Layer.mergeAll(
    OtelExporter.layer(options).pipe(Layer.provide(FetchHttpClient.layer)),
    MetricsFromEvents.layer(),
    // logs become span events only, not console lines
    Logger.layer([Logger.tracerLogger], { mergeWithExisting: false })
  ).pipe(
    Layer.provideMerge(DiagnosticBus.layer()),
    // a fresh registry per test, shared by the metrics and the exporter
    Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
  )

// What the runtime does on a turn: spans from the helpers, an Effect.fn span
// annotated with the raw key, a log line annotated with it.
const turn = Effect.gen(function*() {
  yield* Effect.sleep("1 millis").pipe(
    SpanAttributes.toolSpan({ tool: "read_file", callId: Scenario.secrets.toolCallId, sessionKey: Scenario.secrets.stuckKey })
  )
  yield* Effect.void.pipe(
    SpanAttributes.modelSpan({ provider: "anthropic", model: "claude-sonnet", sessionKey: Scenario.secrets.stuckKey })
  )
  yield* Effect.fn("SessionLock.acquire")(function*() {
    yield* Effect.annotateCurrentSpan("sessionKey", Scenario.secrets.lockKey)
    yield* Effect.annotateCurrentSpan("runId", Scenario.secrets.runId)
    yield* Effect.logInfo("lock acquired").pipe(Effect.annotateLogs({ sessionKey: Scenario.secrets.lockKey }))
  })()
}).pipe(SpanAttributes.turnSpan({ sessionKey: Scenario.secrets.stuckKey, agent: "main", turnId: Scenario.secrets.runId }))

type Json = any

const attributesOf = (list: ReadonlyArray<Json>): Record<string, unknown> =>
  Object.fromEntries(list.map((kv: Json) => [kv.key, Object.values(kv.value)[0]]))

const metricsOf = (received: ReadonlyArray<Received>): Array<Json> =>
  received.filter((r) => r.path === "/v1/metrics").flatMap((r) =>
    JSON.parse(r.body).resourceMetrics.flatMap((rm: Json) => rm.scopeMetrics.flatMap((sm: Json) => sm.metrics))
  )

const spansOf = (received: ReadonlyArray<Received>): Array<Json> =>
  received.filter((r) => r.path === "/v1/traces").flatMap((r) =>
    JSON.parse(r.body).resourceSpans.flatMap((rs: Json) => rs.scopeSpans.flatMap((ss: Json) => ss.spans))
  )

describe("OtelExporter", () => {
  describe("layer", () => {
    it.live("exports the scenario's metrics and the turn's GenAI spans to an OTLP receiver, with no identifier", () =>
      Effect.gen(function*() {
        const receiver = yield* startReceiver
        yield* Effect.gen(function*() {
          const metrics = yield* MetricsFromEvents.MetricsFromEvents
          assert.isTrue(yield* metrics.awaitSeq(yield* Scenario.publishScenario))
          yield* turn
          yield* (yield* OtlpExporter.Flusher).flush
        }).pipe(Effect.provide(stack({
          endpoint: receiver.url,
          encoding: "json",
          exportInterval: "1 hour",
          serviceName: "agent-gateway-test",
          serviceVersion: "1.2.3"
        })))

        const paths = new Set(receiver.received.map((r) => r.path))
        assert.deepStrictEqual([...paths].sort(), ["/v1/metrics", "/v1/traces"])
        assert.isTrue(receiver.received.every((r) => r.contentType === "application/json"))

        // resource
        const resource = attributesOf(JSON.parse(receiver.received[0]!.body)[
          receiver.received[0]!.path === "/v1/metrics" ? "resourceMetrics" : "resourceSpans"
        ][0].resource.attributes)
        assert.strictEqual(resource["service.name"], "agent-gateway-test")
        assert.strictEqual(resource["service.version"], "1.2.3")

        // metrics: names, attributes, values
        const metrics = metricsOf(receiver.received)
        const byName = (name: string) => metrics.find((m) => m.name === name)
        const attention = byName("session_runtime_attention_total")
        assert.isTrue(attention.sum.isMonotonic)
        const stuck = attention.sum.dataPoints.find((p: Json) =>
          attributesOf(p.attributes)["classification"] === "stale_session_state" &&
          attributesOf(p.attributes)["reason"] === "queued_work_without_active_run"
        )
        assert.strictEqual(stuck.asDouble, 1)
        const recovery = byName("session_runtime_recovery_total").sum.dataPoints.map((p: Json) => ({
          ...attributesOf(p.attributes),
          value: p.asDouble
        }))
        assert.deepInclude(recovery, {
          phase: "completed",
          trigger: "stuck",
          action: "release_lane",
          status: "released",
          value: 1
        })
        const evicted = byName("session_runtime_activity_evicted_total").sum.dataPoints.find((p: Json) =>
          attributesOf(p.attributes)["reason"] === "orphaned_no_owner"
        )
        assert.strictEqual(evicted.asDouble, 2)
        const wait = byName("session_runtime_lock_wait_seconds").histogram.dataPoints[0]
        assert.strictEqual(Number(wait.count), 1)
        assert.strictEqual(wait.sum, 0.25)
        assert.strictEqual(byName("session_runtime_event_loop_delay_p99_seconds").gauge.dataPoints[0].asDouble, 1.5)

        // spans: GenAI names and attributes, hashed keys, no call ids
        const spans = spansOf(receiver.received)
        const span = (name: string) => {
          const found = spans.find((s) => s.name === name)
          assert.isDefined(found, `span ${name}`)
          return { ...found, attrs: attributesOf(found.attributes) }
        }
        const turnSpan = span("invoke_agent main")
        const tool = span("execute_tool read_file")
        const model = span("chat claude-sonnet")
        const lock = span("SessionLock.acquire")
        assert.strictEqual(tool.parentSpanId, turnSpan.spanId)
        assert.strictEqual(model.parentSpanId, turnSpan.spanId)
        assert.strictEqual(tool.traceId, turnSpan.traceId)
        assert.strictEqual(turnSpan.attrs["gen_ai.operation.name"], "invoke_agent")
        assert.strictEqual(turnSpan.attrs["gen_ai.agent.name"], "main")
        assert.strictEqual(tool.attrs["gen_ai.operation.name"], "execute_tool")
        assert.strictEqual(tool.attrs["gen_ai.tool.name"], "read_file")
        assert.notProperty(tool.attrs, "gen_ai.tool.call.id")
        assert.strictEqual(model.attrs["gen_ai.operation.name"], "chat")
        assert.strictEqual(model.attrs["gen_ai.provider.name"], "anthropic")
        assert.strictEqual(model.attrs["gen_ai.request.model"], "claude-sonnet")
        assert.strictEqual(model.kind, 3) // client
        const hash = SessionKey.hash(Scenario.secrets.stuckKey)
        assert.strictEqual(tool.attrs["gen_ai.conversation.id"], hash)
        assert.strictEqual(tool.attrs["session_runtime.session.key_hash"], hash)
        assert.strictEqual(lock.attrs["sessionKey"], SessionKey.hash(Scenario.secrets.lockKey))
        assert.match(String(lock.attrs["runId"]), /^[0-9a-f]{16}$/)
        const logEvent = lock.events.find((e: Json) => e.name === "lock acquired")
        assert.strictEqual(attributesOf(logEvent.attributes)["sessionKey"], SessionKey.hash(Scenario.secrets.lockKey))

        for (const { body } of receiver.received) {
          for (const secret of Scenario.forbidden) assert.notInclude(body, secret)
        }
      }))

    it.live("exports raw session keys and call ids only when the user opts in", () =>
      Effect.gen(function*() {
        const receiver = yield* startReceiver
        yield* Effect.gen(function*() {
          yield* turn
          yield* (yield* OtlpExporter.Flusher).flush
        }).pipe(Effect.provide(stack({
          endpoint: receiver.url,
          encoding: "json",
          exportInterval: "1 hour",
          metrics: false,
          includeSessionKeys: true,
          includeCallIds: true
        })))
        assert.deepStrictEqual(receiver.received.map((r) => r.path), ["/v1/traces"])
        const spans = spansOf(receiver.received)
        const tool = spans.find((s) => s.name === "execute_tool read_file")
        const attrs = attributesOf(tool.attributes)
        assert.strictEqual(attrs["gen_ai.conversation.id"], Scenario.secrets.stuckKey)
        assert.strictEqual(attrs["gen_ai.tool.call.id"], Scenario.secrets.toolCallId)
        const lock = spans.find((s) => s.name === "SessionLock.acquire")
        assert.strictEqual(attributesOf(lock.attributes)["sessionKey"], Scenario.secrets.lockKey)
      }))

    it.live("exports on its interval, as protobuf by default", () =>
      Effect.gen(function*() {
        const receiver = yield* startReceiver
        yield* Effect.gen(function*() {
          yield* Metric.update(Metric.counter("app_interval_total", { incremental: true }), 1)
          // wait (bounded) for the periodic export, without a flush
          yield* Effect.sync(() => receiver.received.some((r) => r.path === "/v1/metrics")).pipe(
            Effect.repeat({ until: (seen) => seen, schedule: Schedule.spaced("20 millis") }),
            Effect.timeout("5 seconds")
          )
        }).pipe(Effect.provide(stack({ endpoint: receiver.url, exportInterval: "50 millis", traces: false })))
        const first = receiver.received.find((r) => r.path === "/v1/metrics")!
        assert.strictEqual(first.contentType, "application/x-protobuf")
        assert.include(first.body, "app_interval_total") // names are plain strings in protobuf
      }))

    it.effect("rejects a bad endpoint or interval with a typed error", () =>
      Effect.gen(function*() {
        const build = (options: OtelExporter.Options) =>
          OtelExporter.layerFetch(options).pipe(Layer.build, Effect.scoped, Effect.flip)
        const endpoint = yield* build({ endpoint: "localhost:4318/" })
        assert.strictEqual(endpoint._tag, "InvalidExporterOptions")
        assert.strictEqual(endpoint.option, "endpoint")
        const notHttp = yield* build({ endpoint: "file:///tmp/otlp" })
        assert.include(notHttp.message, "http or https")
        const interval = yield* build({ endpoint: "http://127.0.0.1:4318", exportInterval: "0 millis" })
        assert.strictEqual(interval.option, "exportInterval")
      }))
  })

  describe("with the runtime's modules", () => {
    it.effect("exports the spans and metrics of real turns, a recovery and a lock wait without one session key", () =>
      Effect.gen(function*() {
        const receiver = yield* startReceiver
        yield* Effect.gen(function*() {
          const tracker = yield* ActivityTracker.ActivityTracker
          const { stuckKey } = Scenario.secrets
          // a turn with a tool and a model call: the runtime puts them in GenAI spans
          const turn = Effect.gen(function*() {
            yield* tracker.tool({ name: "read_file", callId: Scenario.secrets.toolCallId }, Effect.void)
            yield* tracker.model(
              { provider: "anthropic", model: "claude-sonnet", callId: Scenario.secrets.modelCallId },
              Effect.void
            )
          })
          yield* SessionLanes.run(stuckKey, turn)
          // a crashed external run wedges the session; the watchdog and recovery release it
          yield* Scenario.driveStuckSessionAndLockWait(turn)
          for (let j = 0; j < 200; j++) yield* Effect.yieldNow
          yield* (yield* OtlpExporter.Flusher).flush
        }).pipe(Effect.provide(
          Layer.mergeAll(
            OtelExporter.layer({ endpoint: receiver.url, encoding: "json", exportInterval: "1 hour" }).pipe(
              Layer.provide(FetchHttpClient.layer)
            ),
            Logger.layer([Logger.tracerLogger], { mergeWithExisting: false })
          ).pipe(
            Layer.provideMerge(SessionRuntime.layerTest()),
            Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
          )
        ))

        const spans = spansOf(receiver.received)
        const names = new Set(spans.map((s) => s.name))
        for (const name of ["invoke_agent", "execute_tool read_file", "chat claude-sonnet", "SessionLock.acquire"]) {
          assert.isTrue(names.has(name), `span ${name} in ${[...names].join(", ")}`)
        }
        const metrics = metricsOf(receiver.received)
        const recovery = metrics.find((m) => m.name === "session_runtime_recovery_total")
        assert.deepInclude(
          recovery.sum.dataPoints.map((p: Json) => ({ ...attributesOf(p.attributes), value: p.asDouble })),
          { phase: "completed", trigger: "stuck", action: "release_lane", status: "released", value: 1 }
        )
        const waited = metrics.find((m) => m.name === "session_runtime_lock_acquire_total").sum.dataPoints.find((
          p: Json
        ) => attributesOf(p.attributes)["outcome"] === "waited")
        assert.strictEqual(waited.asDouble, 1)
        for (const { body } of receiver.received) {
          for (const secret of [...Scenario.forbidden, "toolu_01XyzzyLeftover"]) assert.notInclude(body, secret)
        }
      }))
  })

  describe("scrubAttribute", () => {
    it("hashes session-key and id attributes and keeps the rest", () => {
      const policy = SpanAttributes.defaultPolicy
      assert.strictEqual(OtelExporter.scrubAttribute(policy, "gen_ai.tool.name", "exec"), "exec")
      assert.strictEqual(OtelExporter.scrubAttribute(policy, "session_runtime.session.key_hash", "abc"), "abc")
      for (const key of ["sessionKey", "session.key", "session_key", "app.session_key"]) {
        assert.strictEqual(OtelExporter.scrubAttribute(policy, key, "k"), SessionKey.hash(SessionKey.makeUnsafe("k")))
      }
      for (const key of ["gen_ai.tool.call.id", "markerId", "runId", "turn_id"]) {
        assert.notStrictEqual(OtelExporter.scrubAttribute(policy, key, "id-1"), "id-1")
      }
      assert.strictEqual(OtelExporter.scrubAttribute(policy, "attempts", 3), 3)
    })
  })
})
