/**
 * Feeds {@link SessionMetrics} from the diagnostic events: a recorder that
 * observes the `DiagnosticBus` (`observe`: called synchronously with every
 * event as it is published, so it can never fall behind and nothing is ever
 * dropped for it) turns every event into counter and histogram updates. The
 * counters are therefore exact: each is the count of its events.
 *
 * The gauges of state (sessions by lane state, queue depth, open calls,
 * active runs) are not derived from events: `MetricsFromState` reads them
 * from the lanes and the tracker whenever metrics are read. The event-loop
 * gauges exist at 0 from start-up and are set by every watchdog sample
 * ({@link layerEventLoopGauges}) and every liveness warning.
 *
 * Memory is bounded: to label a finished call with its tool name or provider,
 * the recorder remembers each open marker's label, at most
 * `maxTrackedMarkers` of them (and as many in-flight recoveries and lock
 * waits); a call whose marker was not remembered is counted under `other`,
 * and each such marker counts one `metric_series_overflow_total` for its
 * metric. Session keys are kept in memory only while their markers are open,
 * never written to a label.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
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
   * The most open markers (and in-flight recoveries, and sessions waiting for
   * their lock) remembered, to label what ends them.
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
  /** Open markers whose labels are remembered. */
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

interface OpenMarker {
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


const eventLoopGauges = (metrics: SessionMetrics.Metrics) => [
  metrics.eventLoopDelayP99Seconds,
  metrics.eventLoopDelayMaxSeconds,
  metrics.eventLoopUtilization
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
  const maxMarkers = Math.max(0, options.maxTrackedMarkers ?? 100_000)
  // Open markers by session, then by marker id (ids are unique within a session only).
  const markers = new Map<string, Map<string, OpenMarker>>()
  let markerCount = 0
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
  let lastSeq = 0

  const inc = (metric: { readonly updateUnsafe: (n: number, context: Context.Context<never>) => void }, n = 1) =>
    metric.updateUnsafe(n, context)
  const overflow = (metric: string) => inc(metrics.seriesOverflow({ metric }))

  const countCall = (marker: OpenMarker | undefined, kind: DiagnosticEvent.MarkerKind, outcome: string) => {
    const label = marker?.label ?? SessionMetrics.other
    if (kind === "tool_call") inc(metrics.toolCalls({ tool: label, outcome }))
    else inc(metrics.modelCalls({ provider: label, outcome }))
  }

  const forgetMarker = (sessionKey: string, ids: Map<string, OpenMarker>, id: string) => {
    ids.delete(id)
    markerCount--
    if (ids.size === 0) markers.delete(sessionKey)
  }

  // Removes up to `n` open markers of a kind from a session, oldest first.
  const evict = (key: string, kind: DiagnosticEvent.MarkerKind, n: number) => {
    const ids = markers.get(key)
    if (ids === undefined) return
    let left = n
    for (const [id, marker] of Array.from(ids)) {
      if (left <= 0) break
      if (marker.kind !== kind) continue
      forgetMarker(key, ids, id)
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
    for (const gauge of eventLoopGauges(metrics)) gauge.updateUnsafe(0, context)
  }
  preregister()

  const record = (event: DiagnosticEvent.DiagnosticEvent): void => {
    lastSeq = event.seq
    switch (event._tag) {
      case "session.activity.marker_opened": {
        let ids = markers.get(event.sessionKey)
        if (ids?.has(event.markerId)) return
        if (markerCount >= maxMarkers) {
          return overflow(event.kind === "tool_call" ? "tool_calls_total" : "model_calls_total")
        }
        if (ids === undefined) markers.set(event.sessionKey, ids = new Map())
        ids.set(event.markerId, { kind: event.kind, label: labelOf(event.kind, event.name) })
        markerCount++
        return
      }
      case "session.activity.marker_closed": {
        const ids = markers.get(event.sessionKey)
        const marker = ids?.get(event.markerId)
        if (marker !== undefined) forgetMarker(event.sessionKey, ids!, event.markerId)
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
      case "session.lane.closed": {
        // Whatever was still open on the lane can no longer end with an event.
        waiting.delete(event.sessionKey)
        const ids = markers.get(event.sessionKey)
        if (ids !== undefined) {
          markerCount -= ids.size
          markers.delete(event.sessionKey)
        }
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
      case "session.state":
      case "session.lane.opened":
      case "session.activity.run_started":
      case "session.activity.run_ended":
      case "session.activity.progress":
        return
    }
  }

  return {
    record,
    tracked: () => ({
      markers: markerCount,
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
   * Whether the event numbered `seq` has been applied. Events are applied as
   * they are published, so this holds for every event published so far.
   */
  readonly awaitSeq: (seq: number) => Effect.Effect<boolean>
}>()("effect-session-runtime/MetricsFromEvents") {}

/**
 * Observes the bus and applies every event to the metrics as it is
 * published, until the scope closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const bus = yield* DiagnosticBus.DiagnosticBus
  const metrics = yield* SessionMetrics.SessionMetrics
  const context = yield* Effect.context<never>()
  const recorder = makeRecorder(metrics, context, options)
  yield* bus.observe(recorder.record)
  return MetricsFromEvents.of({
    tracked: Effect.sync(recorder.tracked),
    awaitSeq: (seq) => Effect.sync(() => recorder.tracked().lastSeq >= seq)
  })
}) satisfies (
  options?: Options
) => Effect.Effect<unknown, never, DiagnosticBus.DiagnosticBus | SessionMetrics.SessionMetrics | Scope.Scope>

/**
 * The recorder over metrics provided elsewhere.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerSubscriber = (
  options?: Options
): Layer.Layer<MetricsFromEvents, never, DiagnosticBus.DiagnosticBus | SessionMetrics.SessionMetrics> =>
  Layer.effect(MetricsFromEvents, make(options))

/**
 * The metrics and their recorder: everything needed to have the metrics
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
 * tick) also sets the event-loop gauges (at 0 until the first sample) (`event_loop_delay_p99_seconds`,
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
    // The gauges exist from start-up, before the first sample.
    for (const gauge of eventLoopGauges(metrics)) gauge.updateUnsafe(0, context)
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
