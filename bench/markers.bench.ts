/**
 * The cost of a structured tool call marker: open + close + its two events
 * published on a real DiagnosticBus (`tracker.tool({ name }, Effect.void)`
 * inside one `tracker.run`), against a bare `Effect.acquireUseRelease` of the
 * same shape (acquire a record, use `Effect.void`, release) and against a
 * plain `Map` set + delete, all in one process.
 *
 * Figures (medians over alternating rounds, after a warm-up):
 * - `marker_ns`, `acquire_release_ns`, `map_ns`: time per call.
 * - `marker_ops_per_s`: tracked calls per second.
 * - `marker_vs_acquire_release_ratio`: tracked ÷ bare acquireRelease (goal ≤ 3).
 * - `marker_vs_map_ratio`: tracked ÷ Map set + delete.
 * - `marker_with_subscriber_vs_acquire_release_ratio`: the same tracked call
 *   with one bus subscriber draining the stream, as in production.
 * - `marker_traced_vs_acquire_release_in_span_ratio`: a marker with its GenAI
 *   span (the default) ÷ the bare call inside a span of the same name: the
 *   cost of tracking on top of tracing.
 *
 * The untraced figures measure the tracker with `spans: false`, the same shape
 * as the bare call.
 */
import { Context, Effect, Exit, Layer, Scope, Stream } from "effect"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import type { Suite } from "./index.ts"
import { median } from "./utils/stats.ts"

const key = SessionKey.makeUnsafe("agent:bench:markers:1")

/** Nanoseconds per iteration of `n` sequential runs of `effect`. */
const timed = <E, R>(n: number, effect: Effect.Effect<unknown, E, R>) =>
  Effect.gen(function*() {
    const started = performance.now()
    for (let i = 0; i < n; i++) yield* effect
    return ((performance.now() - started) * 1e6) / n
  })

interface Tracked {
  /** Nanoseconds per tracked tool call, `n` of them inside one run. */
  readonly measure: (n: number) => Promise<number>
  /** Events the subscriber has drained (0 without one). */
  readonly drained: () => number
  readonly close: () => Promise<void>
}

/** A tracker on its own bus, optionally with one subscriber draining every event. */
const makeTracked = async (withSubscriber: boolean, spans = false): Promise<Tracked> => {
  const scope = Effect.runSync(Scope.make())
  let drained = 0
  const measure = await Effect.runPromise(
    Effect.gen(function*() {
      const context = yield* Layer.build(
        ActivityTracker.layer({ spans }).pipe(Layer.provideMerge(DiagnosticBus.layer()))
      )
      const tracker = Context.get(context, ActivityTracker.ActivityTracker)
      const bus = Context.get(context, DiagnosticBus.DiagnosticBus)
      if (withSubscriber) {
        const events = yield* bus.subscribe({ name: "bench-drain" })
        yield* events.pipe(
          Stream.runForEachArray((batch) => Effect.sync(() => (drained += batch.length))),
          Effect.forkScoped
        )
      }
      const call = tracker.tool({ name: "bench_tool" }, Effect.void)
      return (n: number) =>
        tracker.run(key, timed(n, call)).pipe(
          // Let the subscriber catch up between rounds, outside the timed region.
          Effect.tap(() => (withSubscriber ? Effect.repeat(Effect.yieldNow, { times: 20 }) : Effect.void))
        )
    }).pipe(Scope.provide(scope))
  )
  return {
    measure: (n) => Effect.runPromise(measure(n)),
    drained: () => drained,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** The same shape without tracking: acquire a record, use `Effect.void`, release it. */
const bareCall = () => {
  let next = 0
  return Effect.acquireUseRelease(
    Effect.sync(() => ({ id: ++next, kind: "tool_call", name: "bench_tool", open: true })),
    () => Effect.void,
    (record) =>
      Effect.sync(() => {
        record.open = false
      })
  )
}

const bareAcquireRelease = (n: number) => Effect.runPromise(timed(n, bareCall()))

/** The bare call inside a span of the same name, to compare with a traced marker. */
const bareAcquireReleaseInSpan = (n: number) =>
  Effect.runPromise(timed(
    n,
    bareCall().pipe(
      Effect.withSpan("execute_tool bench_tool", { attributes: { "gen_ai.tool.name": "bench_tool" } }, {
        captureStackTrace: false
      })
    )
  ))

/** A plain Map set + delete per call. */
const mapSetDelete = (n: number) => {
  const map = new Map<number, { readonly id: number; readonly name: string }>()
  let checksum = 0
  const started = performance.now()
  for (let i = 0; i < n; i++) {
    map.set(i, { id: i, name: "bench_tool" })
    checksum += map.size
    map.delete(i)
  }
  const ns = ((performance.now() - started) * 1e6) / n
  if (checksum !== n) throw new Error("map bench miscounted")
  return ns
}

const suite: Suite = {
  name: "Structured marker cost",
  run: async ({ log, quick }) => {
    // Many short rounds, each measuring every variant back to back, so that a
    // burst of load on the machine hits the variants alike and the medians hold.
    const perRound = quick ? 5_000 : 20_000
    const rounds = quick ? 5 : 21
    const plain = await makeTracked(false)
    const drained = await makeTracked(true)
    const traced = await makeTracked(false, true)
    try {
      // Warm up every variant (JIT, PubSub growth).
      for (let i = 0; i < 3; i++) {
        await plain.measure(perRound)
        await drained.measure(perRound)
        await bareAcquireRelease(perRound)
        await traced.measure(perRound)
        await bareAcquireReleaseInSpan(perRound)
        mapSetDelete(perRound * 10)
      }
      const tracedMarker: Array<number> = []
      const spanned: Array<number> = []
      const marker: Array<number> = []
      const withSubscriber: Array<number> = []
      const acquireRelease: Array<number> = []
      const map: Array<number> = []
      for (let round = 0; round < rounds; round++) {
        // Alternate the order so that no variant always runs after the same one.
        if (round % 2 === 0) {
          marker.push(await plain.measure(perRound))
          acquireRelease.push(await bareAcquireRelease(perRound))
          withSubscriber.push(await drained.measure(perRound))
        } else {
          withSubscriber.push(await drained.measure(perRound))
          acquireRelease.push(await bareAcquireRelease(perRound))
          marker.push(await plain.measure(perRound))
        }
        map.push(mapSetDelete(perRound * 10))
        tracedMarker.push(await traced.measure(perRound))
        spanned.push(await bareAcquireReleaseInSpan(perRound))
      }
      const markerNs = median(marker)
      const acquireReleaseNs = median(acquireRelease)
      const mapNs = median(map)
      const withSubscriberNs = median(withSubscriber)
      if (drained.drained() === 0) throw new Error("the subscriber drained nothing")
      log(`  ${rounds} rounds of ${perRound} calls; medians; the subscriber drained ${drained.drained()} events`)
      return {
        marker_ops_per_s: Math.round(1e9 / markerNs),
        marker_vs_acquire_release_ratio: markerNs / acquireReleaseNs,
        marker_vs_map_ratio: markerNs / mapNs,
        marker_ns: markerNs,
        acquire_release_ns: acquireReleaseNs,
        map_ns: mapNs,
        marker_with_subscriber_ns: withSubscriberNs,
        marker_with_subscriber_vs_acquire_release_ratio: withSubscriberNs / acquireReleaseNs,
        marker_traced_ns: median(tracedMarker),
        acquire_release_in_span_ns: median(spanned),
        marker_traced_vs_acquire_release_in_span_ratio: median(tracedMarker) / median(spanned)
      }
    } finally {
      await traced.close()
      await plain.close()
      await drained.close()
    }
  }
}

export default suite
