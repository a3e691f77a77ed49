/**
 * The server side of `GET /events`: one subscription to the diagnostic bus,
 * each event encoded once (JSON, then its Server-Sent Events frame, then
 * UTF-8 bytes) and the same bytes handed to every reader. The cost of a
 * reader is a share of a byte buffer, not an encoding per event: with many
 * readers, encoding no longer grows with their number.
 *
 * Events are encoded a batch at a time (whatever the bus delivered since the
 * last turn) into one buffer, and only while at least one reader listens.
 * Each reader may fall `readerCapacity` buffers behind before its oldest are
 * dropped, like a subscriber of the bus.
 */
import { Effect, PubSub, type Scope, Stream } from "effect"
import { Sse } from "effect/encoding"
import type { DiagnosticBus } from "../../src/DiagnosticBus.ts"
import * as DiagnosticEvent from "../../src/DiagnosticEvent.ts"

export interface EventBroadcast {
  /**
   * A reader's bytes: a `ready` frame carrying the last `seq` already passed
   * on (every later event follows), then the shared buffers. The reader
   * leaves when the scope closes.
   */
  readonly reader: Effect.Effect<Stream.Stream<Uint8Array>, never, Scope.Scope>
  /** Events encoded so far: once each, whatever the number of readers. */
  readonly encodedEvents: () => number
  /** Readers listening now. */
  readonly readers: () => number
}

const utf8 = new TextEncoder()

/** The SSE frame of one event: `event:` its type, `id:` its seq, `data:` its JSON. */
export const frameOf = (event: DiagnosticEvent.DiagnosticEvent): string =>
  Sse.encoder.write({
    _tag: "Event",
    event: event._tag,
    id: String(event.seq),
    data: DiagnosticEvent.encodeJson(event)
  })

/** Starts the broadcaster in the current scope. */
export const make = (
  bus: DiagnosticBus["Service"],
  options: { readonly readerCapacity?: number | undefined } = {}
): Effect.Effect<EventBroadcast, never, Scope.Scope> =>
  Effect.gen(function*() {
    const hub = yield* Effect.acquireRelease(
      PubSub.sliding<Uint8Array>({ capacity: options.readerCapacity ?? 1024 }),
      PubSub.shutdown
    )
    let readers = 0
    let encodedEvents = 0
    // The last seq passed on (encoded, or skipped while nobody listened).
    let passedSeq = yield* bus.watermark
    const events = yield* bus.subscribe({ name: "sse" })
    yield* events.pipe(
      Stream.runForEachArray((batch) =>
        Effect.sync(() => {
          passedSeq = batch[batch.length - 1]!.seq
          if (readers === 0) return
          let text = ""
          for (const event of batch) text += frameOf(event)
          encodedEvents += batch.length
          // In the same step as `passedSeq`, so a reader's `ready` never skips a batch.
          PubSub.publishUnsafe(hub, utf8.encode(text))
        })
      ),
      Effect.forkScoped({ startImmediately: true })
    )
    const reader = Effect.gen(function*() {
      const subscription = yield* PubSub.subscribe(hub)
      readers++
      yield* Effect.addFinalizer(() => Effect.sync(() => readers--))
      const ready = utf8.encode(Sse.encoder.write({
        _tag: "Event",
        event: "ready",
        id: undefined,
        data: JSON.stringify({ watermark: passedSeq })
      }))
      return Stream.concat(Stream.succeed(ready), Stream.fromSubscription(subscription))
    })
    return { reader, encodedEvents: () => encodedEvents, readers: () => readers }
  })
