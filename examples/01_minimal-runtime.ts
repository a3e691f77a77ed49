/**
 * @title Minimal runtime
 *
 * The whole runtime in one layer, `SessionRuntime.layer()`: session lanes that run each session's turns
 * one at a time under its file write lock, activity markers that cannot leak, the watchdog, recovery,
 * the stability log and metrics. A turn is an Effect; its model and tool calls are tracked by markers
 * that close however the call ends.
 *
 *   node examples/01_minimal-runtime.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

const program = Effect.gen(function*() {
  const tracker = yield* ActivityTracker
  const turn = Effect.gen(function*() {
    const plan = yield* tracker.model({ provider: "openai", model: "gpt-4o" }, Effect.succeed("search the docs"))
    return yield* tracker.tool({ name: "search" }, Effect.succeed(`${plan}: 3 results`))
  })
  const session = SessionKey.makeUnsafe("agent:main:telegram:direct:42")
  const reply = yield* SessionLanes.run(session, turn) // queued per session, run under its write lock
  yield* Console.log(`reply: ${reply}`)
})

program.pipe(Effect.provide(SessionRuntime.layer()), NodeRuntime.runMain)
