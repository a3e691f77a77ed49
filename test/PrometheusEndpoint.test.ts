import { assert, describe, it } from "@effect/vitest"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Metric } from "effect"
import { createServer } from "node:http"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"
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
        assert.strictEqual(exposition.families.get("session_runtime_event_loop_utilization")?.type, "gauge")
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
    it.effect("counts what the real runtime publishes: a stuck session recovered, an orphan evicted, a contended lock", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker.ActivityTracker
        const { orphanKey, stuckKey } = Scenario.secrets
        const report = (sessionKey: typeof stuckKey, runId: string) =>
          Effect.gen(function*() {
            yield* tracker.report({
              type: "started",
              kind: "tool_call",
              sessionKey,
              runId,
              callId: Scenario.secrets.toolCallId,
              name: "native_shell",
              seq: yield* tracker.nextSeq
            })
          })

        // an orphan: a turn whose external runtime reports a tool start, then the turn ends without its end
        yield* SessionLanes.run(
          orphanKey,
          Effect.flatMap(ActivityTracker.CurrentRun, (run) => report(orphanKey, run.runId))
        )
        // a healthy turn with a structured tool call
        yield* SessionLanes.run(orphanKey, tracker.tool({ name: "web_search", callId: "call_ok_1" }, Effect.void))

        // a stuck session released by the watchdog and recovery, and a second writer waiting for a lock
        assert.strictEqual(
          yield* Scenario.driveStuckSessionAndLockWait(Effect.succeed("answered after recovery")),
          "answered after recovery"
        )

        yield* events.settle
        assert.isTrue(yield* (yield* MetricsFromEvents.MetricsFromEvents).awaitSeq(events.all().at(-1)!.seq))
        const response = yield* get(`${yield* urlOf}/metrics`)
        const exposition = Prometheus.parse(response.body)
        const expect = (name: string, labels: Record<string, string>, value: number) =>
          assert.strictEqual(Prometheus.value(exposition, name, labels), value, `${name} ${JSON.stringify(labels)}`)
        const stuck = { classification: "stale_session_state", reason: "queued_work_without_active_run" }
        expect("session_runtime_attention_total", stuck, events.ofType("session.stuck").length)
        assert.isAtLeast(Prometheus.value(exposition, "session_runtime_attention_total", stuck)!, 1)
        expect("session_runtime_stuck_age_seconds_count", {}, events.ofType("session.stuck").length)
        expect("session_runtime_recovery_total", { phase: "requested", trigger: "stuck", action: "pending", status: "pending" }, 1)
        expect("session_runtime_recovery_total", { phase: "completed", trigger: "stuck", action: "release_lane", status: "released" }, 1)
        expect("session_runtime_activity_evicted_total", { reason: "recovery" }, 1)
        expect("session_runtime_activity_evicted_total", { reason: "orphaned_no_owner" }, 1)
        expect("session_runtime_tool_calls_total", { tool: "native_shell", outcome: "evicted" }, 2)
        expect("session_runtime_tool_calls_total", { tool: "web_search", outcome: "success" }, 1)
        expect("session_runtime_active_calls", { kind: "tool_call" }, 0)
        expect("session_runtime_turn_seconds_count", { outcome: "success" }, 3)
        expect("session_runtime_sessions", { state: "processing" }, 0)
        expect("session_runtime_queue_depth", {}, 0)
        expect("session_runtime_lock_contended_total", {}, 1)
        expect("session_runtime_lock_acquire_total", { outcome: "waited" }, 1)
        expect("session_runtime_lock_acquire_total", { outcome: "timeout" }, 0)
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_lock_hold_seconds_count"),
          events.ofType("lock.released").length
        )
        for (const secret of Scenario.forbidden) assert.notInclude(response.body, secret)
        assert.notInclude(response.body, "call_ok_1")
      }).pipe(
        Effect.provide(
          PrometheusEndpoint.layerServer({ port: 0 }).pipe(
            Layer.provideMerge(SessionRuntime.layerTest()),
            Layer.provide(registry())
          )
        )
      ))
  })
})
