import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Layer, Option, Schedule } from "effect"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as lease from "../src/internal/lease.ts"
import * as SessionLock from "../src/SessionLock.ts"
import { contract } from "./SessionLock.contract.ts"
import { memoryHarness } from "./utils/lockFixtures.ts"

contract(memoryHarness)

describe("SessionLock", () => {
  describe("withLock", () => {
    it.effect("runs the effect holding the lock and releases it however it ends", () =>
      Effect.gen(function*() {
        const key = SessionKey.makeUnsafe("agent:main:with-lock")
        const lock = yield* SessionLock.SessionLock
        const token = yield* SessionLock.withLock(key)((lease) =>
          Effect.gen(function*() {
            const held = yield* lock.inspect(key)
            assert.isTrue(Option.isSome(held) && held.value.holder.ownerId === lease.ownerId)
            return lease.token
          })
        )
        assert.isTrue(Option.isNone(yield* lock.inspect(key)))
        const failed = yield* Effect.flip(SessionLock.withLock(key)(() => Effect.fail("boom" as const)))
        assert.strictEqual(failed, "boom")
        assert.isTrue(Option.isNone(yield* lock.inspect(key)))
        const next = yield* SessionLock.withLock(key)((lease) => Effect.succeed(lease.token))
        assert.isAbove(next, token)
      }).pipe(Effect.provide(SessionLock.layerMemory().pipe(Layer.provideMerge(DiagnosticBus.layer())))))
  })

  describe("lockRetry", () => {
    it.effect("backs off exponentially from about 10 ms, capped near 500 ms", () =>
      Effect.gen(function*() {
        const step = yield* Schedule.toStep(SessionLock.lockRetry)
        const delays: Array<number> = []
        for (let i = 0; i < 12; i++) {
          const [, delay] = yield* step(0, { status: "alive" })
          delays.push(Duration.toMillis(delay))
        }
        assert.isAtLeast(delays[0]!, 8)
        assert.isAtMost(delays[0]!, 12)
        assert.isAbove(delays[4]!, delays[0]!)
        for (const d of delays) assert.isAtMost(d, 600)
        assert.isAtLeast(delays[11]!, 400)
      }))
  })

  describe("lease math", () => {
    it("reports stale reasons only past the stale time or the holder's max hold", () => {
      assert.deepStrictEqual(lease.staleReasons(undefined, 10, 10), [])
      assert.deepStrictEqual(lease.staleReasons(10, 10, 10), [])
      assert.deepStrictEqual(lease.staleReasons(11, undefined, 10), ["older_than_stale_time"])
      assert.deepStrictEqual(lease.staleReasons(11, 5, 100), ["past_max_hold"])
      assert.deepStrictEqual(lease.staleReasons(200, 5, 100), ["older_than_stale_time", "past_max_hold"])
    })

    it("clips every wait to the budget", () => {
      assert.strictEqual(lease.nextWait(100, 0, 1000), 100)
      assert.strictEqual(lease.nextWait(100, 950, 1000), 50)
      assert.strictEqual(lease.nextWait(100, 1000, 1000), undefined)
      assert.strictEqual(lease.nextWait(-5, 0, 1000), 0)
    })

    it("describes a holder with pid, host, state and age", () => {
      const text = lease.describeHolder({ pid: 42, host: "h1", status: "pid_reused", ageMs: 125_000, ownerId: "o" })
      assert.strictEqual(text, "pid 42 on h1 (pid reused by another process, held 2m 05s, owner o)")
      assert.strictEqual(lease.describeHolder({ status: "unknown" }), "an unknown process (liveness unknown)")
      assert.strictEqual(lease.formatDuration(850), "850 ms")
      assert.strictEqual(lease.formatDuration(7_800_000), "2h 10m")
    })
  })

  describe("errors", () => {
    it("LockIoError says what failed, where, and what to do", () => {
      const error = new SessionLock.LockIoError({
        reason: "permission_denied",
        path: "/locks/a.lock",
        retryable: false,
        detail: "acquire: EACCES"
      })
      assert.include(error.message, "/locks/a.lock")
      assert.include(error.message, "read and write access")
      assert.isFalse(error.isRetryable)
    })
  })
})
