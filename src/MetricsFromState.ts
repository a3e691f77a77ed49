/**
 * The gauges of state, read from the services that own the state: open
 * sessions by lane state and the turns queued, from `SessionLanes.list`; open
 * tool and model calls and the runs registered, from `ActivityTracker.stats`.
 *
 * Each gauge is registered with `Metric.registerUnsafe`, so its value is read
 * when metrics are read (a Prometheus scrape, an OTLP export,
 * `Metric.snapshot`), never pushed by events: it cannot drift, whatever a
 * subscriber of the bus lost, and it exists from start-up (0 before the first
 * session). The lanes and the tracker are read once per reading of the
 * metrics (the gauges read within one synchronous stretch share that
 * reading), so the figures of one scrape agree with one another. A reading
 * costs one pass over the open lanes and the tracker's sessions.
 *
 * Gotchas: the gauges are registered in the `Metric.MetricRegistry` of the
 * layer's context; two runtimes sharing one registry (the default one is
 * process-wide) share series, and the one registered last is reported.
 * Give each runtime its own registry when several live in one process.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as ActivityTracker from "./ActivityTracker.ts"
import type * as DiagnosticEvent from "./DiagnosticEvent.ts"
import { type LaneView, SessionLanes } from "./SessionLanes.ts"
import * as SessionMetrics from "./SessionMetrics.ts"

/**
 * The figures the gauges show, at one instant.
 *
 * @category models
 * @since 0.1.0
 */
export interface Reading {
  readonly sessions: { readonly [S in DiagnosticEvent.LaneState]: number }
  readonly queueDepth: number
  readonly activeCalls: { readonly [K in DiagnosticEvent.MarkerKind]: number }
  readonly activeRuns: number
}

// One count per lane state of the catalogue, so a new state needs no change here.
const noSessions = (): Record<DiagnosticEvent.LaneState, number> =>
  Object.fromEntries(SessionMetrics.domains.laneState.map((state) => [state, 0])) as Record<
    DiagnosticEvent.LaneState,
    number
  >

/**
 * The reading of an empty runtime.
 *
 * @category constants
 * @since 0.1.0
 */
export const emptyReading: Reading = {
  sessions: noSessions(),
  queueDepth: 0,
  activeCalls: { tool_call: 0, model_call: 0 },
  activeRuns: 0
}

/**
 * The reading of the lanes' views and the tracker's figures.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeReading = (
  lanes: Iterable<Pick<LaneView, "state" | "queueDepth">>,
  activity: Pick<ActivityTracker.Stats, "openTools" | "openModelCalls" | "owners">
): Reading => {
  const sessions = noSessions()
  let queueDepth = 0
  for (const lane of lanes) {
    sessions[lane.state]++
    queueDepth += lane.queueDepth
  }
  return {
    sessions,
    queueDepth,
    activeCalls: { tool_call: activity.openTools, model_call: activity.openModelCalls },
    activeRuns: activity.owners
  }
}

const gauge = (value: number): Metric.GaugeState<number> => ({ value })
const ignore = () => {}

/**
 * Registers the gauges in the current metric registry until the scope
 * closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: Effect.Effect<
  void,
  never,
  SessionLanes | ActivityTracker.ActivityTracker | SessionMetrics.SessionMetrics | Scope.Scope
> = Effect.gen(function*() {
  const lanes = yield* SessionLanes
  const tracker = yield* ActivityTracker.ActivityTracker
  const metrics = yield* SessionMetrics.SessionMetrics
  const context = yield* Effect.context<never>()
  const read = Effect.map(
    Effect.all([lanes.list, tracker.stats]),
    ([views, stats]) => makeReading(views, stats)
  )
  let last = emptyReading
  let current: Reading | undefined
  const reading = (): Reading => {
    if (current === undefined) {
      // The services answer synchronously; should one ever need to wait, the
      // previous reading stands rather than a made-up one.
      const exit = Effect.runSyncExit(read)
      current = last = Exit.isSuccess(exit) ? exit.value : last
      // Shared by the gauges read in this synchronous stretch (one scrape).
      queueMicrotask(() => {
        current = undefined
      })
    }
    return current
  }
  const register = <S>(series: Metric.Metric<number, S>, get: () => S) =>
    Effect.acquireRelease(
      Effect.sync(() => Metric.registerUnsafe(series, context, { get, update: ignore, modify: ignore })),
      (registration) => Effect.sync(() => registration.remove())
    )
  for (const state of SessionMetrics.domains.laneState) {
    yield* register(metrics.sessions({ state }), () => gauge(reading().sessions[state]))
  }
  yield* register(metrics.queueDepth, () => gauge(reading().queueDepth))
  for (const kind of SessionMetrics.domains.markerKind) {
    yield* register(metrics.activeCalls({ kind }), () => gauge(reading().activeCalls[kind]))
  }
  yield* register(metrics.activeRuns, () => gauge(reading().activeRuns))
})

/**
 * The gauges of state as a layer (provides nothing; registers the gauges for
 * its lifetime). `SessionRuntime.layer` includes it.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<
  never,
  never,
  SessionLanes | ActivityTracker.ActivityTracker | SessionMetrics.SessionMetrics
> =
  Layer.effectDiscard(make)
