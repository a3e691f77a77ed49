/**
 * Sessions as Effect Cluster entities: when one host is no longer enough,
 * every session becomes an entity of `effect/cluster`, so its messages are
 * processed by exactly one runner at a time across processes and hosts, in
 * the order they were sent, while the runtime's tracking, watchdog and
 * recovery run inside each runner.
 *
 * - {@link SessionEntity}: the entity type `Session`, one entity per session
 *   key, with one persisted RPC, {@link Turn}. A message's dedup key is its
 *   session key and `messageId`, so a message sent twice (a client retrying
 *   after a crash) is processed once and both senders get the same reply.
 * - {@link layer}: registers the entity on a runner. Each message becomes a
 *   turn on the session's lane (`SessionLanes`): an activity owner
 *   (`ActivityTracker`), visible to the watchdog, recoverable. When the runner
 *   gives the entity up (its shard moves, the runner shuts down, the entity
 *   idles out), the session's lane is closed: the running turn is interrupted,
 *   its owner deregisters and any marker still open on the session is evicted
 *   (`session.activity.evicted`), never left to block. An interrupted turn is
 *   not answered: its message resumes on the entity's next owner (a turn
 *   whose lane closed while its request goes on runs again here).
 * - {@link send}: the client side, from any process with `Sharding`.
 *
 * Storage, transport and runner health are the cluster's own (for example
 * `NodeClusterSocket.layer({ storage: "sql" })` over `@effect/sql-pg`); see
 * `examples/10_cluster-sessions.ts` and `docs/cluster.md`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as ClusterSchema from "effect/cluster/ClusterSchema"
import * as Entity from "effect/cluster/Entity"
import type * as Sharding from "effect/cluster/Sharding"
import * as Rpc from "effect/rpc/Rpc"
import type { CurrentRun } from "./ActivityTracker.ts"
import * as SessionKey from "./SessionKey.ts"
import * as SessionLanes from "./SessionLanes.ts"

/**
 * Why a message could not be processed as a turn: an invalid key or message
 * id, a message sent to the wrong entity, a full lane, a turn interrupted by
 * recovery or admission, or the session lease not had within its budget. The
 * message is answered with this failure and not retried.
 *
 * @category errors
 * @since 0.1.0
 */
export class TurnRejected extends Schema.TaggedError<TurnRejected>()("TurnRejected", {
  reason: Schema.Literals([
    "invalid_session_key",
    "wrong_entity",
    "invalid_message_id",
    "lane_full",
    "interrupted",
    "lock_unavailable"
  ]),
  detail: Schema.String
}) {
  override get message(): string {
    return `The turn was not run (${this.reason}): ${this.detail}`
  }
}

/**
 * The turn itself failed: the handler's failure, as text.
 *
 * @category errors
 * @since 0.1.0
 */
export class TurnFailed extends Schema.TaggedError<TurnFailed>()("TurnFailed", {
  sessionKey: Schema.String,
  messageId: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `The turn for message ${JSON.stringify(this.messageId)} of session ${JSON.stringify(this.sessionKey)} ` +
      `failed: ${this.detail}`
  }
}

/**
 * A message for a session. `messageId` identifies it within the session
 * (1–200 characters): sending the same id again is a duplicate.
 *
 * @category models
 * @since 0.1.0
 */
export const TurnRequest = Schema.Struct({
  sessionKey: Schema.String,
  messageId: Schema.String,
  text: Schema.String
})
export type TurnRequest = typeof TurnRequest.Type

/**
 * The answer to a message: the handler's output and where the turn ran.
 *
 * @category models
 * @since 0.1.0
 */
export const TurnReply = Schema.Struct({
  output: Schema.String,
  runner: Schema.String,
  turnId: Schema.String
})
export type TurnReply = typeof TurnReply.Type

/**
 * The dedup key of a message: its session key and id, unambiguous whatever
 * characters they contain (the key's length comes first).
 *
 * @category models
 * @since 0.1.0
 */
export const dedupKey = (request: { readonly sessionKey: string; readonly messageId: string }): string =>
  `${request.sessionKey.length}:${request.sessionKey}/${request.messageId}`

/**
 * The one message a session entity takes. Persisted (it survives runner
 * crashes and moves with the session), and interrupted at once when its
 * runner gives the entity up, so it resumes on the next owner instead of
 * holding up a shutdown.
 *
 * @category entity
 * @since 0.1.0
 */
export const Turn = Rpc.make("Turn", {
  payload: TurnRequest.fields,
  primaryKey: dedupKey,
  success: TurnReply,
  error: Schema.Union([TurnRejected, TurnFailed])
}).annotate(ClusterSchema.InterruptOnTermination, true)

/**
 * The session entity type.
 *
 * @category entity
 * @since 0.1.0
 */
export const SessionEntity = Entity.make("Session", [Turn]).annotateRpcs(ClusterSchema.Persisted, true)

/**
 * The entity id of a session: its key's file-name-safe encoding (a readable
 * prefix and 128 bits of its SHA-256, at most 81 characters), since entity ids
 * are limited to 255 characters and a session key may have 512.
 *
 * @category entity
 * @since 0.1.0
 */
export const entityId = (sessionKey: SessionKey.SessionKey): string => SessionKey.toFileName(sessionKey)

/**
 * What a runner does with one message: the turn's body. It runs as an
 * activity owner of its session (`CurrentRun`), so `ActivityTracker.tool`,
 * `model` and `progress` work inside it.
 *
 * @category models
 * @since 0.1.0
 */
export type Handler<E, R> = (
  request: TurnRequest & { readonly sessionKey: SessionKey.SessionKey }
) => Effect.Effect<string, E, R | CurrentRun>

/**
 * Options of the entity layer.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * The name this runner reports in replies.
   * @default "runner"
   */
  readonly runnerName?: string | undefined
  /**
   * An entity that receives no message for this long is passivated (its lane
   * closes); the next message starts it again.
   * @default "1 minute"
   */
  readonly maxIdleTime?: Duration.Input | undefined
}

const messageIdOk = (id: string) => id.length >= 1 && id.length <= 200

// A turn whose lane closed under it runs again, a few times, a moment later.
const maxLaneRetries = 3
const laneRetryDelay = Duration.millis(50)

/**
 * Registers the session entity on this runner: each message runs as a turn
 * of the session's lane. Needs `Sharding` (a runner), `SessionLanes` (with
 * its tracker, and the watchdog and recovery alongside) and what the handler
 * needs.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <E, R>(
  handler: Handler<E, R>,
  options: Options = {}
): Layer.Layer<never, never, Sharding.Sharding | SessionLanes.SessionLanes | Exclude<R, CurrentRun>> =>
  Layer.unwrap(Effect.sync(() => {
    // Turn ids name the run in the tracker, so they must be unique in this process, even for a message that
    // runs again (after its turn was interrupted, or on an entity restarted here).
    let turns = 0
    return SessionEntity.toLayer(
      Effect.gen(function*() {
        const lanes = yield* SessionLanes.SessionLanes
        const address = yield* Entity.CurrentAddress
        const runner = options.runnerName ?? "runner"
        // The session this entity serves, once its first message names it.
        let served: SessionKey.SessionKey | undefined
        // The runner gave the entity up: close the session's lane, so a turn still running is interrupted and
        // whatever it left open is evicted here rather than left to block.
        yield* Effect.addFinalizer(() => served === undefined ? Effect.void : lanes.close(served))

        return SessionEntity.of({
          Turn: (envelope) =>
            Effect.gen(function*() {
              const request = envelope.payload
              const key = yield* SessionKey.decode(request.sessionKey).pipe(
                Effect.mapError((error) => new TurnRejected({ reason: "invalid_session_key", detail: error.message }))
              )
              if (entityId(key) !== address.entityId) {
                return yield* new TurnRejected({
                  reason: "wrong_entity",
                  detail: `session ${JSON.stringify(request.sessionKey)} belongs to entity ${entityId(key)}, ` +
                    `not ${address.entityId}: send it with ClusterSessions.send`
                })
              }
              if (!messageIdOk(request.messageId)) {
                return yield* new TurnRejected({
                  reason: "invalid_message_id",
                  detail: "a message id must be 1–200 characters"
                })
              }
              served = key
              const turn = handler({ ...request, sessionKey: key }).pipe(
                Effect.mapError((error) =>
                  new TurnFailed({
                    sessionKey: request.sessionKey,
                    messageId: request.messageId,
                    detail: error instanceof Error ? error.message : String(error)
                  })
                )
              )
              const runTurn = (attempt: number): Effect.Effect<
                { readonly output: string; readonly turnId: string },
                TurnRejected | TurnFailed,
                Exclude<R, CurrentRun>
              > =>
                Effect.gen(function*() {
                  const turnId = `${request.messageId}#${(++turns).toString(36)}`
                  const submission = yield* lanes.submit(key, turn, { turnId }).pipe(
                    Effect.mapError((error) => new TurnRejected({ reason: "lane_full", detail: error.message }))
                  )
                  return yield* submission.result.pipe(
                    Effect.map((output) => ({ output, turnId })),
                    Effect.catchTag("TurnInterrupted", (error) =>
                      // The lane closed under the turn (the session was closed on this runner): run it again. If
                      // the runner is giving the session up, this request is interrupted first and the message
                      // goes on on the session's next owner; it is never answered as failed for that.
                      error.reason === "lane_closed" && attempt < maxLaneRetries
                        ? Effect.andThen(Effect.sleep(laneRetryDelay), runTurn(attempt + 1))
                        : Effect.fail(new TurnRejected({ reason: "interrupted", detail: error.message }))),
                    Effect.catchTag(
                      "TurnGuardFailed",
                      (error) => Effect.fail(new TurnRejected({ reason: "lock_unavailable", detail: error.message }))
                    )
                  )
                })
              const { output, turnId } = yield* runTurn(1).pipe(
                // This request was interrupted (its runner is giving the session up, or the sender gave up):
                // stop the turn it is waiting for, with its finalizers, before the message moves on.
                Effect.onInterrupt(() => lanes.close(key))
              )
              return { output, runner, turnId }
            })
        })
      }),
      { maxIdleTime: options.maxIdleTime }
    )
  }))

/**
 * Sends a message to a session and waits for its reply (from whichever runner
 * owns the session). Sending the same `messageId` again returns the first
 * reply; nothing runs twice.
 *
 * @category client
 * @since 0.1.0
 */
export const send = Effect.fnUntraced(function*(request: TurnRequest) {
  const key = yield* SessionKey.decode(request.sessionKey)
  const client = yield* SessionEntity.client
  return yield* client(entityId(key)).Turn(request)
})

/**
 * Sends a message to a session without waiting for the turn: it is stored
 * and will be processed by the session's owner.
 *
 * @category client
 * @since 0.1.0
 */
export const sendDiscard = Effect.fnUntraced(function*(request: TurnRequest) {
  const key = yield* SessionKey.decode(request.sessionKey)
  const client = yield* SessionEntity.client
  return yield* client(entityId(key)).Turn(request, { discard: true })
})
