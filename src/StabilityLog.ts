/**
 * The stability log: the last N diagnostic events (default 1000), kept as
 * sanitised records an operator can page through and summarise without
 * exposing anything about the conversations themselves.
 *
 * A record is `{ seq, ts, type }` plus the event's low-cardinality fields:
 * numbers, booleans and enum-like values (outcome, kind, reason, state,
 * classification, status, action, trigger, backend, admission, holder status,
 * ...). Session keys, run, marker, call, turn and recovery ids, tool and
 * model names, paths, hosts, pids, owner ids and free-form text never enter
 * it. The rules are an allow-list per event type: a field that is not listed
 * is dropped, and a string outside its known vocabulary is recorded as
 * `"other"`, so a new field or an unexpected value cannot leak.
 *
 * The log observes the {@link DiagnosticBus} (`observe`) from when its layer
 * is built: it sees every event, synchronously as it is published, so the bus
 * never drops an event for it. Recording costs one array write: the log keeps
 * the raw events of its window in memory (never exposed) and sanitises them
 * when it is read, so the publishing path pays nothing for the allow-list.
 * Its summary counts as `dropped` the records pushed out of the window.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { DiagnosticBus } from "./DiagnosticBus.ts"
import * as DiagnosticEvent from "./DiagnosticEvent.ts"
import { terminalReasons } from "./internal/activityState.ts"
import * as StabilityRing from "./StabilityRing.ts"

export {
  /**
   * A query outside the valid range (see `StabilityRing.InvalidStabilityQuery`).
   *
   * @category errors
   * @since 0.1.0
   */
  InvalidStabilityQuery
} from "./StabilityRing.ts"

/**
 * A value a record may hold.
 *
 * @category models
 * @since 0.1.0
 */
export type RecordValue = string | number | boolean | ReadonlyArray<string>

/**
 * One sanitised event.
 *
 * @category models
 * @since 0.1.0
 */
export interface StabilityRecord {
  readonly seq: number
  readonly ts: number
  readonly type: DiagnosticEvent.EventType
  readonly [field: string]: RecordValue
}

/**
 * The value recorded for a string outside its field's vocabulary.
 *
 * @category constants
 * @since 0.1.0
 */
export const other = "other"

/**
 * The known values of fields the event catalogue types as free strings. A
 * value outside these is recorded as `"other"`; a value of the form
 * `known: detail` is recorded as `known`.
 *
 * @category constants
 * @since 0.1.0
 */
export const vocabularies = {
  /** `session.activity.progress` reasons. */
  progressReason: [...terminalReasons, "progress"],
  /** `session.state` reasons. */
  laneReason: ["turn_started", "turn_finished", "stuck_recovery:released", "stuck_recovery:aborted"],
  /** `session.lane.admitted` reasons. */
  admissionReason: ["busy"],
  /** `session.recovery.completed` reasons. */
  recoveryReason: [
    "session_closed",
    "state_changed",
    "generation_changed",
    "orphaned_activity_evicted",
    "lane_released",
    "active_abort_not_allowed",
    "no_active_run",
    "run_interrupted",
    "force_cleared_after_settle",
    "already_in_flight",
    "defect"
  ],
  /** Lock backend names. */
  lockBackend: ["memory", "file", "sql", "postgres"],
  /** `lock.stale` reasons. */
  staleReason: ["older_than_stale_time", "past_max_hold"],
  /** Bus subscriber names. */
  subscriber: ["sse", "logger"]
} as const

// ---------------------------------------------------------------------------
// the allow-list
// ---------------------------------------------------------------------------

type Out = Record<string, RecordValue>

/** Copies one allowed field (or what it derives from it) into the record. */
type Keep = (out: Out, name: string, value: unknown) => void

const num: Keep = (out, name, value) => {
  if (typeof value === "number" && Number.isFinite(value)) out[name] = value
}

const bool: Keep = (out, name, value) => {
  if (typeof value === "boolean") out[name] = value
}

const known = (set: ReadonlySet<string>, value: unknown): string => {
  if (typeof value !== "string") return other
  if (set.has(value)) return value
  const colon = value.indexOf(":")
  return colon > 0 && set.has(value.slice(0, colon)) ? value.slice(0, colon) : other
}

const oneOf = (values: ReadonlyArray<string>): Keep => {
  const set = new Set(values)
  return (out, name, value) => {
    if (value !== undefined) out[name] = known(set, value)
  }
}

const listOf = (values: ReadonlyArray<string>): Keep => {
  const set = new Set(values)
  return (out, name, value) => {
    if (Array.isArray(value)) out[name] = value.map((item) => known(set, item))
  }
}

const holderStatus = oneOf(DiagnosticEvent.HolderStatus.literals)
const holder = (prefix: string): Keep => (out, _name, value) => {
  if (typeof value !== "object" || value === null) return
  const fields = value as Record<string, unknown>
  holderStatus(out, `${prefix}Status`, fields.status)
  num(out, `${prefix}AgeMs`, fields.ageMs)
}

const kind = oneOf(DiagnosticEvent.MarkerKind.literals)
const source = oneOf(DiagnosticEvent.MarkerSource.literals)
const outcome = oneOf(DiagnosticEvent.Outcome.literals)
const laneState = oneOf(DiagnosticEvent.LaneState.literals)
const backend = oneOf(vocabularies.lockBackend)

type Fields<T extends DiagnosticEvent.EventType> = Exclude<
  keyof Extract<DiagnosticEvent.DiagnosticEvent, { readonly _tag: T }>,
  "_tag" | "seq" | "ts"
>

/** Per event type, the fields a record keeps. Every other field is dropped. */
type AllowList = { readonly [T in DiagnosticEvent.EventType]: { readonly [F in Fields<T>]?: Keep } }

const attention = {
  classification: oneOf(DiagnosticEvent.Classification.literals),
  reason: oneOf(DiagnosticEvent.AttentionReason.literals),
  recoverable: bool,
  state: laneState,
  queueDepth: num,
  generation: num,
  activeWorkKind: oneOf(DiagnosticEvent.WorkKind.literals),
  ageMs: num
} as const

const allowList: AllowList = {
  "session.activity.run_started": {
    owners: num,
    parentRunId: (out, _name, value) => {
      out.nested = value !== undefined
    }
  },
  "session.activity.run_ended": { outcome, durationMs: num, owners: num },
  "session.activity.marker_opened": { kind, source },
  "session.activity.marker_closed": { kind, source, outcome, durationMs: num },
  "session.activity.progress": { reason: oneOf(vocabularies.progressReason), terminal: bool },
  "session.activity.evicted": {
    reason: oneOf(DiagnosticEvent.EvictionReason.literals),
    evictedTools: num,
    evictedModelCalls: num,
    cutoffSeq: num
  },
  "session.activity.fenced": { kind, signalSeq: num, cutoffSeq: num },
  "session.activity.signal_ignored": { reason: oneOf(DiagnosticEvent.IgnoredSignalReason.literals) },
  "session.state": { state: laneState, queueDepth: num, generation: num, reason: oneOf(vocabularies.laneReason) },
  "session.lane.admitted": {
    admission: oneOf(DiagnosticEvent.TurnAdmitted.fields.admission.literals),
    position: num,
    reason: oneOf(vocabularies.admissionReason)
  },
  "session.lane.turn_completed": { outcome, durationMs: num },
  "session.lane.opened": {},
  "session.lane.closed": { reason: oneOf(DiagnosticEvent.LaneClosed.fields.reason.literals) },
  "session.long_running": attention,
  "session.stalled": attention,
  "session.stuck": attention,
  "session.recovery.requested": {
    trigger: oneOf(DiagnosticEvent.RecoveryRequested.fields.trigger.literals),
    expectedState: laneState,
    generation: num,
    allowActiveAbort: bool
  },
  "session.recovery.completed": {
    status: oneOf(DiagnosticEvent.RecoveryStatus.literals),
    action: oneOf(DiagnosticEvent.RecoveryAction.literals),
    reason: oneOf(vocabularies.recoveryReason),
    stale: bool,
    forced: bool,
    durationMs: num
  },
  "lock.acquired": { backend, token: num, waitedMs: num, attempts: num, reclaimed: bool },
  "lock.contended": { backend, holder: holder("holder") },
  "lock.reclaimed": {
    backend,
    reason: oneOf(DiagnosticEvent.ReclaimReason.literals),
    previousHolder: holder("previousHolder")
  },
  "lock.released": { backend, token: num, heldMs: num },
  "lock.timeout": { backend, waitedMs: num, attempts: num, holder: holder("holder") },
  "lock.stale": { backend, reasons: listOf(vocabularies.staleReason), holder: holder("holder") },
  // `reason` is a sentence that can name the new holder: not kept.
  "lock.lost": { backend, token: num },
  "diagnostic.liveness.warning": {
    reasons: listOf(DiagnosticEvent.LivenessWarning.fields.reasons.value.literals),
    p99Ms: num,
    maxMs: num,
    utilization: num,
    intervalMs: num
  },
  "diagnostic.events.dropped": { subscriber: oneOf(vocabularies.subscriber), dropped: num, totalDropped: num }
}

const rulesByType = new Map<string, ReadonlyArray<readonly [string, Keep]>>(
  Object.entries(allowList).map(([type, rules]) => [type, Object.entries(rules as Record<string, Keep>)])
)

/**
 * The sanitised record of an event: `seq`, `ts`, `type` and the fields the
 * allow-list keeps for its type.
 *
 * @category constructors
 * @since 0.1.0
 */
export const sanitize = (event: DiagnosticEvent.DiagnosticEvent): StabilityRecord => {
  const out: Out = { seq: event.seq, ts: event.ts, type: event._tag }
  const rules = rulesByType.get(event._tag)
  if (rules !== undefined) {
    const fields = event as unknown as Record<string, unknown>
    for (const [name, keep] of rules) keep(out, name, fields[name])
  }
  return out as unknown as StabilityRecord
}

// ---------------------------------------------------------------------------
// the service
// ---------------------------------------------------------------------------

/**
 * The log's figures.
 *
 * @category models
 * @since 0.1.0
 */
export interface Summary extends StabilityRing.Summary {
  /** Records ever recorded (every event published since the log started). */
  readonly recorded: number
}

/**
 * Options of the log.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * How many records the log keeps (a positive integer).
   * @default 1000
   */
  readonly capacity?: number | undefined
}

/**
 * @category services
 * @since 0.1.0
 */
export class StabilityLog extends Context.Service<StabilityLog, {
  /**
   * The newest `limit` records (1–1000, default 50), optionally of one event
   * type and only after `sinceSeq`, newest last. A query out of range fails
   * with `InvalidStabilityQuery` saying the valid range.
   */
  readonly query: (
    query?: StabilityRing.Query
  ) => Effect.Effect<ReadonlyArray<StabilityRecord>, StabilityRing.InvalidStabilityQuery>
  /** Count by type, total, dropped, first and last seq. */
  readonly summary: Effect.Effect<Summary>
}>()("effect-session-runtime/StabilityLog") {}

const eventTypes: ReadonlySet<string> = new Set(DiagnosticEvent.eventTypes)

/**
 * Builds the log and starts observing the bus in the current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const capacity = options.capacity ?? 1000
  if (!Number.isSafeInteger(capacity) || capacity < 1) {
    return yield* Effect.die(
      new RangeError(`StabilityLog capacity must be a positive integer, got ${String(capacity)}`)
    )
  }
  const bus = yield* DiagnosticBus
  // The newest `capacity` events, as published: event n lives at n % capacity.
  const window: Array<DiagnosticEvent.DiagnosticEvent | undefined> = new Array(capacity)
  let recorded = 0
  yield* bus.observe((event) => {
    window[recorded % capacity] = event
    recorded++
  })

  // The sanitised ring of the window, rebuilt only when something was recorded since.
  let built: { readonly recorded: number; readonly ring: StabilityRing.StabilityRing<StabilityRecord> } | undefined
  const ring = (): StabilityRing.StabilityRing<StabilityRecord> => {
    if (built?.recorded === recorded) return built.ring
    let next = StabilityRing.make<StabilityRecord>(capacity)
    for (let n = Math.max(0, recorded - capacity); n < recorded; n++) {
      next = StabilityRing.push(next, sanitize(window[n % capacity]!))
    }
    built = { recorded, ring: next }
    return next
  }

  const query = Effect.fn("StabilityLog.query")(function*(input?: StabilityRing.Query) {
    if (input?.type !== undefined && typeof input.type === "string" && !eventTypes.has(input.type)) {
      return yield* new StabilityRing.InvalidStabilityQuery({
        field: "type",
        value: JSON.stringify(input.type.slice(0, 64)),
        rule: "must be an event type of the catalogue (for example \"session.activity.evicted\"), or left out"
      })
    }
    return yield* Effect.fromResult(StabilityRing.query(ring(), input))
  })

  const summary = Effect.sync((): Summary => {
    const current = ring()
    return { ...StabilityRing.summary(current), dropped: recorded - current.size, recorded }
  })

  return StabilityLog.of({ query, summary })
})

/**
 * The log as a layer: subscribes to the bus when built, stops with the layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<StabilityLog, never, DiagnosticBus> =>
  Layer.effect(StabilityLog, make(options))

/**
 * Queries the log.
 *
 * @category accessors
 * @since 0.1.0
 */
export const query = (
  input?: StabilityRing.Query
): Effect.Effect<ReadonlyArray<StabilityRecord>, StabilityRing.InvalidStabilityQuery, StabilityLog> =>
  Effect.flatMap(StabilityLog, (log) => log.query(input))

/**
 * The log's summary.
 *
 * @category accessors
 * @since 0.1.0
 */
export const summary: Effect.Effect<Summary, never, StabilityLog> = Effect.flatMap(StabilityLog, (log) => log.summary)
