/**
 * What the seed-failures scenario found, as data, and its rendering: the
 * timeline lines, the closing summary table and the pace table. Pure.
 */
import type * as DiagnosticEvent from "../../src/DiagnosticEvent.ts"

/** One of the three production failures, as the scenario saw it handled. */
export interface FailureResult {
  readonly id: string
  readonly title: string
  /** The verdict (or, for lock contention, the event-loop reading) with its evidence. */
  readonly verdict: string
  /** What recovery did. */
  readonly recovery: string
  readonly recovered: boolean
}

/**
 * One healthy session's pace: it sent a `normal` message every `intervalMs`;
 * it kept its pace when every message completed successfully within
 * `budgetMs` of being sent.
 */
export interface PaceResult {
  readonly sessionKey: string
  readonly sent: number
  readonly completed: number
  readonly failed: number
  readonly p50Ms: number
  readonly p95Ms: number
  readonly maxMs: number
  readonly budgetMs: number
  readonly kept: boolean
}

/** The event loop while the lock hog held its locks, read from `/metrics`, and the liveness warnings of the run. */
export interface EventLoopReading {
  readonly samples: number
  readonly p99MaxMs: number
  readonly maxMs: number
  readonly utilizationMax: number
  /** Warnings for an event-loop delay (p99 or max) of 1 s or more: a blocked loop. */
  readonly delayWarnings: number
  /** Warnings for utilisation alone (>= 0.95): a busy process, not a blocked one. */
  readonly busyWarnings: number
}

export interface Report {
  readonly ok: boolean
  /** The checks that did not pass. */
  readonly failed: ReadonlyArray<string>
  readonly failures: ReadonlyArray<FailureResult>
  readonly pace: ReadonlyArray<PaceResult>
  readonly eventLoop: EventLoopReading
  readonly durationMs: number
  readonly events: number
}

/** `+12.34s` since the start of the scenario. */
export const clock = (ms: number): string => `+${(ms / 1000).toFixed(2).padStart(5)}s`

/** A duration for people: `450ms`, `2.4s`. */
export const ms = (value: number): string => value < 1000 ? `${Math.round(value)}ms` : `${(value / 1000).toFixed(1)}s`

/** The nearest-rank percentile of a list of numbers (0 for none). */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/** One timeline line for an event of a scenario session, or nothing for events not worth a line. */
export const describe = (event: DiagnosticEvent.DiagnosticEvent): string | undefined => {
  switch (event._tag) {
    case "session.lane.turn_completed":
      return `turn ${event.turnId} ${event.outcome} after ${ms(event.durationMs)}`
    case "session.activity.marker_opened":
      return event.source === "reported" ? `reported ${event.name} started by run ${event.runId}` : undefined
    case "session.activity.evicted":
      return `evicted ${event.evictedTools} tool / ${event.evictedModelCalls} model marker(s): ${event.reason} ` +
        `(later starts of those runs numbered <= #${event.cutoffSeq} are fenced)`
    case "session.activity.fenced":
      return `late ${event.kind} start #${event.signalSeq} of run ${event.runId} fenced (cutoff #${event.cutoffSeq})`
    case "session.long_running":
    case "session.stalled":
    case "session.stuck":
      return `${event._tag} ${event.classification}/${event.reason} at ${ms(event.ageMs)}: ${event.evidence}`
    case "session.recovery.requested":
      return `recovery requested (${event.trigger}; expects ${event.expectedState}, generation ${event.generation}` +
        `${event.allowActiveAbort ? ", active abort allowed" : ""})`
    case "session.recovery.completed":
      return `recovery ${event.status}: ${event.action}, ${event.reason}${event.forced ? " (forced)" : ""} in ${
        ms(event.durationMs)
      }`
    case "lock.contended":
      return `lock held by pid ${event.holder.pid ?? "?"} (${event.holder.status}): waiting`
    case "lock.reclaimed":
      return `lock reclaimed from pid ${event.previousHolder.pid ?? "?"}: ${event.reason}`
    case "diagnostic.liveness.warning":
      return `process starved: ${event.reasons.join(", ")} (p99 ${ms(event.p99Ms)}, max ${ms(event.maxMs)})`
    default:
      return undefined
  }
}

const pad = (text: string, width: number) => text.length > width ? `${text.slice(0, width - 1)}…` : text.padEnd(width)

/** The closing summary: one row per failure (its verdict and what recovery did below it), then the pace table. */
export const render = (report: Report): string => {
  const lines: Array<string> = []
  const rule = "─".repeat(110)
  lines.push("", rule, "summary", rule)
  lines.push(`${pad("#", 4)}${pad("production failure", 92)}result`)
  for (const failure of report.failures) {
    lines.push(`${pad(failure.id, 4)}${pad(failure.title, 92)}${failure.recovered ? "recovered" : "NOT RECOVERED"}`)
    lines.push(`${" ".repeat(4)}verdict:  ${failure.verdict}`)
    lines.push(`${" ".repeat(4)}recovery: ${failure.recovery}`)
  }
  lines.push(rule)
  const budget = report.pace[0]?.budgetMs ?? 0
  lines.push(
    `pace: a healthy session sends a normal message every 500ms; it keeps its pace when every message ` +
      `completes successfully within ${ms(budget)} of being sent`
  )
  lines.push(
    `${pad("healthy session", 24)}${pad("sent", 6)}${pad("done", 6)}${pad("failed", 8)}${pad("p50", 8)}${
      pad("p95", 8)
    }${pad("max", 8)}pace`
  )
  for (const pace of report.pace) {
    lines.push(
      `${pad(pace.sessionKey, 24)}${pad(String(pace.sent), 6)}${pad(String(pace.completed), 6)}${
        pad(String(pace.failed), 8)
      }${pad(ms(pace.p50Ms), 8)}${pad(ms(pace.p95Ms), 8)}${pad(ms(pace.maxMs), 8)}${pace.kept ? "kept" : "MISSED"}`
    )
  }
  const loop = report.eventLoop
  lines.push(rule)
  lines.push(
    `event loop while the lock hog held its locks (${loop.samples} reads of /metrics): delay p99 <= ${
      ms(loop.p99MaxMs)
    }, max <= ${ms(loop.maxMs)}, utilisation <= ${loop.utilizationMax.toFixed(2)}; ` +
      `liveness warnings in the whole run: ${loop.delayWarnings} for delay (a blocked loop), ` +
      `${loop.busyWarnings} for utilisation alone (a busy process)`
  )
  lines.push(
    `${report.events} events in ${ms(report.durationMs)}: ` +
      (report.ok
        ? "every failure was recovered and every healthy session kept its pace"
        : `FAILED: ${report.failed.join("; ")}`)
  )
  lines.push(rule)
  return lines.join("\n")
}
