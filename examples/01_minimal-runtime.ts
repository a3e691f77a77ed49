/**
 * @title Minimal runtime
 *
 * The whole runtime in one layer, `SessionRuntime.layer()`: session lanes that run each session's turns
 * one at a time under its file write lock, activity markers that cannot leak, the watchdog, recovery,
 * the stability log and metrics. A turn is an Effect; its model and tool calls are markers that close
 * however the call ends. (An application imports from "effect-session-runtime" instead of ../src.)
 *
 *   npx node examples/01_minimal-runtime.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { ActivityTracker, SessionKey, SessionLanes, SessionRuntime } from "../src/index.ts"

const key = SessionKey.makeUnsafe("agent:main:telegram:direct:42")

// One turn: a model call and a tool call, each a marker that cannot leak.
const turn = Effect.gen(function*() {
  const reply = yield* ActivityTracker.model({ provider: "openai", model: "gpt-5" }, Effect.succeed("search"))
  return yield* ActivityTracker.tool({ name: reply }, Effect.succeed("3 results"))
})

const program = Effect.gen(function*() {
  const answer = yield* SessionLanes.run(key, turn) // serial per session, under the session write lock
  yield* Console.log(`turn finished: ${answer}`)
})

program.pipe(Effect.provide(SessionRuntime.layer()), NodeRuntime.runMain)
