import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schema, Stream } from "effect"
import { LanguageModel, Model, Tool, Toolkit } from "effect/ai"
import { TestClock } from "effect/testing"
import * as ScriptedLanguageModel from "../src/ScriptedLanguageModel.ts"

const echo: ScriptedLanguageModel.Script = (request) => {
  const last = request.prompt.content.at(-1)
  const text = last?.role === "user" ? last.content.flatMap((p) => p.type === "text" ? [p.text] : []).join(" ") : ""
  return ScriptedLanguageModel.reply({ text: `you said: ${text}`, every: "1 second" })
}

const Lookup = Toolkit.make(
  Tool.make("lookup", { parameters: Schema.Struct({ q: Schema.String }), success: Schema.String })
)

describe("ScriptedLanguageModel", () => {
  describe("reply", () => {
    it.effect("streams the text word by word, then the tool calls, then the finish part", () =>
      Effect.gen(function*() {
        const model = yield* LanguageModel.LanguageModel
        const parts = yield* Stream.runCollect(model.streamText({ prompt: "hello there" }))
        assert.deepStrictEqual(parts.map((p) => p.type), [
          "text-start",
          "text-delta",
          "text-delta",
          "text-delta",
          "text-delta",
          "text-end",
          "finish"
        ])
        const text = parts.flatMap((p) => p.type === "text-delta" ? [p.delta] : []).join("")
        assert.strictEqual(text, "you said: hello there")
      }).pipe(
        Effect.provide(ScriptedLanguageModel.layer(() => ScriptedLanguageModel.reply({ text: "you said: hello there" })))
      ))

    it.effect("pauses before each part by the Clock", () =>
      Effect.gen(function*() {
        const model = yield* LanguageModel.LanguageModel
        const fiber = yield* Effect.forkChild(Stream.runCollect(model.streamText({ prompt: "hi" })))
        for (let i = 0; i < 20; i++) yield* Effect.yieldNow
        // text-start, "you ", "said: ", "hi", text-end, finish: six parts, six seconds.
        yield* TestClock.adjust("5 seconds")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* Fiber.join(fiber)).length, 6)
      }).pipe(Effect.provide(ScriptedLanguageModel.layer(echo))))

    it.effect("names a tool call's finish reason tool-calls and gives each call an id", () =>
      Effect.gen(function*() {
        const model = yield* LanguageModel.LanguageModel
        const toolkit = yield* Lookup
        const response = yield* model.generateText({ prompt: "go", toolkit, disableToolCallResolution: true })
        assert.strictEqual(response.finishReason, "tool-calls")
        assert.deepStrictEqual(response.toolCalls.map((call) => [call.name, call.params]), [["lookup", { q: "x" }]])
        assert.isAbove(response.toolCalls[0]!.id.length, 0)
      }).pipe(
        Effect.provide(ScriptedLanguageModel.layer(() =>
          ScriptedLanguageModel.reply({ toolCalls: [{ name: "lookup", params: { q: "x" } }] })
        )),
        Effect.provide(Lookup.toLayer({ lookup: () => Effect.succeed("found") }))
      ))
  })

  describe("generateText", () => {
    it.effect("folds the streamed parts into one response", () =>
      Effect.gen(function*() {
        const model = yield* LanguageModel.LanguageModel
        const fiber = yield* Effect.forkChild(model.generateText({ prompt: "hello" }))
        yield* TestClock.adjust("10 seconds")
        const response = yield* Fiber.join(fiber)
        assert.strictEqual(response.text, "you said: hello")
        assert.strictEqual(response.finishReason, "stop")
      }).pipe(Effect.provide(ScriptedLanguageModel.layer(echo))))

    it.effect("answers generateObject with the text decoded by the schema", () =>
      Effect.gen(function*() {
        const model = yield* LanguageModel.LanguageModel
        const response = yield* model.generateObject({ prompt: "n?", schema: Schema.Struct({ n: Schema.Number }) })
        assert.deepStrictEqual(response.value, { n: 7 })
      }).pipe(Effect.provide(ScriptedLanguageModel.layer(() => ScriptedLanguageModel.reply({ text: "{\"n\": 7}" })))))
  })

  describe("layer", () => {
    it.effect("provides the model's names as a provider's model layer does", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual([yield* Model.ProviderName, yield* Model.ModelName], ["acme", "m1"])
      }).pipe(Effect.provide(ScriptedLanguageModel.layer(echo, { provider: "acme", model: "m1" }))))
  })
})
