import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import type * as ActivityTracker from "../../src/ActivityTracker.ts"
import type { Classification } from "../../src/DiagnosticEvent.ts"
import * as Policy from "../../src/internal/watchdogPolicy.ts"
import * as SessionKey from "../../src/SessionKey.ts"

const abortMs = 360_000

const inputs = (overrides: Partial<Policy.AbortInputs> = {}): Policy.AbortInputs => ({
  activeWorkKind: "tool_call",
  hasOwner: true,
  ownedWork: true,
  progressAgeMs: abortMs,
  toolAgeMs: abortMs,
  runAgeMs: abortMs,
  ...overrides
})

const blocked = { classification: "blocked_tool_call" } as const
const stalled = { classification: "stalled_agent_run" } as const

describe("watchdogPolicy", () => {
  describe("resolveThresholds", () => {
    it("uses warn 120s, abort 5min and a 30s heartbeat by default, with no notes", () => {
      assert.deepStrictEqual(Policy.resolveThresholds(), {
        warnMs: 120_000,
        abortMs: 360_000,
        intervalMs: 30_000,
        notes: []
      })
    })

    it("derives the default abort as max(5 min, 3 × warn)", () => {
      assert.strictEqual(Policy.resolveThresholds({ warnMs: 1_000 }).abortMs, 300_000)
      assert.strictEqual(Policy.resolveThresholds({ warnMs: 100_000 }).abortMs, 300_000)
      assert.strictEqual(Policy.resolveThresholds({ warnMs: 200_000 }).abortMs, 600_000)
    })

    it("accepts warn at both ends of its range", () => {
      assert.deepStrictEqual(Policy.resolveThresholds({ warnMs: 1_000 }).warnMs, 1_000)
      assert.deepStrictEqual(Policy.resolveThresholds({ warnMs: 86_400_000 }).warnMs, 86_400_000)
    })

    it("replaces an invalid warn with the default and says what was ignored and why", () => {
      const cases: ReadonlyArray<readonly [number, string]> = [
        [999, "warnMs 999 ignored: below the minimum 1s; using the default 120s"],
        [86_400_001, "warnMs 86400001 ignored: above the maximum 86400s (24h); using the default 120s"],
        [Number.NaN, "warnMs NaN ignored: not a number; using the default 120s"],
        [-5, "warnMs -5 ignored: negative; using the default 120s"],
        [0, "warnMs 0 ignored: zero; using the default 120s"],
        [Number.POSITIVE_INFINITY, "warnMs Infinity ignored: not finite; using the default 120s"]
      ]
      for (const [warnMs, note] of cases) {
        const resolved = Policy.resolveThresholds({ warnMs })
        assert.deepStrictEqual([resolved.warnMs, resolved.abortMs, resolved.notes], [120_000, 360_000, [note]])
      }
    })

    it("keeps a configured abort at or above warn", () => {
      assert.deepStrictEqual(Policy.resolveThresholds({ warnMs: 10_000, abortMs: 10_000 }), {
        warnMs: 10_000,
        abortMs: 10_000,
        intervalMs: 30_000,
        notes: []
      })
      assert.strictEqual(Policy.resolveThresholds({ abortMs: 900_000 }).abortMs, 900_000)
    })

    it("raises a configured abort below warn to warn, with a note", () => {
      const resolved = Policy.resolveThresholds({ warnMs: 60_000, abortMs: 30_000 })
      assert.deepStrictEqual([resolved.warnMs, resolved.abortMs], [60_000, 60_000])
      assert.deepStrictEqual(resolved.notes, [
        "abortMs 30000 raised to the warn threshold 60s: abort is never below warn"
      ])
    })

    it("replaces an unusable abort with the default derived from the resolved warn", () => {
      const resolved = Policy.resolveThresholds({ warnMs: 200_000, abortMs: Number.NaN })
      assert.deepStrictEqual([resolved.warnMs, resolved.abortMs], [200_000, 600_000])
      assert.deepStrictEqual(resolved.notes, [
        "abortMs NaN ignored: not a number; using the default max(5min, 3 × warn) = 600s"
      ])
      assert.strictEqual(Policy.resolveThresholds({ abortMs: -1 }).abortMs, 360_000)
    })

    it("measures a configured abort against the default warn when the warn was invalid", () => {
      const resolved = Policy.resolveThresholds({ warnMs: 5, abortMs: 60_000 })
      assert.deepStrictEqual([resolved.warnMs, resolved.abortMs], [120_000, 120_000])
      assert.strictEqual(resolved.notes.length, 2)
    })

    it("validates the heartbeat interval", () => {
      assert.strictEqual(Policy.resolveThresholds({ intervalMs: 5_000 }).intervalMs, 5_000)
      const resolved = Policy.resolveThresholds({ intervalMs: -1 })
      assert.deepStrictEqual([resolved.intervalMs, resolved.notes], [30_000, [
        "intervalMs -1 ignored: negative; using the default 30s"
      ]])
      assert.strictEqual(Policy.resolveThresholds({ intervalMs: 86_400_001 }).intervalMs, 30_000)
    })

    it("always yields warn in range and abort at or above warn, whatever the input", () => {
      const anyNumber = fc.option(
        fc.oneof(fc.double(), fc.integer({ min: -10, max: 100_000_000 })),
        { nil: undefined }
      )
      fc.assert(
        fc.property(anyNumber, anyNumber, anyNumber, (warnMs, abortMs, intervalMs) => {
          const resolved = Policy.resolveThresholds({ warnMs, abortMs, intervalMs })
          assert.isTrue(resolved.warnMs >= 1_000 && resolved.warnMs <= 86_400_000)
          assert.isTrue(resolved.abortMs >= resolved.warnMs && Number.isFinite(resolved.abortMs))
          assert.isTrue(resolved.intervalMs > 0 && Number.isFinite(resolved.intervalMs))
          if (warnMs !== undefined && resolved.warnMs !== warnMs) assert.isTrue(resolved.notes.length > 0)
        }),
        { numRuns: 1_000 }
      )
    })
  })

  describe("shouldWarn", () => {
    const warnMs = 120_000

    it("warns about a long-running session first when its age passes warn, not at it", () => {
      assert.deepStrictEqual(Policy.shouldWarn(undefined, warnMs, warnMs, "long_running"), {
        warn: false,
        nextAtMs: warnMs
      })
      assert.deepStrictEqual(Policy.shouldWarn(undefined, warnMs + 1, warnMs, "long_running"), {
        warn: true,
        nextAtMs: 2 * (warnMs + 1)
      })
    })

    it("backs off to max(last + warn, 2 × last)", () => {
      // last 150s: max(270s, 300s) = 300s
      assert.deepStrictEqual(Policy.shouldWarn(150_000, 299_999, warnMs, "stale_session_state"), {
        warn: false,
        nextAtMs: 300_000
      })
      assert.deepStrictEqual(Policy.shouldWarn(150_000, 300_000, warnMs, "stale_session_state"), {
        warn: true,
        nextAtMs: 600_000
      })
      // with a short last warning, last + warn dominates: last 10s, warn 120s → 130s
      assert.deepStrictEqual(Policy.shouldWarn(10_000, 129_999, warnMs, "long_running").warn, false)
      assert.deepStrictEqual(Policy.shouldWarn(10_000, 130_000, warnMs, "long_running").warn, true)
    })

    it("warns about stalled sessions on every tick", () => {
      for (const classification of ["blocked_tool_call", "stalled_agent_run"] as const) {
        assert.isTrue(Policy.shouldWarn(300_000, 300_001, warnMs, classification).warn)
        assert.isTrue(Policy.shouldWarn(undefined, 1_000, warnMs, classification).warn)
      }
    })

    it("forgets a warning from an earlier episode once the age drops below it", () => {
      assert.deepStrictEqual(Policy.shouldWarn(600_000, 130_000, warnMs, "long_running"), {
        warn: true,
        nextAtMs: 260_000
      })
    })

    const classifications: ReadonlyArray<Classification> = ["long_running", "stale_session_state"]

    it("back-off property: warning ages strictly increase, each at or past max(prev + warn, 2 × prev)", () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1_000, max: 3_600_000 }),
          fc.array(fc.integer({ min: 1, max: 400_000 }), { minLength: 1, maxLength: 200 }),
          fc.constantFrom(...classifications),
          (warn, steps, classification) => {
            let age = 0
            let last: number | undefined
            const warnings: Array<number> = []
            for (const step of steps) {
              age += step
              const decision = Policy.shouldWarn(last, age, warn, classification)
              if (decision.warn) {
                warnings.push(age)
                last = age
              }
              // The announced next warning always lies ahead of the last one.
              if (last !== undefined) assert.isTrue(decision.nextAtMs > last)
            }
            if (warnings.length > 0) assert.isTrue(warnings[0]! > warn)
            for (let i = 1; i < warnings.length; i++) {
              const prev = warnings[i - 1]!
              const current = warnings[i]!
              assert.isTrue(current > prev)
              assert.isTrue(current >= prev + warn)
              assert.isTrue(current >= 2 * prev)
            }
          }
        ),
        { numRuns: 500 }
      )
    })

    it("back-off property: no due warning is skipped", () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1_000, max: 3_600_000 }),
          fc.array(fc.integer({ min: 1, max: 400_000 }), { minLength: 1, maxLength: 200 }),
          (warn, steps) => {
            let age = 0
            let last: number | undefined
            for (const step of steps) {
              age += step
              const due = last === undefined ? age > warn : age >= Policy.nextWarningAt(last, warn)
              const decision = Policy.shouldWarn(last, age, warn, "long_running")
              assert.strictEqual(decision.warn, due)
              if (decision.warn) last = age
            }
          }
        ),
        { numRuns: 500 }
      )
    })
  })

  describe("activeAbortEligibility", () => {
    it("aborts a blocked tool held by a live owner exactly at the threshold, not one millisecond before", () => {
      assert.deepStrictEqual(
        Policy.activeAbortEligibility(
          blocked,
          inputs({ toolAgeMs: abortMs - 1, progressAgeMs: abortMs - 1 }),
          abortMs,
          false
        ),
        { eligible: false, reason: "below_abort_threshold", target: "blocked_tool", ageMs: abortMs - 1 }
      )
      assert.deepStrictEqual(Policy.activeAbortEligibility(blocked, inputs(), abortMs, false), {
        eligible: true,
        reason: "blocked_tool",
        target: "blocked_tool",
        ageMs: abortMs
      })
    })

    it("measures a tool by the lesser of its age and the time since progress", () => {
      const result = Policy.activeAbortEligibility(
        blocked,
        inputs({ toolAgeMs: 900_000, progressAgeMs: 200_000 }),
        abortMs,
        false
      )
      assert.deepStrictEqual([result.eligible, result.ageMs], [false, 200_000])
    })

    it("never aborts a tool whose marker no live owner holds (a leaked marker)", () => {
      assert.deepStrictEqual(
        Policy.activeAbortEligibility(blocked, inputs({ ownedWork: false, toolAgeMs: 70_201_000 }), abortMs, false),
        { eligible: false, reason: "work_not_owned", target: "blocked_tool", ageMs: undefined }
      )
    })

    it("never aborts without a live owner", () => {
      for (const kind of ["tool_call", "model_call", "embedded_run"] as const) {
        const result = Policy.activeAbortEligibility(
          stalled,
          inputs({ activeWorkKind: kind, hasOwner: false, ownedWork: false }),
          abortMs,
          false
        )
        assert.deepStrictEqual([result.eligible, result.reason], [false, "no_live_owner"])
      }
    })

    it("aborts a stalled model call held by a live owner once it has been silent for the abort threshold", () => {
      const model = inputs({ activeWorkKind: "model_call", toolAgeMs: undefined })
      assert.deepStrictEqual(Policy.activeAbortEligibility(stalled, model, abortMs, false), {
        eligible: true,
        reason: "stalled_model_call",
        target: "stalled_model_call",
        ageMs: abortMs
      })
      assert.strictEqual(
        Policy.activeAbortEligibility(stalled, { ...model, progressAgeMs: abortMs - 1 }, abortMs, false).reason,
        "below_abort_threshold"
      )
      assert.strictEqual(
        Policy.activeAbortEligibility(stalled, { ...model, ownedWork: false }, abortMs, false).reason,
        "work_not_owned"
      )
    })

    it("aborts a stalled run, measured by progress or, with none ever, by the run's age", () => {
      const run = inputs({ activeWorkKind: "embedded_run", toolAgeMs: undefined })
      assert.deepStrictEqual(Policy.activeAbortEligibility(stalled, run, abortMs, false).reason, "stalled_run")
      const silent = { ...run, progressAgeMs: undefined, runAgeMs: abortMs + 5 }
      assert.deepStrictEqual(Policy.activeAbortEligibility(stalled, silent, abortMs, false), {
        eligible: true,
        reason: "stalled_run",
        target: "stalled_run",
        ageMs: abortMs + 5
      })
      assert.strictEqual(
        Policy.activeAbortEligibility(stalled, { ...silent, runAgeMs: undefined }, abortMs, false).reason,
        "age_unknown"
      )
    })

    it("never aborts long-running or stuck sessions", () => {
      assert.strictEqual(
        Policy.activeAbortEligibility({ classification: "long_running" }, inputs(), abortMs, false).reason,
        "not_stalled"
      )
      assert.strictEqual(
        Policy.activeAbortEligibility({ classification: "stale_session_state" }, inputs(), abortMs, false).reason,
        "recoverable_without_abort"
      )
    })

    it("takes no abort when the process is starved, and says the abort was otherwise due", () => {
      assert.deepStrictEqual(Policy.activeAbortEligibility(blocked, inputs(), abortMs, true), {
        eligible: false,
        reason: "starved",
        target: "blocked_tool",
        ageMs: abortMs
      })
    })

    it("property: eligible only for stalled verdicts, with a live owner, past the threshold, not starved", () => {
      const age = fc.option(fc.integer({ min: 0, max: 1_000_000 }), { nil: undefined })
      fc.assert(
        fc.property(
          fc.constantFrom<Classification>(
            "long_running",
            "blocked_tool_call",
            "stalled_agent_run",
            "stale_session_state"
          ),
          fc.record({
            activeWorkKind: fc.constantFrom(
              undefined,
              "tool_call" as const,
              "model_call" as const,
              "embedded_run" as const
            ),
            hasOwner: fc.boolean(),
            ownedWork: fc.boolean(),
            progressAgeMs: age,
            toolAgeMs: age,
            runAgeMs: age
          }),
          fc.integer({ min: 1_000, max: 1_000_000 }),
          fc.boolean(),
          (classification, abortInputs, threshold, starved) => {
            const result = Policy.activeAbortEligibility({ classification }, abortInputs, threshold, starved)
            if (result.eligible) {
              assert.include(["blocked_tool_call", "stalled_agent_run"], classification)
              assert.isTrue(abortInputs.hasOwner)
              assert.isFalse(starved)
              assert.isTrue(result.ageMs! >= threshold)
              if (result.target !== "stalled_run") assert.isTrue(abortInputs.ownedWork)
              assert.strictEqual(result.reason, result.target)
            }
          }
        ),
        { numRuns: 2_000 }
      )
    })
  })

  describe("abortInputsOf", () => {
    it("reads ownership of the oldest marker of the active kind", () => {
      const sessionKey = SessionKey.makeUnsafe("agent:main:telegram:direct:42")
      const leaked: ActivityTracker.MarkerView = {
        markerId: "m1",
        runId: "ended-run",
        kind: "tool_call",
        source: "reported",
        name: "native_shell",
        ageMs: 70_201_000,
        sinceProgressMs: 70_201_000,
        owned: false
      }
      const snapshot: ActivityTracker.ActivitySnapshot = {
        sessionKey,
        activeWorkKind: "tool_call",
        hasOwner: true,
        runs: [{ runId: "r2", parentRunId: undefined, ageMs: 4_000 }, {
          runId: "r3",
          parentRunId: "r2",
          ageMs: 2_000
        }],
        openTools: 1,
        openModelCalls: 0,
        oldestTool: leaked,
        oldestModelCall: undefined,
        markers: [leaked],
        lastProgressAgeMs: 1_000,
        lastProgressReason: "model_delta",
        lastProgressTerminal: false
      }
      assert.deepStrictEqual(Policy.abortInputsOf(snapshot), {
        activeWorkKind: "tool_call",
        hasOwner: true,
        ownedWork: false,
        progressAgeMs: 1_000,
        toolAgeMs: 70_201_000,
        runAgeMs: 4_000
      })
    })
  })

  describe("isStarved", () => {
    const quiet = { p99Ms: 20, maxMs: 40, utilization: 0.3 }

    it("a quiet reading is not starved", () => {
      assert.deepStrictEqual(Policy.isStarved(quiet), { starved: false, reasons: [] })
    })

    it("p99 or max delay at 1s, or utilisation at 0.95, is starved, with every reason", () => {
      assert.deepStrictEqual(Policy.isStarved({ ...quiet, p99Ms: 1_000 }).reasons, ["event_loop_delay_p99"])
      assert.deepStrictEqual(Policy.isStarved({ ...quiet, maxMs: 1_000 }).reasons, ["event_loop_delay_max"])
      assert.deepStrictEqual(Policy.isStarved({ ...quiet, utilization: 0.95 }).reasons, ["event_loop_utilization"])
      assert.deepStrictEqual(Policy.isStarved({ p99Ms: 2_500, maxMs: 12_600, utilization: 0.99 }), {
        starved: true,
        reasons: ["event_loop_delay_p99", "event_loop_delay_max", "event_loop_utilization"]
      })
      assert.isFalse(Policy.isStarved({ p99Ms: 999, maxMs: 999, utilization: 0.949 }).starved)
    })

    it("takes configured limits", () => {
      assert.deepStrictEqual(Policy.isStarved(quiet, { maxMs: 40 }).reasons, ["event_loop_delay_max"])
      assert.isFalse(Policy.isStarved({ ...quiet, utilization: 0.97 }, { utilization: 0.99 }).starved)
    })
  })
})
