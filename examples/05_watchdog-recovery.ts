/**
 * @title Watchdog and recovery with tuned thresholds
 *
 * The watchdog's heartbeat, warn and abort thresholds and recovery's settle time are configuration of
 * `SessionRuntime.layer`. With a 250 ms heartbeat and a 1 s warn threshold, two wedged sessions are handled on
 * their own while the program only watches the bus:
 *
 * - an idle session whose queue waits behind a marker an external runtime left open (no owner) is stuck
 *   and recoverable: recovery releases the lane and evicts the marker; the queued turn runs;
 * - a tool that never returns under a live owner is a blocked tool call: reported on every tick, and
 *   actively aborted once it reaches the abort threshold; the turn queued behind it runs.
 *
 *   npx node examples/05_watchdog-recovery.ts [--short]
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer, Stream } from "effect"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import { DiagnosticBus } from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

const short = process.env.EXAMPLE_SHORT === "1" || process.argv.includes("--short")

const Runtime = SessionRuntime.layer({
  lock: { backend: "memory" },
  watchdog: { interval: "250 millis", warn: "1 second", abort: short ? "2 seconds" : "5 seconds" },
  recovery: { settle: "1 second" }
})

/** Prints what the watchdog and recovery say, as they say it. */
const Narrator = Layer.effectDiscard(Effect.gen(function*() {
  const bus = yield* DiagnosticBus
  const events = yield* bus.subscribe({ name: "narrator" })
  const said = new Set<string>()
  yield* events.pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "session.stuck":
        case "session.stalled": {
          // Stalled sessions are reported on every tick: say it once.
          const id = `${event.sessionKey}/${event.reason}`
          if (said.has(id)) return Effect.void
          said.add(id)
          return Console.log(`  ${event._tag} ${event.sessionKey}: ${event.classification}\n    ${event.evidence}`)
        }
        case "session.recovery.completed":
          return Console.log(`  recovery ${event.status} ${event.sessionKey}: ${event.action}, ${event.reason}`)
        case "session.lane.turn_completed":
          return Console.log(`  turn ${event.turnId} of ${event.sessionKey}: ${event.outcome} after ${event.durationMs}ms`)
        default:
          return Effect.void
      }
    }),
    Effect.forkScoped({ startImmediately: true })
  )
}))

const program = Effect.gen(function*() {
  const lanes = yield* SessionLanes
  const tracker = yield* ActivityTracker
  const orphaned = SessionKey.makeUnsafe("agent:main:orphaned")
  const hung = SessionKey.makeUnsafe("agent:main:hung")

  // An external runtime reports a tool for a run that no owner holds, and dies.
  yield* tracker.report({
    type: "started",
    kind: "tool_call",
    sessionKey: orphaned,
    runId: "external-run",
    callId: "exec-1",
    name: "native.exec",
    seq: yield* tracker.nextSeq
  })
  const afterOrphan = yield* lanes.submit(orphaned, Effect.succeed("answered after recovery"))

  const hang = yield* lanes.submit(hung, tracker.tool({ name: "shell" }, Effect.never), { turnId: "hung-turn" })
  const afterHang = yield* lanes.submit(hung, Effect.succeed("answered after the abort"))

  yield* Console.log("two sessions wedged; the watchdog ticks every 250ms (warn 1s, abort " + (short ? "2s" : "5s") + "):")
  const replies = yield* Effect.all([afterOrphan.result, afterHang.result], { concurrency: 2 })
  const aborted = yield* Effect.flip(hang.result)
  yield* Effect.sleep("50 millis") // let the narrator catch up
  yield* Console.log(`the hung turn failed with ${aborted._tag}: ${aborted.message}`)
  yield* Console.log(`replies: ${replies.join(" / ")}`)
})

program.pipe(Effect.provide(Narrator.pipe(Layer.provideMerge(Runtime))), NodeRuntime.runMain)
