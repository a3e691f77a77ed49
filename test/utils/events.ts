/**
 * Collects the events published on the DiagnosticBus into an array, for
 * assertions. Subscribes before returning, so nothing published afterwards is
 * missed.
 */
import { Effect, Stream } from "effect"
import type { Scope } from "effect"
import type { DiagnosticEvent } from "../../src/DiagnosticEvent.ts"
import { DiagnosticBus } from "../../src/DiagnosticBus.ts"

export interface Collected {
  /** Every event received so far, in order. */
  readonly all: () => ReadonlyArray<DiagnosticEvent>
  /** The events of one type. */
  readonly ofType: <T extends DiagnosticEvent["_tag"]>(
    type: T
  ) => ReadonlyArray<Extract<DiagnosticEvent, { readonly _tag: T }>>
  /** Lets the collector fiber catch up with everything published so far. */
  readonly settle: Effect.Effect<void>
}

export const collectEvents: Effect.Effect<Collected, never, DiagnosticBus | Scope.Scope> = Effect.gen(function*() {
  const bus = yield* DiagnosticBus
  const stream = yield* bus.subscribe({ name: "test-collector" })
  const events: Array<DiagnosticEvent> = []
  yield* stream.pipe(
    Stream.runForEach((event) => Effect.sync(() => events.push(event))),
    Effect.forkScoped({ startImmediately: true })
  )
  const settle = Effect.gen(function*() {
    const target = (yield* bus.stats).published
    for (let i = 0; i < 10_000 && events.length < target && events.at(-1)?.seq !== (yield* bus.watermark); i++) {
      yield* Effect.yieldNow
    }
    for (let i = 0; i < 5; i++) yield* Effect.yieldNow
  })
  return {
    all: () => events,
    ofType: (type) => events.filter((e) => e._tag === type) as any,
    settle
  }
})
