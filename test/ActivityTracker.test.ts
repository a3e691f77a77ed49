import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { collectEvents } from "./utils/events.ts"

const key = SessionKey.makeUnsafe("agent:main:telegram:direct:42")
const TrackerLive = ActivityTracker.layer().pipe(Layer.provideMerge(DiagnosticBus.layer()))

const withTracker = <A, E>(
  body: (tracker: typeof ActivityTracker.ActivityTracker.Service) => Effect.Effect<A, E, any>
) =>
  Effect.gen(function*() {
    const tracker = yield* ActivityTracker.ActivityTracker
    return yield* body(tracker)
  }).pipe(Effect.provide(TrackerLive)) as Effect.Effect<A, E, never>

describe("ActivityTracker", () => {
  describe("reported markers", () => {
    it.effect("a reported tool whose run ends without its completion leaves no work and one eviction", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          yield* tracker.run(
            key,
            Effect.gen(function*() {
              const run = yield* ActivityTracker.CurrentRun
              const seq = yield* tracker.nextSeq
              const result = yield* tracker.report({
                type: "started",
                kind: "tool_call",
                sessionKey: key,
                runId: run.runId,
                callId: "call-1",
                name: "native_shell",
                seq
              })
              assert.deepStrictEqual(result, { _tag: "Opened", markerId: (result as any).markerId, owned: true })
              assert.strictEqual((yield* tracker.snapshot(key)).activeWorkKind, "tool_call")
            })
          )
          yield* events.settle
          const snapshot = yield* tracker.snapshot(key)
          assert.strictEqual(snapshot.activeWorkKind, undefined)
          assert.deepStrictEqual([snapshot.openTools, snapshot.openModelCalls, snapshot.hasOwner], [0, 0, false])
          const evictions = events.ofType("session.activity.evicted")
          assert.strictEqual(evictions.length, 1)
          const { reason, evictedTools, evictedModelCalls } = evictions[0]!
          assert.deepStrictEqual({ reason, evictedTools, evictedModelCalls }, {
            reason: "orphaned_no_owner",
            evictedTools: 1,
            evictedModelCalls: 0
          })
        })
      ))

    it.effect("fences a start numbered before the run ended but delivered after it", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          let early = 0
          let runId = ""
          yield* tracker.run(
            key,
            Effect.gen(function*() {
              runId = (yield* ActivityTracker.CurrentRun).runId
              early = yield* tracker.nextSeq // numbered while the run is alive, delivered late
            })
          )
          const result = yield* tracker.report({
            type: "started",
            kind: "tool_call",
            sessionKey: key,
            runId,
            callId: "late",
            seq: early
          })
          assert.strictEqual(result._tag, "Fenced")
          yield* events.settle
          const snapshot = yield* tracker.snapshot(key)
          assert.deepStrictEqual([snapshot.openTools, snapshot.activeWorkKind], [0, undefined])
          assert.strictEqual(events.ofType("session.activity.fenced").length, 1)
          assert.strictEqual(events.ofType("session.activity.marker_opened").length, 0, "re-arms nothing")
          assert.strictEqual((yield* tracker.stats).fenced, 1)
        })
      ))

    it.effect("a completion closes the marker with its outcome and no eviction follows", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          yield* tracker.run(
            key,
            Effect.gen(function*() {
              const { runId } = yield* ActivityTracker.CurrentRun
              const base = { kind: "model_call", sessionKey: key, runId, callId: "c" } as const
              yield* tracker.report({ ...base, type: "started", seq: yield* tracker.nextSeq, name: "openai/gpt" })
              yield* TestClock.adjust("3 seconds")
              yield* tracker.report({ ...base, type: "completed", seq: yield* tracker.nextSeq, outcome: "failure" })
            })
          )
          yield* events.settle
          const closed = events.ofType("session.activity.marker_closed")
          assert.strictEqual(closed.length, 1)
          assert.deepStrictEqual([closed[0]!.outcome, closed[0]!.durationMs, closed[0]!.source], [
            "failure",
            3000,
            "reported"
          ])
          assert.strictEqual(events.ofType("session.activity.evicted").length, 0)
        })
      ))

    it.effect("ignores duplicated starts and a completion without a start, counting them", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          yield* tracker.run(
            key,
            Effect.gen(function*() {
              const { runId } = yield* ActivityTracker.CurrentRun
              const base = { kind: "tool_call", sessionKey: key, runId, callId: "c" } as const
              const seq = yield* tracker.nextSeq
              yield* tracker.report({ ...base, type: "started", seq })
              const dup = yield* tracker.report({ ...base, type: "started", seq })
              assert.deepStrictEqual(dup, { _tag: "Ignored", reason: "duplicate_start" })
              yield* tracker.report({ ...base, type: "completed", seq: yield* tracker.nextSeq })
              const dupAfterEnd = yield* tracker.report({ ...base, type: "started", seq })
              assert.deepStrictEqual(dupAfterEnd, { _tag: "Ignored", reason: "duplicate_start" })
              const orphanEnd = yield* tracker.report({ ...base, callId: "x", type: "completed", seq: 99 })
              assert.deepStrictEqual(orphanEnd, { _tag: "Ignored", reason: "end_without_start" })
            })
          )
          const stats = yield* tracker.stats
          assert.deepStrictEqual([stats.ignored, stats.markers, stats.owners], [3, 0, 0])
        })
      ))

    it.effect("rejects malformed signals with a typed error and changes nothing", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          const base = { type: "started", kind: "tool_call", sessionKey: key, runId: "r", callId: "c", seq: 1 }
          const cases: Array<[unknown, string]> = [
            [{ ...base, kind: "shell_call" }, "unknown_kind"],
            [{ ...base, seq: -1 }, "invalid_seq"],
            [{ ...base, seq: 1.5 }, "invalid_seq"],
            [{ ...base, seq: "7" }, "invalid_seq"],
            [{ ...base, sessionKey: "" }, "malformed"],
            [{ ...base, runId: "" }, "malformed"],
            [{ ...base, type: "exploded" }, "malformed"],
            [{ ...base, callId: undefined }, "malformed"],
            [null, "malformed"],
            ["started", "malformed"],
            [{ ...base, name: "x".repeat(10_000) }, "malformed"]
          ]
          for (const [input, reason] of cases) {
            const error = yield* Effect.flip(tracker.report(input))
            assert.strictEqual(error._tag, "InvalidSignal")
            assert.strictEqual(error.reason, reason, JSON.stringify(input)?.slice(0, 80))
          }
          yield* events.settle
          const stats = yield* tracker.stats
          assert.deepStrictEqual([stats.markers, stats.ignored, stats.opened], [0, cases.length, 0])
          assert.strictEqual(events.ofType("session.activity.signal_ignored").length, cases.length)
        })
      ))

    it.effect("an unowned reported marker shows as work without an owner", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const seq = yield* tracker.nextSeq
          const result = yield* tracker.report({
            type: "started",
            kind: "model_call",
            sessionKey: key,
            runId: "external-run",
            callId: "m1",
            seq
          })
          assert.deepStrictEqual(result._tag, "Opened")
          yield* TestClock.adjust("130 seconds")
          const snapshot = yield* tracker.snapshot(key)
          assert.deepStrictEqual(
            [snapshot.activeWorkKind, snapshot.hasOwner, snapshot.oldestModelCall?.owned, snapshot.lastProgressAgeMs],
            ["model_call", false, false, 130_000]
          )
        })
      ))
  })

  describe("owners", () => {
    it.effect("ending the outer run keeps the inner run's markers; ending both clears all", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          const innerStarted = yield* Deferred.make<string>()
          const innerRelease = yield* Deferred.make<void>()
          const outerRelease = yield* Deferred.make<void>()
          const inner = tracker.run(
            key,
            Effect.gen(function*() {
              const { runId } = yield* ActivityTracker.CurrentRun
              yield* tracker.report({
                type: "started",
                kind: "tool_call",
                sessionKey: key,
                runId,
                callId: "inner-tool",
                seq: yield* tracker.nextSeq
              })
              yield* Deferred.succeed(innerStarted, runId)
              yield* Deferred.await(innerRelease)
            })
          )
          // The inner run is forked outside the outer run's fiber so that it can outlive it.
          const innerFiber = yield* Effect.forkChild(inner)
          const innerRunId = yield* Deferred.await(innerStarted)
          const outerFiber = yield* Effect.forkChild(tracker.run(
            key,
            Effect.gen(function*() {
              const { runId } = yield* ActivityTracker.CurrentRun
              yield* tracker.report({
                type: "started",
                kind: "model_call",
                sessionKey: key,
                runId,
                callId: "outer-model",
                seq: yield* tracker.nextSeq
              })
              yield* Deferred.await(outerRelease)
            })
          ))
          yield* Effect.yieldNow
          assert.deepStrictEqual((yield* tracker.snapshot(key)).runs.length, 2)
          yield* Deferred.succeed(outerRelease, undefined)
          yield* Fiber.join(outerFiber)
          let snapshot = yield* tracker.snapshot(key)
          assert.deepStrictEqual([snapshot.openTools, snapshot.openModelCalls, snapshot.hasOwner], [1, 0, true])
          assert.strictEqual(snapshot.oldestTool?.runId, innerRunId)
          yield* Deferred.succeed(innerRelease, undefined)
          yield* Fiber.join(innerFiber)
          snapshot = yield* tracker.snapshot(key)
          assert.deepStrictEqual([snapshot.openTools, snapshot.openModelCalls, snapshot.hasOwner], [0, 0, false])
          yield* events.settle
          const evictions = events.ofType("session.activity.evicted").map((e) => [e.reason, e.evictedTools, e.evictedModelCalls])
          assert.deepStrictEqual(evictions, [["owner_exited", 0, 1], ["orphaned_no_owner", 1, 0]])
        })
      ))

    it.effect("nested runs record their parent", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          yield* tracker.run(key, tracker.run(key, Effect.void, { runId: "inner" }), { runId: "outer" })
          yield* events.settle
          const started = events.ofType("session.activity.run_started")
          assert.deepStrictEqual(started.map((e) => [e.runId, e.parentRunId, e.owners]), [
            ["outer", undefined, 1],
            ["inner", "outer", 2]
          ])
        })
      ))

    it.effect("deregisters on failure, defect and interruption", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          yield* Effect.exit(tracker.run(key, Effect.fail("nope")))
          yield* Effect.exit(tracker.run(key, Effect.die("bug")))
          const fiber = yield* Effect.forkChild(tracker.run(key, Effect.never), { startImmediately: true })
          yield* Fiber.interrupt(fiber)
          yield* events.settle
          assert.deepStrictEqual(events.ofType("session.activity.run_ended").map((e) => e.outcome), [
            "failure",
            "defect",
            "interrupted"
          ])
          assert.strictEqual((yield* tracker.stats).owners, 0)
        })
      ))
  })

  describe("structured markers", () => {
    it.effect("close with the right outcome on success, failure, interruption and defect", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          yield* tracker.run(
            key,
            Effect.gen(function*() {
              yield* tracker.tool({ name: "ok" }, Effect.void)
              yield* Effect.exit(tracker.tool({ name: "fails" }, Effect.fail("x")))
              yield* Effect.exit(tracker.model({ provider: "p", model: "m" }, Effect.die("bug")))
              const hanging = yield* Effect.forkChild(tracker.tool({ name: "hangs" }, Effect.never), {
                startImmediately: true
              })
              yield* Fiber.interrupt(hanging)
            })
          )
          yield* events.settle
          const closed = events.ofType("session.activity.marker_closed").map((e) => [e.kind, e.outcome])
          assert.deepStrictEqual(closed, [
            ["tool_call", "success"],
            ["tool_call", "failure"],
            ["model_call", "defect"],
            ["tool_call", "interrupted"]
          ])
          assert.strictEqual(events.ofType("session.activity.evicted").length, 0)
        })
      ))

    it.effect("an interrupted run closes its open tool marker, not an eviction", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const events = yield* collectEvents
          const fiber = yield* Effect.forkChild(
            tracker.run(key, tracker.tool({ name: "slow" }, Effect.never)),
            { startImmediately: true }
          )
          yield* Effect.yieldNow
          assert.strictEqual((yield* tracker.snapshot(key)).openTools, 1)
          yield* Fiber.interrupt(fiber)
          yield* events.settle
          assert.deepStrictEqual(events.ofType("session.activity.marker_closed").map((e) => e.outcome), ["interrupted"])
          assert.strictEqual(events.ofType("session.activity.evicted").length, 0)
          assert.strictEqual((yield* tracker.stats).markers, 0)
        })
      ))

    it.effect("snapshots report the oldest tool and exact ages", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const release = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(tracker.run(
            key,
            Effect.gen(function*() {
              yield* Effect.forkChild(tracker.tool({ name: "first" }, Deferred.await(release)), { startImmediately: true })
              yield* TestClock.adjust("10 seconds")
              yield* Effect.forkChild(tracker.tool({ name: "second" }, Deferred.await(release)), { startImmediately: true })
              yield* TestClock.adjust("5 seconds")
              yield* tracker.progress("tool_output")
              yield* TestClock.adjust("2 seconds")
              yield* Deferred.await(release)
            })
          ), { startImmediately: true })
          for (let i = 0; i < 20; i++) yield* Effect.yieldNow
          const snapshot = yield* tracker.snapshot(key)
          assert.strictEqual(snapshot.activeWorkKind, "tool_call")
          assert.strictEqual(snapshot.openTools, 2)
          assert.strictEqual(snapshot.oldestTool?.name, "first")
          assert.strictEqual(snapshot.oldestTool?.ageMs, 17_000)
          assert.strictEqual(snapshot.oldestTool?.sinceProgressMs, 2_000)
          assert.strictEqual(snapshot.lastProgressAgeMs, 2_000)
          assert.strictEqual(snapshot.lastProgressReason, "tool_output")
          assert.strictEqual(snapshot.runs[0]?.ageMs, 17_000)
          assert.isTrue(snapshot.oldestTool?.owned)
          const all = yield* tracker.snapshotAll
          assert.deepStrictEqual(all.map((s) => s.sessionKey), [key])
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(fiber)
        })
      ))

    it.effect("priority of work kinds is tool > model > run", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const kinds: Array<string | undefined> = []
          yield* tracker.run(
            key,
            Effect.gen(function*() {
              kinds.push((yield* tracker.snapshot(key)).activeWorkKind)
              yield* tracker.model(
                { provider: "p", model: "m" },
                Effect.gen(function*() {
                  kinds.push((yield* tracker.snapshot(key)).activeWorkKind)
                  yield* tracker.tool(
                    { name: "t" },
                    Effect.gen(function*() {
                      kinds.push((yield* tracker.snapshot(key)).activeWorkKind)
                    })
                  )
                })
              )
            })
          )
          kinds.push((yield* tracker.snapshot(key)).activeWorkKind)
          assert.deepStrictEqual(kinds, ["embedded_run", "model_call", "tool_call", undefined])
        })
      ))

    it.effect("terminal progress reasons are recognised", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          yield* tracker.run(key, tracker.progress("response_completed"))
          assert.isTrue(ActivityTracker.isTerminalReason("run_completed"))
          assert.isFalse(ActivityTracker.isTerminalReason("tool_call_started"))
          yield* tracker.run(key, tracker.progress("stream_chunk"), { runId: "again" })
          const snapshot = yield* tracker.snapshot(key)
          assert.deepStrictEqual([snapshot.lastProgressReason, snapshot.lastProgressTerminal], ["run_completed", true])
        })
      ))
  })

  describe("recovery and sweep", () => {
    it.effect("recovery eviction keeps markers of an owner that started after the cutoff", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const bus = yield* DiagnosticBus.DiagnosticBus
          yield* tracker.report({
            type: "started",
            kind: "tool_call",
            sessionKey: key,
            runId: "ghost",
            callId: "g",
            seq: yield* tracker.nextSeq
          })
          const cutoff = yield* bus.watermark
          const release = yield* Deferred.make<void>()
          const fresh = yield* Effect.forkChild(
            tracker.run(key, tracker.tool({ name: "fresh" }, Deferred.await(release))),
            { startImmediately: true }
          )
          yield* Effect.yieldNow
          const evicted = yield* tracker.evictForRecovery(key, { cutoff })
          assert.deepStrictEqual(evicted, { evictedTools: 1, evictedModelCalls: 0 })
          const snapshot = yield* tracker.snapshot(key)
          assert.deepStrictEqual(snapshot.markers.map((m) => m.name), ["fresh"])
          const late = yield* tracker.report({
            type: "started",
            kind: "tool_call",
            sessionKey: key,
            runId: "ghost",
            callId: "g2",
            seq: cutoff
          })
          assert.strictEqual(late._tag, "Fenced")
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(fresh)
        })
      ))

    it.effect("force-clearing a zombie run detaches it, and its late finalizer changes nothing", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          const bus = yield* DiagnosticBus.DiagnosticBus
          const events = yield* collectEvents
          const release = yield* Deferred.make<void>()
          const zombie = yield* Effect.forkChild(
            tracker.run(key, tracker.tool({ name: "stuck" }, Deferred.await(release)), { runId: "zombie" }),
            { startImmediately: true }
          )
          yield* Effect.yieldNow
          yield* tracker.evictForRecovery(key, { cutoff: yield* bus.watermark, runIds: ["zombie"] })
          assert.deepStrictEqual((yield* tracker.snapshot(key)).hasOwner, false)
          yield* Deferred.succeed(release, undefined)
          const exit = yield* Fiber.await(zombie)
          assert.isTrue(Exit.isSuccess(exit))
          yield* events.settle
          assert.strictEqual(events.ofType("session.activity.run_ended").length, 1)
          assert.strictEqual(events.ofType("session.activity.marker_closed").length, 0)
          assert.strictEqual(events.ofType("session.activity.evicted").length, 1)
          assert.strictEqual((yield* tracker.stats).markers, 0)
        })
      ))

    it.effect("the sweep visits at most its batch of sessions per call and resumes where it stopped", () =>
      Effect.gen(function*() {
        const tracker = yield* ActivityTracker.ActivityTracker
        const keys = Array.from({ length: 5 }, (_, i) => SessionKey.makeUnsafe(`sweep:${i}`))
        for (const k of keys) yield* tracker.run(k, Effect.void)
        yield* TestClock.adjust("2 hours")
        const sizes: Array<number> = []
        for (let i = 0; i < 3; i++) {
          yield* tracker.sweep
          sizes.push((yield* tracker.stats).sessions)
        }
        assert.deepStrictEqual(sizes, [3, 1, 0])
      }).pipe(
        Effect.provide(ActivityTracker.layer({ sweepBatch: 2 }).pipe(Layer.provideMerge(DiagnosticBus.layer())))
      ))

    it.effect("the sweep forgets idle sessions with nothing open", () =>
      withTracker((tracker) =>
        Effect.gen(function*() {
          yield* tracker.run(key, Effect.void)
          assert.strictEqual((yield* tracker.stats).sessions, 1)
          yield* TestClock.adjust("59 minutes")
          yield* tracker.sweep
          assert.strictEqual((yield* tracker.stats).sessions, 1)
          yield* TestClock.adjust("1 minute")
          yield* tracker.sweep
          assert.strictEqual((yield* tracker.stats).sessions, 0)
        })
      ))
  })
})
