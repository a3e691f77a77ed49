/**
 * A client of the demo server's `GET /events`: it reads the Server-Sent
 * Events stream, decodes every event with the runtime's own schema
 * (`DiagnosticEvent.decodeJson`) and keeps them, in order, with the time they
 * arrived. `waitFor` polls what arrived until a condition holds or its time
 * runs out.
 */
import { Clock, Deferred, Duration, Effect, Option, type Scope, Stream } from "effect"
import { Sse } from "effect/encoding"
import { HttpClient } from "effect/http"
import * as DiagnosticEvent from "../../src/DiagnosticEvent.ts"

/** One event and the time (client clock, epoch ms) it arrived. */
export interface Received {
  readonly event: DiagnosticEvent.DiagnosticEvent
  readonly receivedAt: number
}

export interface EventFeed {
  /** Every event received so far, in order. */
  readonly all: () => ReadonlyArray<Received>
  /** Polls the events until `find` returns a value, or `timeout` passes (None). */
  readonly waitFor: <A>(
    find: (events: ReadonlyArray<Received>) => A | undefined,
    timeout: Duration.Input
  ) => Effect.Effect<Option.Option<A>>
}

/**
 * Subscribes to `<baseUrl>/events` and returns once the server confirmed the
 * subscription (its `ready` event): every event published after that arrives.
 */
export const connect = (
  baseUrl: string,
  onEvent: (received: Received) => void
): Effect.Effect<EventFeed, never, HttpClient.HttpClient | Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const received: Array<Received> = []
    const ready = yield* Deferred.make<void>()
    yield* client.get(`${baseUrl}/events`).pipe(
      Effect.flatMap((response) =>
        response.stream.pipe(
          Stream.decodeText(),
          Stream.pipeThroughChannel(Sse.decode()),
          Stream.runForEach((sse) =>
            Effect.gen(function*() {
              if (sse.event === "ready") return yield* Deferred.succeed(ready, undefined)
              const event = yield* DiagnosticEvent.decodeJson(sse.data)
              const item = { event, receivedAt: yield* Clock.currentTimeMillis }
              received.push(item)
              onEvent(item)
            })
          )
        )
      ),
      Effect.orDie,
      Effect.forkScoped
    )
    yield* Deferred.await(ready).pipe(
      Effect.timeoutOrElse({
        duration: "10 seconds",
        orElse: () => Effect.die(new Error(`no event stream from ${baseUrl}/events within 10 s`))
      })
    )
    const waitFor = <A>(find: (events: ReadonlyArray<Received>) => A | undefined, timeout: Duration.Input) =>
      Effect.gen(function*() {
        const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(Duration.fromInputUnsafe(timeout))
        while (true) {
          const found = find(received)
          if (found !== undefined) return Option.some(found)
          if ((yield* Clock.currentTimeMillis) >= deadline) return Option.none<A>()
          yield* Effect.sleep("50 millis")
        }
      })
    return { all: () => received, waitFor }
  })
