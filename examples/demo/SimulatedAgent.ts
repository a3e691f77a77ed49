/**
 * The demo server's agent: a real effect/ai agent — one `Chat` per session,
 * with a `Toolkit` (`DemoTools.ts`) — over a `LanguageModel` tracked by
 * `TrackedLanguageModel`. Nothing in it places a marker: each model call is a
 * model marker (each streamed chunk is progress), each tool call the model
 * makes is a tool marker with its call id, and an interrupted or aborted turn
 * stops the model stream and the running tool.
 *
 * By default it talks to the scripted model of `DemoModel.ts` (deterministic,
 * no network), which is what makes the message's behaviour happen:
 *
 * - `normal`      — plans, calls `search`, answers (≈ 400 ms);
 * - `slow`        — calls `browse`, which reads for a while and reports each
 *                   page (healthy: `long_running`, never stalled);
 * - `hang`        — calls `shell`, which never returns (under a live owner: the
 *                   watchdog reports `blocked_tool_call`, then aborts it at the
 *                   abort threshold);
 * - `crash`       — calls `native_exec`: the turn hands a native tool to a
 *                   native runtime and dies; the native runtime reports its start
 *                   after the turn is gone and never its end (orphaned activity:
 *                   the next messages wedge until recovery releases the lane);
 * - `native-leak` — calls `open_browser`: a native browser reports a tool it
 *                   never completes, and a second start it numbered during the
 *                   turn arrives after the turn ended (the marker is evicted at
 *                   teardown and the late start is fenced).
 *
 * Give `layer` a provider's model layer (`model`) to run the same agent on a
 * real model (docs/ai.md).
 */
import { Context, Effect, Exit, Layer, RcMap, Ref, Stream } from "effect"
import type { AiError, LanguageModel } from "effect/ai"
import { Chat, type Prompt } from "effect/ai"
import type { ActivityTracker } from "../../src/ActivityTracker.ts"
import { CurrentRun } from "../../src/ActivityTracker.ts"
import type { SessionKey } from "../../src/SessionKey.ts"
import * as TrackedLanguageModel from "../../src/TrackedLanguageModel.ts"
import * as DemoModel from "./DemoModel.ts"
import * as DemoTools from "./DemoTools.ts"

export { Behaviour } from "./DemoModel.ts"

/** Options of the agent. */
export interface Options<E = never, R = never> extends DemoTools.Options {
  /**
   * The model layer the agent talks to (a provider's `model(...)`); it is tracked here.
   * @default the scripted `DemoModel.layer` (no network)
   */
  readonly model?: Layer.Layer<LanguageModel.LanguageModel, E, R> | undefined
  /**
   * Model calls one message may take (each tool round is one more).
   * @default 8
   */
  readonly maxSteps?: number | undefined
}

/** What the agent needs to answer a message. */
export interface Message {
  readonly text: string
  readonly behaviour: DemoModel.Behaviour
}

export class SimulatedAgent extends Context.Service<SimulatedAgent, {
  /** Answers one message inside the current turn (an activity owner). */
  readonly reply: (message: Message) => Effect.Effect<string, AiError.AiError, CurrentRun>
}>()("demo/SimulatedAgent") {}

/** Builds the agent over the `LanguageModel` and tool handlers in context. */
export const make = Effect.fnUntraced(function*(options: { readonly maxSteps?: number | undefined } = {}) {
  const context = yield* Effect.context<LanguageModel.LanguageModel>()
  const toolkit = yield* DemoTools.DemoToolkit
  const maxSteps = options.maxSteps ?? 8
  // One conversation per session, forgotten 10 minutes after its last message.
  const chats = yield* RcMap.make({ lookup: (_: SessionKey) => Chat.empty, idleTimeToLive: "10 minutes" })

  const answer = (chat: Chat.Chat, message: Message) =>
    Effect.gen(function*() {
      let prompt: Prompt.RawInput = [{
        role: "user",
        content: message.text,
        options: DemoModel.behaviourOptions(message.behaviour)
      }]
      for (let step = 0; step < maxSteps; step++) {
        const parts = yield* Stream.runCollect(chat.streamText({ prompt, toolkit }))
        if (!parts.some((part) => part.type === "tool-call")) {
          return parts.flatMap((part) => part.type === "text-delta" ? [part.delta] : []).join("")
        }
        // The tool results are in the chat's history: the next call continues from them.
        prompt = []
      }
      return `(gave up after ${maxSteps} model calls)`
    })

  const reply = (message: Message): Effect.Effect<string, AiError.AiError, CurrentRun> =>
    Effect.gen(function*() {
      const current = yield* CurrentRun
      const chat = yield* RcMap.get(chats, current.sessionKey)
      // A turn that does not succeed leaves the conversation as it was: an aborted stream would
      // otherwise leave a tool call without its result in the history, which a real provider refuses.
      const before = yield* Ref.get(chat.history)
      return yield* answer(chat, message).pipe(
        Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Ref.set(chat.history, before))
      )
    }).pipe(Effect.scoped, Effect.provideContext(context))

  return SimulatedAgent.of({ reply })
})

/**
 * The agent with its tools and its (tracked) model: the scripted one unless
 * `options.model` gives another.
 */
export const layer = <E = never, R = never>(
  options: Options<E, R> = {}
): Layer.Layer<SimulatedAgent, E, ActivityTracker | Exclude<R, ActivityTracker>> => {
  const model = (options.model ?? (DemoModel.layer as Layer.Layer<LanguageModel.LanguageModel, E, R>)).pipe(
    TrackedLanguageModel.track()
  )
  return Layer.effect(SimulatedAgent, make(options)).pipe(
    Layer.provide(Layer.mergeAll(model, DemoTools.layerHandlers(options)))
  ) as Layer.Layer<SimulatedAgent, E, ActivityTracker | Exclude<R, ActivityTracker>>
}
