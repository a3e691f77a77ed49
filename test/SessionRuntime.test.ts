import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { mkdtemp, readdir, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import { CurrentLease } from "../src/LaneGuard.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import { SessionLock } from "../src/SessionLock.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"
import { StabilityLog } from "../src/StabilityLog.ts"
import { collectEvents } from "./utils/events.ts"

const key = SessionKey.makeUnsafe("agent:main:runtime")

describe("SessionRuntime", () => {
  describe("layerTest", () => {
    it.effect("runs turns under the session lock and recovers an orphan-wedged session on its own", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const lock = yield* SessionLock
        const first = yield* lanes.submit(
          key,
          Effect.gen(function*() {
            const lease = yield* CurrentLease
            assert.isTrue(Option.isSome(lease))
            if (Option.isSome(lease)) yield* lock.assertCurrent(lease.value)
            return Option.map(lease, (l) => l.token)
          })
        )
        assert.deepStrictEqual(yield* first.result, Option.some(1))
        yield* tracker.report({
          type: "started",
          kind: "tool_call",
          sessionKey: key,
          runId: "crashed",
          callId: "t",
          seq: yield* tracker.nextSeq
        })
        const second = yield* lanes.submit(key, Effect.succeed("after recovery"))
        const waiting = yield* Effect.forkChild(second.result)
        yield* TestClock.adjust("3 seconds")
        for (let i = 0; i < 100; i++) yield* Effect.yieldNow
        assert.strictEqual(waiting.pollUnsafe()?._tag, "Success")
        yield* events.settle
        assert.isAbove(events.ofType("session.stuck").length, 0)
        assert.deepStrictEqual(events.ofType("session.recovery.completed").map((e) => e.status), ["released"])
        const log = yield* StabilityLog
        const records = yield* log.query({ type: "session.recovery.completed" })
        assert.strictEqual(records.length, 1)
        assert.notInclude(JSON.stringify(yield* log.query({ limit: 1000 })), "agent:main:runtime")
      }).pipe(Effect.provide(SessionRuntime.layerTest())))
  })

  describe("layer", () => {
    it.live("uses a file lock directory by default and releases every lock at shutdown", () =>
      Effect.gen(function*() {
        const dir = yield* Effect.promise(() => mkdtemp(join(tmpdir(), "esr-runtime-")))
        yield* Effect.scoped(Effect.gen(function*() {
          const lanes = yield* SessionLanes
          const lock = yield* SessionLock
          assert.strictEqual(lock.backend, "file")
          const held = yield* lanes.submit(key, Effect.sync(() => "ran"))
          assert.strictEqual(yield* held.result, "ran")
          yield* lanes.submit(key, Effect.never)
          yield* Effect.sleep("50 millis")
          const during = (yield* Effect.promise(() => readdir(dir))).filter((f) => f.endsWith(".lock"))
          assert.strictEqual(during.length, 1, "the running turn holds its session's lock")
        }).pipe(Effect.provide(SessionRuntime.layer({ lock: { directory: dir }, watchdog: false }))))
        const after = (yield* Effect.promise(() => readdir(dir))).filter((f) => f.endsWith(".lock"))
        assert.deepStrictEqual(after, [], "shutdown released the lock")
        yield* Effect.promise(() => rm(dir, { recursive: true, force: true }))
      }))
  })
})
