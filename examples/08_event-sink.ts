/**
 * @title A custom event sink: JSON lines to a file
 *
 * Everything the runtime does is a typed event on the `DiagnosticBus`; a sink is a layer that subscribes
 * and writes them somewhere. `JsonLinesSink.layer(path)` appends every event as one JSON line
 * (`DiagnosticEvent.encodeJson`, which `DiagnosticEvent.decodeJson` reads back), in batches and without
 * blocking: a subscriber that falls behind loses its oldest events and the bus says so
 * (`diagnostic.events.dropped`) rather than slowing anyone down. When the layer closes, the sink writes
 * what it has already received before it stops. Session keys are written as their hash unless
 * `keepSessionKeys` is set: event files tend to travel.
 *
 *   npx node examples/08_event-sink.ts [--short]
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Context, Deferred, Effect, Layer, Stream } from "effect"
import { appendFile, mkdtemp, readFile, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import { DiagnosticBus } from "../src/DiagnosticBus.ts"
import * as DiagnosticEvent from "../src/DiagnosticEvent.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

const short = process.env.EXAMPLE_SHORT === "1" || process.argv.includes("--short")

/** Appends every diagnostic event to a file as JSON lines. */
class JsonLinesSink extends Context.Service<JsonLinesSink, {
  /** Lines written so far. */
  readonly written: () => number
}>()("example/JsonLinesSink") {
  static readonly layer = (path: string, options: { readonly keepSessionKeys?: boolean } = {}) =>
    Layer.effect(
      JsonLinesSink,
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus
        const events = yield* bus.subscribe({ name: "json-lines-sink" })
        const line = (event: DiagnosticEvent.DiagnosticEvent) => {
          if (options.keepSessionKeys === true || !("sessionKey" in event)) return DiagnosticEvent.encodeJson(event)
          const { seq, ts, ...fields } = event
          const hashed = { ...fields, sessionKey: SessionKey.hash(event.sessionKey) } as DiagnosticEvent.Draft
          return DiagnosticEvent.encodeJson(DiagnosticEvent.fromDraft(hashed, seq, ts))
        }
        let written = 0
        let lastSeq = 0
        const caughtUp = yield* Deferred.make<void>()
        let target = Number.POSITIVE_INFINITY
        yield* events.pipe(
          Stream.runForEachArray((batch) =>
            Effect.promise(() => appendFile(path, batch.map((event) => `${line(event)}\n`).join(""))).pipe(
              Effect.andThen(Effect.suspend(() => {
                written += batch.length
                lastSeq = batch[batch.length - 1]!.seq
                return lastSeq >= target ? Deferred.succeed(caughtUp, undefined) : Effect.void
              }))
            )
          ),
          Effect.tapCause((cause) => Effect.logError("the JSON lines sink stopped", cause)),
          Effect.forkScoped({ startImmediately: true })
        )
        // On close: write what was published before the close, then stop (bounded).
        yield* Effect.addFinalizer(() =>
          Effect.gen(function*() {
            target = yield* bus.watermark
            if (lastSeq >= target) return
            yield* Deferred.await(caughtUp).pipe(Effect.timeoutOption("2 seconds"))
          })
        )
        return JsonLinesSink.of({ written: () => written })
      })
    )
}

const program = (path: string) =>
  Effect.gen(function*() {
    const lanes = yield* SessionLanes
    const tracker = yield* ActivityTracker
    const sessions = short ? 3 : 20
    yield* Effect.forEach(Array.from({ length: sessions }, (_, i) => SessionKey.makeUnsafe(`agent:main:sink:${i}`)), (key) =>
      Effect.flatMap(
        lanes.submit(key, tracker.tool({ name: "lookup" }, Effect.sleep("5 millis"))),
        (submission) => submission.result
      ), { concurrency: "unbounded", discard: true })
    yield* Console.log(`${sessions} turns done; the sink writes to ${path}`)
  }).pipe(Effect.provide(JsonLinesSink.layer(path).pipe(Layer.provideMerge(SessionRuntime.layer({ lock: { backend: "memory" } })))))

const main = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.promise(() => mkdtemp(join(tmpdir(), "esr-example-sink-"))),
    (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
  )
  const path = join(dir, "events.jsonl")
  yield* program(path)
  // The runtime is closed now (its lanes closed too): read the file back with the event schema.
  const lines = (yield* Effect.promise(() => readFile(path, "utf8"))).trim().split("\n")
  const decoded = yield* Effect.forEach(lines, (text) => DiagnosticEvent.decodeJson(text))
  const byType = new Map<string, number>()
  for (const event of decoded) byType.set(event._tag, (byType.get(event._tag) ?? 0) + 1)
  yield* Console.log(`${decoded.length} events read back and decoded, by type:`)
  for (const [type, count] of [...byType].sort((a, b) => b[1] - a[1])) yield* Console.log(`  ${String(count).padStart(4)}  ${type}`)
  yield* Console.log(`first line: ${lines[0]}`)
}).pipe(Effect.scoped)

NodeRuntime.runMain(main)
