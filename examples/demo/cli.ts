/**
 * The demo server's command line (`effect/cli`):
 *
 *   npx node examples/00_demo-server.ts [--port 8787] [--host 127.0.0.1] [--lock-dir <dir>]
 *                                   [--warn <s>] [--abort <s>] [--scenario seed-failures]
 *
 * Without `--scenario` it serves until stopped (Ctrl+C). With
 * `--scenario seed-failures` it starts the server with short thresholds (on a
 * free port unless `--port` is given), drives the three production failures
 * against it over HTTP, prints the timeline and a summary, and exits 0 only if
 * every failure was recovered and every healthy session kept its pace.
 */
import { Console, Duration, Effect, Layer, Option, Schema } from "effect"
import { CliError, Command, Flag } from "effect/cli"
import { FetchHttpClient } from "effect/http"
import * as DemoServer from "./DemoServer.ts"
import * as Scenario from "./Scenario.ts"
import * as Settings from "./Settings.ts"

const flags = {
  port: Flag.Int("port").pipe(
    Flag.withDescription(`TCP port (0 picks a free one; default ${Settings.defaultPort}, or 0 with --scenario)`),
    Flag.optional
  ),
  host: Flag.String("host").pipe(Flag.withDescription("interface to listen on"), Flag.withDefault("127.0.0.1")),
  lockDir: Flag.String("lock-dir").pipe(
    Flag.withDescription("lock directory (default: a fresh temporary directory, removed at shutdown)"),
    Flag.optional
  ),
  warn: Flag.Finite("warn").pipe(Flag.withDescription("warn threshold, seconds (1 to 86400)"), Flag.optional),
  abort: Flag.Finite("abort").pipe(Flag.withDescription("abort threshold, seconds (never below warn)"), Flag.optional),
  scenario: Flag.Literals("scenario", ["seed-failures"]).pipe(
    Flag.withDescription("drive a scripted workload against the server, then exit"),
    Flag.optional
  )
}

type Parsed = {
  readonly port: Option.Option<number>
  readonly host: string
  readonly lockDir: Option.Option<string>
  readonly warn: Option.Option<number>
  readonly abort: Option.Option<number>
  readonly scenario: Option.Option<"seed-failures">
}

/** The demo could not start, or its scenario failed: the message says why and what to do. */
export class DemoFailed extends Schema.TaggedError<DemoFailed>()("DemoFailed", { detail: Schema.String }) {
  override get message(): string {
    return this.detail
  }
  override get [CliError.userMessage](): string {
    return this.detail
  }
}

const validate = (settings: Settings.Settings): Effect.Effect<Settings.Settings, DemoFailed> => {
  const { port } = settings
  const warnS = Duration.toSeconds(settings.thresholds.warn)
  const abortS = Duration.toSeconds(settings.thresholds.abort)
  const problem = !Number.isInteger(port) || port < 0 || port > 65_535
    ? `--port ${port}: a port is an integer from 0 to 65535 (0 picks a free one)`
    : !(warnS >= 1 && warnS <= 86_400)
    ? `--warn ${warnS}: the warn threshold is 1 to 86400 seconds`
    : !(abortS >= warnS)
    ? `--abort ${abortS}: the abort threshold is never below the warn threshold (${warnS} s)`
    : undefined
  return problem === undefined ? Effect.succeed(settings) : Effect.fail(new DemoFailed({ detail: problem }))
}

const cannotListen = (settings: Settings.Settings) => (error: { readonly cause: unknown }) =>
  new DemoFailed({
    detail: `Cannot listen on ${settings.host}:${settings.port} (${
      (error.cause as { code?: string } | undefined)?.code ?? String(error.cause)
    }): pass another --port, or --port 0 for a free one.`
  })

/** The settings a command line asks for. */
export const settingsOf = (parsed: Parsed): Settings.Settings => {
  const base = Option.isSome(parsed.scenario) ? Settings.scenario : Settings.server
  const thresholds = {
    ...base.thresholds,
    ...Option.match(parsed.warn, { onNone: () => ({}), onSome: (s) => ({ warn: Duration.millis(s * 1000) }) }),
    ...Option.match(parsed.abort, { onNone: () => ({}), onSome: (s) => ({ abort: Duration.millis(s * 1000) }) })
  }
  return {
    ...base,
    host: parsed.host,
    port: Option.getOrElse(parsed.port, () => base.port),
    lockDirectory: Option.getOrUndefined(parsed.lockDir),
    thresholds
  }
}

const banner = (address: DemoServer.DemoAddress["Service"], settings: Settings.Settings) => {
  const t = settings.thresholds
  const url = address.url
  return [
    `effect-session-runtime demo agent server listening on ${url}`,
    `  locks:      ${address.lockDirectory}  (npm run cli -- doctor locks --dir ${address.lockDirectory})`,
    `  thresholds: warn ${DemoServer.show(t.warn)}, abort ${DemoServer.show(t.abort)}, heartbeat ${
      DemoServer.show(t.heartbeat)
    }, settle ${DemoServer.show(t.settle)}`,
    `  try:        curl -s -X POST ${url}/sessions/agent:main:demo:1/messages -H 'content-type: application/json' \\`,
    `                -d '{"text":"hello","behaviour":"hang"}'`,
    `              curl -s ${url}/sessions      curl -sN ${url}/events      curl -s ${url}/metrics`,
    `  behaviours: normal, slow, hang, crash, native-leak.  Ctrl+C stops the server.`
  ].join("\n")
}

const serve = (settings: Settings.Settings) =>
  Layer.launch(
    Layer.effectDiscard(Effect.gen(function*() {
      const address = yield* DemoServer.DemoAddress
      yield* Console.log(banner(address, settings))
      yield* Effect.addFinalizer(() => Console.log("shutting down: closing sessions and releasing their locks"))
    })).pipe(Layer.provideMerge(DemoServer.layer(settings)))
  ).pipe(Effect.catchTag("ServeError", (error) => Effect.fail(cannotListen(settings)(error))))

const scenario = (settings: Settings.Settings) =>
  Effect.gen(function*() {
    const address = yield* DemoServer.DemoAddress
    yield* Console.log(`demo server on ${address.url} (locks in ${address.lockDirectory})`)
    const report = yield* Scenario.run({
      baseUrl: address.url,
      lockDirectory: address.lockDirectory,
      thresholds: settings.thresholds,
      log: (line: string) => console.log(line)
    }).pipe(Effect.provide(FetchHttpClient.layer))
    if (!report.ok) return yield* new DemoFailed({ detail: new Scenario.ScenarioFailed({ failed: report.failed }).message })
  }).pipe(
    Effect.provide(DemoServer.layer(settings)),
    Effect.catchTag("ServeError", (error) => Effect.fail(cannotListen(settings)(error)))
  )

/** The `demo-server` command. */
export const command = Command.make("demo-server", flags, (parsed) =>
  Effect.flatMap(
    validate(settingsOf(parsed)),
    (settings) => Option.isSome(parsed.scenario) ? scenario(settings) : serve(settings)
  )).pipe(Command.withDescription("The effect-session-runtime demo agent server"))
