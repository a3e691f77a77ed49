/**
 * The attention classifier: is a session healthy but slow, stalled, or stuck?
 *
 * A pure function over a {@link SessionView} (lane state, queue depth, active
 * work kind, owner, oldest tool age, last progress age and reason) and the
 * warn threshold. Seven rules are tried in order and the first that matches
 * gives the verdict; every verdict carries its {@link Evidence} (the rule that
 * fired and the inputs it read), which {@link renderEvidence} turns into one
 * readable line for events, logs and dashboards.
 *
 * The vocabulary (classifications, reasons, event types) is the one operators
 * of agent gateways already use, so runbooks carry over. docs/attention.md
 * shows the table and walks through every rule.
 *
 * @since 0.1.0
 */
import type { ActivitySnapshot } from "./ActivityTracker.ts"
import type { AttentionReason, Classification, LaneState, WorkKind } from "./DiagnosticEvent.ts"

/**
 * What the classifier reads about one session: its lane (state, queue depth)
 * and its activity (work kind, owner, ages, last progress). Build it with
 * {@link fromSnapshot}.
 *
 * @category models
 * @since 0.1.0
 */
export interface SessionView {
  readonly state: LaneState
  readonly queueDepth: number
  /** Work kind by priority: tool > model > run; `undefined` when nothing is tracked. */
  readonly activeWorkKind: WorkKind | undefined
  /** Whether a live run owns the session's activity. */
  readonly hasOwner: boolean
  /** Age of the oldest open tool call, if any. */
  readonly oldestToolAgeMs: number | undefined
  /** Time since the session last made progress, if it ever did. */
  readonly lastProgressAgeMs: number | undefined
  readonly lastProgressReason: string | undefined
  /** Whether the last progress said the run had finished. */
  readonly lastProgressTerminal: boolean
}

/**
 * The threshold the classifier compares ages with: an age is *stale* when it
 * is strictly greater than `warnMs`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Thresholds {
  readonly warnMs: number
}

/**
 * The rule numbers, in the order they are tried.
 *
 * @category models
 * @since 0.1.0
 */
export type Rule = 1 | 2 | 3 | 4 | 5 | 6 | 7

/**
 * Why a verdict was given: the rule that fired, its short name, and the
 * inputs the classifier read (the whole view and the threshold, so a verdict
 * can be re-derived from its evidence alone).
 *
 * @category models
 * @since 0.1.0
 */
export interface Evidence {
  readonly rule: Rule
  readonly ruleName: string
  readonly inputs: SessionView & {
    readonly warnMs: number
  }
}

/**
 * The classifier's answer: the classification and reason, whether the stuck
 * recovery may act on it, the event to publish, and the evidence.
 *
 * @category models
 * @since 0.1.0
 */
export interface Verdict {
  readonly classification: Classification
  readonly reason: AttentionReason
  /** Only `stale_session_state` is recoverable: nothing is running, so releasing the lane aborts nothing. */
  readonly recoverable: boolean
  readonly eventType: EventType
  readonly evidence: Evidence
}

/**
 * The event a verdict is published as.
 *
 * @category models
 * @since 0.1.0
 */
export type EventType = "session.long_running" | "session.stalled" | "session.stuck"

/**
 * One row of the classification table.
 *
 * @category models
 * @since 0.1.0
 */
export interface TableRow {
  readonly classification: Classification
  readonly eventType: EventType
  readonly recoverable: boolean
  readonly reasons: ReadonlyArray<AttentionReason>
}

/**
 * The classification table as data: each classification, the event it is
 * published as, whether it is recoverable and the reasons it can carry. Every
 * verdict of {@link classify} matches one row.
 *
 * @category table
 * @since 0.1.0
 */
export const table: ReadonlyArray<TableRow> = [
  {
    classification: "long_running",
    eventType: "session.long_running",
    recoverable: false,
    reasons: [
      "active_work",
      "queued_behind_active_work",
      "untracked_active_progress",
      "queued_behind_untracked_active_progress"
    ]
  },
  {
    classification: "blocked_tool_call",
    eventType: "session.stalled",
    recoverable: false,
    reasons: ["blocked_tool_call"]
  },
  {
    classification: "stalled_agent_run",
    eventType: "session.stalled",
    recoverable: false,
    reasons: ["active_work_without_progress", "queued_behind_terminal_active_work"]
  },
  {
    classification: "stale_session_state",
    eventType: "session.stuck",
    recoverable: true,
    reasons: ["stale_session_state", "queued_work_without_active_run"]
  }
]

/**
 * The short name of each rule, as shown in the evidence line.
 *
 * @category table
 * @since 0.1.0
 */
export const ruleNames: Readonly<Record<Rule, string>> = {
  1: "orphaned activity",
  2: "blocked tool",
  3: "queued behind terminal run",
  4: "active work without progress",
  5: "active work",
  6: "untracked progress",
  7: "no active run"
}

const rowOf = (classification: Classification): TableRow => table.find((row) => row.classification === classification)!

/** A missing or NaN age is unknown: neither stale nor fresh. */
const known = (ageMs: number | undefined): ageMs is number => ageMs !== undefined && !Number.isNaN(ageMs)

const isStale = (ageMs: number | undefined, warnMs: number): boolean => known(ageMs) && ageMs > warnMs

const isFresh = (ageMs: number | undefined, warnMs: number): boolean => known(ageMs) && !(ageMs > warnMs)

/**
 * Classifies one session. Total: every view gets a verdict, and the first
 * matching rule wins.
 *
 * 1. work kind set, `idle`, queue > 0, no owner, progress stale → `stale_session_state` /
 *    `queued_work_without_active_run`
 * 2. `tool_call`, tool age stale and progress stale → `blocked_tool_call`
 * 3. queue > 0, `embedded_run`, last progress terminal → `stalled_agent_run` / `queued_behind_terminal_active_work`
 * 4. work kind set, progress stale → `stalled_agent_run` / `active_work_without_progress`
 * 5. work kind set → `long_running` / `queued_behind_active_work` or `active_work`
 * 6. no work kind, fresh progress → `long_running` / the `untracked_…` reasons
 * 7. otherwise → `stale_session_state` / `queued_work_without_active_run` or `stale_session_state`
 *
 * Stale means strictly older than `warnMs`; a missing age is neither stale nor fresh.
 *
 * @category classify
 * @since 0.1.0
 */
export const classify = (view: SessionView, thresholds: Thresholds): Verdict => {
  const { warnMs } = thresholds
  const kind = view.activeWorkKind
  const queued = view.queueDepth > 0
  const progressStale = isStale(view.lastProgressAgeMs, warnMs)
  const verdict = (rule: Rule, classification: Classification, reason: AttentionReason): Verdict => {
    const row = rowOf(classification)
    return {
      classification,
      reason,
      recoverable: row.recoverable,
      eventType: row.eventType,
      evidence: { rule, ruleName: ruleNames[rule], inputs: { ...view, warnMs } }
    }
  }
  if (kind !== undefined && view.state === "idle" && queued && !view.hasOwner && progressStale) {
    return verdict(1, "stale_session_state", "queued_work_without_active_run")
  }
  if (kind === "tool_call" && isStale(view.oldestToolAgeMs, warnMs) && progressStale) {
    return verdict(2, "blocked_tool_call", "blocked_tool_call")
  }
  if (queued && kind === "embedded_run" && view.lastProgressTerminal) {
    return verdict(3, "stalled_agent_run", "queued_behind_terminal_active_work")
  }
  if (kind !== undefined && progressStale) {
    return verdict(4, "stalled_agent_run", "active_work_without_progress")
  }
  if (kind !== undefined) {
    return verdict(5, "long_running", queued ? "queued_behind_active_work" : "active_work")
  }
  if (isFresh(view.lastProgressAgeMs, warnMs)) {
    return verdict(6, "long_running", queued ? "queued_behind_untracked_active_progress" : "untracked_active_progress")
  }
  return verdict(7, "stale_session_state", queued ? "queued_work_without_active_run" : "stale_session_state")
}

/**
 * Formats a duration for the evidence line: `450ms` below a second, whole
 * seconds as `130s`, otherwise seconds with up to three decimals (`120.001s`,
 * so an age just past the threshold never reads as equal to it).
 *
 * @category render
 * @since 0.1.0
 */
export const formatDuration = (ms: number): string => {
  if (!Number.isFinite(ms)) return String(ms)
  if (Math.abs(ms) < 1000) return `${Number(ms.toFixed(3))}ms`
  return `${Number((ms / 1000).toFixed(3))}s`
}

const thresholdNote = (ageMs: number, warnMs: number): string =>
  ageMs > warnMs ? `stale > ${formatDuration(warnMs)} warn` : `fresh <= ${formatDuration(warnMs)} warn`

const workFact = (inputs: Evidence["inputs"]): string => {
  const owner = inputs.hasOwner ? "with an owner" : "with no owner"
  switch (inputs.activeWorkKind) {
    case undefined:
      return inputs.hasOwner ? "no tracked work, an owner present" : "no tracked work"
    case "tool_call": {
      const age = known(inputs.oldestToolAgeMs)
        ? ` ${formatDuration(inputs.oldestToolAgeMs)} (${thresholdNote(inputs.oldestToolAgeMs, inputs.warnMs)})`
        : " (age unknown)"
      return `tool_call open${age} ${owner}`
    }
    default:
      return `${inputs.activeWorkKind} open ${owner}`
  }
}

const progressFact = (inputs: Evidence["inputs"]): string => {
  if (!known(inputs.lastProgressAgeMs)) return "no progress recorded (not stale)"
  const via = inputs.lastProgressReason === undefined
    ? inputs.lastProgressTerminal ? " via a terminal reason" : ""
    : ` via ${inputs.lastProgressReason}${inputs.lastProgressTerminal ? " (terminal)" : ""}`
  return `progress ${formatDuration(inputs.lastProgressAgeMs)} ago${via} (${
    thresholdNote(inputs.lastProgressAgeMs, inputs.warnMs)
  })`
}

/**
 * Renders evidence as one readable line: the rule, then the lane state, the
 * queue, the work and its owner, and the last progress against the threshold,
 * for example
 * `rule 1 orphaned activity: idle, queue 2, model_call open with no owner,
 * progress 130s ago (stale > 120s warn)` (on one line).
 *
 * @category render
 * @since 0.1.0
 */
export const renderEvidence = (evidence: Evidence): string => {
  const { inputs } = evidence
  const facts = [inputs.state, `queue ${inputs.queueDepth}`, workFact(inputs), progressFact(inputs)]
  return `rule ${evidence.rule} ${evidence.ruleName}: ${facts.join(", ")}`
}

/**
 * Builds the classifier's view from a lane's state and an activity snapshot.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromSnapshot = (
  lane: { readonly state: LaneState; readonly queueDepth: number },
  activity: ActivitySnapshot
): SessionView => ({
  state: lane.state,
  queueDepth: lane.queueDepth,
  activeWorkKind: activity.activeWorkKind,
  hasOwner: activity.hasOwner,
  oldestToolAgeMs: activity.oldestTool?.ageMs,
  lastProgressAgeMs: activity.lastProgressAgeMs,
  lastProgressReason: activity.lastProgressReason,
  lastProgressTerminal: activity.lastProgressTerminal
})
