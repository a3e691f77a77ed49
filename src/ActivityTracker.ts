/**
 * What every session is doing, tracked so that nothing can outlive its owner.
 *
 * - A **run** (one turn's execution) registers itself as an owner of its
 *   session's activity with {@link ActivityTracker} `run`, and deregisters in a
 *   finalizer whatever its exit. Runs nest: a run started inside another run
 *   records it as its parent.
 * - **Structured markers** (`tool`, `model`) wrap an Effect inside a run; the
 *   marker opens when the Effect starts and a finalizer closes it with its
 *   outcome (success, failure, interrupted, defect). They cannot leak.
 * - **Reported markers** come from `report`, for runtimes that are not Effect
 *   (a CLI, an app-server subprocess): `started`/`completed`/`progress` signals
 *   numbered with `nextSeq`. These can leak, so supervision cleans up: when the
 *   last owner of a session ends, every marker still open there is evicted
 *   with one `session.activity.evicted` event, and the run's cutoff (the
 *   sequence watermark at its end) fences late start signals.
 * - `snapshot`/`snapshotAll` give the attention classifier what it needs.
 *
 * The state machine is pure (`internal/activityState.ts`); this service reads
 * the clock and the watermark, calls it, and publishes the events it returns.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { DiagnosticBus } from "./DiagnosticBus.ts"
import * as DiagnosticEvent from "./DiagnosticEvent.ts"
import * as State from "./internal/activityState.ts"
import { SessionKey } from "./SessionKey.ts"
import * as SpanAttributes from "./SpanAttributes.ts"

/**
 * The run the current fiber works for. Provided by `run`; structured markers
 * require it, so a marker can only ever be opened under an owner.
 *
 * @category services
 * @since 0.1.0
 */
export class CurrentRun extends Context.Service<CurrentRun, {
  readonly sessionKey: SessionKey
  readonly runId: string
}>()("effect-session-runtime/ActivityTracker/CurrentRun") {}

/**
 * What the classifier needs about one session (see `internal/activityState.ts`).
 *
 * @category models
 * @since 0.1.0
 */
export type ActivitySnapshot = State.Snapshot

/**
 * @category models
 * @since 0.1.0
 */
export type MarkerView = State.MarkerView

/**
 * The result of a reported signal.
 *
 * @category models
 * @since 0.1.0
 */
export type SignalResult = State.SignalResult

/**
 * Whether a progress reason says the run finished.
 *
 * @category predicates
 * @since 0.1.0
 */
export const isTerminalReason = State.isTerminalReason

/**
 * A signal reported by a runtime that is not Effect. `seq` must come from
 * `nextSeq` (or `DiagnosticBus.nextSeq`) at the moment the signal is emitted,
 * so that a signal emitted before a teardown can be told from one after it.
 *
 * @category schemas
 * @since 0.1.0
 */
export const ReportedSignal = Schema.Struct({
  type: Schema.Literals(["started", "completed", "progress"]),
  kind: Schema.optionalKey(DiagnosticEvent.MarkerKind),
  sessionKey: SessionKey,
  runId: Schema.String.check(Schema.isNonEmpty(), Schema.isMaxLength(256)),
  callId: Schema.optionalKey(Schema.String.check(Schema.isNonEmpty(), Schema.isMaxLength(256))),
  seq: Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0)),
  /** Tool name, or `provider/model`, for `started`. */
  name: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(256))),
  /** For `completed`. @default "success" */
  outcome: Schema.optionalKey(DiagnosticEvent.Outcome),
  /** For `progress`. @default "progress" */
  reason: Schema.optionalKey(Schema.String.check(Schema.isNonEmpty(), Schema.isMaxLength(128)))
})
export type ReportedSignal = typeof ReportedSignal.Type

/**
 * A reported signal that could not be accepted. `reason` is one of
 * `unknown_kind`, `invalid_seq`, `malformed`; the signal changed nothing and
 * was counted.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidSignal extends Schema.TaggedError<InvalidSignal>()("InvalidSignal", {
  reason: DiagnosticEvent.IgnoredSignalReason,
  detail: Schema.String
}) {
  override get message(): string {
    return `Reported activity signal rejected (${this.reason}): ${this.detail}. ` +
      "Send { type, kind: tool_call | model_call, sessionKey, runId, callId, seq } with seq from nextSeq."
  }
}

/**
 * Counters and sizes, for metrics and tests.
 *
 * @category models
 * @since 0.1.0
 */
export interface Stats {
  readonly sessions: number
  readonly owners: number
  readonly markers: number
  /** Open `tool_call` markers (part of `markers`). */
  readonly openTools: number
  /** Open `model_call` markers (part of `markers`). */
  readonly openModelCalls: number
  readonly opened: number
  readonly closed: number
  readonly evicted: number
  readonly fenced: number
  readonly ignored: number
}

/**
 * Options of the tracker.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * How many ended runs keep their fencing cutoff.
   * @default 100000
   */
  readonly maxEndedRuns?: number | undefined
  /**
   * How long an idle session with nothing open keeps its last-progress record.
   * @default "1 hour"
   */
  readonly forgetAfter?: Duration.Input | undefined
  /**
   * The most sessions one `sweep` visits; the next one resumes where it
   * stopped, so a tick's cost stays bounded with many sessions.
   * @default 10000
   */
  readonly sweepBatch?: number | undefined
  /**
   * Wrap structured markers in OpenTelemetry GenAI spans (`execute_tool {tool}`,
   * `chat {model}`); session keys are hashed unless `SpanAttributes.SpanPolicy`
   * says otherwise.
   * @default true
   */
  readonly spans?: boolean | undefined
}

/**
 * @category services
 * @since 0.1.0
 */
export class ActivityTracker extends Context.Service<ActivityTracker, {
  /** Runs `effect` as an owner of `sessionKey`'s activity (nested if already inside a run). */
  readonly run: <A, E, R>(
    sessionKey: SessionKey,
    effect: Effect.Effect<A, E, R>,
    options?: { readonly runId?: string | undefined }
  ) => Effect.Effect<A, E, Exclude<R, CurrentRun>>
  /** Registers the current fiber as an owner until the scope closes. */
  readonly owner: (
    sessionKey: SessionKey,
    options?: { readonly runId?: string | undefined }
  ) => Effect.Effect<Context.Service.Shape<typeof CurrentRun>, never, Scope.Scope>
  /** A structured tool call marker around `effect`. */
  readonly tool: <A, E, R>(
    info: { readonly name: string; readonly callId?: string | undefined },
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E, R | CurrentRun>
  /** A structured model call marker around `effect`. */
  readonly model: <A, E, R>(
    info: { readonly provider: string; readonly model: string; readonly callId?: string | undefined },
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E, R | CurrentRun>
  /** Records progress of the current run (for example a streamed chunk). */
  readonly progress: (reason: string) => Effect.Effect<void, never, CurrentRun>
  /** Accepts a reported signal; malformed input fails with `InvalidSignal` and changes nothing. */
  readonly report: (signal: unknown) => Effect.Effect<SignalResult, InvalidSignal>
  /** Allocates the sequence number for a reported signal. */
  readonly nextSeq: Effect.Effect<number>
  /** Evicts what a recovery found wedged (see `internal/activityState.evictForRecovery`). */
  readonly evictForRecovery: (
    sessionKey: SessionKey,
    options: { readonly cutoff: number; readonly runIds?: ReadonlyArray<string> | undefined }
  ) => Effect.Effect<{ readonly evictedTools: number; readonly evictedModelCalls: number }>
  /**
   * Completes at the next marker close or eviction on `sessionKey` (for a lane
   * that waits for leftover reported work to end before its next turn).
   */
  readonly awaitMarkersChange: (sessionKey: SessionKey) => Effect.Effect<void>
  /** Whether the session has open markers that no live owner holds (leftover reported work). */
  readonly hasUnownedMarkers: (sessionKey: SessionKey) => Effect.Effect<boolean>
  /** Defence in depth: evicts markers of owners that are gone (`owner_exited`). */
  readonly sweep: Effect.Effect<number>
  readonly snapshot: (sessionKey: SessionKey) => Effect.Effect<ActivitySnapshot>
  readonly snapshotAll: Effect.Effect<ReadonlyArray<ActivitySnapshot>>
  readonly stats: Effect.Effect<Stats>
}>()("effect-session-runtime/ActivityTracker") {}

const decodeSignal = Schema.decodeUnknownResult(ReportedSignal)

const classifyInvalid = (input: unknown, message: string): InvalidSignal => {
  const raw = typeof input === "object" && input !== null ? input as Record<string, unknown> : {}
  if ("kind" in raw && raw.kind !== "tool_call" && raw.kind !== "model_call") {
    return new InvalidSignal({ reason: "unknown_kind", detail: `unknown kind ${JSON.stringify(raw.kind)?.slice(0, 40)}` })
  }
  if ("seq" in raw && !(typeof raw.seq === "number" && Number.isInteger(raw.seq) && raw.seq >= 0)) {
    return new InvalidSignal({ reason: "invalid_seq", detail: "seq must be a non-negative integer from nextSeq" })
  }
  return new InvalidSignal({ reason: "malformed", detail: message.slice(0, 200) })
}

/**
 * Builds the tracker.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const bus = yield* DiagnosticBus
  const clock = yield* Clock.Clock
  const state = State.makeState({ maxEndedRuns: options.maxEndedRuns })
  const forgetAfterMs = Duration.toMillis(Duration.fromInputUnsafe(options.forgetAfter ?? "1 hour"))
  const sweepBatch = Math.max(1, Math.floor(options.sweepBatch ?? 10_000))
  const spans = options.spans ?? true
  let runCounter = 0
  let markerCounter = 0
  const now = () => clock.currentTimeMillisUnsafe()

  // Lanes waiting for a session's markers to change; empty unless a lane is gated.
  const waiters = new Map<SessionKey, Array<Deferred.Deferred<void>>>()
  const notify = (drafts: ReadonlyArray<DiagnosticEvent.Draft>): void => {
    if (waiters.size === 0) return
    for (const draft of drafts) {
      if (draft._tag !== "session.activity.marker_closed" && draft._tag !== "session.activity.evicted") continue
      const waiting = waiters.get(draft.sessionKey)
      if (waiting === undefined) continue
      waiters.delete(draft.sessionKey)
      for (const deferred of waiting) Deferred.doneUnsafe(deferred, Exit.void)
    }
  }
  const awaitMarkersChange = (sessionKey: SessionKey): Effect.Effect<void> =>
    Effect.suspend(() => {
      const deferred = Deferred.makeUnsafe<void>()
      const waiting = waiters.get(sessionKey)
      if (waiting === undefined) waiters.set(sessionKey, [deferred])
      else waiting.push(deferred)
      return Deferred.await(deferred).pipe(Effect.onInterrupt(() =>
        Effect.sync(() => {
          const list = waiters.get(sessionKey)
          if (list === undefined) return
          const rest = list.filter((d) => d !== deferred)
          if (rest.length === 0) waiters.delete(sessionKey)
          else waiters.set(sessionKey, rest)
        })
      ))
    })

  // Every transition publishes its events in the same synchronous step as the
  // state change, so no other fiber runs (or interrupts) in between: the bus
  // sees the changes in the order they happened, and none goes unreported.
  const emit = (drafts: ReadonlyArray<DiagnosticEvent.Draft>): void => {
    notify(drafts)
    for (const draft of drafts) bus.publishUnsafe(draft)
  }

  const register = (sessionKey: SessionKey, runId: string | undefined) =>
    Effect.withFiber((fiber) => {
      const id = runId ?? `run-${++runCounter}`
      if (state.runs.has(id)) return Effect.die(new Error(`run id ${id} is already registered`))
      const parent = Context.getOption(fiber.context as Context.Context<CurrentRun>, CurrentRun)
      const startedAt = now()
      const owner: State.Owner = {
        runId: id,
        sessionKey,
        parentRunId: Option.isSome(parent) ? parent.value.runId : undefined,
        startedAt,
        startSeq: 0,
        completedCalls: undefined,
        evictedCalls: undefined,
        isDone: () => fiber.pollUnsafe() !== undefined
      }
      owner.startSeq = bus.publishUnsafe(State.registerOwner(state, owner, startedAt), startedAt).seq
      return Effect.succeed(CurrentRun.of({ sessionKey, runId: id }))
    })

  const deregister = (run: Context.Service.Shape<typeof CurrentRun>, exit: Exit.Exit<unknown, unknown>) =>
    Effect.sync(() => emit(State.endOwner(state, run.runId, DiagnosticEvent.outcomeOf(exit), now(), bus.watermarkUnsafe())))

  const run = <A, E, R>(
    sessionKey: SessionKey,
    effect: Effect.Effect<A, E, R>,
    runOptions?: { readonly runId?: string | undefined }
  ): Effect.Effect<A, E, Exclude<R, CurrentRun>> =>
    Effect.acquireUseRelease(
      register(sessionKey, runOptions?.runId),
      (current) => Effect.provideService(effect, CurrentRun, current),
      deregister
    )

  const owner = (sessionKey: SessionKey, ownerOptions?: { readonly runId?: string | undefined }) =>
    Effect.acquireRelease(register(sessionKey, ownerOptions?.runId), deregister)

  // The hot path (two per tool call): the acquire reads the run from the
  // context and opens the marker, the release closes it; each publishes its
  // event in the same synchronous step.
  const openStructured = (
    current: Context.Service.Shape<typeof CurrentRun>,
    kind: DiagnosticEvent.MarkerKind,
    name: string,
    callId: string | undefined
  ): State.Marker => {
    const t = now()
    const marker: State.Marker = {
      markerId: `m-${++markerCounter}`,
      // Only a caller-given call id makes a structured marker addressable by reported signals.
      lookup: callId === undefined ? "" : State.lookupKey(current.runId, kind, callId),
      sessionKey: current.sessionKey,
      runId: current.runId,
      kind,
      source: "structured",
      name,
      startedAt: t,
      openedSeq: 0,
      lastProgressAt: t
    }
    marker.openedSeq = bus.publishUnsafe(State.openMarker(state, marker, t), t).seq
    return marker
  }
  const closeStructured = (marker: State.Marker, exit: Exit.Exit<unknown, unknown>): void => {
    const t = now()
    const closed = State.closeMarker(state, marker, DiagnosticEvent.outcomeOf(exit), t)
    if (closed === undefined) return
    if (waiters.size > 0) notify([closed])
    bus.publishUnsafe(closed, t)
  }

  const structured = <A, E, R>(
    kind: DiagnosticEvent.MarkerKind,
    name: string,
    callId: string | undefined,
    effect: Effect.Effect<A, E, R>,
    span: (self: Effect.Effect<A, E, R>, sessionKey: SessionKey) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R | CurrentRun> =>
    Effect.contextWith((context: Context.Context<CurrentRun>) => {
      const current = Context.get(context, CurrentRun)
      const marked = Effect.acquireUseRelease(
        Effect.sync(() => openStructured(current, kind, name, callId)),
        () => effect,
        (marker, exit) => Effect.sync(() => closeStructured(marker, exit))
      )
      return spans ? span(marked, current.sessionKey) : marked
    })

  const report = (input: unknown): Effect.Effect<SignalResult, InvalidSignal> =>
    Effect.suspend(() => {
      const decoded = decodeSignal(input)
      const reject = (error: InvalidSignal) => {
        state.counters.ignored++
        bus.publishUnsafe({ _tag: "session.activity.signal_ignored", reason: error.reason, detail: error.detail })
        return Effect.fail(error)
      }
      if (Result.isFailure(decoded)) return reject(classifyInvalid(input, decoded.failure.message))
      const signal = decoded.success
      if (signal.type !== "progress" && (signal.kind === undefined || signal.callId === undefined)) {
        return reject(new InvalidSignal({ reason: "malformed", detail: `${signal.type} needs kind and callId` }))
      }
      const t = now()
      const [result, drafts] = signal.type === "started"
        ? State.reportStart(state, {
          sessionKey: signal.sessionKey,
          runId: signal.runId,
          kind: signal.kind!,
          callId: signal.callId!,
          name: signal.name ?? signal.kind!,
          seq: signal.seq
        }, `m-${++markerCounter}`, t)
        : signal.type === "completed"
        ? State.reportEnd(state, {
          sessionKey: signal.sessionKey,
          runId: signal.runId,
          kind: signal.kind!,
          callId: signal.callId!,
          outcome: signal.outcome ?? "success"
        }, t)
        : State.reportProgress(state, {
          sessionKey: signal.sessionKey,
          runId: signal.runId,
          kind: signal.kind,
          callId: signal.callId,
          reason: signal.reason ?? "progress"
        }, t)
      emit(drafts)
      return Effect.succeed(result)
    })

  const progress = (reason: string): Effect.Effect<void, never, CurrentRun> =>
    Effect.flatMap(CurrentRun, (current) =>
      Effect.sync(() => {
        const session = state.sessions.get(current.sessionKey)
        if (session === undefined) return
        const t = now()
        State.touch(session, t, reason)
        for (const marker of session.markers.values()) {
          if (marker.runId === current.runId) marker.lastProgressAt = t
        }
        bus.publishUnsafe({
          _tag: "session.activity.progress",
          sessionKey: current.sessionKey,
          reason,
          terminal: State.isTerminalReason(reason)
        })
      }))

  return ActivityTracker.of({
    run,
    owner,
    tool: (info, effect) =>
      structured(
        "tool_call",
        info.name,
        info.callId,
        effect,
        (self, sessionKey) =>
          SpanAttributes.toolSpan(self, {
            tool: info.name,
            sessionKey,
            ...(info.callId === undefined ? {} : { callId: info.callId })
          })
      ),
    model: (info, effect) =>
      structured(
        "model_call",
        `${info.provider}/${info.model}`,
        info.callId,
        effect,
        (self, sessionKey) => SpanAttributes.modelSpan(self, { provider: info.provider, model: info.model, sessionKey })
      ),
    progress,
    report,
    nextSeq: bus.nextSeq,
    awaitMarkersChange,
    hasUnownedMarkers: (sessionKey) =>
      Effect.sync(() => {
        const session = state.sessions.get(sessionKey)
        if (session === undefined || session.markers.size === 0) return false
        for (const marker of session.markers.values()) {
          if (!session.owners.has(marker.runId)) return true
        }
        return false
      }),
    evictForRecovery: (sessionKey, evictOptions) =>
      Effect.sync(() => {
        const drafts = State.evictForRecovery(state, sessionKey, evictOptions.cutoff, now(), evictOptions.runIds)
        emit(drafts)
        const eviction = drafts.find((d) => d._tag === "session.activity.evicted")
        return {
          evictedTools: eviction?._tag === "session.activity.evicted" ? eviction.evictedTools : 0,
          evictedModelCalls: eviction?._tag === "session.activity.evicted" ? eviction.evictedModelCalls : 0
        }
      }),
    sweep: Effect.sync(() => {
      const drafts = State.sweep(state, now(), bus.watermarkUnsafe(), forgetAfterMs, sweepBatch)
      emit(drafts)
      return drafts.length
    }),
    snapshot: (sessionKey) =>
      Effect.sync(() => {
        const session = state.sessions.get(sessionKey)
        return session === undefined ? State.emptySnapshot(sessionKey) : State.snapshotOf(session, now())
      }),
    snapshotAll: Effect.sync(() => {
      const t = now()
      return Array.from(state.sessions.values(), (session) => State.snapshotOf(session, t))
    }),
    stats: Effect.sync(() => {
      let markers = 0
      let openTools = 0
      for (const session of state.sessions.values()) {
        markers += session.markers.size
        for (const marker of session.markers.values()) if (marker.kind === "tool_call") openTools++
      }
      return {
        sessions: state.sessions.size,
        owners: state.runs.size,
        markers,
        openTools,
        openModelCalls: markers - openTools,
        ...state.counters
      }
    })
  })
})

/**
 * The tracker as a layer (needs the `DiagnosticBus`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<ActivityTracker, never, DiagnosticBus> =>
  Layer.effect(ActivityTracker, make(options))

/**
 * Runs `effect` as an owner of `sessionKey`'s activity.
 *
 * @category accessors
 * @since 0.1.0
 */
export const run = <A, E, R>(
  sessionKey: SessionKey,
  effect: Effect.Effect<A, E, R>,
  options?: { readonly runId?: string | undefined }
): Effect.Effect<A, E, Exclude<R, CurrentRun> | ActivityTracker> =>
  Effect.flatMap(ActivityTracker, (tracker) => tracker.run(sessionKey, effect, options))

/**
 * A structured tool call marker around `effect`, in the current run.
 *
 * @category accessors
 * @since 0.1.0
 */
export const tool = <A, E, R>(
  info: { readonly name: string; readonly callId?: string | undefined },
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R | CurrentRun | ActivityTracker> =>
  Effect.flatMap(ActivityTracker, (tracker) => tracker.tool(info, effect))

/**
 * A structured model call marker around `effect`, in the current run.
 *
 * @category accessors
 * @since 0.1.0
 */
export const model = <A, E, R>(
  info: { readonly provider: string; readonly model: string; readonly callId?: string | undefined },
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R | CurrentRun | ActivityTracker> =>
  Effect.flatMap(ActivityTracker, (tracker) => tracker.model(info, effect))

/**
 * Records progress of the current run.
 *
 * @category accessors
 * @since 0.1.0
 */
export const progress = (reason: string): Effect.Effect<void, never, CurrentRun | ActivityTracker> =>
  Effect.flatMap(ActivityTracker, (tracker) => tracker.progress(reason))
