/**
 * Session lanes: every session's turns run one at a time, in order, while
 * different sessions run in parallel (optionally capped globally).
 *
 * A lane is created on the first submission to a session. It lives in its own
 * `Scope` (a child of the layer's scope): its worker fiber and the turn fibers
 * are forked there, so closing the session — after `idleTtl` without work, on
 * `close`, or at shutdown — interrupts what runs and runs every finalizer
 * below it (activity owners deregister, markers close, the lock is released).
 *
 * Each turn runs as an activity owner (`ActivityTracker.run`), under the
 * session write lock when a `SessionLock` is provided (`lock: true`, the
 * default). Lane state is `idle | processing` with a `queueDepth` and a
 * `generation` that every change bumps; recovery reads both to act only on the
 * state it observed.
 *
 * Leftover reported work — markers opened by an external runtime for a run no
 * owner holds — gates the next turn: it may still be writing the session, so
 * the lane waits for it to end. If it never ends, the watchdog sees an idle
 * session with queued work and orphaned activity, and recovery releases the
 * lane.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import { ActivityTracker, CurrentRun } from "./ActivityTracker.ts"
import { DiagnosticBus } from "./DiagnosticBus.ts"
import * as DiagnosticEvent from "./DiagnosticEvent.ts"
import * as LaneGuard from "./LaneGuard.ts"
import type { SessionKey } from "./SessionKey.ts"
import * as SpanAttributes from "./SpanAttributes.ts"

/**
 * What a lane does with a turn submitted while it is busy.
 *
 * @category models
 * @since 0.1.0
 */
export type AdmissionPolicy = "enqueue" | "reject" | "interrupt"

/**
 * The lane's answer to a submission.
 *
 * @category models
 * @since 0.1.0
 */
export type Admission =
  | { readonly _tag: "Started" }
  | { readonly _tag: "Enqueued"; readonly position: number }
  | { readonly _tag: "Rejected"; readonly reason: "busy" }
  | { readonly _tag: "InterruptedPrevious"; readonly previousTurnId: string }

/**
 * The queue is at its maximum depth; the turn was not accepted.
 *
 * @category errors
 * @since 0.1.0
 */
export class LaneFull extends Schema.TaggedError<LaneFull>()("LaneFull", {
  sessionKey: Schema.String,
  maxQueueDepth: Schema.Number
}) {
  override get message(): string {
    return `Session ${this.sessionKey} already has ${this.maxQueueDepth} turns queued. ` +
      "Retry later, raise maxQueueDepth, or submit with admission 'reject' or 'interrupt'."
  }
}

/**
 * A turn that never ran to its end because the lane stopped it.
 *
 * @category errors
 * @since 0.1.0
 */
export class TurnInterrupted extends Schema.TaggedError<TurnInterrupted>()("TurnInterrupted", {
  turnId: Schema.String,
  reason: Schema.Literals(["rejected_busy", "admission_interrupt", "recovery_abort", "lane_closed"])
}) {
  override get message(): string {
    const why = {
      rejected_busy: "the session was busy and the admission policy is 'reject'; submit again later",
      admission_interrupt: "a newer turn was submitted with admission 'interrupt'",
      recovery_abort: "recovery aborted it because it stopped making progress",
      lane_closed: "the session was closed (idle TTL or shutdown) before it finished"
    }[this.reason]
    return `Turn ${this.turnId} did not complete: ${why}.`
  }
}

/**
 * A submitted turn: its admission, and its result to await.
 *
 * @category models
 * @since 0.1.0
 */
export interface Submission<A, E> {
  readonly turnId: string
  readonly admission: Admission
  /** The turn's result; `TurnGuardFailed` when its guard (the session lock) could not be taken. */
  readonly result: Effect.Effect<A, E | TurnInterrupted | LaneGuard.TurnGuardFailed>
}

/**
 * A lane as recovery and operators see it.
 *
 * @category models
 * @since 0.1.0
 */
export interface LaneView {
  readonly sessionKey: SessionKey
  readonly state: DiagnosticEvent.LaneState
  readonly queueDepth: number
  readonly generation: number
  /** When the lane entered its current state (epoch ms). */
  readonly stateSince: number
  /** The running turn, if any. */
  readonly current: { readonly turnId: string; readonly runId: string; readonly startedAt: number } | undefined
  /** Waiting for leftover reported work to end before the next turn. */
  readonly gated: boolean
}

/**
 * What an abort did: the turn exited within the settle time (`Aborted`), or
 * the lane moved on without it (`Forced`); or nothing, because the lane had
 * moved on (`Stale`) or had no turn (`NoTurn`).
 *
 * @category models
 * @since 0.1.0
 */
export type AbortResult =
  | { readonly _tag: "Aborted"; readonly runId: string }
  | { readonly _tag: "Forced"; readonly runId: string }
  | { readonly _tag: "Stale" }
  | { readonly _tag: "NoTurn" }

/**
 * Options of the lanes.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * Default admission policy for a busy session.
   * @default "enqueue"
   */
  readonly admission?: AdmissionPolicy | undefined
  /**
   * Turns that may wait in one session's queue.
   * @default 100
   */
  readonly maxQueueDepth?: number | undefined
  /**
   * Sessions that may process a turn at the same time (unbounded if unset).
   * @default undefined
   */
  readonly maxConcurrentSessions?: number | undefined
  /**
   * A lane with nothing to do is closed after this long.
   * @default "10 minutes"
   */
  readonly idleTtl?: Duration.Input | undefined
  /**
   * Wrap each turn in an OpenTelemetry GenAI span (`invoke_agent`).
   * @default true
   */
  readonly spans?: boolean | undefined
}

interface Pending {
  readonly turnId: string
  readonly effect: Effect.Effect<unknown, unknown, CurrentRun>
  /** The submitter's services (never its run), which the turn runs with. */
  readonly context: Context.Context<never>
  readonly result: Deferred.Deferred<unknown, unknown>
}

interface Running {
  readonly pending: Pending
  readonly fiber: Fiber.Fiber<unknown, unknown>
  readonly runId: string
  readonly startedAt: number
  /** The turn's exit; completed early (interrupted) when recovery gives up waiting for the fiber. */
  readonly done: Deferred.Deferred<unknown, unknown>
  interruptReason: TurnInterrupted["reason"] | undefined
}

interface Lane {
  readonly key: SessionKey
  readonly scope: Scope.Closeable
  readonly queue: Array<Pending>
  state: DiagnosticEvent.LaneState
  stateSince: number
  generation: number
  current: Running | undefined
  wake: Deferred.Deferred<void> | undefined
  gated: boolean
  closed: boolean
}

/**
 * @category services
 * @since 0.1.0
 */
export class SessionLanes extends Context.Service<SessionLanes, {
  /** Submits a turn; fails with `LaneFull` when the queue is at its maximum depth. */
  /**
   * Submits a turn; fails with `LaneFull` when the queue is at its maximum
   * depth. The turn runs on the session's lane with the submitter's services
   * (captured now) and its `CurrentRun`.
   */
  readonly submit: <A, E, R = never>(
    sessionKey: SessionKey,
    turn: Effect.Effect<A, E, R>,
    options?: { readonly admission?: AdmissionPolicy | undefined; readonly turnId?: string | undefined }
  ) => Effect.Effect<Submission<A, E>, LaneFull, Exclude<R, CurrentRun>>
  /** The view of one lane, if it is open. */
  readonly view: (sessionKey: SessionKey) => Effect.Effect<LaneView | undefined>
  /** Every open lane. */
  readonly list: Effect.Effect<ReadonlyArray<LaneView>>
  /** The session's own scope (opens the lane): resources added here are released when the session closes. */
  readonly sessionScope: (sessionKey: SessionKey) => Effect.Effect<Scope.Scope>
  /** Closes a session now: interrupts its turns and runs its finalizers. */
  readonly close: (sessionKey: SessionKey) => Effect.Effect<void>
  /**
   * Recovery primitive: if `check(view)` still holds, bumps the generation,
   * ungates the lane and publishes `session.state` with `reason`.
   */
  readonly release: (
    sessionKey: SessionKey,
    check: (view: LaneView) => boolean,
    reason: string
  ) => Effect.Effect<"released" | "stale" | "missing">
  /**
   * Recovery primitive: if `check(view)` still holds, interrupts the running
   * turn and waits up to `settle` for its finalizers; if it does not settle,
   * the lane moves on without it (`forced`).
   */
  readonly abort: (
    sessionKey: SessionKey,
    check: (view: LaneView) => boolean,
    settle: Duration.Input,
    reason: string
  ) => Effect.Effect<AbortResult>
  /**
   * The lanes the watchdog must classify: processing for longer than
   * `processingOlderThanMs`, or idle with queued work. Allocates nothing for
   * the others, so a tick over a large healthy fleet stays cheap.
   */
  readonly needingAttention: (processingOlderThanMs: number) => Effect.Effect<ReadonlyArray<LaneView>>
  /** Wakes every lane gated on leftover work, so it re-checks (called by the watchdog tick). */
  readonly recheckGated: Effect.Effect<void>
}>()("effect-session-runtime/SessionLanes") {}

const viewOf = (lane: Lane): LaneView => ({
  sessionKey: lane.key,
  state: lane.state,
  queueDepth: lane.queue.length,
  generation: lane.generation,
  stateSince: lane.stateSince,
  current: lane.current === undefined ? undefined : {
    turnId: lane.current.pending.turnId,
    runId: lane.current.runId,
    startedAt: lane.current.startedAt
  },
  gated: lane.gated
})

/**
 * Builds the lanes in the current scope (closing it closes every session).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const bus = yield* DiagnosticBus
  const tracker = yield* ActivityTracker
  const guard = yield* LaneGuard.LaneGuard
  const clock = yield* Clock.Clock
  const layerScope = yield* Effect.scope
  // Workers run in the layer's context, never in that of whoever happened to
  // open the lane (its run, its span, its annotations).
  const layerContext = yield* Effect.context<never>()
  const maxQueueDepth = Math.max(0, options.maxQueueDepth ?? 100)
  const defaultAdmission = options.admission ?? "enqueue"
  const spans = options.spans ?? true
  const idleTtl = Duration.fromInputUnsafe(options.idleTtl ?? "10 minutes")
  const permits = options.maxConcurrentSessions === undefined
    ? undefined
    : Semaphore.makeUnsafe(Math.max(1, options.maxConcurrentSessions))
  const lanes = new Map<SessionKey, Lane>()
  // Lanes waiting on leftover reported work: the watchdog re-checks only these.
  const gatedLanes = new Set<Lane>()
  let turnCounter = 0
  let shuttingDown = false
  const now = () => clock.currentTimeMillisUnsafe()

  yield* Effect.addFinalizer(() => Effect.sync(() => (shuttingDown = true)))

  // Lane transitions publish in the same synchronous step as the change, so the
  // bus sees them in the order they happened.
  const publishStateUnsafe = (lane: Lane, reason: string): void => {
    bus.publishUnsafe({
      _tag: "session.state",
      sessionKey: lane.key,
      state: lane.state,
      queueDepth: lane.queue.length,
      generation: lane.generation,
      reason
    })
  }
  const publishState = (lane: Lane, reason: string) => Effect.sync(() => publishStateUnsafe(lane, reason))

  const wakeUp = (lane: Lane): void => {
    const wake = lane.wake
    if (wake === undefined) return
    lane.wake = undefined
    Deferred.doneUnsafe(wake, Exit.void)
  }

  const setState = (lane: Lane, state: DiagnosticEvent.LaneState): boolean => {
    lane.generation++
    if (lane.state === state) return false
    lane.state = state
    lane.stateSince = now()
    return true
  }


  const closeLane = (lane: Lane, reason: "idle_ttl" | "shutdown" | "closed") =>
    Effect.suspend(() => {
      if (lane.closed) return Effect.void
      lane.closed = true
      if (lanes.get(lane.key) === lane) lanes.delete(lane.key)
      return Scope.close(lane.scope, Exit.void).pipe(
        Effect.andThen(bus.publish({ _tag: "session.lane.closed", sessionKey: lane.key, reason })),
        Effect.asVoid
      )
    })

  const failPending = (pending: Pending, reason: TurnInterrupted["reason"]) =>
    Deferred.doneUnsafe(pending.result, Exit.fail(new TurnInterrupted({ turnId: pending.turnId, reason })))

  const runTurn = (lane: Lane, pending: Pending) =>
    Effect.gen(function*() {
      if (setState(lane, "processing")) publishStateUnsafe(lane, "turn_started")
      const runId = pending.turnId
      const run = tracker.run(lane.key, guard.around(lane.key, pending.effect), { runId })
      const traced = spans ? SpanAttributes.turnSpan(run, { sessionKey: lane.key, turnId: pending.turnId }) : run
      // The turn runs with its submitter's services (its tracer and span too),
      // which its type says the submitter provides.
      const body = Effect.updateContext(traced, (_: Context.Context<never>) => pending.context)
      const fiber = yield* (permits === undefined ? body : permits.withPermits(1)(body)).pipe(
        Effect.forkIn(lane.scope, { startImmediately: true })
      )
      // One deferred settles the turn: the fiber's exit, or a recovery that
      // gave up waiting for it (then the lane moves on without it).
      const done = Deferred.makeUnsafe<unknown, unknown>()
      const running: Running = {
        pending,
        fiber,
        runId,
        startedAt: now(),
        done,
        interruptReason: undefined
      }
      lane.current = running
      fiber.addObserver((exit) => Deferred.doneUnsafe(done, exit))
      const exit = yield* Effect.exit(Deferred.await(done))
      lane.current = undefined
      lane.generation++
      if (Exit.isFailure(exit) && !Cause.hasFails(exit.cause) && !Cause.hasDies(exit.cause)) {
        // Interrupted: by an admission policy or a recovery (which said why), or
        // else by the session's scope closing under it.
        failPending(pending, running.interruptReason ?? "lane_closed")
      } else {
        Deferred.doneUnsafe(pending.result, exit)
      }
      bus.publishUnsafe({
        _tag: "session.lane.turn_completed",
        sessionKey: lane.key,
        turnId: pending.turnId,
        outcome: DiagnosticEvent.outcomeOf(exit),
        durationMs: Math.max(0, now() - running.startedAt)
      })
    })

  const worker = (lane: Lane): Effect.Effect<void> =>
    Effect.gen(function*() {
      while (!lane.closed) {
        const next = lane.queue[0]
        if (next === undefined) {
          if (setState(lane, "idle")) yield* publishState(lane, "turn_finished")
          const wake = Deferred.makeUnsafe<void>()
          lane.wake = wake
          const woken = yield* Deferred.await(wake).pipe(Effect.timeoutOption(idleTtl))
          if (Option.isNone(woken) && lane.queue.length === 0 && lane.current === undefined) {
            lane.wake = undefined
            yield* Effect.forkDetach(closeLane(lane, "idle_ttl"))
            return
          }
          continue
        }
        if (yield* tracker.hasUnownedMarkers(lane.key)) {
          if (!lane.gated) {
            lane.gated = true
            gatedLanes.add(lane)
            lane.generation++
          }
          const wake = Deferred.makeUnsafe<void>()
          lane.wake = wake
          yield* Effect.raceFirst(Deferred.await(wake), tracker.awaitMarkersChange(lane.key))
          lane.wake = undefined
          continue
        }
        lane.gated = false
        gatedLanes.delete(lane)
        lane.queue.shift()
        yield* runTurn(lane, next)
      }
    })

  const openLane = (key: SessionKey): Effect.Effect<Lane> =>
    Effect.suspend(() => {
      const existing = lanes.get(key)
      if (existing !== undefined && !existing.closed) return Effect.succeed(existing)
      const lane: Lane = {
        key,
        scope: Scope.forkUnsafe(layerScope),
        queue: [],
        state: "idle",
        stateSince: now(),
        generation: 0,
        current: undefined,
        wake: undefined,
        gated: false,
        closed: false
      }
      lanes.set(key, lane)
      return Effect.gen(function*() {
        yield* Scope.addFinalizer(
          lane.scope,
          Effect.suspend(() => {
            lane.closed = true
            if (lanes.get(key) === lane) lanes.delete(key)
            for (const pending of lane.queue.splice(0)) failPending(pending, "lane_closed")
            if (lane.current !== undefined) failPending(lane.current.pending, "lane_closed")
            return shuttingDown
              ? Effect.asVoid(bus.publish({ _tag: "session.lane.closed", sessionKey: key, reason: "shutdown" }))
              : Effect.void
          })
        )
        yield* bus.publish({ _tag: "session.lane.opened", sessionKey: key })
        yield* Effect.forkIn(
          Effect.updateContext(worker(lane), (_: Context.Context<never>) => layerContext),
          lane.scope,
          { startImmediately: true }
        )
        return lane
      })
    })

  const submit = <A, E, R = never>(
    sessionKey: SessionKey,
    turn: Effect.Effect<A, E, R>,
    submitOptions?: { readonly admission?: AdmissionPolicy | undefined; readonly turnId?: string | undefined }
  ): Effect.Effect<Submission<A, E>, LaneFull, Exclude<R, CurrentRun>> =>
    Effect.flatMap(Effect.context<Exclude<R, CurrentRun>>(), (submitter) =>
      Effect.flatMap(openLane(sessionKey), (lane) =>
        Effect.suspend(() => {
        const turnId = submitOptions?.turnId ?? `turn-${++turnCounter}`
        const pending: Pending = {
          turnId,
          effect: turn as Effect.Effect<unknown, unknown, CurrentRun>,
          // The submitter's services, but never its run: a turn submitted from
          // inside another turn is its own session's run, not a nested one.
          context: (Option.isSome(Context.getOption(submitter as Context.Context<CurrentRun>, CurrentRun))
            ? Context.omit(CurrentRun)(submitter)
            : submitter) as Context.Context<never>,
          result: Deferred.makeUnsafe<unknown, unknown>()
        }
        const policy = submitOptions?.admission ?? defaultAdmission
        const busy = lane.current !== undefined || lane.queue.length > 0
        let admission: Admission
        if (!busy) {
          admission = { _tag: "Started" }
          lane.queue.push(pending)
        } else if (policy === "reject") {
          admission = { _tag: "Rejected", reason: "busy" }
          failPending(pending, "rejected_busy")
        } else if (policy === "interrupt" && lane.current !== undefined) {
          const previous = lane.current
          admission = { _tag: "InterruptedPrevious", previousTurnId: previous.pending.turnId }
          previous.interruptReason = "admission_interrupt"
          lane.queue.unshift(pending)
          previous.fiber.interruptUnsafe()
        } else if (lane.queue.length >= maxQueueDepth) {
          return Effect.fail(new LaneFull({ sessionKey, maxQueueDepth }))
        } else {
          lane.queue.push(pending)
          admission = { _tag: "Enqueued", position: lane.queue.length }
        }
        if (admission._tag !== "Rejected") lane.generation++
        bus.publishUnsafe({
          _tag: "session.lane.admitted",
          sessionKey,
          turnId,
          admission: admission._tag === "Started"
            ? "started"
            : admission._tag === "Enqueued"
            ? "enqueued"
            : admission._tag === "Rejected"
            ? "rejected"
            : "interrupted_previous",
          position: admission._tag === "Enqueued" ? admission.position : 0,
          ...(admission._tag === "Rejected" ? { reason: admission.reason } : {})
        })
        if (admission._tag !== "Rejected") wakeUp(lane)
        return Effect.succeed<Submission<A, E>>({
          turnId,
          admission,
          result: Deferred.await(pending.result) as Submission<A, E>["result"]
        })
      })))

  const release = (sessionKey: SessionKey, check: (view: LaneView) => boolean, reason: string) =>
    Effect.suspend(() => {
      const lane = lanes.get(sessionKey)
      if (lane === undefined) return Effect.succeed("missing" as const)
      if (!check(viewOf(lane))) return Effect.succeed("stale" as const)
      lane.generation++
      lane.gated = false
      gatedLanes.delete(lane)
      wakeUp(lane)
      return Effect.as(publishState(lane, reason), "released" as const)
    })

  const abort = (
    sessionKey: SessionKey,
    check: (view: LaneView) => boolean,
    settle: Duration.Input,
    reason: string
  ): Effect.Effect<AbortResult> =>
    Effect.suspend((): Effect.Effect<AbortResult> => {
      const lane = lanes.get(sessionKey)
      if (lane === undefined) return Effect.succeed({ _tag: "Stale" } as const)
      if (!check(viewOf(lane))) return Effect.succeed({ _tag: "Stale" } as const)
      const running = lane.current
      if (running === undefined) return Effect.succeed({ _tag: "NoTurn" } as const)
      running.interruptReason = "recovery_abort"
      lane.generation++
      running.fiber.interruptUnsafe()
      return Fiber.await(running.fiber).pipe(
        Effect.timeoutOption(settle),
        Effect.flatMap((settled): Effect.Effect<AbortResult> => {
          if (Option.isSome(settled)) return Effect.succeed({ _tag: "Aborted", runId: running.runId } as const)
          // The turn ignores interruption: the lane moves on without it. Its lock
          // stays held until the fiber really exits, so no second writer starts.
          Deferred.doneUnsafe(running.done, Exit.interrupt())
          return Effect.succeed({ _tag: "Forced", runId: running.runId } as const)
        }),
        Effect.tap(() => publishState(lane, reason))
      )
    })

  return SessionLanes.of({
    submit,
    view: (sessionKey) =>
      Effect.sync(() => {
        const lane = lanes.get(sessionKey)
        return lane === undefined ? undefined : viewOf(lane)
      }),
    list: Effect.sync(() => Array.from(lanes.values(), viewOf)),
    sessionScope: (sessionKey) => Effect.map(openLane(sessionKey), (lane) => lane.scope),
    close: (sessionKey) =>
      Effect.suspend(() => {
        const lane = lanes.get(sessionKey)
        return lane === undefined ? Effect.void : closeLane(lane, "closed")
      }),
    release,
    abort,
    needingAttention: (processingOlderThanMs) =>
      Effect.sync(() => {
        const cutoff = now() - processingOlderThanMs
        const found: Array<LaneView> = []
        for (const lane of lanes.values()) {
          if (
            (lane.state === "processing" && lane.stateSince < cutoff) ||
            (lane.state === "idle" && lane.queue.length > 0)
          ) found.push(viewOf(lane))
        }
        return found
      }),
    recheckGated: Effect.sync(() => {
      for (const lane of gatedLanes) {
        if (lane.closed) gatedLanes.delete(lane)
        else wakeUp(lane)
      }
    })
  })
})

/**
 * The lanes as a layer. Closing the layer closes every session.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<SessionLanes, never, DiagnosticBus | ActivityTracker | LaneGuard.LaneGuard> =>
  Layer.effect(SessionLanes, make(options))

/**
 * Submits a turn and waits for its result.
 *
 * @category accessors
 * @since 0.1.0
 */
export const run = <A, E, R = never>(
  sessionKey: SessionKey,
  turn: Effect.Effect<A, E, R>,
  options?: { readonly admission?: AdmissionPolicy | undefined; readonly turnId?: string | undefined }
): Effect.Effect<
  A,
  E | TurnInterrupted | LaneGuard.TurnGuardFailed | LaneFull,
  SessionLanes | Exclude<R, CurrentRun>
> =>
  Effect.flatMap(SessionLanes, (lanes) => Effect.flatMap(lanes.submit(sessionKey, turn, options), (s) => s.result))
