import { assert, describe, it } from "@effect/vitest"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Fiber, Layer, Metric } from "effect"
import { createServer } from "node:http"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as LaneGuard from "../src/LaneGuard.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as MetricsFromEvents from "../src/MetricsFromEvents.ts"
import * as PrometheusEndpoint from "../src/PrometheusEndpoint.ts"
import { collectEvents } from "./utils/events.ts"
import * as Scenario from "./utils/observabilityScenario.ts"
import * as Prometheus from "./utils/prometheus.ts"

// A fresh registry per test: the default one is process-global.
const registry = () => Layer.succeed(Metric.MetricRegistry, new Map())

const urlOf = Effect.map(HttpServer.HttpServer, (server) => HttpServer.formatAddress(server.address))

const get = (url: string) =>
  Effect.promise(async () => {
    const response = await fetch(url)
    return { status: response.status, contentType: response.headers.get("content-type"), body: await response.text() }
  })

describe("PrometheusEndpoint", () => {
  describe("layerServer", () => {
    it.live("serves the scenario's counts as Prometheus text over loopback HTTP, without one identifier", () =>
      Effect.gen(function*() {
        const metrics = yield* MetricsFromEvents.MetricsFromEvents
        const last = yield* Scenario.publishScenario
        assert.isTrue(yield* metrics.awaitSeq(last))
        const url = yield* urlOf
        assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)

        const response = yield* get(`${url}/metrics`)
        assert.strictEqual(response.status, 200)
        assert.strictEqual(response.contentType, PrometheusEndpoint.contentType)
        const exposition = Prometheus.parse(response.body)
        for (const [name, labels, value] of Scenario.expected) {
          assert.strictEqual(Prometheus.value(exposition, name, labels), value, `${name} ${JSON.stringify(labels)}`)
        }
        assert.strictEqual(exposition.families.get("session_runtime_attention_total")?.type, "counter")
        assert.strictEqual(exposition.families.get("session_runtime_lock_wait_seconds")?.type, "histogram")
        assert.strictEqual(exposition.families.get("session_runtime_sessions")?.type, "gauge")
        for (const secret of Scenario.forbidden) {
          assert.notInclude(response.body, secret)
        }
        assert.strictEqual((yield* get(`${url}/other`)).status, 404)
      }).pipe(
        Effect.provide(
          PrometheusEndpoint.layerServer({ port: 0 }).pipe(
            Layer.provideMerge(MetricsFromEvents.layer()),
            Layer.provideMerge(DiagnosticBus.layer()),
            Layer.provide(registry())
          )
        )
      ))

    it.effect("rejects a port out of range with a typed error", () =>
      Effect.gen(function*() {
        const error = yield* Layer.build(PrometheusEndpoint.layerServer({ port: 70_000 })).pipe(
          Effect.scoped,
          Effect.flip
        )
        assert.strictEqual(error._tag, "InvalidEndpointOptions")
        assert.include(error.message, "port = 70000")
      }))
  })

  describe("layerHttp", () => {
    it.live("adds the metrics route to an application's router at a chosen path", () =>
      Effect.gen(function*() {
        const url = yield* urlOf
        yield* Metric.update(Metric.counter("app_requests_total", { incremental: true }), 2)
        const metrics = yield* get(`${url}/internal/metrics`)
        assert.strictEqual(metrics.status, 200)
        assert.strictEqual(Prometheus.value(Prometheus.parse(metrics.body), "app_requests_total"), 2)
        assert.strictEqual((yield* get(`${url}/health`)).body, "ok")
      }).pipe(
        Effect.provide(
          HttpRouter.serve(
            Layer.mergeAll(
              HttpRouter.add("GET", "/health", HttpServerResponse.text("ok")),
              PrometheusEndpoint.layerHttp({ path: "/internal/metrics" })
            ),
            { disableListenLog: true, disableLogger: true }
          ).pipe(Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })))
        ),
        Effect.provide(registry())
      ))

    it.effect("rejects a path that does not start with a slash", () =>
      Effect.gen(function*() {
        const router = PrometheusEndpoint.layerHttp({ path: "metrics" as `/${string}` })
        const error = yield* HttpRouter.serve(router).pipe(
          Layer.provide(NodeHttpServer.layerTest),
          Layer.build,
          Effect.scoped,
          Effect.flip
        )
        assert.strictEqual(error._tag, "InvalidEndpointOptions")
      }))
  })

  describe("with the runtime's modules", () => {
    it.live("counts what the real tracker, lanes and lock publish: an orphan evicted, a contended lock", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker.ActivityTracker
        const lock = yield* SessionLock.SessionLock
        const { lockKey, orphanKey } = Scenario.secrets

        // a turn whose external runtime reports a tool start and dies before reporting its end
        yield* SessionLanes.run(
          orphanKey,
          Effect.gen(function*() {
            const run = yield* ActivityTracker.CurrentRun
            yield* tracker.report({
              type: "started",
              kind: "tool_call",
              sessionKey: orphanKey,
              runId: run.runId,
              callId: Scenario.secrets.toolCallId,
              name: "native_shell",
              seq: yield* tracker.nextSeq
            })
          })
        )
        // a healthy turn with a structured tool call
        yield* SessionLanes.run(
          orphanKey,
          tracker.tool({ name: "web_search", callId: "call_ok_1" }, Effect.void)
        )

        // two writers on one session: the second waits for the first
        const holding = yield* Effect.scoped(
          Effect.andThen(lock.acquire(lockKey), Effect.sleep("150 millis"))
        ).pipe(Effect.forkChild({ startImmediately: true }))
        yield* Effect.sleep("20 millis")
        yield* Effect.scoped(lock.acquire(lockKey, { timeout: "5 seconds" }))
        yield* Fiber.join(holding)

        yield* events.settle
        const lastSeq = events.all().at(-1)!.seq
        assert.isTrue(yield* (yield* MetricsFromEvents.MetricsFromEvents).awaitSeq(lastSeq))
        const response = yield* get(`${yield* urlOf}/metrics`)
        const exposition = Prometheus.parse(response.body)
        const expect = (name: string, labels: Record<string, string>, value: number) =>
          assert.strictEqual(Prometheus.value(exposition, name, labels), value, `${name} ${JSON.stringify(labels)}`)
        expect("session_runtime_activity_evicted_total", { reason: "orphaned_no_owner" }, 1)
        expect("session_runtime_tool_calls_total", { tool: "native_shell", outcome: "evicted" }, 1)
        expect("session_runtime_tool_calls_total", { tool: "web_search", outcome: "success" }, 1)
        expect("session_runtime_active_calls", { kind: "tool_call" }, 0)
        expect("session_runtime_turn_seconds_count", { outcome: "success" }, 2)
        expect("session_runtime_turn_admissions_total", { admission: "started" }, 2)
        expect("session_runtime_sessions", { state: "idle" }, 1)
        expect("session_runtime_sessions", { state: "processing" }, 0)
        expect("session_runtime_lock_contended_total", {}, 1)
        expect("session_runtime_lock_acquire_total", { outcome: "acquired" }, 1)
        expect("session_runtime_lock_acquire_total", { outcome: "waited" }, 1)
        expect("session_runtime_lock_wait_seconds_count", {}, 2)
        expect("session_runtime_lock_hold_seconds_count", {}, 2)
        assert.isAbove(Prometheus.value(exposition, "session_runtime_lock_wait_seconds_sum")!, 0.05)
        for (const secret of Scenario.forbidden) assert.notInclude(response.body, secret)
        assert.notInclude(response.body, "call_ok_1")
      }).pipe(
        Effect.provide(
          PrometheusEndpoint.layerServer({ port: 0 }).pipe(
            Layer.provideMerge(MetricsFromEvents.layer()),
            Layer.provideMerge(SessionLanes.layer()),
            Layer.provideMerge(LaneGuard.layerNone),
            Layer.provideMerge(ActivityTracker.layer()),
            Layer.provideMerge(SessionLock.layerMemory()),
            Layer.provideMerge(DiagnosticBus.layer()),
            Layer.provide(registry())
          )
        )
      ))
  })
})
