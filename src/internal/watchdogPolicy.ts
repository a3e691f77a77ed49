/**
 * The watchdog's policy as plain functions: threshold resolution and
 * validation, the back-off of repeated warnings, the eligibility of an active
 * abort, and the starvation rule for the process itself. The `Watchdog`
 * service reads the clock, the lanes, the activity snapshots and the
 * event-loop sampler, and asks these what to do.
 *
 * @internal
 */
import type { ActivitySnapshot } from "../ActivityTracker.ts"
import type { Verdict } from "../Attention.ts"
import type { Classification, WorkKind } from "../DiagnosticEvent.ts"

// ---------------------------------------------------------------------------
// thresholds
// ---------------------------------------------------------------------------

/** The warn threshold when none (or an invalid one) is configured: 120 s. */
export const defaultWarnMs = 120_000
/** The smallest valid warn threshold: 1 s. */
export const minWarnMs = 1_000
/** The largest valid warn threshold: 24 h. */
export const maxWarnMs = 86_400_000
/** The floor of the default abort threshold: 5 min. */
export const minDefaultAbortMs = 300_000
/** The heartbeat interval when none (or an invalid one) is configured: 30 s. */
export const defaultIntervalMs = 30_000
/** The largest valid heartbeat interval: 24 h. */
export const maxIntervalMs = 86_400_000

/** The abort threshold when none is configured: `max(5 min, 3 × warn)`. */
export const defaultAbortMs = (warnMs: number): number => Math.max(minDefaultAbortMs, 3 * warnMs)

export interface ThresholdOptions {
  /** Age past which a session gets attention. @default 120000 (valid 1000–86400000) */
  readonly warnMs?: number | undefined
  /** Age at which a stalled run with a live owner may be aborted. @default max(300000, 3 × warnMs) */
  readonly abortMs?: number | undefined
  /** Heartbeat interval. @default 30000 (valid 1–86400000) */
  readonly intervalMs?: number | undefined
}

export interface ResolvedThresholds {
  readonly warnMs: number
  /** Never below `warnMs`. */
  readonly abortMs: number
  readonly intervalMs: number
  /** One line per configured value that was ignored or adjusted, saying why. */
  readonly notes: ReadonlyArray<string>
}

const seconds = (ms: number): string => `${Number((ms / 1000).toFixed(3))}s`

/** Why a number is not usable as a duration at all, or `undefined` when it is. */
const unusable = (value: number): string | undefined =>
  Number.isNaN(value)
    ? "not a number"
    : !Number.isFinite(value)
    ? "not finite"
    : value < 0
    ? "negative"
    : value === 0
    ? "zero"
    : undefined

/**
 * Resolves the watchdog thresholds from configuration. Invalid values never
 * fail: each falls back to its default with a note saying what was ignored and
 * why, so a typo in a config file degrades to the defaults rather than
 * disabling the watchdog.
 *
 * - warn: 1 s–24 h, otherwise the default (120 s);
 * - abort: a positive finite number, otherwise `max(5 min, 3 × warn)`; a value
 *   below warn is raised to warn (aborting work before it is even reported
 *   would act on sessions nobody has been warned about);
 * - interval: 1 ms–24 h, otherwise the default (30 s).
 */
export const resolveThresholds = (options: ThresholdOptions = {}): ResolvedThresholds => {
  const notes: Array<string> = []

  let warnMs = defaultWarnMs
  if (options.warnMs !== undefined) {
    const why = unusable(options.warnMs) ??
      (options.warnMs < minWarnMs
        ? `below the minimum ${seconds(minWarnMs)}`
        : options.warnMs > maxWarnMs
        ? `above the maximum ${seconds(maxWarnMs)} (24h)`
        : undefined)
    if (why === undefined) {
      warnMs = options.warnMs
    } else {
      notes.push(`warnMs ${options.warnMs} ignored: ${why}; using the default ${seconds(defaultWarnMs)}`)
    }
  }

  let abortMs = defaultAbortMs(warnMs)
  if (options.abortMs !== undefined) {
    const why = unusable(options.abortMs)
    if (why !== undefined) {
      notes.push(
        `abortMs ${options.abortMs} ignored: ${why}; using the default max(5min, 3 × warn) = ${seconds(abortMs)}`
      )
    } else if (options.abortMs < warnMs) {
      notes.push(
        `abortMs ${options.abortMs} raised to the warn threshold ${seconds(warnMs)}: abort is never below warn`
      )
      abortMs = warnMs
    } else {
      abortMs = options.abortMs
    }
  }

  let intervalMs = defaultIntervalMs
  if (options.intervalMs !== undefined) {
    const why = unusable(options.intervalMs) ??
      (options.intervalMs > maxIntervalMs ? `above the maximum ${seconds(maxIntervalMs)} (24h)` : undefined)
    if (why === undefined) {
      intervalMs = options.intervalMs
    } else {
      notes.push(`intervalMs ${options.intervalMs} ignored: ${why}; using the default ${seconds(defaultIntervalMs)}`)
    }
  }

  return { warnMs, abortMs, intervalMs, notes }
}

// ---------------------------------------------------------------------------
// warning back-off
// ---------------------------------------------------------------------------

export interface WarnDecision {
  /** Whether to publish the verdict's event on this tick. */
  readonly warn: boolean
  /**
   * The age at which the next warning falls due: a later warning is published
   * once the age reaches it (the very first one once the age passes it).
   */
  readonly nextAtMs: number
}

/** Stalled classifications are reported on every tick: they are what an operator must act on. */
export const isStalled = (classification: Classification): boolean =>
  classification === "blocked_tool_call" || classification === "stalled_agent_run"

/** The age of the warning after one at `lastMs`: `max(last + warn, 2 × last)`. */
export const nextWarningAt = (lastMs: number, warnMs: number): number => Math.max(lastMs + warnMs, 2 * lastMs)

/**
 * Whether to warn about a session on this tick. Stalled verdicts warn every
 * tick; `long_running` and stuck ones back off: the first warning when the
 * age passes warn, the next when it reaches `max(last + warn, 2 × last)`,
 * where `last` is the age at the previous warning. A previous warning at an
 * age above the current one belongs to an earlier episode (the session moved
 * on since) and is forgotten.
 */
export const shouldWarn = (
  previousWarnAgeMs: number | undefined,
  ageMs: number,
  warnMs: number,
  classification: Classification
): WarnDecision => {
  if (isStalled(classification)) return { warn: true, nextAtMs: ageMs }
  const last = previousWarnAgeMs !== undefined && previousWarnAgeMs <= ageMs ? previousWarnAgeMs : undefined
  if (last === undefined) {
    const warn = ageMs > warnMs
    return { warn, nextAtMs: warn ? nextWarningAt(ageMs, warnMs) : warnMs }
  }
  const due = nextWarningAt(last, warnMs)
  const warn = ageMs >= due
  return { warn, nextAtMs: warn ? nextWarningAt(ageMs, warnMs) : due }
}

// ---------------------------------------------------------------------------
// active abort
// ---------------------------------------------------------------------------

/** What an active abort would interrupt. */
export type AbortTarget = "stalled_run" | "blocked_tool" | "stalled_model_call"

/** Why an active abort is not taken. */
export type AbortRefusal =
  | "not_stalled"
  | "recoverable_without_abort"
  | "no_live_owner"
  | "work_not_owned"
  | "age_unknown"
  | "below_abort_threshold"
  | "starved"

export interface AbortInputs {
  readonly activeWorkKind: WorkKind | undefined
  /** Whether a live run owns the session's activity. */
  readonly hasOwner: boolean
  /** Whether the oldest marker of the active kind is held by a live owner (a leaked marker is not). */
  readonly ownedWork: boolean
  /** Time since the session last made progress. */
  readonly progressAgeMs: number | undefined
  /** Age of the oldest open tool call. */
  readonly toolAgeMs: number | undefined
  /** Age of the oldest live run. */
  readonly runAgeMs: number | undefined
}

export interface AbortEligibility {
  readonly eligible: boolean
  /** The target when eligible, otherwise why not. */
  readonly reason: AbortTarget | AbortRefusal
  /** What would be aborted, once the verdict names one (also when the threshold or starvation holds it back). */
  readonly target: AbortTarget | undefined
  /** The age compared with the abort threshold, when one was. */
  readonly ageMs: number | undefined
}

const known = (ageMs: number | undefined): ageMs is number => ageMs !== undefined && !Number.isNaN(ageMs)

const refuse = (reason: AbortRefusal, target?: AbortTarget, ageMs?: number): AbortEligibility => ({
  eligible: false,
  reason,
  target,
  ageMs
})

/**
 * Builds the abort inputs from an activity snapshot: `ownedWork` is whether
 * the oldest marker of the active kind is held by a live owner.
 */
export const abortInputsOf = (activity: ActivitySnapshot): AbortInputs => {
  const kind = activity.activeWorkKind
  let runAgeMs: number | undefined
  for (const run of activity.runs) {
    if (runAgeMs === undefined || run.ageMs > runAgeMs) runAgeMs = run.ageMs
  }
  return {
    activeWorkKind: kind,
    hasOwner: activity.hasOwner,
    ownedWork: kind === "tool_call"
      ? activity.oldestTool?.owned === true
      : kind === "model_call"
      ? activity.oldestModelCall?.owned === true
      : activity.hasOwner,
    progressAgeMs: activity.lastProgressAgeMs,
    toolAgeMs: activity.oldestTool?.ageMs,
    runAgeMs
  }
}

/**
 * Whether a stalled session's active work may be aborted on this tick. Only
 * three cases qualify, and each only under a live owner: a stalled run
 * (`stalled_agent_run` on an embedded run), a blocked tool (the tool held by a
 * live owner) and a stalled model call (held by a live owner, no progress).
 * The age compared is the silence of that work (for a tool, the lesser of its
 * age and the time since progress; for a run with no progress ever, its age),
 * and it must have reached `abortMs`: exactly at the threshold, not one tick
 * before. `long_running` and stuck verdicts never qualify (stuck sessions are
 * released by recovery, which aborts nothing), and a starved process takes no
 * abort at all: the silence may be the process's, not the session's. The
 * starvation check comes last, so a refusal for `starved` means the abort was
 * otherwise due.
 */
export const activeAbortEligibility = (
  verdict: Pick<Verdict, "classification">,
  inputs: AbortInputs,
  abortMs: number,
  starved: boolean
): AbortEligibility => {
  if (verdict.classification === "long_running") return refuse("not_stalled")
  if (verdict.classification === "stale_session_state") return refuse("recoverable_without_abort")
  const kind = inputs.activeWorkKind
  if (kind === undefined) return refuse("not_stalled")
  const target: AbortTarget = verdict.classification === "blocked_tool_call" || kind === "tool_call"
    ? "blocked_tool"
    : kind === "model_call"
    ? "stalled_model_call"
    : "stalled_run"
  if (!inputs.hasOwner) return refuse("no_live_owner", target)
  if (target !== "stalled_run" && !inputs.ownedWork) return refuse("work_not_owned", target)
  const ages = target === "blocked_tool"
    ? [inputs.toolAgeMs, inputs.progressAgeMs].filter(known)
    : known(inputs.progressAgeMs)
    ? [inputs.progressAgeMs]
    : target === "stalled_run" && known(inputs.runAgeMs)
    ? [inputs.runAgeMs]
    : []
  if (ages.length === 0) return refuse("age_unknown", target)
  const ageMs = Math.min(...ages)
  if (!(ageMs >= abortMs)) return refuse("below_abort_threshold", target, ageMs)
  if (starved) return refuse("starved", target, ageMs)
  return { eligible: true, reason: target, target, ageMs }
}

// ---------------------------------------------------------------------------
// starvation
// ---------------------------------------------------------------------------

/** Why the process counts as starved, in the `diagnostic.liveness.warning` vocabulary. */
export type StarvationReason = "event_loop_delay_p99" | "event_loop_delay_max" | "event_loop_utilization"

export interface LivenessReading {
  readonly p99Ms: number
  readonly maxMs: number
  /** Event-loop utilisation over the interval, 0–1. */
  readonly utilization: number
}

export interface StarvationLimits {
  /** @default 1000 */
  readonly p99Ms: number
  /** @default 1000 */
  readonly maxMs: number
  /** @default 0.95 */
  readonly utilization: number
}

/** A process is starved when p99 or max delay reaches 1 s, or utilisation reaches 0.95. */
export const defaultStarvationLimits: StarvationLimits = { p99Ms: 1_000, maxMs: 1_000, utilization: 0.95 }

export interface Starvation {
  readonly starved: boolean
  /** Every limit the reading reached, in a fixed order. */
  readonly reasons: ReadonlyArray<StarvationReason>
}

/**
 * Whether the process itself was starved in the interval the reading covers:
 * any of p99 delay, max delay or utilisation at or above its limit.
 */
export const isStarved = (
  sample: LivenessReading,
  limits: Partial<StarvationLimits> = {}
): Starvation => {
  const { maxMs, p99Ms, utilization } = { ...defaultStarvationLimits, ...limits }
  const reasons: Array<StarvationReason> = []
  if (sample.p99Ms >= p99Ms) reasons.push("event_loop_delay_p99")
  if (sample.maxMs >= maxMs) reasons.push("event_loop_delay_max")
  if (sample.utilization >= utilization) reasons.push("event_loop_utilization")
  return { starved: reasons.length > 0, reasons }
}
