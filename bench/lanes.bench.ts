/**
 * Lane overhead: 10,000 sessions × 10 no-op turns submitted through
 * `SessionLanes` (each turn an activity owner, its events published), against
 * the same turns run by a bare `Effect.forEach` with the same concurrency
 * (sessions in parallel, each session's turns in order).
 *
 * Turns are not traced here (`spans: false`), the same shape as the bare run.
 *
 * Figures: `lane_turn_overhead_ratio` (lanes ÷ bare; goal ≤ 3),
 * `lane_turn_us` and `bare_turn_us` (per turn), `lane_turns_per_s`, and
 * `lane_vs_semaphore_lane_ratio`: lanes ÷ the least a correct lane must do
 * (a fiber per turn, serialised per session by a semaphore, joined), which
 * separates the cost of tracking, events and admission from the cost of
 * running each turn as its own interruptible fiber.
 */
import { Effect, Fiber, Layer, Semaphore } from "effect"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as LaneGuard from "../src/LaneGuard.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import type { Suite } from "./index.ts"
import { alternate } from "./utils/stats.ts"

const runtimeLayer = SessionLanes.layer({ spans: false }).pipe(
  Layer.provideMerge(LaneGuard.layerNone),
  Layer.provideMerge(ActivityTracker.layer()),
  Layer.provideMerge(DiagnosticBus.layer())
)

const noop = Effect.void

const throughLanes = (keys: ReadonlyArray<SessionKey.SessionKey>, turns: number) =>
  Effect.scoped(Effect.gen(function*() {
    const lanes = yield* SessionLanes.SessionLanes
    const started = performance.now()
    const submissions = yield* Effect.forEach(keys, (key) =>
      Effect.forEach(Array.from({ length: turns }), () => lanes.submit(key, noop)))
    yield* Effect.forEach(submissions, (perSession) => Effect.forEach(perSession, (s) => s.result, { discard: true }), {
      discard: true
    })
    return performance.now() - started
  }).pipe(Effect.provide(runtimeLayer)))

const bare = (keys: ReadonlyArray<SessionKey.SessionKey>, turns: number) =>
  Effect.gen(function*() {
    const started = performance.now()
    yield* Effect.forEach(
      keys,
      () => Effect.forEach(Array.from({ length: turns }), () => noop, { discard: true }),
      { concurrency: "unbounded", discard: true }
    )
    return performance.now() - started
  })

/**
 * The least a correct lane must do: each turn its own (interruptible) fiber,
 * one at a time per session through a semaphore, its result joined. No
 * tracking, no events, no admission.
 */
const semaphoreLanes = (keys: ReadonlyArray<SessionKey.SessionKey>, turns: number) =>
  Effect.gen(function*() {
    const started = performance.now()
    const fibers = yield* Effect.forEach(keys, () =>
      Effect.gen(function*() {
        const permit = yield* Semaphore.make(1)
        return yield* Effect.forEach(
          Array.from({ length: turns }),
          () => Effect.forkChild(permit.withPermits(1)(noop), { startImmediately: true })
        )
      }))
    yield* Effect.forEach(fibers, (perSession) => Effect.forEach(perSession, Fiber.join, { discard: true }), {
      discard: true
    })
    return performance.now() - started
  })

const suite: Suite = {
  name: "Session lanes",
  run: async ({ quick }) => {
    const sessions = quick ? 2_000 : 10_000
    const turns = 10
    const keys = Array.from({ length: sessions }, (_, i) => SessionKey.makeUnsafe(`agent:bench:lane:${i}`))
    await Effect.runPromise(throughLanes(keys.slice(0, 500), turns)) // warm up
    await Effect.runPromise(bare(keys.slice(0, 500), turns))
    const result = await alternate(quick ? 3 : 5, {
      lanes: () => Effect.runPromise(throughLanes(keys, turns)),
      bare: () => Effect.runPromise(bare(keys, turns)),
      semaphore: () => Effect.runPromise(semaphoreLanes(keys, turns))
    })
    const total = sessions * turns
    return {
      lane_sessions: sessions,
      lane_turn_us: (result.lanes * 1000) / total,
      bare_turn_us: (result.bare * 1000) / total,
      lane_turns_per_s: total / (result.lanes / 1000),
      lane_turn_overhead_ratio: result.lanes / result.bare,
      semaphore_lane_turn_us: (result.semaphore * 1000) / total,
      lane_vs_semaphore_lane_ratio: result.lanes / result.semaphore
    }
  }
}

export default suite
