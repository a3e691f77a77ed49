/**
 * The demo's effect/ai agent on its scripted model, without the HTTP server:
 * what each behaviour does to the tracker, and what an aborted turn leaves in
 * the conversation.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as DemoModel from "../examples/demo/DemoModel.ts"
import * as SimulatedAgent from "../examples/demo/SimulatedAgent.ts"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import * as ScriptedLanguageModel from "../src/ScriptedLanguageModel.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import { collectEvents } from "./utils/events.ts"
import { coreLayer } from "./utils/runtime.ts"

const key = SessionKey.makeUnsafe("agent:demo:agent:1")

const agentLayer = (options?: SimulatedAgent.Options) =>
  SimulatedAgent.layer(options).pipe(Layer.provideMerge(coreLayer()))

const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

/** Submits one message and lets the clock run until its turn is done (or `seconds` passed). */
const send = (
  text: string,
  behaviour: DemoModel.Behaviour,
  options: { readonly seconds?: number; readonly admission?: "enqueue" | "interrupt" } = {}
) =>
  Effect.gen(function*() {
    const seconds = options.seconds ?? 10
    const agent = yield* SimulatedAgent.SimulatedAgent
    const lanes = yield* SessionLanes
    const submission = yield* lanes.submit(key, agent.reply({ text, behaviour }), { admission: options.admission })
    const fiber = yield* Effect.forkChild(Effect.exit(submission.result))
    for (let ms = 0; ms < seconds * 1000 && fiber.pollUnsafe() === undefined; ms += 10) {
      yield* settle
      yield* TestClock.adjust("10 millis")
    }
    yield* settle
    return { fiber, submission }
  })

const markerLog = (events: Effect.Success<typeof collectEvents>) =>
  events.all().flatMap((e) =>
    e._tag === "session.activity.marker_opened"
      ? [`open ${e.source} ${e.name}`]
      : e._tag === "session.activity.marker_closed"
      ? [`close ${e.kind} ${e.outcome}`]
      : []
  )

describe("SimulatedAgent", () => {
  it.effect("answers a normal message with a model call, the search tool it chose, and a second model call", () =>
    Effect.gen(function*() {
      const events = yield* collectEvents
      const { fiber } = yield* send("status?", "normal")
      const exit = yield* Fiber.join(fiber)
      assert.deepStrictEqual(exit._tag === "Success" && exit.value, "(normal) answered \"status?\"")
      yield* events.settle
      assert.deepStrictEqual(markerLog(events), [
        "open structured scripted/demo-agent",
        "open structured search",
        "close tool_call success",
        "close model_call success",
        "open structured scripted/demo-agent",
        "close model_call success"
      ])
    }).pipe(Effect.provide(agentLayer())))

  it.effect("crashes on native_exec, and its native runtime reports a tool only after the run ended", () =>
    Effect.gen(function*() {
      const events = yield* collectEvents
      const { fiber } = yield* send("build", "crash")
      const exit = yield* Fiber.join(fiber)
      assert.isTrue(exit._tag === "Failure")
      yield* TestClock.adjust("1 second")
      yield* settle
      yield* events.settle
      const tags = events.all().flatMap((e) =>
        e._tag === "session.activity.run_ended" ? ["run_ended " + e.outcome]
        : e._tag === "session.activity.marker_opened" && e.source === "reported" ? ["reported " + e.name]
        : []
      )
      assert.deepStrictEqual(tags, ["run_ended defect", "reported native.exec"])
      const snapshot = yield* (yield* ActivityTracker).snapshot(key)
      assert.deepStrictEqual(snapshot.markers.map((m) => [m.name, m.owned]), [["native.exec", false]])
    }).pipe(Effect.provide(agentLayer())))

  it.effect("reads for a while on slow, each page read being progress", () =>
    Effect.gen(function*() {
      const events = yield* collectEvents
      const { fiber } = yield* send("read it all", "slow")
      const exit = yield* Fiber.join(fiber)
      assert.isTrue(exit._tag === "Success")
      yield* events.settle
      const progress = events.ofType("session.activity.progress").filter((e) => e.reason === "tool_output")
      assert.strictEqual(progress.length, 12, "3 s of reading, a page every 250 ms")
    }).pipe(Effect.provide(agentLayer({ slowTool: "3 seconds" }))))

  it.effect("a turn that does not succeed leaves the conversation as it was", () => {
    // The size of the prompt of each model call, in order.
    const prompts: Array<number> = []
    const recording = ScriptedLanguageModel.layer((request) => {
      prompts.push(request.prompt.content.length)
      return DemoModel.script(request)
    })
    return Effect.gen(function*() {
      const hung = yield* send("migrate", "hang", { seconds: 1 })
      assert.isUndefined(hung.fiber.pollUnsafe(), "the shell tool never returns")
      const next = yield* send("and then?", "normal", { admission: "interrupt" })
      const aborted = yield* Fiber.join(hung.fiber)
      assert.isTrue(aborted._tag === "Failure")
      assert.isTrue((yield* Fiber.join(next.fiber))._tag === "Success")
      // The hung turn's call saw its message; the next turn's first call saw its own message only (no
      // dangling shell call), its second one that message, the model's tool call and the tool's result.
      assert.deepStrictEqual(prompts, [1, 1, 3])
    }).pipe(Effect.provide(agentLayer({ model: recording })))
  })
})
