/**
 * What a lane wraps around each turn before it runs. {@link layerSessionLock}
 * (what `SessionRuntime` uses by default) takes the session write lock, so two
 * processes sharing a lock directory never run turns of one session at the
 * same time; {@link layerNone} takes nothing.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type { SessionKey } from "./SessionKey.ts"
import { type AcquireOptions, type Lease, SessionLock } from "./SessionLock.ts"

/**
 * A turn could not start because its guard failed (for example the session
 * lock could not be acquired within its budget). The turn did not run.
 *
 * @category errors
 * @since 0.1.0
 */
export class TurnGuardFailed extends Schema.TaggedError<TurnGuardFailed>()("TurnGuardFailed", {
  sessionKey: Schema.String,
  reason: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `Turn for session ${this.sessionKey} did not start (${this.reason}): ${this.detail}`
  }
}

/**
 * @category services
 * @since 0.1.0
 */
export class LaneGuard extends Context.Service<LaneGuard, {
  readonly around: <A, E, R>(
    sessionKey: SessionKey,
    turn: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | TurnGuardFailed, R>
}>()("effect-session-runtime/LaneGuard") {}

/**
 * No guard: turns run as soon as their lane reaches them.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerNone: Layer.Layer<LaneGuard> = Layer.succeed(LaneGuard, LaneGuard.of({ around: (_, turn) => turn }))

/**
 * The lease of the session write lock held by the current turn, when the lane
 * takes the lock. A turn checks it with `SessionLock.assertCurrent` before it
 * commits a write, and may hand its `token` to a store that fences writes.
 *
 * @category references
 * @since 0.1.0
 */
export const CurrentLease = Context.Reference<Option.Option<Lease>>(
  "effect-session-runtime/LaneGuard/CurrentLease",
  { defaultValue: () => Option.none() }
)

/**
 * Takes the session's write lock around each turn (released when the turn
 * ends, however it ends). A turn whose lock cannot be had within the acquire
 * budget fails with {@link TurnGuardFailed} naming the holder, and does not run.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerSessionLock = (options?: AcquireOptions): Layer.Layer<LaneGuard, never, SessionLock> =>
  Layer.effect(
    LaneGuard,
    Effect.map(SessionLock, (lock) =>
      LaneGuard.of({
        around: (sessionKey, turn) =>
          Effect.scoped(
            lock.acquire(sessionKey, options).pipe(
              Effect.mapError((error) =>
                new TurnGuardFailed({ sessionKey, reason: error._tag, detail: error.message })
              ),
              Effect.flatMap((lease) => Effect.provideService(turn, CurrentLease, Option.some(lease)))
            )
          )
      }))
  )
