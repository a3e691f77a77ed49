/**
 * @title Structured markers
 *
 * `tool(...)` and `model(...)` wrap an Effect in a marker that opens when it starts and is closed by a
 * finalizer with its outcome: success, failure, defect or interruption. Such a marker cannot leak. The
 * `MarkerLog` layer below extends the runtime with a subscriber that prints every marker event from the
 * `DiagnosticBus`.
 *
 *   npx node examples/02_structured-markers.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer, Stream } from "effect"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import { DiagnosticBus } from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

/** A layer that prints the marker events of the bus for as long as the runtime runs. */
const MarkerLog = Layer.effectDiscard(Effect.gen(function*() {
  const bus = yield* DiagnosticBus
  const events = yield* bus.subscribe({ name: "marker-log" })
  yield* events.pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "session.activity.marker_opened":
          return Console.log(`  opened  ${event.kind} ${event.name}`)
        case "session.activity.marker_closed":
          return Console.log(`  closed  ${event.kind} ${event.markerId}: ${event.outcome} after ${event.durationMs}ms`)
        case "session.activity.evicted":
          return Console.log(`  evicted ${event.evictedTools} tool(s): ${event.reason}`)
        default:
          return Effect.void
      }
    }),
    Effect.forkScoped({ startImmediately: true })
  )
}))

const Runtime = MarkerLog.pipe(Layer.provideMerge(SessionRuntime.layer({ lock: { backend: "memory" } })))

const program = Effect.gen(function*() {
  const tracker = yield* ActivityTracker
  const session = SessionKey.makeUnsafe("agent:main:markers")
  const turn = Effect.gen(function*() {
    yield* tracker.model({ provider: "anthropic", model: "claude" }, Effect.sleep("20 millis"))
    yield* tracker.tool({ name: "search" }, Effect.fail("no results")).pipe(Effect.ignore)
    yield* tracker.tool({ name: "parse" }, Effect.die("bug in the parser")).pipe(Effect.catchDefect(() => Effect.void))
    yield* tracker.tool({ name: "fetch" }, Effect.never).pipe(Effect.timeoutOption("30 millis"))
    return "done"
  })
  yield* Console.log("a turn with four calls: success, failure, defect, timeout")
  yield* SessionLanes.run(session, turn)
  yield* Effect.sleep("20 millis") // let the log catch up with the bus
  const left = yield* tracker.snapshot(session)
  yield* Console.log(`open markers after the turn: ${left.markers.length} (each one was closed with its outcome)`)
})

program.pipe(Effect.provide(Runtime), NodeRuntime.runMain)
