/**
 * The pure core of activity tracking: owners, markers, progress, eviction and
 * fencing as plain functions over one mutable state value. Each transition
 * returns the event drafts it implies; the `ActivityTracker` service reads
 * the clock and the sequence watermark, calls these, and publishes.
 *
 * Invariants kept here (and checked by property tests):
 * - a marker ends exactly once: closed by its owner, evicted, or (for a late
 *   reported start) never opened because it was fenced;
 * - when the last owner of a session ends, no marker of that session remains;
 * - a reported start numbered at or below its ended run's cutoff never opens.
 *
 * @internal
 */
import type * as DiagnosticEvent from "../DiagnosticEvent.ts"
import type { SessionKey } from "../SessionKey.ts"

export type Draft = DiagnosticEvent.Draft

export interface Owner {
  readonly runId: string
  readonly sessionKey: SessionKey
  readonly parentRunId: string | undefined
  readonly startedAt: number
  /** The sequence number of its `run_started` event: markers opened before it are not its. */
  startSeq: number
  /** Reported call ids this owner already completed (a duplicated start after its end is ignored). */
  /** Created on first use: most runs never complete a reported call. */
  completedCalls: Set<string> | undefined
  /**
   * Reported calls of this (still registered) owner that a recovery evicted,
   * with the recovery's cutoff: a re-delivered start must not re-arm them.
   */
  /** Created on first use. */
  evictedCalls: Map<string, number> | undefined
  /** True once the owner's fiber is known to have exited (set by the sweep). */
  readonly isDone: () => boolean
}

export interface Marker {
  readonly markerId: string
  /** `runId/kind/callId`, by which reported signals address it; empty when none can. */
  readonly lookup: string
  readonly sessionKey: SessionKey
  readonly runId: string
  readonly kind: DiagnosticEvent.MarkerKind
  readonly source: DiagnosticEvent.MarkerSource
  readonly name: string
  readonly startedAt: number
  /** The sequence number that opened it (the reported signal's, or its `marker_opened` event's). */
  openedSeq: number
  lastProgressAt: number
}

export interface SessionActivity {
  readonly sessionKey: SessionKey
  readonly owners: Map<string, Owner>
  readonly markers: Map<string, Marker>
  /** Reported markers by `runId/kind/callId`. */
  readonly byLookup: Map<string, Marker>
  lastProgressAt: number | undefined
  lastProgressReason: string | undefined
  lastProgressTerminal: boolean
  lastChangeAt: number
}

export interface EndedRun {
  readonly sessionKey: SessionKey
  readonly cutoff: number
}

export interface Counters {
  opened: number
  closed: number
  evicted: number
  fenced: number
  ignored: number
}

export interface State {
  readonly sessions: Map<SessionKey, SessionActivity>
  readonly runs: Map<string, Owner>
  /** Cutoffs of ended runs; bounded by `maxEndedRuns`. */
  readonly endedRuns: Map<string, EndedRun>
  /** The order ended runs are forgotten in (a ring of `maxEndedRuns` ids). */
  readonly endedOrder: { readonly ids: Array<string | undefined>; next: number }
  readonly maxEndedRuns: number
  readonly counters: Counters
  /** Where the incremental sweep resumes (a live iterator over `sessions`). */
  sweepCursor: Iterator<SessionActivity> | undefined
}

/**
 * Progress reasons that say a run has finished. Progress that ends on one of
 * these while work still looks active is itself a symptom.
 */
export const terminalReasons: ReadonlySet<string> = new Set([
  "run_completed",
  "run_failed",
  "run_interrupted",
  "run_aborted",
  "turn_completed",
  "response_completed"
])

export const isTerminalReason = (reason: string): boolean => terminalReasons.has(reason)

export const makeState = (options?: { readonly maxEndedRuns?: number | undefined }): State => ({
  sessions: new Map(),
  runs: new Map(),
  endedRuns: new Map(),
  endedOrder: { ids: [], next: 0 },
  maxEndedRuns: Math.max(1, Math.floor(options?.maxEndedRuns ?? 100_000)),
  counters: { opened: 0, closed: 0, evicted: 0, fenced: 0, ignored: 0 },
  sweepCursor: undefined
})

const sessionOf = (state: State, sessionKey: SessionKey, now: number): SessionActivity => {
  let session = state.sessions.get(sessionKey)
  if (session === undefined) {
    session = {
      sessionKey,
      owners: new Map(),
      markers: new Map(),
      byLookup: new Map(),
      lastProgressAt: undefined,
      lastProgressReason: undefined,
      lastProgressTerminal: false,
      lastChangeAt: now
    }
    state.sessions.set(sessionKey, session)
  }
  return session
}

export const touch = (session: SessionActivity, now: number, reason: string): void => {
  session.lastProgressAt = now
  session.lastProgressReason = reason
  session.lastProgressTerminal = isTerminalReason(reason)
  session.lastChangeAt = now
}

// Ended runs are forgotten oldest first through a fixed ring of run ids: O(1)
// per run, where evicting the first key of an insertion-ordered Map degrades
// as deleted entries pile up at its front.
const recordEnded = (state: State, runId: string, sessionKey: SessionKey, cutoff: number): void => {
  const previous = state.endedRuns.get(runId)
  if (previous !== undefined) {
    state.endedRuns.set(runId, { sessionKey, cutoff: Math.max(cutoff, previous.cutoff) })
    return
  }
  const slot = state.endedOrder.next
  const evicted = state.endedOrder.ids[slot]
  if (evicted !== undefined) state.endedRuns.delete(evicted)
  state.endedOrder.ids[slot] = runId
  state.endedOrder.next = (slot + 1) % state.maxEndedRuns
  state.endedRuns.set(runId, { sessionKey, cutoff })
}

const removeMarker = (session: SessionActivity, marker: Marker): void => {
  session.markers.delete(marker.markerId)
  if (marker.lookup !== "") session.byLookup.delete(marker.lookup)
}

const dropIfEmpty = (state: State, session: SessionActivity): void => {
  if (session.owners.size === 0 && session.markers.size === 0 && session.lastProgressAt === undefined) {
    state.sessions.delete(session.sessionKey)
  }
}

// ---------------------------------------------------------------------------
// owners
// ---------------------------------------------------------------------------

export const registerOwner = (
  state: State,
  owner: Owner,
  now: number
): Draft => {
  const session = sessionOf(state, owner.sessionKey, now)
  session.owners.set(owner.runId, owner)
  state.runs.set(owner.runId, owner)
  touch(session, now, "run_started")
  return {
    _tag: "session.activity.run_started",
    sessionKey: owner.sessionKey,
    runId: owner.runId,
    ...(owner.parentRunId === undefined ? {} : { parentRunId: owner.parentRunId }),
    owners: session.owners.size
  }
}

/**
 * Evicts markers chosen by `select`, records the cutoff for their runs, and
 * returns the one eviction event (or nothing when nothing was open).
 */
export const evictWhere = (
  state: State,
  session: SessionActivity,
  reason: DiagnosticEvent.EvictionReason,
  cutoff: number,
  select: (marker: Marker) => boolean
): Draft | undefined => {
  if (session.markers.size === 0) return undefined
  let tools = 0
  let models = 0
  for (const marker of Array.from(session.markers.values())) {
    if (!select(marker)) continue
    removeMarker(session, marker)
    if (marker.kind === "tool_call") tools++
    else models++
    const owner = session.owners.get(marker.runId)
    if (owner === undefined) recordEnded(state, marker.runId, session.sessionKey, cutoff)
    else if (marker.source === "reported") (owner.evictedCalls ??= new Map()).set(marker.lookup, cutoff)
  }
  if (tools + models === 0) return undefined
  state.counters.evicted += tools + models
  return {
    _tag: "session.activity.evicted",
    sessionKey: session.sessionKey,
    reason,
    evictedTools: tools,
    evictedModelCalls: models,
    cutoffSeq: cutoff
  }
}

export const outcomeReason: Record<DiagnosticEvent.Outcome, string> = {
  success: "run_completed",
  failure: "run_failed",
  interrupted: "run_interrupted",
  defect: "run_failed"
}

/**
 * Deregisters an owner (its finalizer). When it was the session's last owner,
 * every marker still open on the session is evicted (`orphaned_no_owner`);
 * otherwise only its own markers are (`owner_exited`), and the other owners'
 * markers are kept. Returns nothing if the owner was already detached (for
 * example force-cleared by a recovery).
 */
export const endOwner = (
  state: State,
  runId: string,
  outcome: DiagnosticEvent.Outcome,
  now: number,
  cutoff: number
): ReadonlyArray<Draft> => {
  const owner = state.runs.get(runId)
  if (owner === undefined) return []
  state.runs.delete(runId)
  const session = sessionOf(state, owner.sessionKey, now)
  session.owners.delete(runId)
  recordEnded(state, runId, owner.sessionKey, cutoff)
  touch(session, now, outcomeReason[outcome])
  const drafts: Array<Draft> = [{
    _tag: "session.activity.run_ended",
    sessionKey: owner.sessionKey,
    runId,
    outcome,
    durationMs: Math.max(0, now - owner.startedAt),
    owners: session.owners.size
  }]
  const eviction = session.owners.size === 0
    ? evictWhere(state, session, "orphaned_no_owner", cutoff, () => true)
    : evictWhere(state, session, "owner_exited", cutoff, (m) => m.runId === runId)
  if (eviction !== undefined) drafts.push(eviction)
  return drafts
}

// ---------------------------------------------------------------------------
// markers
// ---------------------------------------------------------------------------

export const openMarker = (
  state: State,
  marker: Marker,
  now: number
): Draft => {
  const session = sessionOf(state, marker.sessionKey, now)
  session.markers.set(marker.markerId, marker)
  if (marker.lookup !== "") session.byLookup.set(marker.lookup, marker)
  state.counters.opened++
  touch(session, now, marker.kind === "tool_call" ? "tool_call_started" : "model_call_started")
  return {
    _tag: "session.activity.marker_opened",
    sessionKey: marker.sessionKey,
    runId: marker.runId,
    markerId: marker.markerId,
    kind: marker.kind,
    source: marker.source,
    name: marker.name
  }
}

/** Closes a marker by its owner. Returns nothing when it was already evicted. */
export const closeMarker = (
  state: State,
  marker: Marker,
  outcome: DiagnosticEvent.Outcome,
  now: number
): Draft | undefined => {
  const session = state.sessions.get(marker.sessionKey)
  if (session === undefined || session.markers.get(marker.markerId) !== marker) return undefined
  removeMarker(session, marker)
  state.counters.closed++
  touch(session, now, marker.kind === "tool_call" ? "tool_call_completed" : "model_call_completed")
  dropIfEmpty(state, session)
  return {
    _tag: "session.activity.marker_closed",
    sessionKey: marker.sessionKey,
    runId: marker.runId,
    markerId: marker.markerId,
    kind: marker.kind,
    source: marker.source,
    outcome,
    durationMs: Math.max(0, now - marker.startedAt)
  }
}

// ---------------------------------------------------------------------------
// reported signals
// ---------------------------------------------------------------------------

export interface StartSignal {
  readonly sessionKey: SessionKey
  readonly runId: string
  readonly kind: DiagnosticEvent.MarkerKind
  readonly callId: string
  readonly name: string
  readonly seq: number
}

export type SignalResult =
  | { readonly _tag: "Opened"; readonly markerId: string; readonly owned: boolean }
  | { readonly _tag: "Closed"; readonly markerId: string }
  | { readonly _tag: "Fenced"; readonly cutoff: number }
  | { readonly _tag: "Progressed" }
  | { readonly _tag: "Ignored"; readonly reason: DiagnosticEvent.IgnoredSignalReason }

export const lookupKey = (runId: string, kind: string, callId: string): string => `${runId}\u0000${kind}\u0000${callId}`

const ignored = (
  state: State,
  reason: DiagnosticEvent.IgnoredSignalReason,
  detail: string
): [SignalResult, ReadonlyArray<Draft>] => {
  state.counters.ignored++
  return [{ _tag: "Ignored", reason }, [{ _tag: "session.activity.signal_ignored", reason, detail }]]
}

export const reportStart = (
  state: State,
  signal: StartSignal,
  markerId: string,
  now: number
): [SignalResult, ReadonlyArray<Draft>] => {
  const ended = state.endedRuns.get(signal.runId)
  if (ended !== undefined && !state.runs.has(signal.runId)) {
    if (signal.seq <= ended.cutoff) {
      state.counters.fenced++
      return [{ _tag: "Fenced", cutoff: ended.cutoff }, [{
        _tag: "session.activity.fenced",
        sessionKey: signal.sessionKey,
        runId: signal.runId,
        kind: signal.kind,
        signalSeq: signal.seq,
        cutoffSeq: ended.cutoff
      }]]
    }
    return ignored(state, "run_ended", `${signal.kind} start #${signal.seq} after its run ended (cutoff #${ended.cutoff})`)
  }
  const owner = state.runs.get(signal.runId)
  if (owner !== undefined && owner.sessionKey !== signal.sessionKey) {
    return ignored(state, "malformed", `run belongs to another session`)
  }
  const lookup = lookupKey(signal.runId, signal.kind, signal.callId)
  const evictedAt = owner?.evictedCalls?.get(lookup)
  if (evictedAt !== undefined && signal.seq <= evictedAt) {
    state.counters.fenced++
    return [{ _tag: "Fenced", cutoff: evictedAt }, [{
      _tag: "session.activity.fenced",
      sessionKey: signal.sessionKey,
      runId: signal.runId,
      kind: signal.kind,
      signalSeq: signal.seq,
      cutoffSeq: evictedAt
    }]]
  }
  const session = state.sessions.get(signal.sessionKey)
  if (session?.byLookup.has(lookup) || owner?.completedCalls?.has(lookup) === true || evictedAt !== undefined) {
    return ignored(state, "duplicate_start", `${signal.kind} start #${signal.seq} for a call already seen`)
  }
  const marker: Marker = {
    markerId,
    lookup,
    sessionKey: signal.sessionKey,
    runId: signal.runId,
    kind: signal.kind,
    source: "reported",
    name: signal.name,
    startedAt: now,
    openedSeq: signal.seq,
    lastProgressAt: now
  }
  return [{ _tag: "Opened", markerId, owned: owner !== undefined }, [openMarker(state, marker, now)]]
}

export const reportEnd = (
  state: State,
  signal: {
    readonly sessionKey: SessionKey
    readonly runId: string
    readonly kind: DiagnosticEvent.MarkerKind
    readonly callId: string
    readonly outcome: DiagnosticEvent.Outcome
  },
  now: number
): [SignalResult, ReadonlyArray<Draft>] => {
  const lookup = lookupKey(signal.runId, signal.kind, signal.callId)
  const marker = state.sessions.get(signal.sessionKey)?.byLookup.get(lookup)
  if (marker === undefined) {
    return state.endedRuns.has(signal.runId)
      ? ignored(state, "run_ended", `${signal.kind} completion after its marker was evicted`)
      : ignored(state, "end_without_start", `${signal.kind} completion without a start`)
  }
  const owner = state.runs.get(signal.runId)
  if (owner !== undefined) (owner.completedCalls ??= new Set()).add(lookup)
  const closed = closeMarker(state, marker, signal.outcome, now)
  return [{ _tag: "Closed", markerId: marker.markerId }, closed === undefined ? [] : [closed]]
}

export const reportProgress = (
  state: State,
  signal: {
    readonly sessionKey: SessionKey
    readonly runId: string
    readonly kind: DiagnosticEvent.MarkerKind | undefined
    readonly callId: string | undefined
    readonly reason: string
  },
  now: number
): [SignalResult, ReadonlyArray<Draft>] => {
  const session = state.sessions.get(signal.sessionKey)
  if (session === undefined || (session.owners.size === 0 && session.markers.size === 0)) {
    if (state.endedRuns.has(signal.runId)) return ignored(state, "run_ended", "progress after its run ended")
  }
  const target = sessionOf(state, signal.sessionKey, now)
  if (signal.kind !== undefined && signal.callId !== undefined) {
    const marker = target.byLookup.get(lookupKey(signal.runId, signal.kind, signal.callId))
    if (marker !== undefined) marker.lastProgressAt = now
  }
  touch(target, now, signal.reason)
  return [{ _tag: "Progressed" }, [{
    _tag: "session.activity.progress",
    sessionKey: signal.sessionKey,
    reason: signal.reason,
    terminal: isTerminalReason(signal.reason)
  }]]
}

// ---------------------------------------------------------------------------
// supervision
// ---------------------------------------------------------------------------

/**
 * Evicts what a recovery found wedged, fencing with the recovery's
 * watermark. Markers of `runIds` (or, without `runIds`, every marker opened at
 * or before `cutoff` that no owner registered after `cutoff` holds) are
 * evicted; owners in `runIds` are detached, so a zombie that never settles no
 * longer counts as an owner and its late finalizer changes nothing.
 */
export const evictForRecovery = (
  state: State,
  sessionKey: SessionKey,
  cutoff: number,
  now: number,
  runIds: ReadonlyArray<string> | undefined
): ReadonlyArray<Draft> => {
  const session = state.sessions.get(sessionKey)
  if (session === undefined) return []
  const drafts: Array<Draft> = []
  const chosen = runIds === undefined ? undefined : new Set(runIds)
  if (chosen !== undefined) {
    for (const runId of chosen) {
      const owner = session.owners.get(runId)
      if (owner === undefined) continue
      session.owners.delete(runId)
      state.runs.delete(runId)
      recordEnded(state, runId, sessionKey, cutoff)
      drafts.push({
        _tag: "session.activity.run_ended",
        sessionKey,
        runId,
        outcome: "interrupted",
        durationMs: Math.max(0, now - owner.startedAt),
        owners: session.owners.size
      })
    }
  }
  const eviction = evictWhere(state, session, "recovery", cutoff, (marker) => {
    if (chosen !== undefined) return chosen.has(marker.runId)
    if (marker.openedSeq > cutoff) return false
    const owner = session.owners.get(marker.runId)
    return owner === undefined || owner.startSeq <= cutoff
  })
  if (eviction !== undefined) drafts.push(eviction)
  return drafts
}

/**
 * Defence in depth: drops owners whose fiber ended without deregistering and
 * evicts markers of runs known to have ended (`owner_exited`); forgets empty
 * sessions untouched for `forgetAfterMs`.
 *
 * The sweep is incremental: each call visits at most `limit` sessions,
 * resuming where the previous call stopped, so its cost per watchdog tick is
 * bounded however many sessions there are (a full pass over N sessions takes
 * ceil(N / limit) calls).
 */
export const sweep = (
  state: State,
  now: number,
  cutoff: number,
  forgetAfterMs: number,
  limit: number = Number.POSITIVE_INFINITY
): ReadonlyArray<Draft> => {
  const drafts: Array<Draft> = []
  const budget = Math.min(limit, state.sessions.size)
  // A Map iterator is live: entries added or deleted meanwhile are seen or
  // skipped correctly, and deleting the visited entry is safe.
  let cursor = state.sweepCursor ?? state.sessions.values()
  let restarted = false
  let visited = 0
  while (visited < budget) {
    const next = cursor.next()
    if (next.done === true) {
      if (restarted) break
      cursor = state.sessions.values()
      restarted = true
      continue
    }
    visited++
    sweepSession(state, next.value, now, cutoff, forgetAfterMs, drafts)
  }
  state.sweepCursor = cursor
  return drafts
}

const sweepSession = (
  state: State,
  session: SessionActivity,
  now: number,
  cutoff: number,
  forgetAfterMs: number,
  drafts: Array<Draft>
): void => {
  for (const owner of session.owners.values()) {
    if (!owner.isDone()) continue
    session.owners.delete(owner.runId)
    state.runs.delete(owner.runId)
    recordEnded(state, owner.runId, session.sessionKey, cutoff)
  }
  if (session.markers.size > 0) {
    let any = false
    for (const marker of session.markers.values()) {
      if (!session.owners.has(marker.runId) && state.endedRuns.has(marker.runId)) {
        any = true
        break
      }
    }
    if (any) {
      const eviction = evictWhere(
        state,
        session,
        "owner_exited",
        cutoff,
        (marker) => !session.owners.has(marker.runId) && state.endedRuns.has(marker.runId)
      )
      if (eviction !== undefined) drafts.push(eviction)
    }
  }
  if (session.owners.size === 0 && session.markers.size === 0 && now - session.lastChangeAt >= forgetAfterMs) {
    state.sessions.delete(session.sessionKey)
  }
}

// ---------------------------------------------------------------------------
// snapshots
// ---------------------------------------------------------------------------

export interface MarkerView {
  readonly markerId: string
  readonly runId: string
  readonly kind: DiagnosticEvent.MarkerKind
  readonly source: DiagnosticEvent.MarkerSource
  readonly name: string
  readonly ageMs: number
  readonly sinceProgressMs: number
  /** Whether a live owner of the session holds it (only such work is ever actively aborted). */
  readonly owned: boolean
}

export interface RunView {
  readonly runId: string
  readonly parentRunId: string | undefined
  readonly ageMs: number
}

/**
 * What the attention classifier needs to know about one session's activity.
 */
export interface Snapshot {
  readonly sessionKey: SessionKey
  /** Work kind by priority: tool > model > run. */
  readonly activeWorkKind: DiagnosticEvent.WorkKind | undefined
  readonly hasOwner: boolean
  readonly runs: ReadonlyArray<RunView>
  readonly openTools: number
  readonly openModelCalls: number
  readonly oldestTool: MarkerView | undefined
  readonly oldestModelCall: MarkerView | undefined
  readonly markers: ReadonlyArray<MarkerView>
  readonly lastProgressAgeMs: number | undefined
  readonly lastProgressReason: string | undefined
  readonly lastProgressTerminal: boolean
}

const viewOf = (session: SessionActivity, marker: Marker, now: number): MarkerView => ({
  markerId: marker.markerId,
  runId: marker.runId,
  kind: marker.kind,
  source: marker.source,
  name: marker.name,
  ageMs: Math.max(0, now - marker.startedAt),
  sinceProgressMs: Math.max(0, now - marker.lastProgressAt),
  owned: session.owners.has(marker.runId)
})

export const emptySnapshot = (sessionKey: SessionKey): Snapshot => ({
  sessionKey,
  activeWorkKind: undefined,
  hasOwner: false,
  runs: [],
  openTools: 0,
  openModelCalls: 0,
  oldestTool: undefined,
  oldestModelCall: undefined,
  markers: [],
  lastProgressAgeMs: undefined,
  lastProgressReason: undefined,
  lastProgressTerminal: false
})

export const snapshotOf = (session: SessionActivity, now: number): Snapshot => {
  let tools = 0
  let models = 0
  let oldestTool: Marker | undefined
  let oldestModel: Marker | undefined
  const markers: Array<MarkerView> = []
  for (const marker of session.markers.values()) {
    markers.push(viewOf(session, marker, now))
    if (marker.kind === "tool_call") {
      tools++
      if (oldestTool === undefined || marker.startedAt < oldestTool.startedAt) oldestTool = marker
    } else {
      models++
      if (oldestModel === undefined || marker.startedAt < oldestModel.startedAt) oldestModel = marker
    }
  }
  const runs: Array<RunView> = []
  for (const owner of session.owners.values()) {
    runs.push({ runId: owner.runId, parentRunId: owner.parentRunId, ageMs: Math.max(0, now - owner.startedAt) })
  }
  return {
    sessionKey: session.sessionKey,
    activeWorkKind: tools > 0 ? "tool_call" : models > 0 ? "model_call" : runs.length > 0 ? "embedded_run" : undefined,
    hasOwner: runs.length > 0,
    runs,
    openTools: tools,
    openModelCalls: models,
    oldestTool: oldestTool === undefined ? undefined : viewOf(session, oldestTool, now),
    oldestModelCall: oldestModel === undefined ? undefined : viewOf(session, oldestModel, now),
    markers,
    lastProgressAgeMs: session.lastProgressAt === undefined ? undefined : Math.max(0, now - session.lastProgressAt),
    lastProgressReason: session.lastProgressReason,
    lastProgressTerminal: session.lastProgressTerminal
  }
}
