/**
 * @title The demo agent server
 *
 * A real HTTP server running the whole runtime on embedded defaults (file locks in a temporary
 * directory, in-memory state) and an effect/ai agent (a `Chat` with a `Toolkit` over a tracked
 * `LanguageModel`, scripted by default: no network) whose behaviour each message chooses:
 * `normal`, `slow`, `hang`, `crash`, `native-leak` (docs/ai.md: plugging a real provider in).
 *
 *   npm start                                  # http://127.0.0.1:8787, Ctrl+C to stop
 *   npm start -- --port 0 --warn 5 --abort 15  # a free port, shorter thresholds
 *   npm start -- --scenario seed-failures      # the three production failures, recovered; exit 0/1
 *
 * Routes: POST /sessions/:key/messages, GET /sessions, GET /sessions/:key, GET /events (SSE),
 * GET /stability, GET /metrics. The pieces live in examples/demo/.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { command } from "./demo/cli.ts"

command.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
