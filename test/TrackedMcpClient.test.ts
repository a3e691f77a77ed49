/**
 * Tools called through a real `McpClient`, connected over stdio to a real MCP
 * server in a child process (`workers/mcp-tool-server.ts`).
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Fiber, Layer, Schema } from "effect"
import { Chat, McpClient, McpProtocol } from "effect/ai"
import { ChildProcess } from "effect/process"
import { fileURLToPath } from "node:url"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import * as ScriptedLanguageModel from "../src/ScriptedLanguageModel.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as TrackedLanguageModel from "../src/TrackedLanguageModel.ts"
import * as TrackedMcpClient from "../src/TrackedMcpClient.ts"
import { collectEvents } from "./utils/events.ts"
import { coreLayer } from "./utils/runtime.ts"

const key = SessionKey.makeUnsafe("agent:main:mcp:1")
const server = fileURLToPath(new URL("./workers/mcp-tool-server.ts", import.meta.url))

const clientLayer = McpClient.layerStdio({
  name: "tracked-mcp-test",
  version: "1.0.0",
  command: ChildProcess.make(process.execPath, [server]),
  protocol: McpProtocol.v2025_11_25,
  timeout: "20 seconds"
})

/** A model that calls the MCP tool `github__echo` (call id `call-9`), then answers. */
const callsEcho: ScriptedLanguageModel.Script = (request) =>
  request.prompt.content.at(-1)?.role === "tool"
    ? ScriptedLanguageModel.reply({ text: "echoed" })
    : ScriptedLanguageModel.reply({ toolCalls: [{ name: "github__echo", params: { text: "hi" }, id: "call-9" }] })

const testLayer = Layer.mergeAll(
  TrackedMcpClient.layer({ prefix: "github/" }).pipe(Layer.provide(clientLayer)),
  ScriptedLanguageModel.layer(callsEcho).pipe(TrackedLanguageModel.track())
).pipe(
  Layer.provideMerge(coreLayer()),
  Layer.provide(NodeServices.layer)
)

type Events = Effect.Success<typeof collectEvents>

const markerLog = (events: Events) =>
  events.all().flatMap((e) =>
    e._tag === "session.activity.marker_opened"
      ? [`open ${e.kind} ${e.name}`]
      : e._tag === "session.activity.marker_closed"
      ? [`close ${e.kind} ${e.outcome}`]
      : []
  )

const tool = (name: string) =>
  Effect.flatMap(McpClient.McpClient, (client) =>
    Effect.map(client.listTools(), (tools) => {
      const found = tools.find((t) => t.name === name)
      if (found === undefined) throw new Error(`the test server has no tool ${name}`)
      return found
    }))

describe("TrackedMcpClient", () => {
  layer(testLayer, { excludeTestServices: true, timeout: "30 seconds" })("over stdio", (it) => {
    it.effect("each callTool inside a turn is a tool marker named after the remote tool, closed when it answers", () =>
      Effect.scoped(Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const client = yield* McpClient.McpClient
        const echo = yield* tool("echo")
        const result = yield* tracker.run(key, client.callTool({ tool: echo, arguments: { text: "hello" } }))
        assert.deepStrictEqual(result.content, [{ type: "text", text: "echo: hello" }])
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open tool_call github/echo", "close tool_call success"])
      })))

    it.effect("a call outside a turn opens no marker", () =>
      Effect.scoped(Effect.gen(function*() {
        const events = yield* collectEvents
        const client = yield* McpClient.McpClient
        const echo = yield* tool("echo")
        yield* client.callTool({ tool: echo, arguments: { text: "hello" } })
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [])
      })))

    it.effect("a tool that reports an error closes its marker as a failure, and the caller still gets the result", () =>
      Effect.scoped(Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const client = yield* McpClient.McpClient
        const broken = yield* tool("broken")
        const result = yield* tracker.run(key, client.callTool({ tool: broken, arguments: {} }))
        assert.isTrue(result.isError)
        const decoded = client.callTool({ tool: broken, arguments: {}, schema: Schema.String })
        const error = yield* Effect.flip(tracker.run(key, decoded))
        assert.strictEqual(error._tag, "McpClientError")
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [
          "open tool_call github/broken",
          "close tool_call failure",
          "open tool_call github/broken",
          "close tool_call failure"
        ])
      })))

    it.effect("an interrupted call closes its marker as interrupted and leaves nothing open", () =>
      Effect.scoped(Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const client = yield* McpClient.McpClient
        const hangs = yield* tool("hangs")
        const fiber = yield* tracker.run(key, client.callTool({ tool: hangs, arguments: {} })).pipe(Effect.forkChild)
        for (let i = 0; i < 200 && markerLog(events).length === 0; i++) yield* Effect.sleep("10 millis")
        yield* Fiber.interrupt(fiber)
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), ["open tool_call github/hangs", "close tool_call interrupted"])
        const stats = yield* tracker.stats
        assert.deepStrictEqual([stats.markers, stats.owners], [0, 0])
      })))

    it.effect("a model calling MCP tools through McpClient.toolkit gets one marker per call, with the model's call id", () =>
      Effect.scoped(Effect.gen(function*() {
        const events = yield* collectEvents
        const tracker = yield* ActivityTracker
        const client = yield* McpClient.McpClient
        const response = yield* tracker.run(
          key,
          Effect.gen(function*() {
            const chat = yield* Chat.empty
            const toolkit = yield* McpClient.toolkit(client, "github__")
            return yield* chat.generateText({ prompt: "echo hi", toolkit })
          })
        )
        assert.deepStrictEqual(response.toolResults.map((r) => [r.id, r.result]), [["call-9", "echo: hi"]])
        yield* events.settle
        assert.deepStrictEqual(markerLog(events), [
          "open model_call scripted/script",
          "open tool_call github__echo",
          "close tool_call success",
          "close model_call success"
        ])
      })))
  })
})
