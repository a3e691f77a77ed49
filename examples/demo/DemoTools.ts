/**
 * The demo agent's tools, as an effect/ai `Toolkit` with its handlers. The
 * model decides which to call; the tracked `LanguageModel` runs each call as a
 * tool marker, so nothing here places a marker by hand.
 *
 * - `search`       — answers in 60 ms;
 * - `browse`       — reads a whole site for a while, reporting each page read
 *                    as a preliminary result (progress: a long tool that is
 *                    healthy, `long_running`, never blocked);
 * - `shell`        — runs a command that never exits (a blocked tool under a
 *                    live owner: `blocked_tool_call`, aborted at the threshold);
 * - `native_exec`  — hands a command to a native runtime, and the agent dies
 *                    mid-turn; the native runtime reports its tool's start only
 *                    after the turn is gone, and never its end (orphaned
 *                    activity: later messages wedge until recovery releases
 *                    the lane);
 * - `open_browser` — a native browser (not Effect) that reports its work as
 *                    signals (`report` + `nextSeq`, as a subprocess's output
 *                    would be relayed): its first start is never completed, and
 *                    a second start it numbered during the turn reaches the
 *                    runtime only after the turn ended (evicted at teardown,
 *                    the late start fenced).
 *
 * Native runtimes are simulated by fibers in the handlers' own scope, which
 * report through `ActivityTracker.report` exactly as relayed output would, and
 * learn that a turn is over from the bus (`session.activity.run_ended`), as an
 * external supervisor would.
 */
import { Deferred, Duration, Effect, FiberSet, Schema, Stream } from "effect"
import { Tool, Toolkit } from "effect/ai"
import { ActivityTracker, CurrentRun } from "../../src/ActivityTracker.ts"
import { DiagnosticBus } from "../../src/DiagnosticBus.ts"

export const Search = Tool.make("search", {
  description: "Searches the web",
  parameters: Schema.Struct({ query: Schema.String }),
  success: Schema.String
})

export const Browse = Tool.make("browse", {
  description: "Reads a whole site, reporting each page as it goes",
  parameters: Schema.Struct({ url: Schema.String }),
  success: Schema.String
})

export const Shell = Tool.make("shell", {
  description: "Runs a shell command (in the demo: one that never exits)",
  parameters: Schema.Struct({ command: Schema.String }),
  success: Schema.String
})

export const NativeExec = Tool.make("native_exec", {
  description: "Hands a command to the native runtime (in the demo: the agent dies right after)",
  parameters: Schema.Struct({ command: Schema.String }),
  success: Schema.String,
  dependencies: [CurrentRun]
})

export const OpenBrowser = Tool.make("open_browser", {
  description: "Opens a page in the native browser",
  parameters: Schema.Struct({ url: Schema.String }),
  success: Schema.String,
  dependencies: [CurrentRun]
})

export const DemoToolkit = Toolkit.make(Search, Browse, Shell, NativeExec, OpenBrowser)

/** Options of the tools. */
export interface Options {
  /**
   * How long `browse` reads (a preliminary result every 250 ms).
   * @default "3 seconds"
   */
  readonly slowTool?: Duration.Input | undefined
  /**
   * How long after its turn died the native runtime of `native_exec` reports its tool's start.
   * @default "150 millis"
   */
  readonly externalDelay?: Duration.Input | undefined
}

const pageEvery = Duration.millis(250)

/** The handlers (they need the tracker and the bus only for what native runtimes do). */
export const layerHandlers = (options: Options = {}) =>
  DemoToolkit.toLayer(Effect.gen(function*() {
    const tracker = yield* ActivityTracker
    const bus = yield* DiagnosticBus
    // Simulated native runtimes live as long as the agent (interrupted at shutdown).
    const natives = yield* FiberSet.make<void, never>()
    const slowTool = Duration.fromInputUnsafe(options.slowTool ?? "3 seconds")
    const externalDelay = Duration.fromInputUnsafe(options.externalDelay ?? "150 millis")

    const reportStart = (signal: { sessionKey: string; runId: string; callId: string; name: string; seq: number }) =>
      tracker.report({ type: "started", kind: "tool_call", ...signal }).pipe(Effect.ignore)

    // Runs `then` in a native runtime once the run `runId` has ended (its owner gone).
    const afterRunEnds = (runId: string, then: Effect.Effect<void>) =>
      Effect.gen(function*() {
        const watching = yield* Deferred.make<void>()
        yield* FiberSet.run(
          natives,
          Effect.scoped(Effect.gen(function*() {
            const events = yield* bus.subscribe({ name: "demo-native-runtime" })
            yield* Deferred.succeed(watching, undefined)
            yield* Stream.runHead(
              Stream.filter(events, (e) => e._tag === "session.activity.run_ended" && e.runId === runId)
            )
            yield* then
          }))
        )
        yield* Deferred.await(watching)
      })

    return DemoToolkit.of({
      search: ({ query }) => Effect.as(Effect.sleep("60 millis"), `3 results for "${query}"`),
      browse: ({ url }, context) =>
        Effect.gen(function*() {
          let pages = 0
          for (let left = Duration.toMillis(slowTool); left > 0; left -= Duration.toMillis(pageEvery)) {
            yield* Effect.sleep(Duration.millis(Math.min(left, Duration.toMillis(pageEvery))))
            yield* context.preliminary(`${++pages} pages of ${url} read`)
          }
          return `read ${pages} pages of ${url}`
        }),
      shell: () => Effect.never,
      native_exec: () =>
        Effect.gen(function*() {
          const current = yield* CurrentRun
          // The native runtime outlives the agent: it reports its start once the turn is gone.
          yield* afterRunEnds(
            current.runId,
            Effect.sleep(externalDelay).pipe(Effect.andThen(Effect.flatMap(tracker.nextSeq, (seq) =>
              reportStart({
                sessionKey: current.sessionKey,
                runId: `external-${current.runId}`,
                callId: "exec-1",
                name: "native.exec",
                seq
              })
            )))
          )
          return yield* Effect.die(new Error("simulated crash: the agent died mid-turn"))
        }),
      open_browser: ({ url }) =>
        Effect.gen(function*() {
          const current = yield* CurrentRun
          const signal = (callId: string, seq: number) => ({
            sessionKey: current.sessionKey,
            runId: current.runId,
            callId,
            name: "native.browser",
            seq
          })
          yield* reportStart(signal("browser-1", yield* tracker.nextSeq))
          const lateSeq = yield* tracker.nextSeq
          yield* afterRunEnds(current.runId, reportStart(signal("browser-2", lateSeq)))
          return `${url} is open`
        })
    })
  }))
