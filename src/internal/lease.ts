/**
 * Lease math of the session write lock, as plain functions: option defaults,
 * the single time budget of an acquire, the stale verdict on a live holder,
 * the refresh interval, and the human descriptions of a holder used in error
 * messages and the doctor's report.
 *
 * @since 0.1.0
 */
import type { LockHolder } from "../DiagnosticEvent.ts"

/** @internal */
export const defaults = {
  timeoutMs: 60_000,
  staleMs: 30 * 60_000,
  maxHoldMs: 5 * 60_000
} as const

/**
 * Why a live holder is reported as stale. It is never robbed for these.
 *
 * @internal
 */
export type StaleReason = "older_than_stale_time" | "past_max_hold"

/**
 * The stale verdict on a holder: reasons are returned only when the holder
 * has been holding for strictly longer than the stale time, or than the
 * maximum hold it declared when it took the lock.
 *
 * @internal
 */
export const staleReasons = (
  ageMs: number | undefined,
  holderMaxHoldMs: number | undefined,
  staleMs: number
): ReadonlyArray<StaleReason> => {
  if (ageMs === undefined) return []
  const reasons: Array<StaleReason> = []
  if (ageMs > staleMs) reasons.push("older_than_stale_time")
  if (holderMaxHoldMs !== undefined && holderMaxHoldMs > 0 && ageMs > holderMaxHoldMs) reasons.push("past_max_hold")
  return reasons
}

/**
 * How long to sleep before the next attempt: the schedule's delay, clipped so
 * that the wait never runs past the deadline. `undefined` when the budget is
 * spent and no further attempt may start.
 *
 * @internal
 */
export const nextWait = (scheduleDelayMs: number, now: number, deadline: number): number | undefined => {
  const remaining = deadline - now
  if (remaining <= 0) return undefined
  return Math.max(0, Math.min(scheduleDelayMs, remaining))
}

/**
 * The refresh interval for a lease time: a third of the lease (so two missed
 * refreshes still leave the lease standing), at least 10 ms.
 *
 * @internal
 */
export const refreshEvery = (leaseMs: number): number => Math.max(10, Math.floor(leaseMs / 3))

/**
 * A duration as a short human string: `850 ms`, `12.3 s`, `4m 05s`, `2h 10m`.
 *
 * @internal
 */
export const formatDuration = (ms: number): string => {
  if (!Number.isFinite(ms)) return "unknown"
  const abs = Math.max(0, ms)
  if (abs < 1000) return `${Math.round(abs)} ms`
  if (abs < 60_000) return `${(abs / 1000).toFixed(1)} s`
  if (abs < 3_600_000) {
    const m = Math.floor(abs / 60_000)
    const s = Math.floor((abs % 60_000) / 1000)
    return `${m}m ${String(s).padStart(2, "0")}s`
  }
  const h = Math.floor(abs / 3_600_000)
  const m = Math.floor((abs % 3_600_000) / 60_000)
  return `${h}h ${String(m).padStart(2, "0")}m`
}

const statusText: Record<LockHolder["status"], string> = {
  alive: "alive",
  dead: "dead",
  pid_reused: "pid reused by another process",
  unknown: "liveness unknown"
}

/**
 * One line naming a holder: `pid 4242 on host-a (alive, held 2m 05s, owner 7f3c…)`.
 *
 * @internal
 */
export const describeHolder = (holder: LockHolder): string => {
  const who = holder.pid !== undefined ? `pid ${holder.pid}` : "an unknown process"
  const where = holder.host !== undefined ? ` on ${holder.host}` : ""
  const parts = [statusText[holder.status]]
  if (holder.ageMs !== undefined) parts.push(`held ${formatDuration(holder.ageMs)}`)
  if (holder.ownerId !== undefined) parts.push(`owner ${holder.ownerId}`)
  return `${who}${where} (${parts.join(", ")})`
}

/**
 * What an operator can do about a holder in a given state.
 *
 * @internal
 */
export const adviceFor = (holder: LockHolder): string => {
  switch (holder.status) {
    case "alive":
      return "The holder is still running: wait for its turn to finish, raise the acquire timeout, " +
        "or find out what that process is doing."
    case "dead":
    case "pid_reused":
      return "The holder is gone; the lock is reclaimed automatically on the next attempt " +
        "(or run `effect-session-runtime doctor locks --dir <lock dir> --fix`)."
    case "unknown":
      return "The holder cannot be probed from here (another host, or no payload yet); it is reclaimed " +
        "once its lease expires. Inspect it with `effect-session-runtime doctor locks --dir <lock dir>`."
  }
}
