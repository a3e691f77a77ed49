import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as DiagnosticEvent from "../src/DiagnosticEvent.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as EventBroadcast from "../examples/demo/EventBroadcast.ts"

const key = SessionKey.makeUnsafe("agent:demo:sse")
const admitted = (n: number): DiagnosticEvent.Draft => ({
  _tag: "session.lane.admitted",
  sessionKey: key,
  turnId: `turn-${n}`,
  admission: "enqueued",
  position: n
})

const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

const utf8 = new TextDecoder()

// Starts a reader that keeps every chunk it receives.
const startReader = (broadcast: EventBroadcast.EventBroadcast) =>
  Effect.gen(function*() {
    const chunks: Array<Uint8Array> = []
    const stream = yield* broadcast.reader
    yield* stream.pipe(
      Stream.runForEach((chunk) => Effect.sync(() => chunks.push(chunk))),
      Effect.forkScoped({ startImmediately: true })
    )
    return chunks
  })

const text = (chunks: ReadonlyArray<Uint8Array>) => chunks.map((c) => utf8.decode(c)).join("")

describe("EventBroadcast", () => {
  describe("reader", () => {
    it.effect("encodes each event once and hands the same bytes to every reader", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make()
        const broadcast = yield* EventBroadcast.make(bus)
        const readers = [yield* startReader(broadcast), yield* startReader(broadcast), yield* startReader(broadcast)]
        yield* settle
        assert.strictEqual(broadcast.readers(), 3)
        const published: Array<DiagnosticEvent.DiagnosticEvent> = []
        for (let round = 0; round < 5; round++) {
          for (let n = 0; n < 20; n++) published.push(bus.publishUnsafe(admitted(round * 20 + n)))
          yield* settle
        }

        assert.strictEqual(broadcast.encodedEvents(), 100, "once per event, not once per reader")
        const ready = "event: ready\ndata: {\"watermark\":0}\n\n"
        const expected = ready + published.map(EventBroadcast.frameOf).join("")
        for (const chunks of readers) assert.strictEqual(text(chunks), expected)
        // The readers share the very buffers.
        for (let i = 1; i < readers[0]!.length; i++) {
          assert.strictEqual(readers[1]![i], readers[0]![i])
          assert.strictEqual(readers[2]![i], readers[0]![i])
        }
        const frames = expected.split("\n\n").filter((f) => f.includes("event: session."))
        const decoded = yield* Effect.forEach(frames, (f) => DiagnosticEvent.decodeJson(f.split("data: ")[1]!))
        assert.deepStrictEqual(decoded.map((e) => e.seq), published.map((e) => e.seq))
      }))

    it.effect("encodes nothing while nobody listens; a later reader's ready frame names the last seq passed on", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make()
        const broadcast = yield* EventBroadcast.make(bus)
        for (let n = 0; n < 10; n++) bus.publishUnsafe(admitted(n))
        yield* settle
        assert.strictEqual(broadcast.encodedEvents(), 0)
        const chunks = yield* startReader(broadcast)
        const next = bus.publishUnsafe(admitted(10))
        yield* settle
        assert.strictEqual(text(chunks), "event: ready\ndata: {\"watermark\":10}\n\n" + EventBroadcast.frameOf(next))
        assert.strictEqual(broadcast.encodedEvents(), 1)
      }))
  })
})
