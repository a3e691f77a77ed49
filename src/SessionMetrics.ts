/**
 * Every metric of the runtime, declared once: counters, histograms and gauges
 * named `<prefix>_<noun>_<unit>` (prefix `session_runtime` by default), with
 * bounded labels only.
 *
 * Cardinality rules, enforced here so that no caller can break them:
 * - a label with a *closed* domain (a classification, a reason, a state) takes
 *   only the values of its domain; anything else becomes `other`;
 * - a label with an *open* domain (a tool name, a model provider) learns at
 *   most `maxLabelValues` distinct values that look like identifiers
 *   (`[A-Za-z0-9_.:-]`, at most 64 characters, so never a path or a
 *   sentence); later ones become `other`;
 * - each labelled metric holds at most `maxSeriesPerMetric` series; past that,
 *   updates go to the series whose labels are all `other`.
 * Every update folded into `other` by a cap (not by a closed domain) is counted
 * in `<prefix>_metric_series_overflow_total{metric}`. Session keys, run ids,
 * call ids and paths are never labels.
 *
 * The handles are plain `Metric` values: update them with `Metric.update` or,
 * on a hot path with a captured context, `updateUnsafe`. `MetricsFromEvents`
 * feeds the counters and histograms from the diagnostic events;
 * `MetricsFromState` reads the gauges of state from the lanes and the tracker
 * whenever metrics are read; `PrometheusEndpoint` and
 * `OtelExporter` export them. docs/metrics.md lists them all.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import * as DiagnosticEvent from "./DiagnosticEvent.ts"
import * as Labels from "./internal/metricLabels.ts"

/**
 * The label value that stands for anything outside a label's domain.
 *
 * @category constants
 * @since 0.1.0
 */
export const other = Labels.other

/**
 * Options of the metrics.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * Prepended to every metric name with an underscore; `""` for none. Must be
   * a valid Prometheus name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
   * @default "session_runtime"
   */
  readonly prefix?: string | undefined
  /**
   * The most series one labelled metric may hold (1–10000).
   * @default 256
   */
  readonly maxSeriesPerMetric?: number | undefined
  /**
   * The most distinct values an open label (tool name, model provider) may
   * learn (0–1000).
   * @default 32
   */
  readonly maxLabelValues?: number | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @category config
 * @since 0.1.0
 */
export const defaults = {
  prefix: "session_runtime",
  maxSeriesPerMetric: 256,
  maxLabelValues: 32
} as const

/**
 * Raised when metric options are invalid; nothing is registered.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidMetricsOptions extends Schema.TaggedError<InvalidMetricsOptions>()("InvalidMetricsOptions", {
  option: Schema.String,
  value: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `Invalid metrics option ${this.option} = ${this.value}: ${this.rule}.`
  }
}

/**
 * The domain of a label: its allowed values, or `"open"` for a label that
 * learns identifier-like values up to `maxLabelValues`.
 *
 * @category models
 * @since 0.1.0
 */
export type LabelDomain = Labels.LabelDomain

/**
 * A metric with labels. Calling it with label values returns the series for
 * their normalised values (creating it within the caps).
 *
 * @category models
 * @since 0.1.0
 */
export type Labelled<L extends string, Input, State> = Labels.Labelled<L, Input, State>

type Counter = Metric.Metric<number, Metric.CounterState<number>>
type Gauge = Metric.Metric<number, Metric.GaugeState<number>>
type Histogram = Metric.Metric<number, Metric.HistogramState>

/**
 * Label domains taken from the event catalogue, plus the values the runtime
 * derives itself.
 *
 * @category constants
 * @since 0.1.0
 */
export const domains = {
  classification: DiagnosticEvent.Classification.literals,
  attentionReason: DiagnosticEvent.AttentionReason.literals,
  recoveryPhase: ["requested", "completed"],
  recoveryTrigger: ["stuck", "active_abort", "manual"],
  /** `pending` on a `requested` phase: the action is not decided yet. */
  recoveryAction: [...DiagnosticEvent.RecoveryAction.literals, "pending"],
  /** `pending` on a `requested` phase. */
  recoveryStatus: [...DiagnosticEvent.RecoveryStatus.literals, "pending"],
  evictionReason: DiagnosticEvent.EvictionReason.literals,
  markerKind: DiagnosticEvent.MarkerKind.literals,
  /** `acquired`: at once; `waited`: after contention (or more than one attempt); `reclaimed`: from a stale holder; `timeout`. */
  lockOutcome: ["acquired", "waited", "reclaimed", "timeout"],
  reclaimReason: DiagnosticEvent.ReclaimReason.literals,
  livenessReason: ["event_loop_delay_p99", "event_loop_delay_max", "event_loop_utilization"],
  outcome: DiagnosticEvent.Outcome.literals,
  /** A call's outcome, or `evicted` when its marker was evicted. */
  callOutcome: [...DiagnosticEvent.Outcome.literals, "evicted"],
  laneState: DiagnosticEvent.LaneState.literals,
  admission: ["started", "enqueued", "rejected", "interrupted_previous"],
  ignoredReason: DiagnosticEvent.IgnoredSignalReason.literals
} as const satisfies Record<string, ReadonlyArray<string>>

/**
 * Histogram bucket boundaries, in seconds.
 *
 * @category constants
 * @since 0.1.0
 */
export const boundaries = {
  lockWait: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  lockHold: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
  stuckAge: [30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400],
  turn: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]
} as const

/**
 * Every metric handle.
 *
 * @category models
 * @since 0.1.0
 */
export interface Metrics {
  readonly prefix: string
  // counters
  readonly attention: Labelled<"classification" | "reason", number, Metric.CounterState<number>>
  readonly recovery: Labelled<"phase" | "trigger" | "action" | "status", number, Metric.CounterState<number>>
  readonly activityEvicted: Labelled<"reason", number, Metric.CounterState<number>>
  readonly activityFenced: Labelled<"kind", number, Metric.CounterState<number>>
  readonly signalsIgnored: Labelled<"reason", number, Metric.CounterState<number>>
  readonly toolCalls: Labelled<"tool" | "outcome", number, Metric.CounterState<number>>
  readonly modelCalls: Labelled<"provider" | "outcome", number, Metric.CounterState<number>>
  readonly turnAdmissions: Labelled<"admission", number, Metric.CounterState<number>>
  readonly lockAcquire: Labelled<"outcome", number, Metric.CounterState<number>>
  readonly lockContended: Counter
  readonly lockReclaimed: Labelled<"reason", number, Metric.CounterState<number>>
  readonly lockStale: Counter
  readonly lockLost: Counter
  readonly livenessWarning: Labelled<"reason", number, Metric.CounterState<number>>
  readonly eventsDropped: Counter
  readonly seriesOverflow: Labelled<"metric", number, Metric.CounterState<number>>
  // histograms
  readonly lockWaitSeconds: Histogram
  readonly lockHoldSeconds: Histogram
  readonly stuckAgeSeconds: Histogram
  readonly turnSeconds: Labelled<"outcome", number, Metric.HistogramState>
  // gauges
  readonly sessions: Labelled<"state", number, Metric.GaugeState<number>>
  readonly queueDepth: Gauge
  readonly activeCalls: Labelled<"kind", number, Metric.GaugeState<number>>
  readonly activeRuns: Gauge
  readonly eventLoopDelayP99Seconds: Gauge
  readonly eventLoopDelayMaxSeconds: Gauge
  readonly eventLoopUtilization: Gauge
  /** How many series all labelled metrics hold together. */
  readonly seriesCount: () => number
}

/**
 * The metrics as a service, so one set of handles (one prefix) is shared by
 * whoever updates and whoever exports.
 *
 * @category services
 * @since 0.1.0
 */
export class SessionMetrics extends Context.Service<SessionMetrics, Metrics>()(
  "effect-session-runtime/SessionMetrics"
) {}

const prometheusName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/

// The metrics whose updates may be folded by a cap (the overflow counter's
// label domain).
const overflowNouns = [
  "attention_total",
  "recovery_total",
  "activity_evicted_total",
  "activity_fenced_total",
  "signals_ignored_total",
  "tool_calls_total",
  "model_calls_total",
  "turn_admissions_total",
  "lock_acquire_total",
  "lock_reclaimed_total",
  "liveness_warning_total",
  "turn_seconds"
]

const validate = (options: Options) => {
  const prefix = options.prefix ?? defaults.prefix
  if (prefix !== "" && !prometheusName.test(prefix)) {
    return new InvalidMetricsOptions({
      option: "prefix",
      value: JSON.stringify(prefix),
      rule: "a prefix must be empty or match [a-zA-Z_:][a-zA-Z0-9_:]* (for example session_runtime)"
    })
  }
  const maxSeries = options.maxSeriesPerMetric ?? defaults.maxSeriesPerMetric
  if (!Number.isInteger(maxSeries) || maxSeries < 1 || maxSeries > 10_000) {
    return new InvalidMetricsOptions({
      option: "maxSeriesPerMetric",
      value: String(maxSeries),
      rule: "must be an integer from 1 to 10000"
    })
  }
  const maxLabelValues = options.maxLabelValues ?? defaults.maxLabelValues
  if (!Number.isInteger(maxLabelValues) || maxLabelValues < 0 || maxLabelValues > 1000) {
    return new InvalidMetricsOptions({
      option: "maxLabelValues",
      value: String(maxLabelValues),
      rule: "must be an integer from 0 to 1000"
    })
  }
  return { prefix, maxSeries, maxLabelValues }
}

/**
 * Builds every handle, failing with {@link InvalidMetricsOptions} on bad
 * options. Pure: nothing is registered until a series is first updated.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options = {}): Effect.Effect<Metrics, InvalidMetricsOptions> =>
  Effect.suspend(() => {
    const valid = validate(options)
    return valid instanceof InvalidMetricsOptions ? Effect.fail(valid) : Effect.succeed(build(valid))
  })

/**
 * Builds every handle, throwing {@link InvalidMetricsOptions} on bad options.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeUnsafe = (options: Options = {}): Metrics => {
  const valid = validate(options)
  if (valid instanceof InvalidMetricsOptions) throw valid
  return build(valid)
}

const build = (
  { maxLabelValues, maxSeries, prefix }: { prefix: string; maxSeries: number; maxLabelValues: number }
): Metrics => {
  const name = (noun: string) => (prefix === "" ? noun : `${prefix}_${noun}`)
  const counter = (description: string) => (id: string, attributes: Metric.Metric.AttributeSet) =>
    Metric.counter(id, { description, incremental: true, attributes })
  const gauge = (description: string) => (id: string, attributes: Metric.Metric.AttributeSet) =>
    Metric.gauge(id, { description, attributes })
  const histogram =
    (description: string, bounds: ReadonlyArray<number>) =>
    (id: string, attributes: Metric.Metric.AttributeSet) =>
      Metric.histogram(id, { description, boundaries: bounds, attributes })

  const labeller = Labels.makeLabeller({
    maxSeries,
    maxLabelValues,
    overflowId: name("metric_series_overflow_total"),
    overflowDescription: "Updates folded into `other` because a label or series cap was reached, by metric.",
    nouns: overflowNouns
  })
  const unlabelledCounter = (noun: string, description: string) =>
    Metric.counter(name(noun), { description, incremental: true })
  const labelled = <L extends string, Input, State>(
    noun: string,
    labels: { readonly [K in L]: LabelDomain },
    create: Labels.Create<Input, State>
  ) => labeller.labelled(name(noun), noun, labels, create)

  const metrics: Metrics = {
    prefix,
    attention: labelled(
      "attention_total",
      { classification: domains.classification, reason: domains.attentionReason },
      counter("Attention verdicts published (long-running, stalled, stuck), by classification and reason.")
    ),
    recovery: labelled(
      "recovery_total",
      {
        phase: domains.recoveryPhase,
        trigger: domains.recoveryTrigger,
        action: domains.recoveryAction,
        status: domains.recoveryStatus
      },
      counter("Recoveries requested and completed, by trigger, action and status.")
    ),
    activityEvicted: labelled(
      "activity_evicted_total",
      { reason: domains.evictionReason },
      counter("Activity markers evicted because they could never complete, by reason.")
    ),
    activityFenced: labelled(
      "activity_fenced_total",
      { kind: domains.markerKind },
      counter("Late reported start signals ignored by fencing, by marker kind.")
    ),
    signalsIgnored: labelled(
      "signals_ignored_total",
      { reason: domains.ignoredReason },
      counter("Reported activity signals ignored as malformed or meaningless, by reason.")
    ),
    toolCalls: labelled(
      "tool_calls_total",
      { tool: "open", outcome: domains.callOutcome },
      counter("Tool calls finished, by tool name (capped) and outcome.")
    ),
    modelCalls: labelled(
      "model_calls_total",
      { provider: "open", outcome: domains.callOutcome },
      counter("Model calls finished, by provider (capped) and outcome.")
    ),
    turnAdmissions: labelled(
      "turn_admissions_total",
      { admission: domains.admission },
      counter("Turns submitted to a lane, by admission decision.")
    ),
    lockAcquire: labelled(
      "lock_acquire_total",
      { outcome: domains.lockOutcome },
      counter("Session write lock acquisitions, by outcome.")
    ),
    lockContended: unlabelledCounter("lock_contended_total", "Lock acquisitions that found the lock held (once per wait)."),
    lockReclaimed: labelled(
      "lock_reclaimed_total",
      { reason: domains.reclaimReason },
      counter("Stale session write locks reclaimed, by reason.")
    ),
    lockStale: unlabelledCounter(
      "lock_stale_total",
      "Live lock holders reported past their stale time or max hold (never robbed)."
    ),
    lockLost: unlabelledCounter("lock_lost_total", "Holders that found their lease no longer current."),
    livenessWarning: labelled(
      "liveness_warning_total",
      { reason: domains.livenessReason },
      counter("Intervals in which the process itself was starved, by reason.")
    ),
    eventsDropped: unlabelledCounter("events_dropped_total", "Diagnostic events lost by subscribers that fell behind."),
    seriesOverflow: labeller.overflow,
    lockWaitSeconds: Metric.histogram(name("lock_wait_seconds"), {
      description: "Time from the start of an acquire to the lock being held.",
      boundaries: boundaries.lockWait
    }),
    lockHoldSeconds: Metric.histogram(name("lock_hold_seconds"), {
      description: "Time a session write lock was held.",
      boundaries: boundaries.lockHold
    }),
    stuckAgeSeconds: Metric.histogram(name("stuck_age_seconds"), {
      description: "How long a session had looked stuck when it was reported.",
      boundaries: boundaries.stuckAge
    }),
    turnSeconds: labelled(
      "turn_seconds",
      { outcome: domains.outcome },
      histogram("Turn durations, by outcome.", boundaries.turn)
    ),
    sessions: labelled(
      "sessions",
      { state: domains.laneState },
      gauge("Open sessions, by lane state.")
    ),
    queueDepth: Metric.gauge(name("queue_depth"), { description: "Turns queued across all open sessions." }),
    activeCalls: labelled(
      "active_calls",
      { kind: domains.markerKind },
      gauge("Open tool and model call markers.")
    ),
    activeRuns: Metric.gauge(name("active_runs"), { description: "Runs (activity owners) registered now." }),
    eventLoopDelayP99Seconds: Metric.gauge(name("event_loop_delay_p99_seconds"), {
      description: "Event-loop delay p99 over the last sampling interval."
    }),
    eventLoopDelayMaxSeconds: Metric.gauge(name("event_loop_delay_max_seconds"), {
      description: "Event-loop delay maximum over the last sampling interval."
    }),
    eventLoopUtilization: Metric.gauge(name("event_loop_utilization"), {
      description: "Event-loop utilisation (0–1) over the last sampling interval."
    }),
    seriesCount: labeller.seriesCount
  }
  return metrics
}

/**
 * The metrics as a layer; fails with {@link InvalidMetricsOptions} on bad
 * options.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<SessionMetrics, InvalidMetricsOptions> =>
  Layer.effect(SessionMetrics, make(options))
