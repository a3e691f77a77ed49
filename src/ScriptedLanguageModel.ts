/**
 * A `LanguageModel` that plays a script instead of calling a provider: no
 * network, no key, the same answer for the same prompt. It is what the demo
 * agent, the examples and the tests run against, and what an agent server's
 * own tests can use to script a conversation (a model that calls a tool, a
 * stream that stops half way, one that never ends).
 *
 * A {@link Script} maps each request (the prompt and the tools the caller
 * offers) to a stream of encoded response parts, exactly what a provider's
 * streaming endpoint yields; `generateText` and `generateObject` get the same
 * parts folded into a whole response. {@link reply} builds the usual stream: text
 * streamed word by word, then tool calls, then a finish part, optionally with a
 * pause (from `Clock`) before each part.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import type * as AiError from "effect/ai/AiError"
import { IdGenerator } from "effect/ai/IdGenerator"
import * as LanguageModel from "effect/ai/LanguageModel"
import * as Model from "effect/ai/Model"
import type * as Response from "effect/ai/Response"

/**
 * What the model answers to one request, as the encoded parts a provider
 * would stream. `IdGenerator` is the one the language model uses (ids of
 * tool calls and text parts).
 *
 * @category models
 * @since 0.1.0
 */
export type Script = (
  request: LanguageModel.ProviderOptions
) => Stream.Stream<Response.StreamPartEncoded, AiError.AiError, IdGenerator>

/**
 * One scripted reply.
 *
 * @category models
 * @since 0.1.0
 */
export interface Reply {
  /** Text the model answers with, streamed word by word. */
  readonly text?: string | undefined
  /** Tools the model calls, after its text. */
  readonly toolCalls?: ReadonlyArray<ToolCall> | undefined
  /**
   * Pause before each streamed part (time from `Clock`, so `TestClock` drives it).
   * @default 0
   */
  readonly every?: Duration.Input | undefined
}

/**
 * A tool call in a scripted reply.
 *
 * @category models
 * @since 0.1.0
 */
export interface ToolCall {
  readonly name: string
  readonly params: unknown
  /**
   * The call id.
   * @default a fresh id from the model's `IdGenerator`
   */
  readonly id?: string | undefined
}

const finishPart = (reason: "stop" | "tool-calls"): Response.StreamPartEncoded => ({
  type: "finish",
  reason,
  usage: { inputTokens: {}, outputTokens: {} }
})

/**
 * The stream of parts of one reply: `text-start`, one `text-delta` per word,
 * `text-end`, the tool calls, and `finish` (`tool-calls` when it calls tools,
 * otherwise `stop`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const reply = (options: Reply): Stream.Stream<Response.StreamPartEncoded, never, IdGenerator> => {
  const parts = Stream.unwrap(Effect.gen(function*() {
    const ids = yield* IdGenerator
    const out: Array<Response.StreamPartEncoded> = []
    if (options.text !== undefined && options.text.length > 0) {
      const id = yield* ids.generateId()
      out.push({ type: "text-start", id })
      for (const word of options.text.match(/\S+\s*/g) ?? [options.text]) {
        out.push({ type: "text-delta", id, delta: word })
      }
      out.push({ type: "text-end", id })
    }
    const calls = options.toolCalls ?? []
    for (const call of calls) {
      out.push({ type: "tool-call", id: call.id ?? (yield* ids.generateId()), name: call.name, params: call.params })
    }
    out.push(finishPart(calls.length > 0 ? "tool-calls" : "stop"))
    return Stream.fromArray(out)
  }))
  const every = Duration.fromInputUnsafe(options.every ?? 0)
  return Duration.isZero(every) ? parts : Stream.mapEffect(parts, (part) => Effect.as(Effect.sleep(every), part))
}

/**
 * The parts of a whole (non-streamed) response: the text and reasoning deltas
 * of each part joined into one part, the other parts as they came.
 */
const fold = (parts: ReadonlyArray<Response.StreamPartEncoded>): Array<Response.PartEncoded> => {
  const out: Array<Response.PartEncoded> = []
  const open = new Map<string, { readonly type: "text" | "reasoning"; text: string }>()
  const close = (key: string) => {
    const entry = open.get(key)
    if (entry === undefined) return
    open.delete(key)
    out.push({ type: entry.type, text: entry.text })
  }
  for (const part of parts) {
    switch (part.type) {
      case "text-start":
      case "reasoning-start":
      case "text-delta":
      case "reasoning-delta":
      case "text-end":
      case "reasoning-end": {
        const type = part.type.startsWith("text") ? "text" : "reasoning"
        const key = `${type}:${part.id}`
        if (part.type === "text-end" || part.type === "reasoning-end") close(key)
        else {
          const entry = open.get(key) ?? { type, text: "" }
          open.set(key, entry)
          if (part.type === "text-delta" || part.type === "reasoning-delta") entry.text += part.delta
        }
        break
      }
      case "tool-params-start":
      case "tool-params-delta":
      case "tool-params-end":
      case "error":
        break
      default:
        out.push(part)
    }
  }
  for (const key of Array.from(open.keys())) close(key)
  return out
}

/**
 * A `LanguageModel` playing `script`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (script: Script): Effect.Effect<LanguageModel.LanguageModel> =>
  LanguageModel.make({
    streamText: script,
    generateText: (request) => Effect.map(Stream.runCollect(script(request)), fold)
  })

/**
 * The scripted model as a layer, with its names (`Model.ProviderName`,
 * `Model.ModelName`) as a provider's model layer has them.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  script: Script,
  options?: {
    /** @default "scripted" */
    readonly provider?: string | undefined
    /** @default "script" */
    readonly model?: string | undefined
  }
): Layer.Layer<LanguageModel.LanguageModel | Model.ProviderName | Model.ModelName> =>
  Model.make(
    options?.provider ?? "scripted",
    options?.model ?? "script",
    Layer.effect(LanguageModel.LanguageModel, make(script))
  )
