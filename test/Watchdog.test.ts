import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { ActivityTracker, CurrentRun } from "../src/ActivityTracker.ts"
import * as NodeEventLoopMonitor from "../src/NodeEventLoopMonitor.ts"
import * as Recovery from "../src/Recovery.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as Watchdog from "../src/Watchdog.ts"
import { collectEvents } from "./utils/events.ts"
import { coreLayer } from "./utils/runtime.ts"

const wedged = SessionKey.makeUnsafe("agent:main:wedged")
const other = SessionKey.makeUnsafe("agent:main:other")
const healthy = SessionKey.makeUnsafe("agent:main:healthy")

const watchdogLayer = (options?: Watchdog.Options, recovery?: Recovery.Options) =>
  Watchdog.layer(options).pipe(
    Layer.provideMerge(Recovery.layer(recovery)),
    Layer.provideMerge(coreLayer()),
    Layer.provideMerge(NodeEventLoopMonitor.layerTest)
  )

const settle = Effect.gen(function*() {
  for (let i = 0; i < 100; i++) yield* Effect.yieldNow
})

/** Advances the clock one heartbeat at a time, letting every tick and recovery run. */
const advance = (seconds: number, step = 30) =>
  Effect.gen(function*() {
    for (let t = 0; t < seconds; t += step) {
      yield* TestClock.adjust(`${Math.min(step, seconds - t)} seconds`)
      yield* settle
    }
  })

/** An orphaned reported marker: opened for a run that no owner holds. */
const orphan = (key: SessionKey.SessionKey, kind: "tool_call" | "model_call") =>
  Effect.gen(function*() {
    const tracker = yield* ActivityTracker
    yield* tracker.report({
      type: "started",
      kind,
      sessionKey: key,
      runId: "crashed-run",
      callId: `${kind}-1`,
      seq: yield* tracker.nextSeq
    })
  })

describe("Watchdog", () => {
  describe("orphaned activity", () => {
    for (const kind of ["model_call", "tool_call"] as const) {
      it.effect(`an idle session with queued work behind an orphaned ${kind} is stuck, released, and its turn completes`, () =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          const lanes = yield* SessionLanes
          yield* orphan(wedged, kind)
          const submission = yield* lanes.submit(wedged, Effect.succeed("answered"))
          const result = yield* Effect.forkChild(submission.result)
          yield* advance(120)
          assert.isUndefined(result.pollUnsafe(), "still wedged before the warn threshold")
          yield* advance(30)
          assert.strictEqual(yield* Fiber.join(result), "answered")
          yield* events.settle
          const stuck = events.ofType("session.stuck")
          assert.strictEqual(stuck.length, 1)
          assert.deepStrictEqual([stuck[0]!.classification, stuck[0]!.reason, stuck[0]!.recoverable], [
            "stale_session_state",
            "queued_work_without_active_run",
            true
          ])
          assert.match(stuck[0]!.evidence, /^rule 1 /)
          const completed = events.ofType("session.recovery.completed")
          assert.deepStrictEqual(completed.map((c) => [c.status, c.action, c.stale, c.forced]), [
            ["released", "release_lane", false, false]
          ])
          assert.deepStrictEqual(
            events.ofType("session.activity.evicted").map((e) => [e.reason, e.evictedTools + e.evictedModelCalls]),
            [["recovery", 1]]
          )
          assert.strictEqual(
            events.ofType("session.activity.run_ended").filter((e) => e.outcome === "interrupted").length,
            0,
            "nothing was aborted"
          )
          assert.deepStrictEqual(events.ofType("session.state").map((e) => e.reason).includes("stuck_recovery:released"), true)
        }).pipe(Effect.provide(watchdogLayer())))
    }

    it.effect("the same orphan on a processing session is stalled and never recovered automatically", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        yield* lanes.submit(wedged, Effect.never)
        yield* settle
        yield* orphan(wedged, "tool_call")
        yield* advance(600)
        yield* events.settle
        const stalled = events.ofType("session.stalled")
        assert.isAbove(stalled.length, 0)
        assert.isTrue(stalled.every((e) => e.recoverable === false))
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [])
        assert.strictEqual((yield* lanes.view(wedged))?.state, "processing")
      }).pipe(Effect.provide(watchdogLayer())))
  })

  describe("active abort", () => {
    it.effect("a tool blocked under a live owner is stalled, then aborted exactly at the threshold (3 × warn = 6 min), and the lane moves on", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const blocked = yield* lanes.submit(wedged, tracker.tool({ name: "hangs" }, Effect.never))
        const next = yield* lanes.submit(wedged, Effect.succeed("next turn ran"))
        yield* settle
        yield* advance(330)
        yield* events.settle
        const stalled = events.ofType("session.stalled")
        assert.isAbove(stalled.length, 0)
        assert.isTrue(stalled.every((e) => e.reason === "blocked_tool_call"))
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [], "not one tick before the threshold")
        yield* advance(30)
        assert.strictEqual(yield* next.result, "next turn ran")
        const error = yield* Effect.flip(blocked.result)
        assert.strictEqual(error._tag === "TurnInterrupted" && error.reason, "recovery_abort")
        yield* events.settle
        const requested = events.ofType("session.recovery.requested")
        assert.deepStrictEqual(requested.map((r) => [r.trigger, r.allowActiveAbort]), [["active_abort", true]])
        const completed = events.ofType("session.recovery.completed")
        assert.deepStrictEqual(completed.map((c) => [c.status, c.action, c.forced]), [["aborted", "abort_run", false]])
        assert.deepStrictEqual(events.ofType("session.activity.marker_closed").map((m) => m.outcome), ["interrupted"])
      }).pipe(Effect.provide(watchdogLayer())))

    it.effect("a model call with no progress under a live owner is aborted at the threshold", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const call = yield* lanes.submit(wedged, tracker.model({ provider: "p", model: "m" }, Effect.never))
        yield* settle
        yield* advance(330)
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [])
        yield* advance(30)
        assert.strictEqual((yield* Effect.flip(call.result))._tag, "TurnInterrupted")
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.recovery.completed").map((c) => c.status), ["aborted"])
        assert.isTrue(events.ofType("session.stalled").every((e) => e.reason === "active_work_without_progress"))
      }).pipe(Effect.provide(watchdogLayer())))

    it.effect("a model call that keeps streaming progress is never aborted", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const streaming = tracker.model(
          { provider: "p", model: "m" },
          Effect.forever(Effect.andThen(Effect.sleep("10 seconds"), tracker.progress("model_stream")))
        )
        yield* lanes.submit(wedged, streaming)
        yield* advance(900)
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [])
        assert.deepStrictEqual(events.ofType("session.stalled"), [])
        const longRunning = events.ofType("session.long_running")
        assert.isAbove(longRunning.length, 0)
        const ages = longRunning.map((e) => e.ageMs)
        for (let i = 1; i < ages.length; i++) {
          assert.isAtLeast(ages[i]!, Math.max(ages[i - 1]! + 120_000, 2 * ages[i - 1]!), "long_running backs off")
        }
      }).pipe(Effect.provide(watchdogLayer())))

    it.effect("a starved process takes no active abort that tick, and publishes a liveness warning", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        yield* lanes.submit(wedged, tracker.tool({ name: "hangs" }, Effect.never))
        yield* settle
        yield* advance(330)
        yield* NodeEventLoopMonitor.TestEventLoopMonitor.set({ p99Ms: 40, maxMs: 2_500, utilization: 0.5, intervalMs: 30_000 })
        yield* advance(30)
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [], "starved tick aborts nothing")
        const warnings = events.ofType("diagnostic.liveness.warning")
        assert.strictEqual(warnings.length, 1)
        assert.deepStrictEqual(warnings[0]!.reasons, ["event_loop_delay_max"])
        yield* NodeEventLoopMonitor.TestEventLoopMonitor.set({ p99Ms: 2, maxMs: 5, utilization: 0.1, intervalMs: 30_000 })
        yield* advance(30)
        yield* events.settle
        assert.strictEqual(events.ofType("session.recovery.requested").length, 1, "the next healthy tick aborts")
      }).pipe(Effect.provide(watchdogLayer())))
  })

  describe("isolation", () => {
    it.effect("two wedged sessions recover independently while a healthy one keeps its pace", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        yield* orphan(wedged, "model_call")
        const stuckTurn = yield* lanes.submit(wedged, Effect.succeed("w"))
        const blockedTurn = yield* lanes.submit(other, tracker.tool({ name: "hangs" }, Effect.never))
        const completedAt: Array<number> = []
        const healthyLoop = yield* Effect.forkChild(Effect.forEach(
          Array.from({ length: 80 }, (_, i) => i),
          () =>
            Effect.gen(function*() {
              const s = yield* lanes.submit(healthy, Effect.sleep("1 second"))
              yield* s.result
              completedAt.push(yield* Clock.currentTimeMillis)
              yield* Effect.sleep("4 seconds")
            }),
          { discard: true }
        ))
        yield* advance(400, 5)
        yield* Fiber.join(healthyLoop)
        assert.strictEqual(yield* stuckTurn.result, "w")
        assert.strictEqual((yield* Effect.flip(blockedTurn.result))._tag, "TurnInterrupted")
        yield* events.settle
        const requested = events.ofType("session.recovery.requested")
        assert.deepStrictEqual(requested.map((r) => [r.sessionKey, r.trigger]).sort(), [
          [other, "active_abort"],
          [wedged, "stuck"]
        ].sort())
        assert.isTrue(requested.every((r) => r.sessionKey !== healthy))
        assert.strictEqual(completedAt.length, 80, "the healthy session completed every turn")
        completedAt.forEach((at, i) => assert.strictEqual(at, i * 5_000 + 1_000, `turn ${i} completed on schedule`))
        const healthyVerdicts = [
          ...events.ofType("session.stalled"),
          ...events.ofType("session.stuck"),
          ...events.ofType("session.long_running")
        ].filter((e) => e.sessionKey === healthy)
        assert.deepStrictEqual(healthyVerdicts, [])
      }).pipe(Effect.provide(watchdogLayer())))

    it.effect("a leaked reported tool marker from an ended run never makes the next turn look blocked", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const leaky = Effect.gen(function*() {
          const run = yield* CurrentRun
          yield* tracker.report({
            type: "started",
            kind: "tool_call",
            sessionKey: wedged,
            runId: run.runId,
            callId: "native-tool",
            seq: yield* tracker.nextSeq
          })
        })
        yield* (yield* lanes.submit(wedged, leaky)).result
        const working = Effect.forever(Effect.andThen(Effect.sleep("20 seconds"), tracker.progress("thinking")))
        yield* lanes.submit(wedged, working)
        yield* advance(600)
        yield* events.settle
        const verdicts = [...events.ofType("session.stalled"), ...events.ofType("session.long_running")]
        assert.isAbove(verdicts.length, 0)
        assert.isTrue(verdicts.every((v) => v.reason !== "blocked_tool_call" && v.classification === "long_running"))
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [])
      }).pipe(Effect.provide(watchdogLayer())))
  })

  describe("thresholds", () => {
    it.effect("falls back to defaults for invalid values and never aborts below warn", () =>
      Effect.gen(function*() {
        const watchdog = yield* Watchdog.Watchdog
        assert.deepStrictEqual([watchdog.thresholds.warnMs, watchdog.thresholds.abortMs], [120_000, 120_000])
        assert.isAbove(watchdog.thresholds.notes.length, 0)
      }).pipe(Effect.provide(watchdogLayer({ warn: "100 millis", abort: "1 second" }))))

    it.effect("abort defaults to 3 × warn above five minutes", () =>
      Effect.gen(function*() {
        const watchdog = yield* Watchdog.Watchdog
        assert.deepStrictEqual([watchdog.thresholds.warnMs, watchdog.thresholds.abortMs], [600_000, 1_800_000])
      }).pipe(Effect.provide(watchdogLayer({ warn: "10 minutes" }))))
  })

})
