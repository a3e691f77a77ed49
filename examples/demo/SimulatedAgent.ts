/**
 * The demo's simulated agent: it answers each message with model calls and
 * tool calls through the `ActivityTracker`, streaming progress, and the
 * message chooses how it behaves:
 *
 * - `normal`      — a planner model call, a quick tool, a writer model call (≈ 200 ms);
 * - `slow`        — the same around a long tool that keeps streaming progress
 *                   (healthy: `long_running`, never stalled);
 * - `hang`        — a tool that never returns (under a live owner: the watchdog
 *                   reports `blocked_tool_call`, then aborts it at the abort threshold);
 * - `crash`       — the turn hands a native tool to an external runtime and dies;
 *                   the external runtime reports its start after the turn is gone
 *                   and never its end (orphaned activity: the next messages wedge
 *                   until recovery releases the lane);
 * - `native-leak` — a native tool reported by the turn (`report` + `nextSeq`, as a
 *                   subprocess would) never reports completion, and a second start
 *                   it numbered during the turn arrives after the turn ended (the
 *                   marker is evicted at teardown and the late start is fenced).
 *
 * External runtimes are simulated by fibers in the agent's own scope, which
 * report through `ActivityTracker.report` exactly as a subprocess's output
 * would be relayed.
 */
import { Context, Deferred, Duration, Effect, FiberSet, Layer, Schema } from "effect"
import { ActivityTracker, CurrentRun } from "../../src/ActivityTracker.ts"
import type { SessionKey } from "../../src/SessionKey.ts"

/** How a message asks the agent to behave. */
export const Behaviour = Schema.Literals(["normal", "slow", "hang", "crash", "native-leak"])
export type Behaviour = typeof Behaviour.Type

/** Options of the agent. */
export interface Options {
  /**
   * How long the `slow` behaviour's tool runs (streaming progress all along).
   * @default "3 seconds"
   */
  readonly slowTool?: Duration.Input | undefined
  /**
   * How long after its turn died the external runtime of `crash` reports its
   * native tool's start.
   * @default "150 millis"
   */
  readonly externalDelay?: Duration.Input | undefined
}

/** What the agent needs to answer a message. */
export interface Message {
  readonly text: string
  readonly behaviour: Behaviour
}

export class SimulatedAgent extends Context.Service<SimulatedAgent, {
  /** Answers one message inside the current turn (an activity owner). */
  readonly reply: (message: Message) => Effect.Effect<string, never, CurrentRun>
}>()("demo/SimulatedAgent") {}

const progressEvery = Duration.millis(250)

export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const tracker = yield* ActivityTracker
  // Simulated external runtimes live as long as the agent (interrupted at shutdown).
  const externals = yield* FiberSet.make<void, never>()
  const slowTool = Duration.fromInputUnsafe(options.slowTool ?? "3 seconds")
  const externalDelay = Duration.fromInputUnsafe(options.externalDelay ?? "150 millis")

  const streamModel = (model: string, chunks: number) =>
    tracker.model(
      { provider: "sim", model },
      Effect.gen(function*() {
        for (let i = 0; i < chunks; i++) {
          yield* Effect.sleep("25 millis")
          yield* tracker.progress("model_delta")
        }
      })
    )

  const tool = (name: string, duration: Duration.Duration) =>
    tracker.tool(
      { name },
      Effect.gen(function*() {
        let left = Duration.toMillis(duration)
        while (left > 0) {
          const step = Math.min(left, Duration.toMillis(progressEvery))
          yield* Effect.sleep(Duration.millis(step))
          left -= step
          yield* tracker.progress("tool_output")
        }
      })
    )

  // A native tool reported by an external runtime that crashed before its turn
  // ended: it reports its start only once the turn is gone, and never its end.
  const crashedExternalRun = (sessionKey: SessionKey, runId: string) =>
    Effect.gen(function*() {
      yield* Effect.sleep(externalDelay)
      yield* tracker.report({
        type: "started",
        kind: "tool_call",
        sessionKey,
        runId: `external-${runId}`,
        callId: "exec-1",
        name: "native.exec",
        seq: yield* tracker.nextSeq
      })
    }).pipe(Effect.ignore)

  // A native tool whose completion is never reported, and a second start,
  // numbered during the turn, that reaches the runtime only after the turn ended.
  const leakNativeTool = Effect.gen(function*() {
    const current = yield* CurrentRun
    const signal = (callId: string, seq: number) => ({
      type: "started",
      kind: "tool_call",
      sessionKey: current.sessionKey,
      runId: current.runId,
      callId,
      name: "native.browser",
      seq
    })
    yield* tracker.report(signal("browser-1", yield* tracker.nextSeq)).pipe(Effect.ignore)
    const lateSeq = yield* tracker.nextSeq
    const turnEnded = yield* Deferred.make<void>()
    yield* FiberSet.run(
      externals,
      Deferred.await(turnEnded).pipe(
        Effect.andThen(Effect.sleep("200 millis")),
        Effect.andThen(tracker.report(signal("browser-2", lateSeq))),
        Effect.ignore
      )
    )
    return turnEnded
  })

  const reply = (message: Message): Effect.Effect<string, never, CurrentRun> =>
    Effect.gen(function*() {
      yield* streamModel("planner", 3)
      switch (message.behaviour) {
        case "normal":
          yield* tool("search", Duration.millis(60))
          break
        case "slow":
          yield* tool("browse", slowTool)
          break
        case "hang":
          yield* tracker.tool({ name: "shell" }, Effect.never)
          break
        case "crash": {
          const current = yield* CurrentRun
          yield* FiberSet.run(externals, crashedExternalRun(current.sessionKey, current.runId))
          return yield* Effect.die(new Error("simulated crash: the agent died mid-turn"))
        }
        case "native-leak": {
          const turnEnded = yield* leakNativeTool
          yield* streamModel("writer", 3).pipe(Effect.ensuring(Deferred.succeed(turnEnded, undefined)))
          return `(native-leak) answered "${message.text}"; the native tool never reported completion`
        }
      }
      yield* streamModel("writer", 3)
      return `(${message.behaviour}) answered "${message.text}"`
    })

  return SimulatedAgent.of({ reply })
})

export const layer = (options?: Options): Layer.Layer<SimulatedAgent, never, ActivityTracker> =>
  Layer.effect(SimulatedAgent, make(options))
