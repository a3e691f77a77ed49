/**
 * Every diagnostic event the runtime publishes, as Schema classes in one
 * tagged union. The `_tag` of each class is the event's wire type (for example
 * `session.activity.evicted`), so a JSON line, a stability record and a metric
 * label all use the same name.
 *
 * Each event carries `seq` (process-wide, strictly increasing, stamped by the
 * `DiagnosticBus`) and `ts` (epoch milliseconds from `Clock`). Producers build
 * an {@link Draft} (the event without `seq`/`ts`) and let the bus stamp it.
 *
 * docs/events.md lists every event, its fields and when it is published.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import { SessionKey } from "./SessionKey.ts"

const stamp = {
  /** Process-wide, strictly increasing sequence number. */
  seq: Schema.Number,
  /** Epoch milliseconds, read from `Clock`. */
  ts: Schema.Number
}

/**
 * The kind of an activity marker.
 *
 * @category models
 * @since 0.1.0
 */
export const MarkerKind = Schema.Literals(["tool_call", "model_call"])
export type MarkerKind = typeof MarkerKind.Type

/**
 * How a marker entered the tracker: `structured` markers wrap an Effect and
 * cannot leak; `reported` markers come from start/end signals of runtimes that
 * are not Effect.
 *
 * @category models
 * @since 0.1.0
 */
export const MarkerSource = Schema.Literals(["structured", "reported"])
export type MarkerSource = typeof MarkerSource.Type

/**
 * How a run or a marker ended.
 *
 * @category models
 * @since 0.1.0
 */
export const Outcome = Schema.Literals(["success", "failure", "interrupted", "defect"])
export type Outcome = typeof Outcome.Type

/**
 * The outcome of an exit: a defect wins over a failure, a failure over an
 * interruption.
 *
 * @category models
 * @since 0.1.0
 */
export const outcomeOf = <A, E>(exit: Exit.Exit<A, E>): Outcome => {
  if (Exit.isSuccess(exit)) return "success"
  if (Cause.hasDies(exit.cause)) return "defect"
  if (Cause.hasFails(exit.cause)) return "failure"
  return "interrupted"
}

/**
 * Why open markers were evicted.
 *
 * @category models
 * @since 0.1.0
 */
export const EvictionReason = Schema.Literals(["orphaned_no_owner", "owner_exited", "recovery"])
export type EvictionReason = typeof EvictionReason.Type

/**
 * Why a reported signal was ignored without effect.
 *
 * @category models
 * @since 0.1.0
 */
export const IgnoredSignalReason = Schema.Literals([
  "malformed",
  "unknown_kind",
  "invalid_seq",
  "end_without_start",
  "duplicate_start",
  "run_ended"
])
export type IgnoredSignalReason = typeof IgnoredSignalReason.Type

/**
 * Lane state.
 *
 * @category models
 * @since 0.1.0
 */
export const LaneState = Schema.Literals(["idle", "processing"])
export type LaneState = typeof LaneState.Type

/**
 * The attention classifications, in the field's vocabulary.
 *
 * @category models
 * @since 0.1.0
 */
export const Classification = Schema.Literals([
  "long_running",
  "blocked_tool_call",
  "stalled_agent_run",
  "stale_session_state"
])
export type Classification = typeof Classification.Type

/**
 * The reasons a classification can carry.
 *
 * @category models
 * @since 0.1.0
 */
export const AttentionReason = Schema.Literals([
  "active_work",
  "queued_behind_active_work",
  "untracked_active_progress",
  "queued_behind_untracked_active_progress",
  "blocked_tool_call",
  "active_work_without_progress",
  "queued_behind_terminal_active_work",
  "stale_session_state",
  "queued_work_without_active_run"
])
export type AttentionReason = typeof AttentionReason.Type

/**
 * The kind of work a session is doing, by priority tool > model > run.
 *
 * @category models
 * @since 0.1.0
 */
export const WorkKind = Schema.Literals(["tool_call", "model_call", "embedded_run"])
export type WorkKind = typeof WorkKind.Type

/**
 * Recovery statuses and actions.
 *
 * @category models
 * @since 0.1.0
 */
export const RecoveryStatus = Schema.Literals(["aborted", "released", "skipped", "noop", "failed"])
export type RecoveryStatus = typeof RecoveryStatus.Type

/**
 * @category models
 * @since 0.1.0
 */
export const RecoveryAction = Schema.Literals(["abort_run", "release_lane", "observe_only", "keep_lane", "none"])
export type RecoveryAction = typeof RecoveryAction.Type

/**
 * What a lock holder's process looks like from here.
 *
 * @category models
 * @since 0.1.0
 */
export const HolderStatus = Schema.Literals(["alive", "dead", "pid_reused", "unknown"])
export type HolderStatus = typeof HolderStatus.Type

/**
 * A lock holder as described in lock events and errors.
 *
 * @category models
 * @since 0.1.0
 */
export const LockHolder = Schema.Struct({
  pid: Schema.optionalKey(Schema.Number),
  host: Schema.optionalKey(Schema.String),
  ownerId: Schema.optionalKey(Schema.String),
  status: HolderStatus,
  ageMs: Schema.optionalKey(Schema.Number)
})
export type LockHolder = typeof LockHolder.Type

/**
 * Why a lock was reclaimed from its previous holder.
 *
 * @category models
 * @since 0.1.0
 */
export const ReclaimReason = Schema.Literals(["holder_dead", "pid_reused", "unreadable", "lease_expired"])
export type ReclaimReason = typeof ReclaimReason.Type

// ---------------------------------------------------------------------------
// activity
// ---------------------------------------------------------------------------

/**
 * A run registered itself as an owner of its session's activity.
 *
 * @category activity
 * @since 0.1.0
 */
export class RunStarted extends Schema.TaggedClass<RunStarted>()("session.activity.run_started", {
  ...stamp,
  sessionKey: SessionKey,
  runId: Schema.String,
  parentRunId: Schema.optionalKey(Schema.String),
  owners: Schema.Number
}) {}

/**
 * A run deregistered in its finalizer (whatever its exit).
 *
 * @category activity
 * @since 0.1.0
 */
export class RunEnded extends Schema.TaggedClass<RunEnded>()("session.activity.run_ended", {
  ...stamp,
  sessionKey: SessionKey,
  runId: Schema.String,
  outcome: Outcome,
  durationMs: Schema.Number,
  owners: Schema.Number
}) {}

/**
 * A tool or model call marker was opened.
 *
 * @category activity
 * @since 0.1.0
 */
export class MarkerOpened extends Schema.TaggedClass<MarkerOpened>()("session.activity.marker_opened", {
  ...stamp,
  sessionKey: SessionKey,
  runId: Schema.String,
  markerId: Schema.String,
  kind: MarkerKind,
  source: MarkerSource,
  /** Tool name, or `provider/model` for a model call. */
  name: Schema.String
}) {}

/**
 * A marker was closed by its owner (structured: by its finalizer; reported:
 * by a completion signal).
 *
 * @category activity
 * @since 0.1.0
 */
export class MarkerClosed extends Schema.TaggedClass<MarkerClosed>()("session.activity.marker_closed", {
  ...stamp,
  sessionKey: SessionKey,
  runId: Schema.String,
  markerId: Schema.String,
  kind: MarkerKind,
  source: MarkerSource,
  outcome: Outcome,
  durationMs: Schema.Number
}) {}

/**
 * Explicit progress (for example a streamed model chunk batch).
 *
 * @category activity
 * @since 0.1.0
 */
export class ActivityProgressed extends Schema.TaggedClass<ActivityProgressed>()("session.activity.progress", {
  ...stamp,
  sessionKey: SessionKey,
  reason: Schema.String,
  terminal: Schema.Boolean
}) {}

/**
 * Markers that could never complete were removed from a session.
 *
 * @category activity
 * @since 0.1.0
 */
export class ActivityEvicted extends Schema.TaggedClass<ActivityEvicted>()("session.activity.evicted", {
  ...stamp,
  sessionKey: SessionKey,
  reason: EvictionReason,
  evictedTools: Schema.Number,
  evictedModelCalls: Schema.Number,
  /** Late start signals of the evicted runs numbered at or below this are fenced. */
  cutoffSeq: Schema.Number
}) {}

/**
 * A late reported start signal was ignored because it was numbered at or
 * before its run's teardown (or a recovery) cutoff.
 *
 * @category activity
 * @since 0.1.0
 */
export class SignalFenced extends Schema.TaggedClass<SignalFenced>()("session.activity.fenced", {
  ...stamp,
  sessionKey: SessionKey,
  runId: Schema.String,
  kind: MarkerKind,
  signalSeq: Schema.Number,
  cutoffSeq: Schema.Number
}) {}

/**
 * A reported signal was malformed or made no sense and was ignored.
 *
 * @category activity
 * @since 0.1.0
 */
export class SignalIgnored extends Schema.TaggedClass<SignalIgnored>()("session.activity.signal_ignored", {
  ...stamp,
  reason: IgnoredSignalReason,
  detail: Schema.String
}) {}

// ---------------------------------------------------------------------------
// lanes
// ---------------------------------------------------------------------------

/**
 * A session's lane changed state, queue depth or generation.
 *
 * @category lanes
 * @since 0.1.0
 */
export class SessionStateChanged extends Schema.TaggedClass<SessionStateChanged>()("session.state", {
  ...stamp,
  sessionKey: SessionKey,
  state: LaneState,
  queueDepth: Schema.Number,
  generation: Schema.Number,
  /** For example `turn_started`, `turn_finished`, `stuck_recovery:released`. */
  reason: Schema.String
}) {}

/**
 * A submitted turn was admitted (or not) by its lane's policy.
 *
 * @category lanes
 * @since 0.1.0
 */
export class TurnAdmitted extends Schema.TaggedClass<TurnAdmitted>()("session.lane.admitted", {
  ...stamp,
  sessionKey: SessionKey,
  turnId: Schema.String,
  admission: Schema.Literals(["started", "enqueued", "rejected", "interrupted_previous"]),
  position: Schema.Number,
  reason: Schema.optionalKey(Schema.String)
}) {}

/**
 * A turn finished.
 *
 * @category lanes
 * @since 0.1.0
 */
export class TurnCompleted extends Schema.TaggedClass<TurnCompleted>()("session.lane.turn_completed", {
  ...stamp,
  sessionKey: SessionKey,
  turnId: Schema.String,
  outcome: Outcome,
  durationMs: Schema.Number
}) {}

/**
 * A session's lane was opened or closed (idle TTL or shutdown).
 *
 * @category lanes
 * @since 0.1.0
 */
export class LaneOpened extends Schema.TaggedClass<LaneOpened>()("session.lane.opened", {
  ...stamp,
  sessionKey: SessionKey
}) {}

/**
 * @category lanes
 * @since 0.1.0
 */
export class LaneClosed extends Schema.TaggedClass<LaneClosed>()("session.lane.closed", {
  ...stamp,
  sessionKey: SessionKey,
  reason: Schema.Literals(["idle_ttl", "shutdown", "closed"])
}) {}

// ---------------------------------------------------------------------------
// attention
// ---------------------------------------------------------------------------

const attention = {
  ...stamp,
  sessionKey: SessionKey,
  classification: Classification,
  reason: AttentionReason,
  recoverable: Schema.Boolean,
  state: LaneState,
  queueDepth: Schema.Number,
  generation: Schema.Number,
  activeWorkKind: Schema.optionalKey(WorkKind),
  /** How long the session has looked this way (the age that crossed the threshold). */
  ageMs: Schema.Number,
  /** The rule that fired and its inputs, as one readable line. */
  evidence: Schema.String
}

/**
 * A session is busy for a long time but making progress.
 *
 * @category attention
 * @since 0.1.0
 */
export class SessionLongRunning extends Schema.TaggedClass<SessionLongRunning>()("session.long_running", attention) {}

/**
 * A session's active work stopped making progress (not auto-recoverable;
 * eligible for an active abort past the abort threshold).
 *
 * @category attention
 * @since 0.1.0
 */
export class SessionStalled extends Schema.TaggedClass<SessionStalled>()("session.stalled", attention) {}

/**
 * A session is wedged with nothing running; recoverable.
 *
 * @category attention
 * @since 0.1.0
 */
export class SessionStuck extends Schema.TaggedClass<SessionStuck>()("session.stuck", attention) {}

// ---------------------------------------------------------------------------
// recovery
// ---------------------------------------------------------------------------

/**
 * A recovery was requested for a session.
 *
 * @category recovery
 * @since 0.1.0
 */
export class RecoveryRequested extends Schema.TaggedClass<RecoveryRequested>()("session.recovery.requested", {
  ...stamp,
  sessionKey: SessionKey,
  recoveryId: Schema.String,
  trigger: Schema.Literals(["stuck", "active_abort", "manual"]),
  expectedState: LaneState,
  generation: Schema.Number,
  allowActiveAbort: Schema.Boolean
}) {}

/**
 * A recovery finished with a typed outcome.
 *
 * @category recovery
 * @since 0.1.0
 */
export class RecoveryCompleted extends Schema.TaggedClass<RecoveryCompleted>()("session.recovery.completed", {
  ...stamp,
  sessionKey: SessionKey,
  recoveryId: Schema.String,
  status: RecoveryStatus,
  action: RecoveryAction,
  reason: Schema.String,
  stale: Schema.Boolean,
  forced: Schema.Boolean,
  durationMs: Schema.Number
}) {}

// ---------------------------------------------------------------------------
// lock
// ---------------------------------------------------------------------------

/**
 * The session write lock was acquired.
 *
 * @category lock
 * @since 0.1.0
 */
export class LockAcquired extends Schema.TaggedClass<LockAcquired>()("lock.acquired", {
  ...stamp,
  sessionKey: SessionKey,
  backend: Schema.String,
  token: Schema.Number,
  waitedMs: Schema.Number,
  attempts: Schema.Number,
  reclaimed: Schema.Boolean
}) {}

/**
 * An acquire found the lock held; published once per wait, not per poll.
 *
 * @category lock
 * @since 0.1.0
 */
export class LockContended extends Schema.TaggedClass<LockContended>()("lock.contended", {
  ...stamp,
  sessionKey: SessionKey,
  backend: Schema.String,
  holder: LockHolder
}) {}

/**
 * A stale lock was taken away from a holder that can no longer hold it.
 *
 * @category lock
 * @since 0.1.0
 */
export class LockReclaimed extends Schema.TaggedClass<LockReclaimed>()("lock.reclaimed", {
  ...stamp,
  sessionKey: SessionKey,
  backend: Schema.String,
  reason: ReclaimReason,
  previousHolder: LockHolder
}) {}

/**
 * A lease was released (its scope closed).
 *
 * @category lock
 * @since 0.1.0
 */
export class LockReleased extends Schema.TaggedClass<LockReleased>()("lock.released", {
  ...stamp,
  sessionKey: SessionKey,
  backend: Schema.String,
  token: Schema.Number,
  heldMs: Schema.Number
}) {}

/**
 * An acquire ran out of its budget.
 *
 * @category lock
 * @since 0.1.0
 */
export class LockTimedOut extends Schema.TaggedClass<LockTimedOut>()("lock.timeout", {
  ...stamp,
  sessionKey: SessionKey,
  backend: Schema.String,
  waitedMs: Schema.Number,
  attempts: Schema.Number,
  holder: LockHolder
}) {}

/**
 * A live holder is past the stale time or its max hold: reported, never robbed.
 *
 * @category lock
 * @since 0.1.0
 */
export class LockStaleReported extends Schema.TaggedClass<LockStaleReported>()("lock.stale", {
  ...stamp,
  sessionKey: SessionKey,
  backend: Schema.String,
  reasons: Schema.Array(Schema.String),
  holder: LockHolder
}) {}

/**
 * A holder found its lease no longer current.
 *
 * @category lock
 * @since 0.1.0
 */
export class LockLostDetected extends Schema.TaggedClass<LockLostDetected>()("lock.lost", {
  ...stamp,
  sessionKey: SessionKey,
  backend: Schema.String,
  token: Schema.Number,
  reason: Schema.String
}) {}

// ---------------------------------------------------------------------------
// process and bus
// ---------------------------------------------------------------------------

/**
 * The process itself was starved in the last interval; active aborts are
 * suspended for that tick.
 *
 * @category liveness
 * @since 0.1.0
 */
export class LivenessWarning extends Schema.TaggedClass<LivenessWarning>()("diagnostic.liveness.warning", {
  ...stamp,
  reasons: Schema.Array(Schema.Literals(["event_loop_delay_p99", "event_loop_delay_max", "event_loop_utilization"])),
  p99Ms: Schema.Number,
  maxMs: Schema.Number,
  utilization: Schema.Number,
  intervalMs: Schema.Number
}) {}

/**
 * A subscriber fell behind and lost events (its oldest ones).
 *
 * @category bus
 * @since 0.1.0
 */
export class EventsDropped extends Schema.TaggedClass<EventsDropped>()("diagnostic.events.dropped", {
  ...stamp,
  subscriber: Schema.String,
  /** Events this subscriber lost since the previous report. */
  dropped: Schema.Number,
  /** Events this subscriber lost in all. */
  totalDropped: Schema.Number
}) {}

/**
 * Every diagnostic event, as one tagged union schema.
 *
 * @category schemas
 * @since 0.1.0
 */
export const DiagnosticEvent = Schema.Union([
  RunStarted,
  RunEnded,
  MarkerOpened,
  MarkerClosed,
  ActivityProgressed,
  ActivityEvicted,
  SignalFenced,
  SignalIgnored,
  SessionStateChanged,
  TurnAdmitted,
  TurnCompleted,
  LaneOpened,
  LaneClosed,
  SessionLongRunning,
  SessionStalled,
  SessionStuck,
  RecoveryRequested,
  RecoveryCompleted,
  LockAcquired,
  LockContended,
  LockReclaimed,
  LockReleased,
  LockTimedOut,
  LockStaleReported,
  LockLostDetected,
  LivenessWarning,
  EventsDropped
]).pipe(Schema.toTaggedUnion("_tag"))
export type DiagnosticEvent = typeof DiagnosticEvent.Type

/**
 * The wire type of an event (its `_tag`).
 *
 * @category models
 * @since 0.1.0
 */
export type EventType = DiagnosticEvent["_tag"]

/**
 * Every event type, in catalogue order.
 *
 * @category models
 * @since 0.1.0
 */
export const eventTypes: ReadonlyArray<EventType> = DiagnosticEvent.members.map(
  (member) => member.fields._tag.schema.literal
) as ReadonlyArray<EventType>

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

/**
 * An event before the bus stamps it: every field but `seq` and `ts`, as a
 * plain object with its `_tag`.
 *
 * @category models
 * @since 0.1.0
 */
export type Draft = DistributiveOmit<DiagnosticEvent, "seq" | "ts">

/**
 * A draft of one event type.
 *
 * @category models
 * @since 0.1.0
 */
export type DraftOf<T extends EventType> = Extract<Draft, { readonly _tag: T }>

const prototypes: Record<EventType, object> = Object.fromEntries(
  DiagnosticEvent.members.map((member) => [member.fields._tag.schema.literal, member.prototype])
) as Record<EventType, object>

/**
 * Builds the event class instance for a draft and a stamp.
 *
 * Gotchas: this is the publishing hot path (two events per tool call), so it
 * does not run the schema parser: a draft is already typed by the compiler,
 * and an instance is its own fields over the class prototype, exactly what the
 * class constructor produces (pinned by a test). Untrusted input goes through
 * {@link decodeUnknown}, which validates everything.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromDraft = (draft: Draft, seq: number, ts: number): DiagnosticEvent => {
  // Copying the draft whole and then stamping it is about three times cheaper
  // than a rest/spread that drops `_tag` first.
  const event = Object.assign(Object.create(prototypes[draft._tag]), draft)
  event.seq = seq
  event.ts = ts
  return event
}

/**
 * Decodes an event from unknown input (for example a parsed JSON line),
 * failing with a `SchemaError` that says which field is wrong.
 *
 * @category codecs
 * @since 0.1.0
 */
export const decodeUnknown = Schema.decodeUnknownEffect(DiagnosticEvent)

/**
 * @category codecs
 * @since 0.1.0
 */
export const decodeUnknownResult = Schema.decodeUnknownResult(DiagnosticEvent)

/**
 * JSON codec: an event to and from a JSON string.
 *
 * @category codecs
 * @since 0.1.0
 */
export const Json = Schema.fromJsonString(DiagnosticEvent)

/**
 * @category codecs
 * @since 0.1.0
 */
export const encodeJson = Schema.encodeSync(Json)

/**
 * @category codecs
 * @since 0.1.0
 */
export const decodeJson = Schema.decodeUnknownEffect(Json)
