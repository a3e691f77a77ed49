/**
 * One watchdog heartbeat over 100,000 sessions, half of them with an open
 * tool marker: every session has a running turn (an activity owner) on its
 * lane.
 *
 * Figures:
 * - `watchdog_tick_ms_100k`: a tick over a healthy fleet (every turn younger
 *   than the warn threshold: the tick sweeps the tracker and scans every lane);
 *   goal ≤ 50 ms.
 * - `watchdog_tick_ms_100k_all_attention`: the worst case, every session past
 *   the warn threshold, so each is classified and its verdict published.
 * - `watchdog_tick_us_per_session` for both.
 *
 * Time is moved with `TestClock` (the sessions are aged without waiting);
 * the tick itself is timed with `performance.now()`.
 */
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as LaneGuard from "../src/LaneGuard.ts"
import * as Recovery from "../src/Recovery.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as Watchdog from "../src/Watchdog.ts"
import type { Suite } from "./index.ts"
import { median } from "./utils/stats.ts"

const fleetLayer = Watchdog.layer({ interval: "24 hours", autoRecover: false, activeAbort: false }).pipe(
  Layer.provideMerge(Recovery.layer()),
  Layer.provideMerge(SessionLanes.layer()),
  Layer.provideMerge(LaneGuard.layerNone),
  Layer.provideMerge(ActivityTracker.layer()),
  Layer.provideMerge(DiagnosticBus.layer())
)

const timeTicks = (watchdog: Watchdog.Watchdog["Service"], rounds: number) =>
  Effect.gen(function*() {
    const samples: Array<number> = []
    for (let i = 0; i < rounds; i++) {
      const started = performance.now()
      const report = yield* watchdog.tick
      samples.push(performance.now() - started)
      void report
    }
    return median(samples)
  })

const suite: Suite = {
  name: "Watchdog heartbeat",
  run: async ({ quick }) => {
    const sessions = quick ? 20_000 : 100_000
    const keys = Array.from({ length: sessions }, (_, i) => SessionKey.makeUnsafe(`agent:bench:wd:${i}`))
    const program = Effect.gen(function*() {
      const lanes = yield* SessionLanes.SessionLanes
      const tracker = yield* ActivityTracker.ActivityTracker
      const watchdog = yield* Watchdog.Watchdog
      for (const [i, key] of keys.entries()) {
        yield* lanes.submit(key, i % 2 === 0 ? tracker.tool({ name: "search" }, Effect.never) : Effect.never)
      }
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow
      const stats = yield* tracker.stats
      yield* TestClock.adjust("60 seconds")
      const healthy = yield* timeTicks(watchdog, quick ? 3 : 5)
      yield* TestClock.adjust("2 minutes")
      const attention = yield* timeTicks(watchdog, 3)
      return { healthy, attention, markers: stats.markers, owners: stats.owners }
    }).pipe(Effect.scoped, Effect.provide(fleetLayer), Effect.provide(TestClock.layer()))
    const result = await Effect.runPromise(program)
    const suffix = quick ? "_quick" : ""
    return {
      watchdog_sessions: sessions,
      watchdog_open_markers: result.markers,
      [`watchdog_tick_ms_100k${suffix}`]: result.healthy,
      [`watchdog_tick_ms_100k_all_attention${suffix}`]: result.attention,
      watchdog_tick_us_per_session: (result.healthy * 1000) / sessions,
      watchdog_tick_us_per_session_all_attention: (result.attention * 1000) / sessions
    }
  }
}

export default suite
