/**
 * What `GET /sessions` shows of one session, as plain JSON: the lane (state,
 * queue depth, generation, the running turn), the open markers with their
 * ages, the last progress, and the verdict of `Attention.classify` computed
 * now, with its one-line evidence. Pure: the HTTP layer reads the lane, the
 * tracker's snapshot and the clock, and calls {@link make}.
 */
import type { ActivitySnapshot } from "../../src/ActivityTracker.ts"
import * as Attention from "../../src/Attention.ts"
import type { SessionKey } from "../../src/SessionKey.ts"
import type { LaneView } from "../../src/SessionLanes.ts"

export interface SessionJson {
  readonly sessionKey: SessionKey
  /** Whether the session has an open lane (a session may have activity only, e.g. an external runtime's). */
  readonly lane: boolean
  readonly state: "idle" | "processing"
  readonly queueDepth: number
  readonly generation: number
  /** How long the lane has been in its state. */
  readonly stateAgeMs: number | null
  /** Waiting for leftover reported work to end before its next turn. */
  readonly gated: boolean
  readonly currentTurn: { readonly turnId: string; readonly ageMs: number } | null
  readonly owners: number
  readonly markers: ReadonlyArray<{
    readonly kind: "tool_call" | "model_call"
    readonly name: string
    readonly source: "structured" | "reported"
    readonly owned: boolean
    readonly ageMs: number
    readonly sinceProgressMs: number
  }>
  readonly lastProgress: { readonly ageMs: number; readonly reason: string | null; readonly terminal: boolean } | null
  /**
   * What an operator reads first: `healthy` while the watchdog has no reason
   * to look at the session, otherwise the verdict's classification.
   */
  readonly status: "healthy" | Attention.Verdict["classification"]
  readonly verdict: {
    readonly classification: Attention.Verdict["classification"]
    readonly reason: Attention.Verdict["reason"]
    readonly recoverable: boolean
    readonly rule: Attention.Rule
    /** The evidence line: the rule that fired and the inputs that made it fire. */
    readonly evidence: string
    /**
     * Whether the watchdog looks at this session now (processing for longer
     * than the warn threshold, or idle with queued work); otherwise the
     * verdict is informational.
     */
    readonly watched: boolean
  }
}

/** Builds the JSON view of one session at `now`. */
export const make = (
  sessionKey: SessionKey,
  lane: LaneView | undefined,
  activity: ActivitySnapshot,
  now: number,
  warnMs: number
): SessionJson => {
  const state = lane?.state ?? "idle"
  const queueDepth = lane?.queueDepth ?? 0
  const verdict = Attention.classify(Attention.fromSnapshot({ state, queueDepth }, activity), { warnMs })
  const stateAgeMs = lane === undefined ? null : Math.max(0, now - lane.stateSince)
  const watched = lane !== undefined &&
    ((state === "processing" && stateAgeMs! > warnMs) || (state === "idle" && queueDepth > 0))
  return {
    sessionKey,
    lane: lane !== undefined,
    state,
    queueDepth,
    generation: lane?.generation ?? 0,
    stateAgeMs,
    gated: lane?.gated ?? false,
    currentTurn: lane?.current === undefined
      ? null
      : { turnId: lane.current.turnId, ageMs: Math.max(0, now - lane.current.startedAt) },
    owners: activity.runs.length,
    markers: activity.markers.map((marker) => ({
      kind: marker.kind,
      name: marker.name,
      source: marker.source,
      owned: marker.owned,
      ageMs: marker.ageMs,
      sinceProgressMs: marker.sinceProgressMs
    })),
    lastProgress: activity.lastProgressAgeMs === undefined
      ? null
      : {
        ageMs: activity.lastProgressAgeMs,
        reason: activity.lastProgressReason ?? null,
        terminal: activity.lastProgressTerminal
      },
    status: watched ? verdict.classification : "healthy",
    verdict: {
      classification: verdict.classification,
      reason: verdict.reason,
      recoverable: verdict.recoverable,
      rule: verdict.evidence.rule,
      evidence: Attention.renderEvidence(verdict.evidence),
      watched
    }
  }
}
