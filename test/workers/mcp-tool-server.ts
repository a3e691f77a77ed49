/**
 * A real MCP server over stdio with three tools, for the McpClient tests:
 *
 *   node mcp-tool-server.ts
 *
 * `echo` answers at once, `broken` reports a tool error, `hangs` never answers.
 */
import { NodeRuntime, NodeStdio } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"
import { McpProtocol, McpServer, Tool, Toolkit } from "effect/ai"

const Tools = Toolkit.make(
  Tool.make("echo", { parameters: Schema.Struct({ text: Schema.String }), success: Schema.String }),
  Tool.make("broken", { parameters: Tool.EmptyParams, success: Schema.String, failure: Schema.String }),
  Tool.make("hangs", { parameters: Tool.EmptyParams, success: Schema.String })
)

const Handlers = Tools.toLayer({
  echo: ({ text }) => Effect.succeed(`echo: ${text}`),
  broken: () => Effect.fail("the remote tool broke"),
  hangs: () => Effect.never
})

McpServer.toolkit(Tools).pipe(
  Layer.provide(Handlers),
  Layer.provideMerge(
    McpServer.layerStdio({ name: "test-tools", version: "1.0.0", protocols: [McpProtocol.v2025_11_25] })
  ),
  Layer.provide(NodeStdio.layer),
  Layer.launch,
  NodeRuntime.runMain
)
