/**
 * The behaviour every SessionLock backend must have, as one suite. A backend
 * runs it by calling {@link contract} with a {@link Harness}: a layer giving a
 * fresh world per test (the service, the bus, and {@link LockFixtures} to set
 * up holders the way another process would), and which clock to run on
 * ("test": TestClock, driven by the suite; "live": real time, short waits).
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Option, Schedule, Scope } from "effect"
import type { DiagnosticBus } from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import { collectEvents } from "./utils/events.ts"
import { TestClock } from "effect/testing"

/**
 * What a backend's harness provides besides the service, to play the other
 * processes of a test.
 */
export class LockFixtures extends Context.Service<LockFixtures, {
  /** Builds another service over the same storage, as another process would have. */
  readonly another: Effect.Effect<SessionLock.SessionLock["Service"], unknown, Scope.Scope | DiagnosticBus>
  /** Leaves a lock held by a holder that is dead (as if its process had crashed); returns its token. */
  readonly plantDead: (key: SessionKey.SessionKey) => Effect.Effect<number, unknown>
  /** Leaves a lock held by a live holder that is not this service, taken `ageMs` ago. */
  readonly plantLive: (key: SessionKey.SessionKey, ageMs: number) => Effect.Effect<void, unknown>
}>()("test/LockFixtures") {}

export interface Harness {
  readonly name: string
  readonly clock: "test" | "live"
  readonly layer: Layer.Layer<SessionLock.SessionLock | DiagnosticBus | LockFixtures, unknown>
}

const key = SessionKey.makeUnsafe("agent:main:telegram:direct:42")
const otherKey = SessionKey.makeUnsafe("agent:main:telegram:direct:43")

// Fast retries for tests that contend on purpose.
const quickRetry = Schedule.exponential("2 millis").pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.millis(20))))
)

export const contract = (harness: Harness) => {
  const test = harness.clock === "test" ? it.effect : it.live

  // Runs an effect to completion; on TestClock, moves time forward while it runs.
  const drive = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    harness.clock === "live"
      ? self
      : Effect.gen(function*() {
        const fiber = yield* Effect.forkChild(self, { startImmediately: true })
        while (fiber.pollUnsafe() === undefined) {
          yield* TestClock.adjust("5 millis")
          yield* Effect.yieldNow
        }
        return yield* Fiber.join(fiber)
      })

  // Lets time pass (TestClock or real).
  const pass = (ms: number) => harness.clock === "live" ? Effect.sleep(Duration.millis(ms)) : TestClock.adjust(Duration.millis(ms))

  const run = <A, E>(name: string, body: () => Effect.Effect<A, E, SessionLock.SessionLock | DiagnosticBus | LockFixtures | Scope.Scope>) =>
    test(name, () => Effect.provide(Effect.scoped(body()), harness.layer, { local: true }) as Effect.Effect<A, E | unknown>)

  describe(`SessionLock contract: ${harness.name}`, () => {
    run("yields a lease and releases it when the scope closes", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const events = yield* collectEvents
        const scope = yield* Scope.make()
        const lease = yield* lock.acquire(key).pipe(Scope.provide(scope))
        assert.strictEqual(lease.sessionKey, key)
        assert.isAbove(lease.token, 0)
        assert.isTrue(lease.ownerId.length > 0)
        const held = yield* lock.inspect(key)
        assert.isTrue(Option.isSome(held))
        yield* Scope.close(scope, Exit.void)
        assert.isTrue(Option.isNone(yield* lock.inspect(key)))
        yield* events.settle
        const acquired = events.ofType("lock.acquired")
        const released = events.ofType("lock.released")
        assert.strictEqual(acquired.length, 1)
        assert.strictEqual(acquired[0]!.token, lease.token)
        assert.strictEqual(acquired[0]!.attempts, 1)
        assert.isFalse(acquired[0]!.reclaimed)
        assert.strictEqual(acquired[0]!.backend, lock.backend)
        assert.strictEqual(released.length, 1)
        assert.strictEqual(released[0]!.token, lease.token)
        assert.isAtLeast(released[0]!.heldMs, 0)
        assert.strictEqual(events.ofType("lock.contended").length, 0)
      }))

    run("hands out strictly increasing tokens per key across holders", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const other = yield* (yield* LockFixtures).another
        const tokens: Array<number> = []
        for (let i = 0; i < 6; i++) {
          const service = i % 2 === 0 ? lock : other
          tokens.push((yield* Effect.scoped(service.acquire(key))).token)
        }
        for (let i = 1; i < tokens.length; i++) assert.isAbove(tokens[i]!, tokens[i - 1]!)
      }))

    run("keeps keys independent", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const other = yield* (yield* LockFixtures).another
        yield* other.acquire(key)
        const lease = yield* lock.acquire(otherKey, { timeout: "1 second" })
        assert.strictEqual(lease.sessionKey, otherKey)
      }))

    run("never lets two holders overlap, across fibers and services", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const fixtures = yield* LockFixtures
        const services = [lock, yield* fixtures.another, yield* fixtures.another]
        let inside = 0
        let overlaps = 0
        const entered: Array<number> = []
        const worker = (service: SessionLock.SessionLock["Service"]) =>
          Effect.scoped(Effect.gen(function*() {
            const lease = yield* service.acquire(key, { retry: quickRetry, timeout: "30 seconds" })
            if (++inside > 1) overlaps++
            entered.push(lease.token)
            yield* Effect.sleep("2 millis")
            inside--
          })).pipe(Effect.repeat({ times: 3 }))
        yield* drive(Effect.forEach(
          services.flatMap((service) => [service, service, service]),
          worker,
          { concurrency: "unbounded", discard: true }
        ))
        assert.strictEqual(overlaps, 0)
        assert.strictEqual(entered.length, 36)
        for (let i = 1; i < entered.length; i++) assert.isAbove(entered[i]!, entered[i - 1]!)
      }))

    run("times out within one budget with LockTimeout naming the holder", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const other = yield* (yield* LockFixtures).another
        const events = yield* collectEvents
        yield* other.acquire(key)
        const error = yield* drive(Effect.flip(Effect.scoped(lock.acquire(key, { timeout: "300 millis" }))))
        assert.strictEqual(error._tag, "LockTimeout")
        if (error._tag !== "LockTimeout") return
        assert.isAtLeast(error.waitedMs, 300)
        assert.isBelow(error.waitedMs, 3_000)
        assert.isAtLeast(error.attempts, 2)
        assert.strictEqual(error.holder.status, "alive")
        assert.isTrue(error.isRetryable)
        assert.include(error.message, "held by")
        assert.include(error.message, "alive")
        yield* events.settle
        assert.strictEqual(events.ofType("lock.contended").length, 1)
        const timeouts = events.ofType("lock.timeout")
        assert.strictEqual(timeouts.length, 1)
        assert.strictEqual(timeouts[0]!.attempts, error.attempts)
        assert.strictEqual(events.ofType("lock.acquired").length, 1) // the other service's
      }))

    run("queues fibers of one service behind the local holder", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const events = yield* collectEvents
        const scope = yield* Scope.make()
        const first = yield* lock.acquire(key).pipe(Scope.provide(scope))
        const waiter = yield* Effect.forkChild(Effect.scoped(lock.acquire(key, { timeout: "10 seconds" })), {
          startImmediately: true
        })
        yield* pass(50)
        assert.isUndefined(waiter.pollUnsafe())
        yield* Scope.close(scope, Exit.void)
        const second = yield* drive(Fiber.join(waiter))
        assert.isAbove(second.token, first.token)
        yield* events.settle
        assert.strictEqual(events.ofType("lock.contended").length, 1)
      }))

    run("reclaims a lock whose holder is dead", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const events = yield* collectEvents
        const planted = yield* (yield* LockFixtures).plantDead(key)
        const lease = yield* drive(lock.acquire(key, { timeout: "5 seconds" }))
        assert.isAbove(lease.token, planted)
        yield* events.settle
        const reclaimed = events.ofType("lock.reclaimed")
        assert.strictEqual(reclaimed.length, 1)
        assert.strictEqual(reclaimed[0]!.reason, "holder_dead")
        assert.strictEqual(reclaimed[0]!.previousHolder.status, "dead")
        const acquired = events.ofType("lock.acquired")
        assert.strictEqual(acquired.length, 1)
        assert.isTrue(acquired[0]!.reclaimed)
      }))

    run("never robs a live holder past the stale time: LockStale, and the lock stays", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const events = yield* collectEvents
        yield* (yield* LockFixtures).plantLive(key, 2 * 3_600_000)
        const error = yield* drive(
          Effect.flip(Effect.scoped(lock.acquire(key, { timeout: "200 millis", staleTime: "1 hour" })))
        )
        assert.strictEqual(error._tag, "LockStale")
        if (error._tag !== "LockStale") return
        assert.include(error.reasons, "older_than_stale_time")
        assert.strictEqual(error.holder.status, "alive")
        assert.isFalse(error.isRetryable)
        assert.include(error.message, "never robbed")
        const still = yield* lock.inspect(key)
        assert.isTrue(Option.isSome(still) && still.value.holder.status === "alive")
        yield* events.settle
        assert.strictEqual(events.ofType("lock.stale").length, 1)
        assert.strictEqual(events.ofType("lock.reclaimed").length, 0)
      }))

    run("reports a live holder past its own max hold", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const other = yield* (yield* LockFixtures).another
        yield* other.acquire(key, { maxHold: "100 millis" })
        yield* pass(150)
        const error = yield* drive(Effect.flip(Effect.scoped(lock.acquire(key, { timeout: "100 millis" }))))
        assert.strictEqual(error._tag, "LockStale")
        if (error._tag === "LockStale") assert.deepStrictEqual([...error.reasons], ["past_max_hold"])
      }))

    run("leaves no lock and no fiber behind when a waiting acquire is interrupted", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const other = yield* (yield* LockFixtures).another
        const events = yield* collectEvents
        const otherScope = yield* Scope.make()
        yield* other.acquire(key).pipe(Scope.provide(otherScope))
        const waiter = yield* Effect.forkChild(Effect.scoped(lock.acquire(key, { retry: quickRetry })), {
          startImmediately: true
        })
        yield* pass(60)
        yield* Fiber.interrupt(waiter)
        const exit = yield* Fiber.await(waiter)
        assert.isTrue(Exit.hasInterrupts(exit))
        yield* Scope.close(otherScope, Exit.void)
        assert.isTrue(Option.isNone(yield* lock.inspect(key)))
        yield* pass(60)
        assert.isTrue(Option.isNone(yield* lock.inspect(key)))
        // The key is free at once, for this service and the other.
        yield* Effect.scoped(lock.acquire(key, { timeout: "1 second" }))
        yield* Effect.scoped(other.acquire(key, { timeout: "1 second" }))
        yield* events.settle
        assert.strictEqual(events.ofType("lock.acquired").length, 3)
        assert.strictEqual(events.ofType("lock.released").length, 3)
      }))

    run("releases a lock taken just before an interruption", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const events = yield* collectEvents
        for (let i = 0; i < 20; i++) {
          const fiber = yield* Effect.forkChild(Effect.scoped(Effect.andThen(lock.acquire(key), Effect.never)), {
            startImmediately: true
          })
          // Interrupt at a different point each round: before, during and after the attempt.
          for (let y = 0; y < i % 5; y++) yield* Effect.yieldNow
          if (i >= 10) yield* pass(1)
          yield* Fiber.interrupt(fiber)
          assert.isTrue(Option.isNone(yield* lock.inspect(key)), `round ${i}`)
        }
        yield* events.settle
        assert.strictEqual(events.ofType("lock.acquired").length, events.ofType("lock.released").length)
        yield* Effect.scoped(lock.acquire(key, { timeout: "1 second" }))
      }))

    run("assertCurrent passes while held and fails with LockLost once the lease is gone", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const other = yield* (yield* LockFixtures).another
        const events = yield* collectEvents
        const scope = yield* Scope.make()
        const lease = yield* lock.acquire(key).pipe(Scope.provide(scope))
        yield* lock.assertCurrent(lease)
        yield* Scope.close(scope, Exit.void)
        const gone = yield* Effect.flip(lock.assertCurrent(lease))
        assert.strictEqual(gone._tag, "LockLost")
        const next = yield* other.acquire(key)
        const replaced = yield* Effect.flip(lock.assertCurrent(lease))
        assert.strictEqual(replaced._tag, "LockLost")
        if (replaced._tag === "LockLost") {
          assert.strictEqual(replaced.token, lease.token)
          assert.include(replaced.message, "Do not commit")
        }
        yield* other.assertCurrent(next)
        yield* events.settle
        assert.strictEqual(events.ofType("lock.lost").length, 2)
      }))

    run("reentrancy: off by default (a defect), on gives the held lease", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const outer = yield* lock.acquire(key)
        const nested = yield* Effect.exit(Effect.scoped(lock.acquire(key, { timeout: "100 millis" })))
        assert.isTrue(Exit.isFailure(nested) && Cause.hasDies(nested.cause))
        const again = yield* Effect.scoped(lock.acquire(key, { reentrant: true }))
        assert.deepStrictEqual(again, outer)
        // Still held after the nested scope closed.
        yield* lock.assertCurrent(outer)
      }))

    run("rejects an invalid session key with InvalidSessionKey", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const error = yield* Effect.flip(Effect.scoped(lock.acquire("bad\nkey" as SessionKey.SessionKey)))
        assert.strictEqual(error._tag, "InvalidSessionKey")
      }))

    run("stops early when the retry schedule ends", () =>
      Effect.gen(function*() {
        const lock = yield* SessionLock.SessionLock
        const other = yield* (yield* LockFixtures).another
        yield* other.acquire(key)
        const error = yield* drive(Effect.flip(Effect.scoped(
          lock.acquire(key, { timeout: "1 minute", retry: Schedule.spaced("10 millis").pipe(Schedule.upTo({ times: 2 })) })
        )))
        assert.strictEqual(error._tag, "LockTimeout")
        if (error._tag === "LockTimeout") {
          assert.strictEqual(error.attempts, 3)
          assert.isBelow(error.waitedMs, 5_000)
        }
      }))
  })
}
