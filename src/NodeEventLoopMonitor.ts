/**
 * Event-loop liveness, sampled: how late the event loop ran its timers (p99
 * and max delay) and how busy it was (utilisation) since the previous sample.
 * The watchdog reads one sample per tick to tell a starved *process* from a
 * stuck *session*: when the process itself was starved, every session looks
 * silent, and no session should be aborted for it.
 *
 * `layer` is the Node implementation over `perf_hooks.monitorEventLoopDelay`
 * (a histogram Node fills from its own native timer, so sampling is a few
 * reads and never blocks) and `performance.eventLoopUtilization` deltas. It
 * measures the real event loop, so its interval is real time, not `Clock`
 * time.
 * `layerTest` returns readings a test sets, to simulate a starved process.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import { monitorEventLoopDelay, performance } from "node:perf_hooks"
import type { EventLoopUtilization } from "node:perf_hooks"

/**
 * One reading of event-loop liveness over an interval.
 *
 * @category models
 * @since 0.1.0
 */
export interface LivenessSample {
  /** 99th percentile of the event-loop delay, in milliseconds. */
  readonly p99Ms: number
  /** Largest event-loop delay, in milliseconds. */
  readonly maxMs: number
  /** Share of the interval the event loop was busy, 0–1. */
  readonly utilization: number
  /** Length of the interval the reading covers, in milliseconds of real time. */
  readonly intervalMs: number
}

/**
 * A reading of a process that was never starved: what `layerTest` returns
 * until a test sets another.
 *
 * @category models
 * @since 0.1.0
 */
export const quietSample: LivenessSample = { p99Ms: 0, maxMs: 0, utilization: 0, intervalMs: 0 }

/**
 * The event-loop sampler.
 *
 * @category services
 * @since 0.1.0
 */
export class EventLoopMonitor extends Context.Service<EventLoopMonitor, {
  /** The reading since the previous sample (or since the monitor started); starts the next interval. */
  readonly sample: Effect.Effect<LivenessSample>
}>()("effect-session-runtime/EventLoopMonitor") {}

/**
 * Options of the Node sampler.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * How often Node's delay timer fires, in milliseconds (a whole number, at
   * least 1); an invalid value falls back to the default with a warning.
   * @default 10
   */
  readonly resolutionMs?: number | undefined
}

/**
 * The default timer resolution of the delay histogram, in milliseconds.
 *
 * @category config
 * @since 0.1.0
 */
export const defaultResolutionMs = 10

const nanosToMillis = (nanos: number): number => nanos / 1e6

/**
 * Builds the Node sampler in the current scope: the delay histogram is
 * enabled now and disabled when the scope closes.
 *
 * Details: Node's histogram records the time between consecutive runs of its
 * own timer, and resetting it also forgets when the timer last ran, so the
 * first gap after each sample is never recorded; a block that straddles a
 * sample (the watchdog's tick firing late *because* the loop was blocked is
 * the typical case) would vanish from the reading. The sampler therefore also
 * counts the time the recorded gaps do not cover (the interval, from the
 * utilisation clock, minus the sum of the recorded gaps); past one timer
 * period, that uncovered time is a block the histogram missed, and it is
 * reported as a delay.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const requested = options.resolutionMs
  let resolution = defaultResolutionMs
  if (requested !== undefined) {
    if (Number.isFinite(requested) && requested >= 1) {
      // Node accepts whole milliseconds only.
      resolution = Math.round(requested)
    } else {
      yield* Effect.logWarning(
        `EventLoopMonitor: resolutionMs ${requested} ignored (a whole number of milliseconds, at least 1 is needed); ` +
          `using ${defaultResolutionMs}`
      )
    }
  }
  const histogram = yield* Effect.acquireRelease(
    Effect.sync(() => {
      const h = monitorEventLoopDelay({ resolution })
      h.enable()
      return h
    }),
    (h) => Effect.sync(() => h.disable())
  )
  const last = yield* Ref.make<EventLoopUtilization>(performance.eventLoopUtilization())

  // One atomic step: two concurrent samples never read the same interval twice.
  const sample = Ref.modify(last, (previous): readonly [LivenessSample, EventLoopUtilization] => {
    const elu = performance.eventLoopUtilization()
    const delta = performance.eventLoopUtilization(elu, previous)
    // idle + active is the real time elapsed between the two readings.
    const intervalMs = Math.max(0, delta.idle + delta.active)
    const count = histogram.count
    const recordedMs = count === 0 ? 0 : nanosToMillis(count * histogram.mean)
    let p99Ms = count === 0 ? 0 : nanosToMillis(histogram.percentile(99))
    let maxMs = count === 0 ? 0 : nanosToMillis(histogram.max)
    histogram.reset()
    const missedMs = intervalMs - recordedMs - resolution
    if (missedMs > maxMs) {
      maxMs = missedMs
      // With fewer than 100 gaps, the 99th percentile is the largest one.
      if (count < 100) p99Ms = missedMs
    }
    const utilization = Number.isFinite(delta.utilization) ? Math.min(1, Math.max(0, delta.utilization)) : 0
    return [{ p99Ms, maxMs, utilization, intervalMs }, elu]
  })

  return EventLoopMonitor.of({ sample })
})

/**
 * The Node sampler as a layer; the histogram lives as long as the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<EventLoopMonitor> => Layer.effect(EventLoopMonitor, make(options))

/**
 * Sets the readings of the test sampler.
 *
 * @category testing
 * @since 0.1.0
 */
export class TestEventLoopMonitor extends Context.Service<TestEventLoopMonitor, {
  /** Every later sample returns this reading, until set again. */
  readonly set: (sample: LivenessSample) => Effect.Effect<void>
  /** The next sample alone returns this reading; later ones return the one last `set`. */
  readonly setNext: (sample: LivenessSample) => Effect.Effect<void>
}>()("effect-session-runtime/TestEventLoopMonitor") {
  /** Every later sample returns this reading, until set again. */
  static readonly set = (sample: LivenessSample): Effect.Effect<void, never, TestEventLoopMonitor> =>
    TestEventLoopMonitor.use((monitor) => monitor.set(sample))
  /** The next sample alone returns this reading. */
  static readonly setNext = (sample: LivenessSample): Effect.Effect<void, never, TestEventLoopMonitor> =>
    TestEventLoopMonitor.use((monitor) => monitor.setNext(sample))
}

/**
 * A sampler whose readings a test sets through {@link TestEventLoopMonitor};
 * it returns {@link quietSample} until then.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerTest: Layer.Layer<EventLoopMonitor | TestEventLoopMonitor> = Layer.effectContext(
  Effect.gen(function*() {
    const state = yield* Ref.make<{ readonly sticky: LivenessSample; readonly next: LivenessSample | undefined }>({
      sticky: quietSample,
      next: undefined
    })
    const sample = Ref.modify(state, (s) => [s.next ?? s.sticky, { sticky: s.sticky, next: undefined }] as const)
    return Context.make(EventLoopMonitor, EventLoopMonitor.of({ sample })).pipe(
      Context.add(
        TestEventLoopMonitor,
        TestEventLoopMonitor.of({
          set: (reading) => Ref.set(state, { sticky: reading, next: undefined }),
          setNext: (reading) => Ref.update(state, (s) => ({ ...s, next: reading }))
        })
      )
    )
  })
)
