import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import * as Recovery from "../src/Recovery.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import { collectEvents } from "./utils/events.ts"
import { coreLayer } from "./utils/runtime.ts"

const key = SessionKey.makeUnsafe("agent:main:recovery")
const recoveryLayer = Recovery.layer({ settle: "15 seconds" }).pipe(Layer.provideMerge(coreLayer()))

const settle = Effect.gen(function*() {
  for (let i = 0; i < 100; i++) yield* Effect.yieldNow
})

describe("Recovery", () => {
  describe("stillMatches", () => {
    const view = {
      sessionKey: key,
      state: "idle" as const,
      queueDepth: 1,
      generation: 5,
      stateSince: 0,
      current: undefined,
      gated: true
    }
    const request = {
      sessionKey: key,
      trigger: "stuck" as const,
      action: "release_lane" as const,
      expectedState: "idle" as const,
      generation: 5,
      allowActiveAbort: false
    }
    it("accepts the observed generation and state only", () => {
      assert.isTrue(Recovery.stillMatches(request, view))
      assert.isFalse(Recovery.stillMatches(request, { ...view, generation: 6 }))
      assert.isFalse(Recovery.stillMatches(request, { ...view, state: "processing" }))
    })
    it("an idle session being aborted also accepts G+1, never G+2", () => {
      const abort = { ...request, action: "abort_run" as const }
      assert.isTrue(Recovery.stillMatches(abort, { ...view, generation: 6 }))
      assert.isFalse(Recovery.stillMatches(abort, { ...view, generation: 7 }))
      assert.isFalse(Recovery.stillMatches({ ...abort, expectedState: "processing" }, {
        ...view,
        state: "processing",
        generation: 6
      }))
    })
  })

  describe("recover", () => {
    it.effect("changes nothing and says stale when the session moved on", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const recovery = yield* Recovery.Recovery
        const turn = yield* lanes.submit(key, Effect.never)
        yield* settle
        const observed = (yield* lanes.view(key))!
        yield* lanes.submit(key, Effect.void) // the session moves on: generation bumps
        const outcome = yield* recovery.recover({
          sessionKey: key,
          trigger: "active_abort",
          action: "abort_run",
          expectedState: "processing",
          generation: observed.generation,
          allowActiveAbort: true
        })
        assert.deepStrictEqual([outcome.status, outcome.action, outcome.stale, outcome.reason], [
          "noop",
          "none",
          true,
          "generation_changed"
        ])
        assert.isUndefined((yield* Effect.forkChild(turn.result)).pollUnsafe(), "the running turn was not touched")
        yield* events.settle
        assert.strictEqual(events.ofType("session.recovery.requested").length, 1)
        assert.deepStrictEqual(events.ofType("session.recovery.completed").map((e) => e.stale), [true])
      }).pipe(Effect.provide(recoveryLayer)))

    it.effect("active work is interrupted only with allowActiveAbort", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const recovery = yield* Recovery.Recovery
        yield* lanes.submit(key, Effect.never)
        yield* settle
        const view = (yield* lanes.view(key))!
        const outcome = yield* recovery.recover({
          sessionKey: key,
          trigger: "manual",
          action: "abort_run",
          expectedState: "processing",
          generation: view.generation,
          allowActiveAbort: false
        })
        assert.deepStrictEqual([outcome.status, outcome.action, outcome.reason], [
          "skipped",
          "observe_only",
          "active_abort_not_allowed"
        ])
        assert.strictEqual((yield* lanes.view(key))?.state, "processing")
      }).pipe(Effect.provide(recoveryLayer)))

    it.effect("a turn that ignores interruption blocks a duplicate, then is force-cleared while the lane moves on", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const recovery = yield* Recovery.Recovery
        const exitZombie = yield* Deferred.make<void>()
        const stubborn = tracker.tool({ name: "native" }, Effect.uninterruptible(Deferred.await(exitZombie)))
        yield* lanes.submit(key, stubborn)
        const next = yield* lanes.submit(key, Effect.succeed("moved on"))
        yield* settle
        const view = (yield* lanes.view(key))!
        const request = {
          sessionKey: key,
          trigger: "active_abort" as const,
          action: "abort_run" as const,
          expectedState: "processing" as const,
          generation: view.generation,
          allowActiveAbort: true
        }
        const first = yield* Effect.forkChild(recovery.recover(request))
        yield* settle
        const duplicate = yield* recovery.recover(request)
        assert.deepStrictEqual([duplicate.status, duplicate.reason], ["skipped", "already_in_flight"])
        assert.deepStrictEqual(yield* recovery.inFlight, [key])
        yield* TestClock.adjust("14 seconds")
        yield* settle
        assert.isUndefined(first.pollUnsafe(), "still settling")
        yield* TestClock.adjust("1 second")
        const outcome = yield* Fiber.join(first)
        assert.deepStrictEqual([outcome.status, outcome.action, outcome.forced, outcome.reason, outcome.evictedTools], [
          "aborted",
          "abort_run",
          true,
          "force_cleared_after_settle",
          1
        ])
        assert.strictEqual(yield* next.result, "moved on")
        const snapshot = yield* tracker.snapshot(key)
        assert.deepStrictEqual([snapshot.openTools, snapshot.hasOwner], [0, false], "the zombie no longer counts")
        yield* events.settle
        assert.strictEqual(events.ofType("session.recovery.requested").length, 1, "no second requested event")
        assert.strictEqual(events.ofType("session.recovery.completed").length, 1)
        assert.isTrue(events.ofType("session.state").some((e) => e.reason === "stuck_recovery:aborted"))
        assert.deepStrictEqual(yield* recovery.inFlight, [])
        yield* Deferred.succeed(exitZombie, undefined) // lets the layer's scope close
      }).pipe(Effect.provide(recoveryLayer)))

    it.effect("release never clears an owner that started after the request's watermark", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const recovery = yield* Recovery.Recovery
        yield* tracker.report({
          type: "started",
          kind: "model_call",
          sessionKey: key,
          runId: "ghost",
          callId: "g",
          seq: yield* tracker.nextSeq
        })
        const queued = yield* lanes.submit(key, tracker.tool({ name: "fresh" }, Effect.never))
        yield* settle
        const view = (yield* lanes.view(key))!
        assert.isTrue(view.gated)
        const outcome = yield* recovery.recover({
          sessionKey: key,
          trigger: "stuck",
          action: "release_lane",
          expectedState: "idle",
          generation: view.generation,
          allowActiveAbort: false
        })
        assert.deepStrictEqual([outcome.status, outcome.evictedModelCalls], ["released", 1])
        yield* settle
        const snapshot = yield* tracker.snapshot(key)
        assert.deepStrictEqual(snapshot.markers.map((m) => [m.name, m.owned]), [["fresh", true]])
        void queued
      }).pipe(Effect.provide(recoveryLayer)))
  })
})
