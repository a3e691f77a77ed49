/**
 * Feeds {@link SessionMetrics} from the diagnostic events: one subscriber
 * fiber on the `DiagnosticBus` turns every event into counter and histogram
 * updates, and derives the gauges (`sessions{state}`, `queue_depth`,
 * `active_calls{kind}`) from the event stream itself: per-session lane state
 * from `session.state`, open markers from `marker_opened`, `marker_closed` and
 * `evicted`, and forgetting a session when its lane closes. Metrics therefore
 * depend on the events alone, never on another service's internals.
 *
 * Memory is bounded: at most `maxTrackedSessions` sessions, `maxTrackedMarkers`
 * markers and as many in-flight recoveries are remembered; past a cap the
 * gauges under-count and the overflow is counted in
 * `metric_series_overflow_total{metric="sessions"|"active_calls"}`. Session
 * keys are kept in memory to track state, never written to a label.
 *
 * If this subscriber itself falls behind the bus, the lost events are counted
 * in `events_dropped_total` and the gauges may drift until the sessions
 * concerned publish their next state.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as DiagnosticBus from "./DiagnosticBus.ts"
import * as NodeEventLoopMonitor from "./NodeEventLoopMonitor.ts"
import type * as DiagnosticEvent from "./DiagnosticEvent.ts"
import * as SessionMetrics from "./SessionMetrics.ts"

/**
 * Options of the event subscriber (the metric options are in
 * {@link SessionMetrics.Options}).
 *
 * @category config
 * @since 0.1.0
 */
export interface Options extends SessionMetrics.Options {
  /**
   * The most sessions whose lane state is remembered for the gauges.
   * @default 100000
   */
  readonly maxTrackedSessions?: number | undefined
  /**
   * The most open markers (and in-flight recoveries, and sessions waiting for
   * their lock) remembered.
   * @default 100000
   */
  readonly maxTrackedMarkers?: number | undefined
}

/**
 * What the subscriber remembers right now (for tests and health pages).
 *
 * @category models
 * @since 0.1.0
 */
export interface Tracked {
  readonly sessions: number
  readonly markers: number
  readonly recoveries: number
  /** Sessions with a lock wait announced and not yet ended. */
  readonly lockWaits: number
  /** The `seq` of the last event applied (0 before the first). */
  readonly lastSeq: number
}

/**
 * A synchronous event sink that updates the metrics.
 *
 * @category models
 * @since 0.1.0
 */
export interface Recorder {
  readonly record: (event: DiagnosticEvent.DiagnosticEvent) => void
  readonly tracked: () => Tracked
}

interface SessionState {
  state: DiagnosticEvent.LaneState
  queueDepth: number
}

interface OpenMarker {
  readonly sessionKey: string
  readonly kind: DiagnosticEvent.MarkerKind
  /** Tool name, or the provider of a model call. */
  readonly label: string
}

// A model marker is named `provider/model`: the provider is the label.
const labelOf = (kind: DiagnosticEvent.MarkerKind, name: string): string => {
  if (kind === "tool_call") return name
  const slash = name.indexOf("/")
  return slash > 0 ? name.slice(0, slash) : name
}

// The classification/reason pairs the attention classifier can produce.
const attentionPairs: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
  ["long_running", [
    "active_work",
    "queued_behind_active_work",
    "untracked_active_progress",
    "queued_behind_untracked_active_progress"
  ]],
  ["blocked_tool_call", ["blocked_tool_call"]],
  ["stalled_agent_run", ["active_work_without_progress", "queued_behind_terminal_active_work"]],
  ["stale_session_state", ["stale_session_state", "queued_work_without_active_run"]]
]


/**
 * Builds the sink over metric handles and the context holding their
 * registry. Pure bookkeeping plus `updateUnsafe` calls: no fibers, no clock.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeRecorder = (
  metrics: SessionMetrics.Metrics,
  context: Context.Context<never>,
  options: Options = {}
): Recorder => {
  const maxSessions = Math.max(0, options.maxTrackedSessions ?? 100_000)
  const maxMarkers = Math.max(0, options.maxTrackedMarkers ?? 100_000)
  const sessions = new Map<string, SessionState>()
  const markers = new Map<string, OpenMarker>()
  const markersBySession = new Map<string, Set<string>>()
  const recoveries = new Map<string, string>()
  // Waits announced by `lock.contended` and not yet ended, per session: an
  // acquire that ends one waited, even at its first attempt (it may have
  // queued behind a holder in this process).
  const waiting = new Map<string, number>()
  const endWait = (key: string): boolean => {
    const n = waiting.get(key)
    if (n === undefined) return false
    if (n <= 1) waiting.delete(key)
    else waiting.set(key, n - 1)
    return true
  }
  const byState: Record<DiagnosticEvent.LaneState, number> = { idle: 0, processing: 0 }
  const active: Record<DiagnosticEvent.MarkerKind, number> = { tool_call: 0, model_call: 0 }
  let queued = 0
  let lastSeq = 0

  const inc = (metric: { readonly updateUnsafe: (n: number, context: Context.Context<never>) => void }, n = 1) =>
    metric.updateUnsafe(n, context)
  const overflow = (metric: string) => inc(metrics.seriesOverflow({ metric }))

  const publishSessions = () => {
    metrics.sessions({ state: "idle" }).updateUnsafe(byState.idle, context)
    metrics.sessions({ state: "processing" }).updateUnsafe(byState.processing, context)
    metrics.queueDepth.updateUnsafe(queued, context)
  }
  const publishActive = (kind: DiagnosticEvent.MarkerKind) =>
    metrics.activeCalls({ kind }).updateUnsafe(active[kind], context)

  const setSession = (key: string, state: DiagnosticEvent.LaneState, queueDepth: number) => {
    const current = sessions.get(key)
    if (current === undefined) {
      if (sessions.size >= maxSessions) return overflow("sessions")
      sessions.set(key, { state, queueDepth })
      byState[state]++
      queued += queueDepth
    } else {
      byState[current.state]--
      byState[state]++
      queued += queueDepth - current.queueDepth
      current.state = state
      current.queueDepth = queueDepth
    }
    publishSessions()
  }

  const countCall = (marker: OpenMarker | undefined, kind: DiagnosticEvent.MarkerKind, outcome: string) => {
    const label = marker?.label ?? SessionMetrics.other
    if (kind === "tool_call") inc(metrics.toolCalls({ tool: label, outcome }))
    else inc(metrics.modelCalls({ provider: label, outcome }))
  }

  const forgetMarker = (id: string, marker: OpenMarker) => {
    markers.delete(id)
    const ids = markersBySession.get(marker.sessionKey)
    if (ids !== undefined) {
      ids.delete(id)
      if (ids.size === 0) markersBySession.delete(marker.sessionKey)
    }
    active[marker.kind]--
    publishActive(marker.kind)
  }

  // Removes up to `n` open markers of a kind from a session, oldest first.
  const evict = (key: string, kind: DiagnosticEvent.MarkerKind, n: number) => {
    const ids = markersBySession.get(key)
    if (ids === undefined) return
    let left = n
    for (const id of Array.from(ids)) {
      if (left <= 0) break
      const marker = markers.get(id)!
      if (marker.kind !== kind) continue
      forgetMarker(id, marker)
      countCall(marker, kind, "evicted")
      left--
    }
  }

  // Series that exist from the start at zero, so that `increase()` sees the
  // first event and dashboards show 0 rather than "no data".
  const preregister = () => {
    for (const [classification, reasons] of attentionPairs) {
      for (const reason of reasons) inc(metrics.attention({ classification, reason }), 0)
    }
    for (const outcome of SessionMetrics.domains.lockOutcome) inc(metrics.lockAcquire({ outcome }), 0)
    for (const reason of SessionMetrics.domains.evictionReason) inc(metrics.activityEvicted({ reason }), 0)
    for (const reason of SessionMetrics.domains.livenessReason) inc(metrics.livenessWarning({ reason }), 0)
    for (const counter of [metrics.lockContended, metrics.lockStale, metrics.lockLost, metrics.eventsDropped]) {
      inc(counter, 0)
    }
    publishSessions()
    publishActive("tool_call")
    publishActive("model_call")
  }
  preregister()

  const record = (event: DiagnosticEvent.DiagnosticEvent): void => {
    lastSeq = event.seq
    switch (event._tag) {
      case "session.activity.marker_opened": {
        if (markers.size >= maxMarkers) return overflow("active_calls")
        const id = `${event.sessionKey}\u0000${event.markerId}`
        if (markers.has(id)) return
        const marker: OpenMarker = { sessionKey: event.sessionKey, kind: event.kind, label: labelOf(event.kind, event.name) }
        markers.set(id, marker)
        let ids = markersBySession.get(event.sessionKey)
        if (ids === undefined) markersBySession.set(event.sessionKey, ids = new Set())
        ids.add(id)
        active[event.kind]++
        return publishActive(event.kind)
      }
      case "session.activity.marker_closed": {
        const id = `${event.sessionKey}\u0000${event.markerId}`
        const marker = markers.get(id)
        if (marker !== undefined) forgetMarker(id, marker)
        return countCall(marker, event.kind, event.outcome)
      }
      case "session.activity.evicted": {
        inc(metrics.activityEvicted({ reason: event.reason }), event.evictedTools + event.evictedModelCalls)
        evict(event.sessionKey, "tool_call", event.evictedTools)
        return evict(event.sessionKey, "model_call", event.evictedModelCalls)
      }
      case "session.activity.fenced":
        return inc(metrics.activityFenced({ kind: event.kind }))
      case "session.activity.signal_ignored":
        return inc(metrics.signalsIgnored({ reason: event.reason }))
      case "session.state":
        return setSession(event.sessionKey, event.state, event.queueDepth)
      case "session.lane.opened":
        if (!sessions.has(event.sessionKey)) setSession(event.sessionKey, "idle", 0)
        return
      case "session.lane.closed": {
        waiting.delete(event.sessionKey)
        const current = sessions.get(event.sessionKey)
        if (current !== undefined) {
          sessions.delete(event.sessionKey)
          byState[current.state]--
          queued -= current.queueDepth
          publishSessions()
        }
        const ids = markersBySession.get(event.sessionKey)
        if (ids !== undefined) for (const id of Array.from(ids)) forgetMarker(id, markers.get(id)!)
        return
      }
      case "session.lane.admitted":
        return inc(metrics.turnAdmissions({ admission: event.admission }))
      case "session.lane.turn_completed":
        return metrics.turnSeconds({ outcome: event.outcome }).updateUnsafe(event.durationMs / 1000, context)
      case "session.stuck":
        metrics.stuckAgeSeconds.updateUnsafe(event.ageMs / 1000, context)
        return inc(metrics.attention({ classification: event.classification, reason: event.reason }))
      case "session.long_running":
      case "session.stalled":
        return inc(metrics.attention({ classification: event.classification, reason: event.reason }))
      case "session.recovery.requested":
        if (recoveries.size < maxMarkers) recoveries.set(event.recoveryId, event.trigger)
        return inc(metrics.recovery({ phase: "requested", trigger: event.trigger, action: "pending", status: "pending" }))
      case "session.recovery.completed": {
        const trigger = recoveries.get(event.recoveryId) ?? SessionMetrics.other
        recoveries.delete(event.recoveryId)
        return inc(metrics.recovery({ phase: "completed", trigger, action: event.action, status: event.status }))
      }
      case "lock.acquired": {
        metrics.lockWaitSeconds.updateUnsafe(event.waitedMs / 1000, context)
        const waited = endWait(event.sessionKey) || event.attempts > 1
        return inc(metrics.lockAcquire({ outcome: event.reclaimed ? "reclaimed" : waited ? "waited" : "acquired" }))
      }
      case "lock.contended":
        if (waiting.has(event.sessionKey) || waiting.size < maxMarkers) {
          waiting.set(event.sessionKey, (waiting.get(event.sessionKey) ?? 0) + 1)
        }
        return inc(metrics.lockContended)
      case "lock.reclaimed":
        return inc(metrics.lockReclaimed({ reason: event.reason }))
      case "lock.released":
        return metrics.lockHoldSeconds.updateUnsafe(event.heldMs / 1000, context)
      case "lock.timeout":
        endWait(event.sessionKey)
        return inc(metrics.lockAcquire({ outcome: "timeout" }))
      case "lock.stale":
        return inc(metrics.lockStale)
      case "lock.lost":
        return inc(metrics.lockLost)
      case "diagnostic.liveness.warning":
        for (const reason of event.reasons) inc(metrics.livenessWarning({ reason }))
        metrics.eventLoopDelayP99Seconds.updateUnsafe(event.p99Ms / 1000, context)
        metrics.eventLoopDelayMaxSeconds.updateUnsafe(event.maxMs / 1000, context)
        return metrics.eventLoopUtilization.updateUnsafe(event.utilization, context)
      case "diagnostic.events.dropped":
        return inc(metrics.eventsDropped, event.dropped)
      case "session.activity.run_started":
      case "session.activity.run_ended":
      case "session.activity.progress":
        return
    }
  }

  return {
    record,
    tracked: () => ({
      sessions: sessions.size,
      markers: markers.size,
      recoveries: recoveries.size,
      lockWaits: waiting.size,
      lastSeq
    })
  }
}

/**
 * The running subscriber: what it remembers, and a way to wait until it has
 * applied an event.
 *
 * @category services
 * @since 0.1.0
 */
export class MetricsFromEvents extends Context.Service<MetricsFromEvents, {
  readonly tracked: Effect.Effect<Tracked>
  /**
   * Waits (yielding, a bounded number of times) until the event numbered
   * `seq` has been applied; returns whether it has.
   */
  readonly awaitSeq: (seq: number) => Effect.Effect<boolean>
}>()("effect-session-runtime/MetricsFromEvents") {}

/**
 * Subscribes to the bus and applies every event to the metrics until the
 * scope closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const bus = yield* DiagnosticBus.DiagnosticBus
  const metrics = yield* SessionMetrics.SessionMetrics
  const context = yield* Effect.context<never>()
  const recorder = makeRecorder(metrics, context, options)
  const events = yield* bus.subscribe({ name: "metrics" })
  yield* events.pipe(
    Stream.runForEachArray((chunk) =>
      Effect.sync(() => {
        for (const event of chunk) recorder.record(event)
      })
    ),
    Effect.forkScoped({ startImmediately: true })
  )
  const awaitSeq = (seq: number) =>
    Effect.gen(function*() {
      for (let i = 0; i < 100_000 && recorder.tracked().lastSeq < seq; i++) yield* Effect.yieldNow
      return recorder.tracked().lastSeq >= seq
    })
  return MetricsFromEvents.of({ tracked: Effect.sync(recorder.tracked), awaitSeq })
}) satisfies (
  options?: Options
) => Effect.Effect<unknown, never, DiagnosticBus.DiagnosticBus | SessionMetrics.SessionMetrics | Scope.Scope>

/**
 * The subscriber over metrics provided elsewhere.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerSubscriber = (
  options?: Options
): Layer.Layer<MetricsFromEvents, never, DiagnosticBus.DiagnosticBus | SessionMetrics.SessionMetrics> =>
  Layer.effect(MetricsFromEvents, make(options))

/**
 * The metrics and their subscriber: everything needed to have the metrics
 * fed from the bus. Fails with `InvalidMetricsOptions` on bad options.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<
  MetricsFromEvents | SessionMetrics.SessionMetrics,
  SessionMetrics.InvalidMetricsOptions,
  DiagnosticBus.DiagnosticBus
> => layerSubscriber(options).pipe(Layer.provideMerge(SessionMetrics.layer(options)))

/**
 * Decorates the `EventLoopMonitor` so that every sample (one per watchdog
 * tick) also sets the event-loop gauges (`event_loop_delay_p99_seconds`,
 * `event_loop_delay_max_seconds`, `event_loop_utilization`); without it they
 * move only on `diagnostic.liveness.warning`. The sampler itself is not
 * called more often: its intervals stay the watchdog's.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerEventLoopGauges: Layer.Layer<
  NodeEventLoopMonitor.EventLoopMonitor,
  never,
  NodeEventLoopMonitor.EventLoopMonitor | SessionMetrics.SessionMetrics
> = Layer.effect(
  NodeEventLoopMonitor.EventLoopMonitor,
  Effect.gen(function*() {
    const monitor = yield* NodeEventLoopMonitor.EventLoopMonitor
    const metrics = yield* SessionMetrics.SessionMetrics
    const context = yield* Effect.context<never>()
    return NodeEventLoopMonitor.EventLoopMonitor.of({
      sample: Effect.tap(monitor.sample, (sample) =>
        Effect.sync(() => {
          metrics.eventLoopDelayP99Seconds.updateUnsafe(sample.p99Ms / 1000, context)
          metrics.eventLoopDelayMaxSeconds.updateUnsafe(sample.maxMs / 1000, context)
          metrics.eventLoopUtilization.updateUnsafe(sample.utilization, context)
        }))
    })
  })
)
