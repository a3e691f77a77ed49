/**
 * What a lane wraps around each turn before it runs. The default takes
 * nothing; `SessionLockGuard.layer` takes the session write lock, so two
 * processes sharing a lock directory never run turns of one session at the
 * same time.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type { SessionKey } from "./SessionKey.ts"

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
