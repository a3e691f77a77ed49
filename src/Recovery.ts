/**
 * The recovery coordinator: acts on a wedged session only if the session is
 * still in the state its requester observed, and says exactly what it did.
 *
 * - **Gates.** A request carries the `expectedState` and `generation` it
 *   observed; the mutation applies only if they still match (an idle session
 *   being aborted also accepts generation G+1, the bump of its own queueing).
 *   Active work is interrupted only with `allowActiveAbort`. One recovery is in
 *   flight per session: a duplicate is `skipped / already_in_flight` and
 *   publishes nothing.
 * - **release_lane** (an idle session with queued work behind orphaned
 *   activity): the markers opened before the request's watermark are evicted
 *   and fenced, the lane is ungated, and its queued turn runs. Nothing is
 *   aborted; an owner that started after the watermark is never touched.
 * - **abort_run** (a stalled run with a live owner, past the abort threshold):
 *   the turn's fiber is interrupted and given `settle` to run its finalizers;
 *   if it does not settle it is force-cleared: the lane moves on, its markers
 *   are evicted and fenced and its owner detached — while the session write
 *   lock stays with the zombie until it really exits, so two writers never
 *   touch one transcript.
 *
 * Every request publishes `session.recovery.requested` and exactly one
 * `session.recovery.completed`; a lane it changed publishes `session.state`
 * with reason `stuck_recovery:<status>`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { ActivityTracker } from "./ActivityTracker.ts"
import { DiagnosticBus } from "./DiagnosticBus.ts"
import type * as DiagnosticEvent from "./DiagnosticEvent.ts"
import type { SessionKey } from "./SessionKey.ts"
import { type LaneView, SessionLanes } from "./SessionLanes.ts"

/**
 * A request to recover one session.
 *
 * @category models
 * @since 0.1.0
 */
export interface Request {
  readonly sessionKey: SessionKey
  readonly trigger: "stuck" | "active_abort" | "manual"
  /** What the requester wants done. */
  readonly action: "release_lane" | "abort_run"
  /** The lane state the requester observed. */
  readonly expectedState: DiagnosticEvent.LaneState
  /** The lane generation the requester observed. */
  readonly generation: number
  /** Whether running work may be interrupted. */
  readonly allowActiveAbort: boolean
}

/**
 * What a recovery did.
 *
 * @category models
 * @since 0.1.0
 */
export interface Outcome {
  readonly recoveryId: string | undefined
  readonly status: DiagnosticEvent.RecoveryStatus
  readonly action: DiagnosticEvent.RecoveryAction
  readonly reason: string
  /** The session had moved on since the request was made; nothing was changed. */
  readonly stale: boolean
  /** The run did not settle within the settle time and was cleared without it. */
  readonly forced: boolean
  readonly evictedTools: number
  readonly evictedModelCalls: number
}

/**
 * Options of the coordinator.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * How long an aborted run may take to run its finalizers before it is
   * force-cleared.
   * @default "15 seconds"
   */
  readonly settle?: Duration.Input | undefined
}

/**
 * @category services
 * @since 0.1.0
 */
export class Recovery extends Context.Service<Recovery, {
  readonly recover: (request: Request) => Effect.Effect<Outcome>
  /** Sessions with a recovery in flight. */
  readonly inFlight: Effect.Effect<ReadonlyArray<SessionKey>>
}>()("effect-session-runtime/Recovery") {}

/**
 * Whether a lane still looks the way the request saw it (pure).
 *
 * @category gates
 * @since 0.1.0
 */
export const stillMatches = (request: Request, view: LaneView): boolean => {
  if (view.state !== request.expectedState) return false
  if (view.generation === request.generation) return true
  return request.expectedState === "idle" && request.action === "abort_run" &&
    view.generation === request.generation + 1
}

const outcome = (fields: Partial<Outcome> & Pick<Outcome, "status" | "action" | "reason">): Outcome => ({
  recoveryId: undefined,
  stale: false,
  forced: false,
  evictedTools: 0,
  evictedModelCalls: 0,
  ...fields
})

/**
 * Builds the coordinator.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const bus = yield* DiagnosticBus
  const tracker = yield* ActivityTracker
  const lanes = yield* SessionLanes
  const clock = yield* Clock.Clock
  const settle = Duration.fromInputUnsafe(options.settle ?? "15 seconds")
  const inFlight = new Set<SessionKey>()
  let counter = 0

  const perform = (request: Request, recoveryId: string): Effect.Effect<Outcome> =>
    Effect.gen(function*() {
      const view = yield* lanes.view(request.sessionKey)
      if (view === undefined) {
        return outcome({ recoveryId, status: "noop", action: "none", reason: "session_closed", stale: true })
      }
      const check = (current: LaneView) => stillMatches(request, current)
      if (!check(view)) {
        return outcome({
          recoveryId,
          status: "noop",
          action: "none",
          reason: view.state !== request.expectedState ? "state_changed" : "generation_changed",
          stale: true
        })
      }
      const wantsAbort = request.action === "abort_run" || (request.expectedState === "processing")
      if (!wantsAbort) {
        const cutoff = yield* bus.watermark
        const released = yield* lanes.release(request.sessionKey, check, "stuck_recovery:released")
        if (released !== "released") {
          return outcome({ recoveryId, status: "noop", action: "none", reason: "generation_changed", stale: true })
        }
        const evicted = yield* tracker.evictForRecovery(request.sessionKey, { cutoff })
        return outcome({
          recoveryId,
          status: "released",
          action: "release_lane",
          reason: evicted.evictedTools + evicted.evictedModelCalls > 0 ? "orphaned_activity_evicted" : "lane_released",
          ...evicted
        })
      }
      if (!request.allowActiveAbort) {
        return outcome({ recoveryId, status: "skipped", action: "observe_only", reason: "active_abort_not_allowed" })
      }
      const aborted = yield* lanes.abort(request.sessionKey, check, settle, "stuck_recovery:aborted")
      switch (aborted._tag) {
        case "Stale":
          return outcome({ recoveryId, status: "noop", action: "none", reason: "generation_changed", stale: true })
        case "NoTurn":
          return outcome({ recoveryId, status: "noop", action: "keep_lane", reason: "no_active_run" })
        case "Aborted":
          return outcome({ recoveryId, status: "aborted", action: "abort_run", reason: "run_interrupted" })
        case "Forced": {
          const cutoff = yield* bus.watermark
          const evicted = yield* tracker.evictForRecovery(request.sessionKey, { cutoff, runIds: [aborted.runId] })
          return outcome({
            recoveryId,
            status: "aborted",
            action: "abort_run",
            reason: "force_cleared_after_settle",
            forced: true,
            ...evicted
          })
        }
      }
    })

  const recover = (request: Request): Effect.Effect<Outcome> =>
    Effect.suspend(() => {
      if (inFlight.has(request.sessionKey)) {
        return Effect.succeed(outcome({ status: "skipped", action: "none", reason: "already_in_flight" }))
      }
      inFlight.add(request.sessionKey)
      const recoveryId = `recovery-${++counter}`
      const startedAt = clock.currentTimeMillisUnsafe()
      return bus.publish({
        _tag: "session.recovery.requested",
        sessionKey: request.sessionKey,
        recoveryId,
        trigger: request.trigger,
        expectedState: request.expectedState,
        generation: request.generation,
        allowActiveAbort: request.allowActiveAbort
      }).pipe(
        Effect.andThen(perform(request, recoveryId)),
        Effect.catchDefect((defect) =>
          Effect.succeed(outcome({
            recoveryId,
            status: "failed",
            action: "none",
            reason: `defect: ${String(defect).slice(0, 200)}`
          }))
        ),
        Effect.tap((result) =>
          bus.publish({
            _tag: "session.recovery.completed",
            sessionKey: request.sessionKey,
            recoveryId,
            status: result.status,
            action: result.action,
            reason: result.reason,
            stale: result.stale,
            forced: result.forced,
            durationMs: Math.max(0, clock.currentTimeMillisUnsafe() - startedAt)
          })
        ),
        Effect.ensuring(Effect.sync(() => inFlight.delete(request.sessionKey)))
      )
    })

  return Recovery.of({ recover, inFlight: Effect.sync(() => Array.from(inFlight)) })
})

/**
 * The coordinator as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<Recovery, never, DiagnosticBus | ActivityTracker | SessionLanes> =>
  Layer.effect(Recovery, make(options))
