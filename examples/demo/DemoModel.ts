/**
 * The demo agent's default model: a deterministic scripted `LanguageModel`
 * (no network, no key) that answers like a small tool-using model. Each
 * message is a plan (a sentence streamed word by word, then one tool call),
 * then, once the tool answered, a reply streamed word by word; a part every
 * 20 ms.
 *
 * Which tool it calls is the message's behaviour, carried on the user message
 * as provider options (`{ demo: { behaviour } }`), which a real provider
 * ignores:
 *
 * | behaviour     | tool call                     |
 * |---------------|-------------------------------|
 * | `normal`      | `search`                      |
 * | `slow`        | `browse`                      |
 * | `hang`        | `shell`                       |
 * | `crash`       | `native_exec`                 |
 * | `native-leak` | `open_browser`                |
 *
 * To run the demo on a real model, give `DemoServer.layer` a provider's model
 * layer instead (see docs/ai.md).
 */
import { Schema } from "effect"
import type { Prompt } from "effect/ai"
import * as ScriptedLanguageModel from "../../src/ScriptedLanguageModel.ts"

/** How a message asks the agent to behave. */
export const Behaviour = Schema.Literals(["normal", "slow", "hang", "crash", "native-leak"])
export type Behaviour = typeof Behaviour.Type

/** The provider options of a user message that carry its behaviour. */
export const behaviourOptions = (behaviour: Behaviour) => ({ demo: { behaviour } })

const isBehaviour = Schema.is(Behaviour)

const lastUserMessage = (prompt: Prompt.Prompt): Prompt.UserMessage | undefined => {
  for (let i = prompt.content.length - 1; i >= 0; i--) {
    const message = prompt.content[i]!
    if (message.role === "user") return message
  }
  return undefined
}

const behaviourOf = (message: Prompt.UserMessage | undefined): Behaviour => {
  const demo = message?.options.demo
  const behaviour = typeof demo === "object" && demo !== null && "behaviour" in demo ? demo.behaviour : undefined
  return isBehaviour(behaviour) ? behaviour : "normal"
}

const textOf = (message: Prompt.UserMessage | undefined): string =>
  message?.content.flatMap((part) => part.type === "text" ? [part.text] : []).join(" ") ?? ""

const toolCallFor = (behaviour: Behaviour, text: string): ScriptedLanguageModel.ToolCall => {
  switch (behaviour) {
    case "normal":
      return { name: "search", params: { query: text } }
    case "slow":
      return { name: "browse", params: { url: "https://example.com" } }
    case "hang":
      return { name: "shell", params: { command: "./migrate --wait" } }
    case "crash":
      return { name: "native_exec", params: { command: "make build" } }
    case "native-leak":
      return { name: "open_browser", params: { url: "https://example.com/page" } }
  }
}

const every = "20 millis"

/** The script: plan and call a tool, then answer once the tool result is in. */
export const script: ScriptedLanguageModel.Script = (request) => {
  const user = lastUserMessage(request.prompt)
  const behaviour = behaviourOf(user)
  const text = textOf(user)
  if (request.prompt.content.at(-1)?.role === "tool") {
    return ScriptedLanguageModel.reply({
      text: behaviour === "native-leak"
        ? `(native-leak) answered "${text}"; the native tool never reported completion`
        : `(${behaviour}) answered "${text}"`,
      every
    })
  }
  return ScriptedLanguageModel.reply({ text: "Let me check that.", toolCalls: [toolCallFor(behaviour, text)], every })
}

/** The scripted model as a model layer (`scripted/demo-agent`). */
export const layer = ScriptedLanguageModel.layer(script, { provider: "scripted", model: "demo-agent" })
