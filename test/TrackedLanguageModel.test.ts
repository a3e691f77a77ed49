import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Fiber, Layer, Schema, Stream, Tracer } from "effect"
import { Chat, LanguageModel, Tool, Toolkit } from "effect/ai"
import * as Response from "effect/ai/Response"
import { TestClock } from "effect/testing"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import * as NodeEventLoopMonitor from "../src/NodeEventLoopMonitor.ts"
import * as Recovery from "../src/Recovery.ts"
import * as ScriptedLanguageModel from "../src/ScriptedLanguageModel.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as SpanAttributes from "../src/SpanAttributes.ts"
import * as TrackedLanguageModel from "../src/TrackedLanguageModel.ts"
import * as Watchdog from "../src/Watchdog.ts"
import { collectEvents } from "./utils/events.ts"
import { coreLayer } from "./utils/runtime.ts"

const key = SessionKey.makeUnsafe("agent:main:ai:1")

const Lookup = Tool.make("lookup", {
  parameters: Schema.Struct({ q: Schema.String }),
  success: Schema.String
})
const Broken = Tool.make("broken", {
  parameters: Schema.Struct({ q: Schema.String }),
  success: Schema.String,
  failure: Schema.String
})
const BrokenReturned = Tool.make("broken_returned", {
  parameters: Schema.Struct({ q: Schema.String }),
  success: Schema.String,
  failure: Schema.String,
  failureMode: "return"
})
const Hangs = Tool.make("hangs", {
  parameters: Schema.Struct({ q: Schema.String }),
  success: Schema.String
})
const Reports = Tool.make("reports", {
  parameters: Schema.Struct({ q: Schema.String }),
  success: Schema.String
})
const Tools = Toolkit.make(Lookup, Broken, BrokenReturned, Hangs, Reports)

const ToolHandlers = Tools.toLayer({
  lookup: ({ q }) => Effect.succeed(`found ${q}`),
  broken: () => Effect.fail("the tool broke"),
  broken_returned: () => Effect.fail("the tool broke, said so"),
  hangs: () => Effect.never,
  // A long tool that reports a preliminary result every 10 s, for 15 min.
  reports: (_, context) =>
    Effect.gen(function*() {
      for (let i = 0; i < 90; i++) {
        yield* Effect.sleep("10 seconds")
        yield* context.preliminary(`${i} pages read`)
      }
      return "read everything"
    })
})

/** A model that calls `tool` once (call id `call-1`), then answers with text. */
const callsTool = (tool: string): ScriptedLanguageModel.Script => (request) => {
  const last = request.prompt.content.at(-1)
  return last?.role === "tool"
    ? ScriptedLanguageModel.reply({ text: "all done" })
    : ScriptedLanguageModel.reply({
      text: "let me look",
      toolCalls: [{ name: tool, params: { q: "x" }, id: "call-1" }]
    })
}

/** A model whose stream sends a part every `every`, `parts` times, then stops sending and never ends. */
const streamsThenStops = (parts: number, every: Duration.Input): ScriptedLanguageModel.Script => () =>
  Stream.concat(
    Stream.take(ScriptedLanguageModel.reply({ text: "word ".repeat(parts), every }), parts + 1),
    Stream.never
  )

/** A model that never stops streaming: a word every 10 s. */
const streamsForever: ScriptedLanguageModel.Script = () =>
  Stream.concat(
    Stream.make<[Response.StreamPartEncoded]>({ type: "text-start", id: "t" }),
    Stream.forever(ScriptedLanguageModel.reply({ text: "more", every: "10 seconds" }).pipe(
      Stream.filter((part) => part.type === "text-delta")
    ))
  )

const modelLayer = (script: ScriptedLanguageModel.Script) =>
  ScriptedLanguageModel.layer(script, { provider: "acme", model: "m1" }).pipe(TrackedLanguageModel.track())

const testLayer = (script: ScriptedLanguageModel.Script) =>
  Layer.mergeAll(modelLayer(script), ToolHandlers).pipe(Layer.provideMerge(coreLayer()))

const watchdogLayer = (script: ScriptedLanguageModel.Script) =>
  Layer.mergeAll(modelLayer(script), ToolHandlers).pipe(
    Layer.provideMerge(Watchdog.layer()),
    Layer.provideMerge(Recovery.layer()),
    Layer.provideMerge(coreLayer()),
    Layer.provideMerge(NodeEventLoopMonitor.layerTest)
  )

const settle = Effect.gen(function*() {
  for (let i = 0; i < 100; i++) yield* Effect.yieldNow
})

/** Advances the clock in heartbeat-sized steps, letting every tick and recovery run. */
const advance = (seconds: number, step = 10) =>
  Effect.gen(function*() {
    for (let t = 0; t < seconds; t += step) {
      yield* TestClock.adjust(`${Math.min(step, seconds - t)} seconds`)
      yield* settle
    }
  })

/** Markers opened and closed, in order, as `open kind name` / `close kind outcome`. */
const markerLog = (events: Effect.Success<typeof collectEvents>) =>
  events.all().flatMap((e) =>
    e._tag === "session.activity.marker_opened"
      ? [`open ${e.kind} ${e.name}`]
      : e._tag === "session.activity.marker_closed"
      ? [`close ${e.kind} ${e.outcome}`]
      : []
  )

const askAgent = (tool: string) =>
  Effect.gen(function*() {
    const chat = yield* Chat.empty
    return yield* chat.generateText({ prompt: `use ${tool}`, toolkit: Tools })
  })

describe("TrackedLanguageModel", () => {
  describe("generateText", () => {
    it.effect("is one model marker named provider/model inside a turn, closed when the call returns", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const model = yield* LanguageModel.LanguageModel
        const response = yield* tracker.run(key, model.generateText({ prompt: "hello" }))
        assert.strictEqual(response.text, "all done")
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open model_call acme/m1", "close model_call success"])
        assert.strictEqual((yield* tracker.stats).markers, 0)
      }).pipe(Effect.provide(testLayer(() => ScriptedLanguageModel.reply({ text: "all done" })))))

    it.effect("outside a turn opens no marker", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const model = yield* LanguageModel.LanguageModel
        const response = yield* model.generateText({ prompt: "hello" })
        assert.strictEqual(response.text, "all done")
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [])
      }).pipe(Effect.provide(testLayer(() => ScriptedLanguageModel.reply({ text: "all done" })))))

    it.effect("runs each tool call the model makes as a tool marker with its name and call id, inside the model call", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const spans: Array<{ name: string; attributes: Map<string, unknown> }> = []
        const tracer = Tracer.make({
          span(options) {
            const span = new Tracer.NativeSpan(options)
            spans.push({ name: options.name, attributes: span.attributes })
            return span
          }
        })
        const response = yield* tracker.run(key, askAgent("lookup")).pipe(
          Effect.withTracer(tracer),
          Effect.provide(SpanAttributes.layerPolicy({ includeCallIds: true }))
        )
        assert.deepStrictEqual(response.toolResults.map((r) => [r.name, r.result]), [["lookup", "found x"]])
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [
          "open model_call acme/m1",
          "open tool_call lookup",
          "close tool_call success",
          "close model_call success"
        ])
        const toolSpan = spans.find((s) => s.name === "execute_tool lookup")
        assert.strictEqual(toolSpan?.attributes.get("gen_ai.tool.call.id"), "call-1")
      }).pipe(Effect.provide(testLayer(callsTool("lookup")))))

    it.effect("closes a tool marker as a failure when the tool fails", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const error = yield* Effect.flip(tracker.run(key, askAgent("broken")))
        assert.strictEqual(error, "the tool broke")
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [
          "open model_call acme/m1",
          "open tool_call broken",
          "close tool_call failure",
          "close model_call failure"
        ])
      }).pipe(Effect.provide(testLayer(callsTool("broken")))))

    it.effect("closes a tool marker as a failure when a tool returns its failure to the model, and the call goes on", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const response = yield* tracker.run(key, askAgent("broken_returned"))
        assert.deepStrictEqual(response.toolResults.map((r) => [r.name, r.isFailure]), [["broken_returned", true]])
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [
          "open model_call acme/m1",
          "open tool_call broken_returned",
          "close tool_call failure",
          "close model_call success"
        ])
      }).pipe(Effect.provide(testLayer(callsTool("broken_returned")))))

    it.effect("generateObject is a model marker too", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const model = yield* LanguageModel.LanguageModel
        const response = yield* tracker.run(
          key,
          model.generateObject({ prompt: "answer", schema: Schema.Struct({ answer: Schema.Number }) })
        )
        assert.deepStrictEqual(response.value, { answer: 42 })
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open model_call acme/m1", "close model_call success"])
      }).pipe(Effect.provide(testLayer(() => ScriptedLanguageModel.reply({ text: "{\"answer\": 42}" })))))
  })

  describe("streamText", () => {
    it.effect("is a model marker open while the stream runs, with each chunk as progress", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const model = yield* LanguageModel.LanguageModel
        const fiber = yield* tracker.run(key, Stream.runCollect(model.streamText({ prompt: "hello" }))).pipe(
          Effect.forkChild
        )
        yield* settle
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open model_call acme/m1"])
        yield* TestClock.adjust("10 seconds")
        const parts = yield* Fiber.join(fiber)
        assert.strictEqual(parts.filter((p) => p.type === "text-delta").map((p) => p.delta).join(""), "all done")
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open model_call acme/m1", "close model_call success"])
        const progress = events.ofType("session.activity.progress").map((e) => e.reason)
        // text-start, two deltas, text-end, finish: each arrives on its own after a pause.
        assert.deepStrictEqual(progress, Array(5).fill("model_stream"))
      }).pipe(Effect.provide(testLayer(() => ScriptedLanguageModel.reply({ text: "all done", every: "1 second" })))))

    it.effect("runs the tools of a streamed response as tool markers inside the model call", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const parts = yield* tracker.run(
          key,
          Effect.gen(function*() {
            const chat = yield* Chat.empty
            return yield* Stream.runCollect(chat.streamText({ prompt: "use lookup", toolkit: Tools }))
          })
        )
        const results = parts.flatMap((p) => p.type === "tool-result" ? [p.result] : [])
        assert.deepStrictEqual(results, ["found x"])
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [
          "open model_call acme/m1",
          "open tool_call lookup",
          "close tool_call success",
          "close model_call success"
        ])
      }).pipe(Effect.provide(testLayer(callsTool("lookup")))))
  })

  describe("under the watchdog (warn 2 min, abort 6 min)", () => {
    it.effect("a tool hung under a model call is blocked_tool_call and aborted at the threshold; nothing stays open", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const hung = yield* lanes.submit(key, askAgent("hangs"))
        const next = yield* lanes.submit(key, Effect.succeed("next turn ran"))
        yield* settle
        yield* advance(350)
        yield* events.settle
        const stalled = events.ofType("session.stalled")
        assert.isAbove(stalled.length, 0)
        assert.isTrue(stalled.every((e) => e.classification === "blocked_tool_call"))
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [], "not before the threshold")
        yield* advance(20)
        assert.strictEqual(yield* next.result, "next turn ran")
        const error = yield* Effect.flip(hung.result)
        assert.isTrue(
          typeof error === "object" && error._tag === "TurnInterrupted" && error.reason === "recovery_abort"
        )
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.recovery.completed").map((c) => [c.status, c.action]), [[
          "aborted",
          "abort_run"
        ]])
        assert.deepStrictEqual(markerLog(events), [
          "open model_call acme/m1",
          "open tool_call hangs",
          "close tool_call interrupted",
          "close model_call interrupted"
        ])
        assert.deepStrictEqual(events.ofType("session.activity.evicted"), [])
        const stats = yield* tracker.stats
        assert.deepStrictEqual([stats.markers, stats.owners], [0, 0])
      }).pipe(Effect.provide(watchdogLayer(callsTool("hangs")))))

    it.effect("a stream that stops sending is stalled (active_work_without_progress) and aborted at the threshold", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const model = yield* LanguageModel.LanguageModel
        const turn = yield* lanes.submit(key, Stream.runDrain(model.streamText({ prompt: "hello" })))
        yield* settle
        yield* advance(350)
        yield* events.settle
        const stalled = events.ofType("session.stalled")
        assert.isAbove(stalled.length, 0)
        assert.isTrue(stalled.every((e) => e.reason === "active_work_without_progress"))
        // The last part arrived at 40 s: silent for 310 s, below the 360 s threshold.
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [])
        // Due at 400 s, taken on the first heartbeat (every 30 s) after it.
        yield* advance(90)
        const error = yield* Effect.flip(turn.result)
        assert.strictEqual(error._tag === "TurnInterrupted" && error.reason, "recovery_abort")
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open model_call acme/m1", "close model_call interrupted"])
      }).pipe(Effect.provide(watchdogLayer(streamsThenStops(3, "10 seconds")))))

    it.effect("a stream that keeps sending is long_running and never aborted", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const model = yield* LanguageModel.LanguageModel
        yield* lanes.submit(key, Stream.runDrain(model.streamText({ prompt: "hello" })))
        yield* settle
        yield* advance(900, 30)
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.stalled"), [])
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [])
        assert.isAbove(events.ofType("session.long_running").length, 0)
        assert.deepStrictEqual(markerLog(events), ["open model_call acme/m1"])
      }).pipe(Effect.provide(watchdogLayer(streamsForever))))

    it.effect("a long tool that reports preliminary results is long_running, never blocked", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const turn = yield* lanes.submit(key, askAgent("reports"))
        yield* settle
        yield* advance(910)
        const response = yield* turn.result
        assert.deepStrictEqual(response.toolResults.map((r) => r.result), ["read everything"])
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.stalled"), [])
        assert.deepStrictEqual(events.ofType("session.recovery.requested"), [])
        assert.isAbove(events.ofType("session.long_running").length, 0)
        assert.isTrue(events.ofType("session.activity.progress").some((e) => e.reason === "tool_output"))
      }).pipe(Effect.provide(watchdogLayer(callsTool("reports")))))
  })

  describe("an interrupted turn", () => {
    it.effect("admission interrupt stops the model stream and the running tool, and nothing stays open", () =>
      Effect.gen(function*() {
        const events = yield* collectEvents
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const first = yield* lanes.submit(
          key,
          Effect.gen(function*() {
            const chat = yield* Chat.empty
            return yield* Stream.runDrain(chat.streamText({ prompt: "use hangs", toolkit: Tools }))
          })
        )
        yield* settle
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open model_call acme/m1", "open tool_call hangs"])
        const second = yield* lanes.submit(key, Effect.succeed("took over"), { admission: "interrupt" })
        assert.strictEqual(yield* second.result, "took over")
        const error = yield* Effect.flip(first.result)
        assert.strictEqual(typeof error === "object" && error._tag, "TurnInterrupted")
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [
          "open model_call acme/m1",
          "open tool_call hangs",
          "close tool_call interrupted",
          "close model_call interrupted"
        ])
        const stats = yield* tracker.stats
        assert.deepStrictEqual([stats.markers, stats.owners], [0, 0])
      }).pipe(Effect.provide(testLayer(callsTool("hangs")))))
  })
})
