import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import * as Attention from "../src/Attention.ts"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as SessionKey from "../src/SessionKey.ts"

const warnMs = 120_000
const thresholds: Attention.Thresholds = { warnMs }

const view = (overrides: Partial<Attention.SessionView> = {}): Attention.SessionView => ({
  state: "processing",
  queueDepth: 0,
  activeWorkKind: undefined,
  hasOwner: false,
  oldestToolAgeMs: undefined,
  lastProgressAgeMs: undefined,
  lastProgressReason: undefined,
  lastProgressTerminal: false,
  ...overrides
})

const summary = (verdict: Attention.Verdict) => ({
  rule: verdict.evidence.rule,
  classification: verdict.classification,
  reason: verdict.reason,
  recoverable: verdict.recoverable,
  eventType: verdict.eventType
})

const orphanedIdle = view({
  state: "idle",
  queueDepth: 2,
  activeWorkKind: "model_call",
  hasOwner: false,
  lastProgressAgeMs: 130_000
})

describe("Attention", () => {
  describe("classify", () => {
    it("rule 1: an idle session with queued work and an orphaned model call is stuck and recoverable", () => {
      assert.deepStrictEqual(summary(Attention.classify(orphanedIdle, thresholds)), {
        rule: 1,
        classification: "stale_session_state",
        reason: "queued_work_without_active_run",
        recoverable: true,
        eventType: "session.stuck"
      })
    })

    it("rule 1: an orphaned tool call on an idle session with queued work is stuck too, not blocked", () => {
      const verdict = Attention.classify(
        view({
          state: "idle",
          queueDepth: 1,
          activeWorkKind: "tool_call",
          oldestToolAgeMs: 70_201_000,
          lastProgressAgeMs: 70_201_000
        }),
        thresholds
      )
      assert.deepStrictEqual([verdict.evidence.rule, verdict.reason, verdict.recoverable], [
        1,
        "queued_work_without_active_run",
        true
      ])
    })

    it("rule 1 needs every condition: an owner, a processing lane, an empty queue or fresh progress defeat it", () => {
      const defeated = [
        { ...orphanedIdle, hasOwner: true },
        { ...orphanedIdle, state: "processing" as const },
        { ...orphanedIdle, queueDepth: 0 },
        { ...orphanedIdle, lastProgressAgeMs: 1_000 },
        { ...orphanedIdle, lastProgressAgeMs: undefined }
      ]
      for (const v of defeated) {
        assert.notStrictEqual(Attention.classify(v, thresholds).evidence.rule, 1)
      }
    })

    it("rule 2: a tool open and silent past the threshold is blocked_tool_call", () => {
      const verdict = Attention.classify(
        view({ activeWorkKind: "tool_call", hasOwner: true, oldestToolAgeMs: 300_000, lastProgressAgeMs: 300_000 }),
        thresholds
      )
      assert.deepStrictEqual(summary(verdict), {
        rule: 2,
        classification: "blocked_tool_call",
        reason: "blocked_tool_call",
        recoverable: false,
        eventType: "session.stalled"
      })
    })

    it("rule 2 needs both ages stale: a fresh tool with stale progress falls to rule 4", () => {
      const verdict = Attention.classify(
        view({ activeWorkKind: "tool_call", hasOwner: true, oldestToolAgeMs: 5_000, lastProgressAgeMs: 300_000 }),
        thresholds
      )
      assert.deepStrictEqual([verdict.evidence.rule, verdict.reason], [4, "active_work_without_progress"])
    })

    it("rule 2 with a tool that still reports progress is long running, not blocked", () => {
      const verdict = Attention.classify(
        view({ activeWorkKind: "tool_call", hasOwner: true, oldestToolAgeMs: 300_000, lastProgressAgeMs: 2_000 }),
        thresholds
      )
      assert.deepStrictEqual([verdict.evidence.rule, verdict.classification, verdict.reason], [
        5,
        "long_running",
        "active_work"
      ])
    })

    it("rule 3: queued work behind a run whose last progress was terminal is stalled", () => {
      const verdict = Attention.classify(
        view({
          queueDepth: 1,
          activeWorkKind: "embedded_run",
          hasOwner: true,
          lastProgressAgeMs: 5_000,
          lastProgressReason: "run_completed",
          lastProgressTerminal: true
        }),
        thresholds
      )
      assert.deepStrictEqual(summary(verdict), {
        rule: 3,
        classification: "stalled_agent_run",
        reason: "queued_behind_terminal_active_work",
        recoverable: false,
        eventType: "session.stalled"
      })
    })

    it("rule 3 needs queued work and an embedded run", () => {
      const terminal = {
        activeWorkKind: "embedded_run" as const,
        hasOwner: true,
        lastProgressAgeMs: 5_000,
        lastProgressReason: "run_completed",
        lastProgressTerminal: true
      }
      assert.strictEqual(Attention.classify(view({ ...terminal, queueDepth: 0 }), thresholds).evidence.rule, 5)
      assert.strictEqual(
        Attention.classify(view({ ...terminal, queueDepth: 1, activeWorkKind: "model_call" }), thresholds).evidence
          .rule,
        5
      )
    })

    it("rule 4: a processing session with orphaned markers and stale progress is stalled, never recoverable", () => {
      const verdict = Attention.classify(
        { ...orphanedIdle, state: "processing" },
        thresholds
      )
      assert.deepStrictEqual(summary(verdict), {
        rule: 4,
        classification: "stalled_agent_run",
        reason: "active_work_without_progress",
        recoverable: false,
        eventType: "session.stalled"
      })
    })

    it("rule 5: active work with fresh progress is long running, queued or not", () => {
      const busy = view({ activeWorkKind: "model_call", hasOwner: true, lastProgressAgeMs: 1_000 })
      assert.deepStrictEqual(summary(Attention.classify(busy, thresholds)), {
        rule: 5,
        classification: "long_running",
        reason: "active_work",
        recoverable: false,
        eventType: "session.long_running"
      })
      assert.strictEqual(
        Attention.classify({ ...busy, queueDepth: 3 }, thresholds).reason,
        "queued_behind_active_work"
      )
    })

    it("rule 5: active work with no progress ever recorded is not stale", () => {
      const verdict = Attention.classify(view({ activeWorkKind: "embedded_run", hasOwner: true }), thresholds)
      assert.deepStrictEqual([verdict.evidence.rule, verdict.reason], [5, "active_work"])
    })

    it("rule 6: untracked work that keeps making progress is long running", () => {
      const quiet = view({ lastProgressAgeMs: 10_000, lastProgressReason: "stream_delta" })
      assert.deepStrictEqual(summary(Attention.classify(quiet, thresholds)), {
        rule: 6,
        classification: "long_running",
        reason: "untracked_active_progress",
        recoverable: false,
        eventType: "session.long_running"
      })
      assert.strictEqual(
        Attention.classify({ ...quiet, queueDepth: 1 }, thresholds).reason,
        "queued_behind_untracked_active_progress"
      )
    })

    it("rule 7: no work and no fresh progress is stuck, with the reason set by the queue", () => {
      const empty = view({ state: "idle", queueDepth: 2 })
      assert.deepStrictEqual(summary(Attention.classify(empty, thresholds)), {
        rule: 7,
        classification: "stale_session_state",
        reason: "queued_work_without_active_run",
        recoverable: true,
        eventType: "session.stuck"
      })
      const stale = Attention.classify(view({ lastProgressAgeMs: 500_000 }), thresholds)
      assert.deepStrictEqual([stale.evidence.rule, stale.reason], [7, "stale_session_state"])
    })
  })

  describe("thresholds", () => {
    it("an age exactly at the threshold is not stale; one millisecond more is", () => {
      const atWarn = { ...orphanedIdle, lastProgressAgeMs: warnMs }
      assert.strictEqual(Attention.classify(atWarn, thresholds).evidence.rule, 5)
      assert.strictEqual(Attention.classify({ ...atWarn, lastProgressAgeMs: warnMs + 1 }, thresholds).evidence.rule, 1)

      const tool = view({
        activeWorkKind: "tool_call",
        hasOwner: true,
        oldestToolAgeMs: warnMs + 1,
        lastProgressAgeMs: warnMs + 1
      })
      assert.strictEqual(Attention.classify(tool, thresholds).evidence.rule, 2)
      assert.strictEqual(Attention.classify({ ...tool, oldestToolAgeMs: warnMs }, thresholds).evidence.rule, 4)
      assert.strictEqual(Attention.classify({ ...tool, lastProgressAgeMs: warnMs }, thresholds).evidence.rule, 5)
    })

    it("untracked progress exactly at the threshold is still fresh; one millisecond more is stuck", () => {
      assert.strictEqual(Attention.classify(view({ lastProgressAgeMs: warnMs }), thresholds).evidence.rule, 6)
      assert.strictEqual(Attention.classify(view({ lastProgressAgeMs: warnMs + 1 }), thresholds).evidence.rule, 7)
    })

    it("a missing age is neither stale nor fresh", () => {
      // A tool with no known age cannot be blocked; untracked work with no progress is not fresh.
      const tool = view({ activeWorkKind: "tool_call", hasOwner: true, lastProgressAgeMs: 500_000 })
      assert.strictEqual(Attention.classify(tool, thresholds).evidence.rule, 4)
      const orphanedNoProgress = { ...orphanedIdle, lastProgressAgeMs: undefined }
      assert.strictEqual(Attention.classify(orphanedNoProgress, thresholds).evidence.rule, 5)
      assert.strictEqual(Attention.classify(view({ lastProgressAgeMs: undefined }), thresholds).evidence.rule, 7)
      assert.strictEqual(Attention.classify(view({ lastProgressAgeMs: Number.NaN }), thresholds).evidence.rule, 7)
    })
  })

  describe("evidence", () => {
    it("carries the rule, its name, the view and the threshold", () => {
      const verdict = Attention.classify(orphanedIdle, thresholds)
      assert.deepStrictEqual(verdict.evidence, {
        rule: 1,
        ruleName: "orphaned activity",
        inputs: { ...orphanedIdle, warnMs }
      })
    })

    it("renders one line for each rule", () => {
      const lines = [
        orphanedIdle,
        view({
          activeWorkKind: "tool_call",
          hasOwner: true,
          oldestToolAgeMs: 300_000,
          lastProgressAgeMs: 300_000,
          lastProgressReason: "tool_started"
        }),
        view({
          queueDepth: 1,
          activeWorkKind: "embedded_run",
          hasOwner: true,
          lastProgressAgeMs: 5_000,
          lastProgressReason: "run_completed",
          lastProgressTerminal: true
        }),
        view({ activeWorkKind: "model_call", lastProgressAgeMs: 200_000 }),
        view({ queueDepth: 1, activeWorkKind: "model_call", hasOwner: true, lastProgressAgeMs: 3_000 }),
        view({ lastProgressAgeMs: 450 }),
        view({ state: "idle", queueDepth: 2 })
      ].map((v) => Attention.renderEvidence(Attention.classify(v, thresholds).evidence))
      assert.deepStrictEqual(lines, [
        "rule 1 orphaned activity: idle, queue 2, model_call open with no owner, progress 130s ago (stale > 120s warn)",
        "rule 2 blocked tool: processing, queue 0, tool_call open 300s (stale > 120s warn) with an owner, " +
        "progress 300s ago via tool_started (stale > 120s warn)",
        "rule 3 queued behind terminal run: processing, queue 1, embedded_run open with an owner, " +
        "progress 5s ago via run_completed (terminal) (fresh <= 120s warn)",
        "rule 4 active work without progress: processing, queue 0, model_call open with no owner, " +
        "progress 200s ago (stale > 120s warn)",
        "rule 5 active work: processing, queue 1, model_call open with an owner, progress 3s ago (fresh <= 120s warn)",
        "rule 6 untracked progress: processing, queue 0, no tracked work, progress 450ms ago (fresh <= 120s warn)",
        "rule 7 no active run: idle, queue 2, no tracked work, no progress recorded (not stale)"
      ])
      for (const line of lines) assert.notInclude(line, "\n")
    })

    it("renders an age just past the threshold so that it does not read as equal to it", () => {
      const line = Attention.renderEvidence(
        Attention.classify({ ...orphanedIdle, lastProgressAgeMs: warnMs + 1 }, thresholds).evidence
      )
      assert.include(line, "progress 120.001s ago (stale > 120s warn)")
    })

    it("renders a tool with no known age", () => {
      const line = Attention.renderEvidence(
        Attention.classify(view({ activeWorkKind: "tool_call", hasOwner: true }), thresholds).evidence
      )
      assert.strictEqual(
        line,
        "rule 5 active work: processing, queue 0, tool_call open (age unknown) with an owner, " +
          "no progress recorded (not stale)"
      )
    })
  })

  describe("fromSnapshot", () => {
    it("reads the lane and the activity snapshot", () => {
      const sessionKey = SessionKey.makeUnsafe("agent:main:telegram:direct:42")
      const tool: ActivityTracker.MarkerView = {
        markerId: "m1",
        runId: "r1",
        kind: "tool_call",
        source: "reported",
        name: "native_shell",
        ageMs: 70_000,
        sinceProgressMs: 70_000,
        owned: false
      }
      const snapshot: ActivityTracker.ActivitySnapshot = {
        sessionKey,
        activeWorkKind: "tool_call",
        hasOwner: false,
        runs: [],
        openTools: 1,
        openModelCalls: 0,
        oldestTool: tool,
        oldestModelCall: undefined,
        markers: [tool],
        lastProgressAgeMs: 60_000,
        lastProgressReason: "tool_started",
        lastProgressTerminal: false
      }
      assert.deepStrictEqual(Attention.fromSnapshot({ state: "idle", queueDepth: 1 }, snapshot), {
        state: "idle",
        queueDepth: 1,
        activeWorkKind: "tool_call",
        hasOwner: false,
        oldestToolAgeMs: 70_000,
        lastProgressAgeMs: 60_000,
        lastProgressReason: "tool_started",
        lastProgressTerminal: false
      })
    })
  })

  describe("table", () => {
    it("lists every classification and reason exactly once", () => {
      assert.deepStrictEqual(
        Attention.table.map((row) => row.classification),
        ["long_running", "blocked_tool_call", "stalled_agent_run", "stale_session_state"]
      )
      const reasons = Attention.table.flatMap((row) => row.reasons)
      assert.strictEqual(new Set(reasons).size, reasons.length)
      assert.strictEqual(reasons.length, 9)
      assert.deepStrictEqual(
        Attention.table.filter((row) => row.recoverable).map((row) => row.classification),
        ["stale_session_state"]
      )
    })
  })

  describe("properties", () => {
    const age = fc.option(
      fc.oneof(
        fc.integer({ min: 0, max: 400_000 }),
        fc.constantFrom(0, warnMs - 1, warnMs, warnMs + 1, Number.POSITIVE_INFINITY, Number.NaN)
      ),
      { nil: undefined }
    )
    const arbitraryView: fc.Arbitrary<Attention.SessionView> = fc.record({
      state: fc.constantFrom("idle" as const, "processing" as const),
      queueDepth: fc.nat({ max: 5 }),
      activeWorkKind: fc.constantFrom(undefined, "tool_call" as const, "model_call" as const, "embedded_run" as const),
      hasOwner: fc.boolean(),
      oldestToolAgeMs: age,
      lastProgressAgeMs: age,
      lastProgressReason: fc.constantFrom(undefined, "tool_started", "stream_delta", "run_completed"),
      lastProgressTerminal: fc.boolean()
    })
    const arbitraryWarn = fc.oneof(fc.constant(warnMs), fc.integer({ min: 1_000, max: 86_400_000 }))

    it("classify is total and every verdict is a row of the table, with the event of its row", () => {
      fc.assert(
        fc.property(arbitraryView, arbitraryWarn, (v, warn) => {
          const verdict = Attention.classify(v, { warnMs: warn })
          const row = Attention.table.find((r) => r.classification === verdict.classification)
          assert.isDefined(row)
          assert.include(row!.reasons, verdict.reason)
          assert.strictEqual(verdict.recoverable, row!.recoverable)
          assert.strictEqual(verdict.eventType, row!.eventType)
          assert.strictEqual(verdict.evidence.ruleName, Attention.ruleNames[verdict.evidence.rule])
          assert.deepStrictEqual(verdict.evidence.inputs, { ...v, warnMs: warn })
          const line = Attention.renderEvidence(verdict.evidence)
          assert.isTrue(line.startsWith(`rule ${verdict.evidence.rule} `))
          assert.notInclude(line, "\n")
        }),
        { numRuns: 2_000 }
      )
    })

    it("a verdict is re-derived from its evidence alone", () => {
      fc.assert(
        fc.property(arbitraryView, arbitraryWarn, (v, warn) => {
          const verdict = Attention.classify(v, { warnMs: warn })
          const { warnMs: w, ...inputs } = verdict.evidence.inputs
          assert.deepStrictEqual(Attention.classify(inputs, { warnMs: w }), verdict)
        })
      )
    })

    it("a recoverable verdict never has an owner running tracked work", () => {
      fc.assert(
        fc.property(arbitraryView, arbitraryWarn, (v, warn) => {
          const verdict = Attention.classify(v, { warnMs: warn })
          if (verdict.recoverable && v.activeWorkKind !== undefined) {
            assert.isFalse(v.hasOwner)
            assert.strictEqual(v.state, "idle")
          }
        }),
        { numRuns: 2_000 }
      )
    })
  })
})
