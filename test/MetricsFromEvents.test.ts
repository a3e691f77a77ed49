import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import type { Draft } from "../src/DiagnosticEvent.ts"
import * as MetricsFromEvents from "../src/MetricsFromEvents.ts"
import * as NodeEventLoopMonitor from "../src/NodeEventLoopMonitor.ts"
import * as PrometheusEndpoint from "../src/PrometheusEndpoint.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionMetrics from "../src/SessionMetrics.ts"
import * as Scenario from "./utils/observabilityScenario.ts"
import * as Prometheus from "./utils/prometheus.ts"

const stack = (options?: MetricsFromEvents.Options) =>
  MetricsFromEvents.layer(options).pipe(
    Layer.provideMerge(DiagnosticBus.layer({ capacity: 100_000 })),
    Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
  )

const key = (n: number | string) => SessionKey.makeUnsafe(`agent:main:telegram:direct:user-${n}`)

// Publishes drafts and waits until the subscriber has applied them.
const publish = (...drafts: ReadonlyArray<Draft>) =>
  Effect.gen(function*() {
    const bus = yield* DiagnosticBus.DiagnosticBus
    let last = 0
    for (const draft of drafts) last = (yield* bus.publish(draft)).seq
    const applied = yield* (yield* MetricsFromEvents.MetricsFromEvents).awaitSeq(last)
    assert.isTrue(applied, "the subscriber applied every event")
  })

const scrape = Effect.map(PrometheusEndpoint.format, Prometheus.parse)

const state = (n: number | string, s: "idle" | "processing", queueDepth: number): Draft => ({
  _tag: "session.state",
  sessionKey: key(n),
  state: s,
  queueDepth,
  generation: 1,
  reason: "turn_started"
})

const opened = (n: number | string, markerId: string, kind: "tool_call" | "model_call", name: string): Draft => ({
  _tag: "session.activity.marker_opened",
  sessionKey: key(n),
  runId: "run-1",
  markerId,
  kind,
  source: "structured",
  name
})

const closed = (n: number | string, markerId: string, kind: "tool_call" | "model_call"): Draft => ({
  _tag: "session.activity.marker_closed",
  sessionKey: key(n),
  runId: "run-1",
  markerId,
  kind,
  source: "structured",
  outcome: "success",
  durationMs: 10
})

describe("MetricsFromEvents", () => {
  describe("counters and histograms", () => {
    it.effect("counts the scripted scenario: a stuck session recovered, an orphan evicted, a contended lock", () =>
      Effect.gen(function*() {
        yield* publish(...Scenario.drafts)
        const exposition = yield* scrape
        for (const [name, labels, value] of Scenario.expected) {
          assert.strictEqual(Prometheus.value(exposition, name, labels), value, `${name} ${JSON.stringify(labels)}`)
        }
      }).pipe(Effect.provide(stack())))

    it.effect("starts the alerting series at zero before any event", () =>
      Effect.gen(function*() {
        const exposition = yield* scrape
        const zero = [
          ["session_runtime_attention_total", { classification: "stale_session_state", reason: "stale_session_state" }],
          ["session_runtime_attention_total", { classification: "blocked_tool_call", reason: "blocked_tool_call" }],
          ["session_runtime_lock_acquire_total", { outcome: "timeout" }],
          ["session_runtime_activity_evicted_total", { reason: "orphaned_no_owner" }],
          ["session_runtime_liveness_warning_total", { reason: "event_loop_utilization" }],
          ["session_runtime_events_dropped_total", {}],
          ["session_runtime_event_loop_utilization", {}]
        ] as const
        for (const [name, labels] of zero) assert.strictEqual(Prometheus.value(exposition, name, labels), 0, name)
      }).pipe(Effect.provide(stack())))

    it.effect("classifies lock acquisitions by outcome and counts timeouts", () =>
      Effect.gen(function*() {
        const acquired = (attempts: number, reclaimed: boolean): Draft => ({
          _tag: "lock.acquired",
          sessionKey: key(1),
          backend: "memory",
          token: 1,
          waitedMs: (attempts - 1) * 50,
          attempts,
          reclaimed
        })
        const holder = { status: "dead" } as const
        yield* publish(
          acquired(1, false),
          acquired(1, false),
          acquired(4, false),
          // queued behind a holder in this process: one attempt, but it waited
          { _tag: "lock.contended", sessionKey: key(1), backend: "memory", holder: { status: "alive" } },
          acquired(1, false),
          acquired(2, true),
          { _tag: "lock.reclaimed", sessionKey: key(1), backend: "memory", reason: "holder_dead", previousHolder: holder },
          { _tag: "lock.timeout", sessionKey: key(1), backend: "memory", waitedMs: 60_000, attempts: 90, holder },
          { _tag: "lock.lost", sessionKey: key(1), backend: "memory", token: 1, reason: "token superseded" }
        )
        const exposition = yield* scrape
        const outcome = (o: string) => Prometheus.value(exposition, "session_runtime_lock_acquire_total", { outcome: o })
        assert.deepStrictEqual([outcome("acquired"), outcome("waited"), outcome("reclaimed"), outcome("timeout")], [
          2,
          2,
          1,
          1
        ])
        assert.strictEqual((yield* (yield* MetricsFromEvents.MetricsFromEvents).tracked).lockWaits, 0)
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_lock_reclaimed_total", { reason: "holder_dead" }),
          1
        )
        assert.strictEqual(Prometheus.value(exposition, "session_runtime_lock_lost_total"), 1)
        assert.strictEqual(Prometheus.value(exposition, "session_runtime_lock_wait_seconds_count"), 5)
        assert.closeTo(Prometheus.value(exposition, "session_runtime_lock_wait_seconds_sum")!, 0.2, 1e-9)
      }).pipe(Effect.provide(stack())))

    it.effect("labels a completed recovery with the trigger of its request, or other when unseen", () =>
      Effect.gen(function*() {
        const completed = (recoveryId: string): Draft => ({
          _tag: "session.recovery.completed",
          sessionKey: key(1),
          recoveryId,
          status: "aborted",
          action: "abort_run",
          reason: "stalled past abort threshold",
          stale: false,
          forced: true,
          durationMs: 15_000
        })
        yield* publish(
          {
            _tag: "session.recovery.requested",
            sessionKey: key(1),
            recoveryId: "r1",
            trigger: "active_abort",
            expectedState: "processing",
            generation: 9,
            allowActiveAbort: true
          },
          completed("r1"),
          completed("never-requested")
        )
        const exposition = yield* scrape
        const labels = { phase: "completed", action: "abort_run", status: "aborted" }
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_recovery_total", { ...labels, trigger: "active_abort" }),
          1
        )
        assert.strictEqual(Prometheus.value(exposition, "session_runtime_recovery_total", { ...labels, trigger: "other" }), 1)
        assert.strictEqual((yield* (yield* MetricsFromEvents.MetricsFromEvents).tracked).recoveries, 0)
      }).pipe(Effect.provide(stack())))

    it.effect("adds the events a subscriber lost to events_dropped_total", () =>
      Effect.gen(function*() {
        yield* publish(
          { _tag: "diagnostic.events.dropped", subscriber: "slow-sink", dropped: 5, totalDropped: 5 },
          { _tag: "diagnostic.events.dropped", subscriber: "slow-sink", dropped: 3, totalDropped: 8 }
        )
        assert.strictEqual(Prometheus.value(yield* scrape, "session_runtime_events_dropped_total"), 8)
      }).pipe(Effect.provide(stack())))
  })

  describe("lossless input", () => {
    it.effect("applies every event as it is published, however far the bus's subscribers fall behind", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.DiagnosticBus
        yield* bus.subscribe({ name: "never-reads" })
        for (let n = 0; n < 1_000; n++) {
          bus.publishUnsafe({
            _tag: "session.lane.admitted",
            sessionKey: key(n % 7),
            turnId: `turn-${n}`,
            admission: "enqueued",
            position: 1
          })
        }
        const stats = yield* bus.stats
        assert.isAbove(stats.dropped, 900, "the bus dropped events for its subscriber")
        assert.strictEqual(
          Prometheus.value(yield* scrape, "session_runtime_turn_admissions_total", { admission: "enqueued" }),
          1_000,
          "the counter saw every event"
        )
      }).pipe(
        Effect.provide(
          MetricsFromEvents.layer().pipe(
            Layer.provideMerge(DiagnosticBus.layer({ capacity: 16 })),
            Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
          )
        )
      ))
  })

  describe("call labels", () => {
    it.effect("labels a finished call with its open marker's tool, through close, partial eviction and lane close", () =>
      Effect.gen(function*() {
        const tracked = Effect.map(MetricsFromEvents.MetricsFromEvents, (m) => m.tracked).pipe(Effect.flatten)
        yield* publish(
          opened(1, "t1", "tool_call", "exec"),
          opened(1, "t2", "tool_call", "exec"),
          opened(1, "m1", "model_call", "openai/gpt-4o"),
          opened(2, "t3", "tool_call", "web_search")
        )
        assert.strictEqual((yield* tracked).markers, 4)
        yield* publish(closed(1, "t1", "tool_call"), closed(9, "unknown-marker", "tool_call"))
        assert.strictEqual((yield* tracked).markers, 3, "a close without a seen open forgets nothing")
        yield* publish({
          _tag: "session.activity.evicted",
          sessionKey: key(1),
          reason: "owner_exited",
          evictedTools: 1,
          evictedModelCalls: 0,
          cutoffSeq: 1
        })
        assert.strictEqual((yield* tracked).markers, 2)
        yield* publish({ _tag: "session.lane.closed", sessionKey: key(1), reason: "shutdown" })
        assert.strictEqual((yield* tracked).markers, 1)
        const exposition = yield* scrape
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_tool_calls_total", { tool: "exec", outcome: "success" }),
          1
        )
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_tool_calls_total", { tool: "other", outcome: "success" }),
          1
        )
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_tool_calls_total", { tool: "exec", outcome: "evicted" }),
          1
        )
      }).pipe(Effect.provide(stack())))

    it.effect("remembers at most maxTrackedMarkers open markers and counts the rest as overflow under other", () =>
      Effect.gen(function*() {
        const metrics = yield* SessionMetrics.SessionMetrics
        const drafts: Array<Draft> = []
        for (let n = 0; n < 50; n++) drafts.push(opened(n, `t${n}`, "tool_call", "exec"))
        for (let n = 0; n < 50; n++) drafts.push(closed(n, `t${n}`, "tool_call"))
        yield* publish(...drafts)
        assert.strictEqual((yield* Metric.value(metrics.seriesOverflow({ metric: "tool_calls_total" }))).count, 40)
        const exposition = yield* scrape
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_tool_calls_total", { tool: "exec", outcome: "success" }),
          10
        )
        assert.strictEqual(
          Prometheus.value(exposition, "session_runtime_tool_calls_total", { tool: "other", outcome: "success" }),
          40
        )
        assert.strictEqual((yield* (yield* MetricsFromEvents.MetricsFromEvents).tracked).markers, 0)
      }).pipe(Effect.provide(stack({ maxTrackedMarkers: 10 }))))
  })

  describe("layerEventLoopGauges", () => {
    it.effect("has the event-loop gauges at 0 from start-up, before any sample", () =>
      Effect.gen(function*() {
        const exposition = yield* scrape
        for (const name of ["p99", "max"]) {
          assert.strictEqual(Prometheus.value(exposition, `session_runtime_event_loop_delay_${name}_seconds`), 0)
        }
        assert.strictEqual(Prometheus.value(exposition, "session_runtime_event_loop_utilization"), 0)
      }).pipe(Effect.provide(stack())))

    it.effect("sets the event-loop gauges from every sample the watchdog takes", () =>
      Effect.gen(function*() {
        const monitor = yield* NodeEventLoopMonitor.EventLoopMonitor
        yield* NodeEventLoopMonitor.TestEventLoopMonitor.set({ p99Ms: 2_500, maxMs: 12_600, utilization: 0.97, intervalMs: 30_000 })
        const sample = yield* monitor.sample
        assert.strictEqual(sample.maxMs, 12_600, "the sample passes through unchanged")
        const exposition = yield* scrape
        assert.strictEqual(Prometheus.value(exposition, "session_runtime_event_loop_delay_p99_seconds"), 2.5)
        assert.strictEqual(Prometheus.value(exposition, "session_runtime_event_loop_delay_max_seconds"), 12.6)
        assert.strictEqual(Prometheus.value(exposition, "session_runtime_event_loop_utilization"), 0.97)
      }).pipe(
        Effect.provide(
          MetricsFromEvents.layerEventLoopGauges.pipe(
            Layer.provideMerge(NodeEventLoopMonitor.layerTest),
            Layer.provideMerge(stack())
          )
        )
      ))
  })

  describe("cardinality", () => {
    it.effect("stays bounded under 10,000 distinct session keys and tool names: overflow moves, series do not", () =>
      Effect.gen(function*() {
        const metrics = yield* SessionMetrics.SessionMetrics
        const subscriber = yield* MetricsFromEvents.MetricsFromEvents
        const session = (n: number): ReadonlyArray<Draft> => [
          { _tag: "session.lane.opened", sessionKey: key(`k${n}`) },
          state(`k${n}`, "processing", n % 3),
          opened(`k${n}`, `call_${n}`, "tool_call", `tool_${n}`),
          closed(`k${n}`, `call_${n}`, "tool_call"),
          { _tag: "session.lane.turn_completed", sessionKey: key(`k${n}`), turnId: `turn-${n}`, outcome: "success", durationMs: n },
          { _tag: "session.lane.closed", sessionKey: key(`k${n}`), reason: n % 2 === 0 ? "idle_ttl" : "shutdown" }
        ]
        const overflow = () => Metric.value(metrics.seriesOverflow({ metric: "tool_calls_total" }))
        const run = (from: number, to: number) =>
          Effect.gen(function*() {
            for (let n = from; n < to; n += 250) {
              const batch: Array<Draft> = []
              for (let i = n; i < Math.min(to, n + 250); i++) batch.push(...session(i))
              yield* publish(...batch)
            }
          })

        yield* run(0, 100)
        const seriesAfter100 = metrics.seriesCount()
        const overflowAfter100 = (yield* overflow()).count
        const textAfter100 = yield* PrometheusEndpoint.format
        yield* run(100, 10_000)
        const text = yield* PrometheusEndpoint.format

        assert.strictEqual(metrics.seriesCount(), seriesAfter100, "no new series")
        assert.strictEqual(text.split("\n").length, textAfter100.split("\n").length, "no new exposition lines")
        assert.strictEqual((yield* overflow()).count - overflowAfter100, 9_900, "every later tool name overflowed")
        assert.strictEqual(metrics.toolCalls.size(), SessionMetrics.defaults.maxLabelValues + 1)
        const tracked = yield* subscriber.tracked
        assert.strictEqual(tracked.markers, 0, "closed lanes leave nothing behind")
        for (const probe of ["user-k9999", "call_9999", "turn-9999", "tool_9999", "agent:main"]) {
          assert.notInclude(text, probe)
        }
        Prometheus.parse(text)
      }).pipe(Effect.provide(stack())), 60_000)

  })
})
