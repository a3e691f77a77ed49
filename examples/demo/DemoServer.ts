/**
 * The demo agent server as one layer: the whole runtime on embedded defaults
 * (`SessionRuntime.layer`: file locks — in a fresh temporary directory unless
 * one is given — and in-memory state), the effect/ai agent (on the scripted
 * model by default), and the HTTP API on a Node HTTP server.
 *
 * Closing the layer stops the HTTP server first, then closes every session
 * (running turns are interrupted, their finalizers run, their locks are
 * released) and removes the temporary lock directory.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Duration, Effect, Layer } from "effect"
import type { LanguageModel } from "effect/ai"
import { HttpRouter, HttpServer } from "effect/http"
import { mkdtemp, rm } from "node:fs/promises"
import { createServer } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as SessionRuntime from "../../src/SessionRuntime.ts"
import * as HttpApi from "./HttpApi.ts"
import { DemoInfo, type Settings, Stopping } from "./Settings.ts"
import * as SimulatedAgent from "./SimulatedAgent.ts"

/** The running server's address, for printing and for clients. */
export class DemoAddress extends Context.Service<DemoAddress, {
  /** `http://host:port`, with the port actually bound (for `port: 0`). */
  readonly url: string
  readonly port: number
  readonly lockDirectory: string
}>()("demo/DemoAddress") {}

const lockDirectory = (settings: Settings) =>
  settings.lockDirectory !== undefined
    ? Effect.succeed(settings.lockDirectory)
    : Effect.acquireRelease(
      Effect.promise(() => mkdtemp(join(tmpdir(), "esr-demo-locks-"))),
      (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
    )

/**
 * The runtime the demo runs: `SessionRuntime.layer` with the demo's lock
 * directory and thresholds.
 */
export const runtime = (settings: Settings, directory: string) =>
  SessionRuntime.layer({
    lock: { directory, file: { probeTtl: settings.probeTtl } },
    watchdog: {
      interval: settings.thresholds.heartbeat,
      warn: settings.thresholds.warn,
      abort: settings.thresholds.abort
    },
    recovery: { settle: settings.thresholds.settle },
    lanes: { maxQueueDepth: settings.maxQueueDepth, idleTtl: "10 minutes" }
  })

/**
 * The demo server: runtime, agent and HTTP API, listening on `settings.host:port`.
 * The agent talks to the scripted model unless `agent.model` gives a provider's
 * model layer (docs/ai.md).
 */
export const layer = <E = never, R = never>(
  settings: Settings,
  agent: { readonly model?: Layer.Layer<LanguageModel.LanguageModel, E, R> | undefined } = {}
) =>
  Layer.unwrap(Effect.gen(function*() {
    const directory = yield* lockDirectory(settings)
    const info = Layer.succeed(DemoInfo, DemoInfo.of({ settings, lockDirectory: directory }))
    // Built after the HTTP server, so closed before it: long-lived responses end first.
    const address = Layer.effect(
      DemoAddress,
      Effect.gen(function*() {
        const server = yield* HttpServer.HttpServer
        const stopping = yield* Stopping
        yield* Effect.addFinalizer(() => stopping.signal)
        const port = "port" in server.address ? server.address.port : settings.port
        return DemoAddress.of({ url: `http://${settings.host}:${port}`, port, lockDirectory: directory })
      })
    )
    const http = HttpRouter.serve(HttpApi.routes, {
      disableListenLog: true,
      disableLogger: true,
      // Keys may be 512 characters, percent-encoded in the path: let the handler judge them.
      routerConfig: { maxParamLength: 8192 }
    }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(createServer, {
        port: settings.port,
        host: settings.host,
        gracefulShutdownTimeout: "3 seconds"
      }))
    )
    return address.pipe(
      Layer.provideMerge(http),
      Layer.provideMerge(Stopping.layer),
      Layer.provideMerge(SimulatedAgent.layer({ slowTool: settings.slowTool, model: agent.model })),
      Layer.provideMerge(info),
      Layer.provideMerge(runtime(settings, directory))
    )
  }))

/** Formats a duration for the start-up banner. */
export const show = (duration: Duration.Duration): string => {
  const ms = Duration.toMillis(duration)
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`
}
