import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Metric } from "effect"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import { DiagnosticBus } from "../src/DiagnosticBus.ts"
import * as MetricsFromState from "../src/MetricsFromState.ts"
import * as PrometheusEndpoint from "../src/PrometheusEndpoint.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"
import * as Prometheus from "./utils/prometheus.ts"

// A bus far too small for the burst below: its subscribers must lose events. A
// registry of its own per test: tests run concurrently.
const runtime = () =>
  SessionRuntime.layerTest({ bus: { capacity: 8 } }).pipe(
    Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
  )

const key = (n: number) => SessionKey.makeUnsafe(`agent:main:burst:${n}`)

const gauges = Effect.gen(function*() {
  const exposition = Prometheus.parse(yield* PrometheusEndpoint.format)
  const value = (name: string, labels: Record<string, string> = {}) => {
    const found = Prometheus.value(exposition, name, labels)
    assert.isDefined(found, `${name} ${JSON.stringify(labels)} exists`)
    return found!
  }
  return {
    idle: value("session_runtime_sessions", { state: "idle" }),
    processing: value("session_runtime_sessions", { state: "processing" }),
    queued: value("session_runtime_queue_depth"),
    tools: value("session_runtime_active_calls", { kind: "tool_call" }),
    modelCalls: value("session_runtime_active_calls", { kind: "model_call" }),
    runs: value("session_runtime_active_runs"),
    admissions: Prometheus.sum(exposition, "session_runtime_turn_admissions_total")
  }
})

// The same figures, from the lanes' and the tracker's own state.
const truth = Effect.gen(function*() {
  const views = yield* (yield* SessionLanes).list
  const tracker = yield* ActivityTracker
  const activity = yield* tracker.snapshotAll
  const stats = yield* tracker.stats
  return {
    idle: views.filter((v) => v.state === "idle").length,
    processing: views.filter((v) => v.state === "processing").length,
    queued: views.reduce((n, v) => n + v.queueDepth, 0),
    tools: activity.reduce((n, s) => n + s.openTools, 0),
    modelCalls: activity.reduce((n, s) => n + s.openModelCalls, 0),
    runs: stats.owners
  }
})

const settle = Effect.gen(function*() {
  for (let i = 0; i < 200; i++) yield* Effect.yieldNow
})

describe("MetricsFromState", () => {
  describe("layer", () => {
    it.effect("has every gauge of state at 0 from start-up", () =>
      Effect.gen(function*() {
        const { admissions: _, ...figures } = yield* gauges
        assert.deepStrictEqual(figures, { idle: 0, processing: 0, queued: 0, tools: 0, modelCalls: 0, runs: 0 })
        const exposition = Prometheus.parse(yield* PrometheusEndpoint.format)
        for (const name of ["delay_p99_seconds", "delay_max_seconds", "utilization"]) {
          assert.strictEqual(Prometheus.value(exposition, `session_runtime_event_loop_${name}`), 0, name)
        }
      }).pipe(Effect.provide(runtime())))

    it.effect("counts the turns waiting behind a running one while they wait", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const release = yield* Deferred.make<void>()
        yield* lanes.submit(key(1), Deferred.await(release))
        for (let i = 0; i < 3; i++) yield* lanes.submit(key(1), Effect.void)
        yield* settle
        const during = yield* gauges
        assert.deepStrictEqual([during.processing, during.queued], [1, 3])
        yield* Deferred.succeed(release, undefined)
        yield* settle
        const after = yield* gauges
        assert.deepStrictEqual([after.idle, after.processing, after.queued], [1, 0, 0])
      }).pipe(Effect.provide(runtime())))

    it.effect("equals the lanes' and the tracker's own state after a burst that overflows the bus", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        yield* bus.subscribe({ name: "never-reads" })
        const release = yield* Deferred.make<void>()
        const hold = Deferred.await(release)
        // 300 sessions; every third one holds a tool call open, every fifth a
        // model call, the rest finish; each gets 1–4 turns, the later ones queued.
        const sessions = 300
        let submitted = 0
        for (let n = 0; n < sessions; n++) {
          const first = n % 3 === 0
            ? tracker.tool({ name: "exec" }, hold)
            : n % 5 === 0
            ? tracker.model({ provider: "openai", model: "gpt-4o" }, hold)
            : tracker.tool({ name: "read_file" }, Effect.void)
          yield* lanes.submit(key(n), first)
          submitted++
          for (let t = 0; t < n % 4; t++) {
            yield* lanes.submit(key(n), tracker.tool({ name: "write_file" }, Effect.void))
            submitted++
          }
        }
        yield* settle

        const stats = yield* bus.stats
        assert.isAbove(stats.dropped, 1_000, "the bus dropped events for its subscriber")
        const during = yield* gauges
        const { admissions, ...figures } = during
        assert.deepStrictEqual(figures, yield* truth)
        assert.isAbove(figures.processing, 0)
        assert.isAbove(figures.queued, 0)
        assert.isAbove(figures.tools, 0)
        assert.isAbove(figures.modelCalls, 0)
        assert.strictEqual(admissions, submitted, "the counters lost nothing either")

        yield* Deferred.succeed(release, undefined)
        yield* settle
        const after = yield* gauges
        assert.deepStrictEqual({ ...after, admissions: 0 }, { ...(yield* truth), admissions: 0 })
        assert.deepStrictEqual(
          [after.processing, after.queued, after.tools, after.modelCalls, after.runs, after.idle],
          [0, 0, 0, 0, 0, sessions]
        )
      }).pipe(Effect.provide(runtime())))

    it.effect("removes its gauges from the registry when its scope closes", () =>
      Effect.gen(function*() {
        const registry: Map<string, { readonly id: string }> = new Map()
        const gaugeIds = ["session_runtime_sessions", "session_runtime_queue_depth", "session_runtime_active_calls"]
        const ids = () => Array.from(registry.values(), (m) => m.id)
        yield* Effect.scoped(Effect.gen(function*() {
          yield* Layer.build(SessionRuntime.layerTest())
          for (const id of gaugeIds) assert.include(ids(), id)
        })).pipe(Effect.provideService(Metric.MetricRegistry, registry as Map<string, any>))
        for (const id of gaugeIds) assert.notInclude(ids(), id)
        assert.include(ids(), "session_runtime_attention_total", "the counters stay")
      }))
  })

  describe("makeReading", () => {
    it("counts lanes by state and sums their queues", () => {
      const reading = MetricsFromState.makeReading(
        [{ state: "idle", queueDepth: 2 }, { state: "processing", queueDepth: 3 }, { state: "idle", queueDepth: 0 }],
        { openTools: 2, openModelCalls: 5, owners: 3 }
      )
      assert.deepStrictEqual(reading, {
        sessions: { idle: 2, processing: 1 },
        queueDepth: 5,
        activeCalls: { tool_call: 2, model_call: 5 },
        activeRuns: 3
      })
    })
  })
})
