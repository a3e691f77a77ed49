/**
 * @title Prometheus
 *
 * The runtime's metrics (fed from the diagnostic events, bounded labels only) served in the Prometheus
 * text format by `PrometheusEndpoint.layerServer`, a small Node HTTP server next to the runtime. An
 * application with its own `effect/http` router adds the route with `PrometheusEndpoint.layerHttp()`
 * instead. Scrape it with:
 *
 *   scrape_configs:
 *     - job_name: agent-gateway
 *       static_configs: [{ targets: ["127.0.0.1:9464"] }]
 *
 *   npx node examples/06_prometheus.ts [--short]     # without --short it serves until Ctrl+C
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { FetchHttpClient, HttpClient, HttpServer } from "effect/http"
import { ActivityTracker } from "../src/ActivityTracker.ts"
import * as PrometheusEndpoint from "../src/PrometheusEndpoint.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

const short = process.env.EXAMPLE_SHORT === "1" || process.argv.includes("--short")

const Runtime = Layer.mergeAll(
  SessionRuntime.layer({ lock: { backend: "memory" } }),
  PrometheusEndpoint.layerServer({ port: short ? 0 : 9464 })
)

const program = Effect.gen(function*() {
  const lanes = yield* SessionLanes
  const tracker = yield* ActivityTracker
  const server = yield* HttpServer.HttpServer
  const url = `${HttpServer.formatAddress(server.address)}/metrics`

  // Some traffic: ten sessions, a search and an answer each, one failing tool.
  yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) =>
    Effect.flatMap(
      lanes.submit(
        SessionKey.makeUnsafe(`agent:main:web:${i}`),
        Effect.gen(function*() {
          yield* tracker.model({ provider: "openai", model: "gpt-4o" }, Effect.sleep("10 millis"))
          yield* tracker.tool({ name: i === 3 ? "fetch" : "search" }, i === 3 ? Effect.fail("timeout") : Effect.void)
        }).pipe(Effect.ignore)
      ),
      (submission) => submission.result
    ), { concurrency: "unbounded", discard: true })

  const text = yield* HttpClient.get(url).pipe(
    Effect.flatMap((response) => response.text),
    Effect.provide(FetchHttpClient.layer)
  )
  const wanted = /^session_runtime_(turn_admissions_total|tool_calls_total|lock_acquire_total|sessions)\{/
  yield* Console.log(`GET ${url}`)
  for (const line of text.split("\n").filter((l) => wanted.test(l) && !l.endsWith(" 0"))) {
    yield* Console.log(`  ${line}`)
  }
  if (!short) {
    yield* Console.log(`serving ${url} until Ctrl+C`)
    return yield* Effect.never
  }
})

program.pipe(Effect.provide(Runtime), NodeRuntime.runMain)
