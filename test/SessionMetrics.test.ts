import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import * as fc from "fast-check"
import * as PrometheusEndpoint from "../src/PrometheusEndpoint.ts"
import * as SessionMetrics from "../src/SessionMetrics.ts"
import * as Prometheus from "./utils/prometheus.ts"

const isolated = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.provideService(self, Metric.MetricRegistry, new Map())

const labelsOf = (metric: { readonly id: string }) => Metric.snapshot.pipe(
  Effect.map((all) => all.filter((s) => s.id === metric.id).map((s) => s.attributes ?? {}))
)

const overflowCount = (metrics: SessionMetrics.Metrics, metric: string) =>
  Metric.value(metrics.seriesOverflow({ metric })).pipe(Effect.map((s) => s.count))

describe("SessionMetrics", () => {
  describe("make", () => {
    it.effect("names every metric <prefix>_<noun>_<unit>, session_runtime by default", () =>
      Effect.gen(function*() {
        const byDefault = yield* SessionMetrics.make()
        assert.strictEqual(byDefault.attention.id, "session_runtime_attention_total")
        assert.strictEqual(byDefault.lockWaitSeconds.id, "session_runtime_lock_wait_seconds")
        assert.strictEqual(byDefault.sessions.id, "session_runtime_sessions")
        assert.strictEqual(byDefault.eventLoopDelayP99Seconds.id, "session_runtime_event_loop_delay_p99_seconds")
        const custom = yield* SessionMetrics.make({ prefix: "gateway" })
        assert.strictEqual(custom.recovery.id, "gateway_recovery_total")
        const bare = yield* SessionMetrics.make({ prefix: "" })
        assert.strictEqual(bare.queueDepth.id, "queue_depth")
      }))

    it.effect("rejects bad options with a typed error that names the option and the rule", () =>
      Effect.gen(function*() {
        const prefix = yield* Effect.flip(SessionMetrics.make({ prefix: "9 lives" }))
        assert.strictEqual(prefix._tag, "InvalidMetricsOptions")
        assert.strictEqual(prefix.option, "prefix")
        assert.include(prefix.message, "[a-zA-Z_:]")
        const series = yield* Effect.flip(SessionMetrics.make({ maxSeriesPerMetric: 0 }))
        assert.strictEqual(series.option, "maxSeriesPerMetric")
        const values = yield* Effect.flip(SessionMetrics.make({ maxLabelValues: 1.5 }))
        assert.strictEqual(values.option, "maxLabelValues")
        assert.throws(() => SessionMetrics.makeUnsafe({ prefix: "a-b" }), /Invalid metrics option prefix/)
      }))
  })

  describe("labels", () => {
    it.effect("turns a value outside a closed domain into other, without counting an overflow", () =>
      Effect.gen(function*() {
        const metrics = SessionMetrics.makeUnsafe()
        yield* Metric.update(metrics.attention({ classification: "agent:main:secret", reason: "active_work" }), 1)
        yield* Metric.update(metrics.lockAcquire({ outcome: "/var/lock/x" }), 1)
        assert.deepStrictEqual(yield* labelsOf(metrics.attention), [{ classification: "other", reason: "active_work" }])
        assert.deepStrictEqual(yield* labelsOf(metrics.lockAcquire), [{ outcome: "other" }])
        assert.strictEqual(yield* overflowCount(metrics, "attention_total"), 0)
      }).pipe(isolated))

    it.effect("learns open label values up to the cap, then folds into other and counts the overflow", () =>
      Effect.gen(function*() {
        const metrics = SessionMetrics.makeUnsafe({ maxLabelValues: 2 })
        for (const tool of ["exec", "read_file", "exec", "web_search", "browser"]) {
          yield* Metric.update(metrics.toolCalls({ tool, outcome: "success" }), 1)
        }
        const counts = yield* Effect.forEach(["exec", "read_file", "other"], (tool) =>
          Metric.value(metrics.toolCalls({ tool, outcome: "success" })).pipe(Effect.map((s) => s.count)))
        // `other` holds web_search and browser; reading it by name `other` counts nothing extra
        assert.deepStrictEqual(counts, [2, 1, 2])
        assert.strictEqual(yield* overflowCount(metrics, "tool_calls_total"), 2)
      }).pipe(isolated))

    it.effect("never learns a value that does not look like an identifier (paths, sentences, long strings)", () =>
      Effect.gen(function*() {
        const metrics = SessionMetrics.makeUnsafe()
        const bad = ["/home/user/.ssh/id_rsa", "C:\\temp\\x", "two words", "x".repeat(65), "", "tool\n"]
        for (const tool of bad) yield* Metric.update(metrics.toolCalls({ tool, outcome: "success" }), 1)
        assert.deepStrictEqual(yield* labelsOf(metrics.toolCalls), [{ tool: "other", outcome: "success" }])
        assert.strictEqual(yield* overflowCount(metrics, "tool_calls_total"), 0)
      }).pipe(isolated))

    it.effect("caps the series of one metric and sends the rest to the all-other series", () =>
      Effect.gen(function*() {
        const metrics = SessionMetrics.makeUnsafe({ maxSeriesPerMetric: 3 })
        const reasons = SessionMetrics.domains.attentionReason
        for (const reason of reasons) {
          yield* Metric.update(metrics.attention({ classification: "long_running", reason }), 1)
        }
        assert.strictEqual(metrics.attention.size(), 4, "three series and the all-other one")
        const labels = yield* labelsOf(metrics.attention)
        assert.deepInclude(labels, { classification: "other", reason: "other" })
        const folded = yield* Metric.value(metrics.attention({ classification: "other", reason: "other" }))
        assert.strictEqual(folded.count, reasons.length - 3)
        assert.strictEqual(yield* overflowCount(metrics, "attention_total"), reasons.length - 3)
      }).pipe(isolated))

    it.effect("keeps every label bounded whatever values are thrown at it", () =>
      Effect.gen(function*() {
        const maxSeries = 8
        const maxLabelValues = 4
        const value = fc.oneof(
          fc.string({ maxLength: 80 }),
          fc.constantFrom(...SessionMetrics.domains.attentionReason, ...SessionMetrics.domains.outcome, "other"),
          fc.stringMatching(/^[a-z_]{1,10}$/)
        )
        fc.assert(
          fc.property(fc.array(fc.tuple(value, value), { maxLength: 300 }), (pairs) => {
            const registry = new Map()
            const metrics = SessionMetrics.makeUnsafe({ maxSeriesPerMetric: maxSeries, maxLabelValues })
            Effect.runSync(Effect.gen(function*() {
              for (const [a, b] of pairs) {
                yield* Metric.update(metrics.attention({ classification: a, reason: b }), 1)
                yield* Metric.update(metrics.toolCalls({ tool: a, outcome: b }), 1)
                yield* Metric.update(metrics.modelCalls({ provider: b, outcome: a }), 1)
              }
            }).pipe(Effect.provideService(Metric.MetricRegistry, registry)))
            for (const family of [metrics.attention, metrics.toolCalls, metrics.modelCalls]) {
              if (family.size() > maxSeries + 1) return false
            }
            const tools = new Set(
              [...registry.values()].filter((m) => m.id === metrics.toolCalls.id).map((m) => m.attributes.tool)
            )
            tools.delete("other")
            return tools.size <= maxLabelValues && [...tools].every((t) => /^[A-Za-z0-9_.:-]{1,64}$/.test(t))
          }),
          { numRuns: 100 }
        )
      }))
    it.effect("counts every update where an uncached model of the caps says, however often values repeat", () =>
      Effect.gen(function*() {
        const maxSeries = 6
        const maxLabelValues = 3
        const tool = fc.constantFrom("exec", "read", "write", "grep", "other", "a path/x", "web", "")
        const outcome = fc.constantFrom(...SessionMetrics.domains.callOutcome, "bogus")
        fc.assert(
          fc.property(fc.array(fc.tuple(tool, outcome), { maxLength: 200 }), (updates) => {
            // The model: learned tools in first-seen order, series in first-seen order, both capped.
            const learned = new Set<string>()
            const series = new Set<string>()
            const expected = new Map<string, number>()
            let overflow = 0
            for (const [t, o] of updates) {
              let folded = false
              let tLabel = "other"
              if (learned.has(t)) tLabel = t
              else if (t !== "other" && /^[A-Za-z0-9_.:-]{1,64}$/.test(t)) {
                if (learned.size < maxLabelValues) {
                  learned.add(t)
                  tLabel = t
                } else folded = true
              }
              const oLabel = (SessionMetrics.domains.callOutcome as ReadonlyArray<string>).includes(o) ? o : "other"
              let key = `${tLabel}/${oLabel}`
              if (!series.has(key) && series.size >= maxSeries && key !== "other/other") {
                key = "other/other"
                folded = true
              } else series.add(key)
              expected.set(key, (expected.get(key) ?? 0) + 1)
              if (folded) overflow++
            }
            const registry = new Map()
            const metrics = SessionMetrics.makeUnsafe({ maxSeriesPerMetric: maxSeries, maxLabelValues })
            Effect.runSync(Effect.gen(function*() {
              for (const [t, o] of updates) yield* Metric.update(metrics.toolCalls({ tool: t, outcome: o }), 1)
            }).pipe(Effect.provideService(Metric.MetricRegistry, registry)))
            const actual = new Map<string, number>()
            for (const m of registry.values()) {
              if (m.id === metrics.toolCalls.id) {
                const count = m.hooks.get().count as number
                if (count > 0) actual.set(`${m.attributes.tool}/${m.attributes.outcome}`, count)
              }
            }
            const overflowSeries = [...registry.values()].find((m) =>
              m.id === metrics.seriesOverflow.id && m.attributes.metric === "tool_calls_total"
            )
            return JSON.stringify([...actual].sort()) === JSON.stringify([...expected].sort()) &&
              ((overflowSeries?.hooks.get().count as number | undefined) ?? 0) === overflow
          }),
          { numRuns: 300 }
        )
      }))
  })

  describe("export", () => {
    it.effect("renders HELP and TYPE lines through the Prometheus formatter", () =>
      Effect.gen(function*() {
        const metrics = SessionMetrics.makeUnsafe({ prefix: "gw" })
        yield* Metric.update(metrics.lockWaitSeconds, 0.02)
        yield* Metric.update(metrics.lockAcquire({ outcome: "acquired" }), 1)
        const exposition = Prometheus.parse(yield* PrometheusEndpoint.format)
        const wait = exposition.families.get("gw_lock_wait_seconds")
        assert.strictEqual(wait?.type, "histogram")
        assert.include(wait?.help, "acquire")
        assert.strictEqual(Prometheus.value(exposition, "gw_lock_wait_seconds_bucket", { le: "0.025" }), 1)
        assert.strictEqual(Prometheus.value(exposition, "gw_lock_acquire_total", { outcome: "acquired" }), 1)
      }).pipe(isolated))
  })
})
