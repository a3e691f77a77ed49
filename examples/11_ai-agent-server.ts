/**
 * @title An Effect AI agent server
 *
 * An HTTP agent server on effect/ai in a few dozen lines: each message is a turn on its session's lane (one at a
 * time per session, under the session's file write lock), answered by a `Chat` with a `Toolkit` over a
 * `LanguageModel` that `TrackedLanguageModel` tracks: every model call is a model marker, every tool call the
 * model makes a tool marker with its call id, every streamed chunk progress. Nothing is placed by hand, so the
 * watchdog sees each session's real state (and aborts a tool that hangs). The model is scripted (no network);
 * swap `Model` for a provider's layer, e.g. `OpenAiLanguageModel.model("gpt-5.2")`, to use a real one.
 *
 *   node examples/11_ai-agent-server.ts          # serves on 127.0.0.1:8788
 *   curl -X POST 127.0.0.1:8788/sessions/agent:main:1/messages -d 'Weather in Paris?'
 *   node examples/11_ai-agent-server.ts --short  # sends itself two messages, prints the markers, exits
 */
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer, Schema, Stream } from "effect"
import { Chat, Tool, Toolkit } from "effect/ai"
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import { createServer } from "node:http"
import { ScriptedLanguageModel, TrackedLanguageModel } from "../src/ai.ts"
import { DiagnosticBus, SessionKey, SessionLanes, SessionRuntime } from "../src/index.ts"

const short = process.env.EXAMPLE_SHORT === "1" || process.argv.includes("--short")

const Tools = Toolkit.make(Tool.make("get_weather", {
  description: "The current weather in a city",
  parameters: Schema.Struct({ city: Schema.String }),
  success: Schema.String
}))
const ToolHandlers = Tools.toLayer({ get_weather: ({ city }) => Effect.succeed(`sunny, 21°C in ${city}`) })

// Scripted: asks for the weather, then answers with what the tool said.
const Model = ScriptedLanguageModel.layer((request) => {
  const result = request.prompt.content.at(-1)?.content[0]
  return typeof result === "object" && result.type === "tool-result"
    ? ScriptedLanguageModel.reply({ text: `It is ${result.result}.`, every: "5 millis" })
    : ScriptedLanguageModel.reply({ toolCalls: [{ name: "get_weather", params: { city: "Paris" } }] })
})

// One turn: the chat calls tools until the model answers.
const answer = (text: string) =>
  Effect.gen(function*() {
    const chat = yield* Chat.empty
    let response = yield* chat.generateText({ prompt: text, toolkit: Tools })
    while (response.toolCalls.length > 0) response = yield* chat.generateText({ prompt: [], toolkit: Tools })
    return response.text
  })

const Routes = HttpRouter.add(
  "POST",
  "/sessions/:key/messages",
  Effect.gen(function*() {
    const key = yield* Effect.flatMap(HttpRouter.params, (params) => SessionKey.decode(params.key))
    const text = yield* (yield* HttpServerRequest.HttpServerRequest).text
    return HttpServerResponse.text(yield* SessionLanes.run(key, answer(text)))
  }).pipe(Effect.catchCause((cause) => Effect.succeed(HttpServerResponse.text(String(cause), { status: 500 }))))
)

const Server = HttpRouter.serve(Routes, { disableListenLog: true, disableLogger: true }).pipe(
  Layer.provideMerge(NodeHttpServer.layer(createServer, { port: short ? 0 : 8788, host: "127.0.0.1" })),
  Layer.provide(Layer.mergeAll(Model.pipe(TrackedLanguageModel.track()), ToolHandlers)),
  Layer.provideMerge(SessionRuntime.layer())
)

// Short mode: two sessions send a message each; print the markers the runtime saw.
const selfTest = Effect.gen(function*() {
  const address = (yield* HttpServer.HttpServer).address
  const port = "port" in address ? address.port : 0
  const events = yield* (yield* DiagnosticBus.DiagnosticBus).subscribe({ name: "example" })
  yield* events.pipe(
    Stream.runForEach((e) =>
      e._tag === "session.activity.marker_opened"
        ? Console.log(`  opened ${e.kind} ${e.name}`)
        : e._tag === "session.activity.marker_closed"
        ? Console.log(`  closed ${e.kind} ${e.outcome}`)
        : Effect.void
    ),
    Effect.forkScoped
  )
  for (const session of ["agent:main:1", "agent:main:2"]) {
    const reply = yield* Effect.promise(() =>
      fetch(`http://127.0.0.1:${port}/sessions/${session}/messages`, { method: "POST", body: "Weather in Paris?" })
        .then((response) => response.text())
    )
    yield* Console.log(`${session} -> ${reply}`)
  }
})

;(short ? Effect.scoped(selfTest).pipe(Effect.provide(Server)) : Layer.launch(Server)).pipe(NodeRuntime.runMain)
