/**
 * The tool calls of an effect/ai `Toolkit` as structured tool markers.
 *
 * effect/ai resolves the tool calls a model makes through the toolkit's
 * `handle(name, params, toolCallId)`, which starts the handler and returns the
 * stream of its results (preliminary ones, then the final one). A tracked
 * toolkit wraps `handle` so that, inside a session turn (a fiber with a
 * `CurrentRun`), each call runs as an `ActivityTracker` tool marker named after
 * the tool, with the model's call id:
 *
 * - the marker opens when the handler starts and closes when its result stream
 *   ends, with the tool's outcome: success; failure when the handler fails
 *   (or, for a tool with `failureMode: "return"`, when its final result is a
 *   failure); a defect; or interrupted when the call is interrupted (the
 *   model's turn aborted, the response abandoned);
 * - each preliminary result is progress (`tool_output`), so a tool that keeps
 *   reporting is never taken for a blocked one;
 * - outside a turn the toolkit behaves exactly as the original.
 *
 * While a tracked call runs, {@link CurrentToolCall} names it, so a tracked
 * `McpClient` called by the handler does not open a second marker for it.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type * as LanguageModel from "effect/ai/LanguageModel"
import type * as Tool from "effect/ai/Tool"
import type * as Toolkit from "effect/ai/Toolkit"
import { ActivityTracker, CurrentRun } from "./ActivityTracker.ts"

/**
 * The tracked tool call the current fiber runs for, if any.
 *
 * @category references
 * @since 0.1.0
 */
export const CurrentToolCall = Context.Reference<
  { readonly name: string; readonly callId: string | undefined } | undefined
>("effect-session-runtime/TrackedToolkit/CurrentToolCall", { defaultValue: () => undefined })

/**
 * The progress reason of a tool's preliminary result.
 *
 * @category constants
 * @since 0.1.0
 */
export const toolOutputReason = "tool_output"

const trackedMark = Symbol.for("effect-session-runtime/TrackedToolkit")

// A final result with `isFailure` (failureMode "return") ends the marker as a
// failure, then the call ends normally: the model still gets the result.
const returnedFailure = { _tag: "ReturnedFailure" } as const

type Tracker = Context.Service.Shape<typeof ActivityTracker>
type Result = { readonly isFailure: boolean; readonly preliminary: boolean }
type AnyHandle = (...args: Array<unknown>) => Effect.Effect<Stream.Stream<Result, any, any>, any, any>

/**
 * Whether `toolkit` is already tracked (tracking it again would nest markers).
 *
 * @category guards
 * @since 0.1.0
 */
export const isTracked = (toolkit: Toolkit.WithHandler<any>): boolean => trackedMark in toolkit

/**
 * The toolkit with each call, inside a session turn, as a tool marker of `tracker`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const withTracker = <Tools extends Record<string, Tool.Any>>(
  toolkit: Toolkit.WithHandler<Tools>,
  tracker: Tracker
): Toolkit.WithHandler<Tools> => {
  if (isTracked(toolkit)) return toolkit
  const handle = (name: string, params: unknown, toolCallId?: string, options?: unknown) => {
    const original = (toolkit.handle as AnyHandle)(name, params, toolCallId, options)
    return Effect.contextWith((context: Context.Context<never>) => {
      const run = Context.getOption(context as Context.Context<CurrentRun>, CurrentRun)
      if (run._tag === "None") return original
      const info = { name, callId: toolCallId }
      return Effect.succeed(Stream.callback<Result, unknown, unknown>((queue) => {
        const calls = Effect.flatMap(original, (results) =>
          Stream.runForEach(results, (result): Effect.Effect<void, typeof returnedFailure> => {
            if (result.preliminary) {
              return Effect.andThen(tracker.progress(toolOutputReason), Queue.offer(queue, result)).pipe(
                Effect.provideService(CurrentRun, run.value),
                Effect.asVoid
              )
            }
            const offered = Effect.asVoid(Queue.offer(queue, result))
            return result.isFailure ? Effect.andThen(offered, Effect.fail(returnedFailure)) : offered
          }))
        return tracker.tool(info, calls).pipe(
          Effect.provideService(CurrentRun, run.value),
          Effect.provideService(CurrentToolCall, info),
          Effect.catchIf((error): error is typeof returnedFailure => error === returnedFailure, () => Effect.void),
          Effect.andThen(Queue.end(queue))
        )
      }, { bufferSize: 16 }))
    })
  }
  const tracked: Toolkit.WithHandler<Tools> = {
    tools: toolkit.tools,
    handle: handle as Toolkit.WithHandler<Tools>["handle"]
  }
  return Object.assign(tracked, { [trackedMark]: true })
}

/**
 * Resolves a toolkit option of a `LanguageModel` call (a `Toolkit`, an Effect
 * of one, or a toolkit with handlers) and tracks its calls.
 *
 * @category combinators
 * @since 0.1.0
 */
export const track = <Tools extends Record<string, Tool.Any>, E, R>(
  toolkit: LanguageModel.ToolkitInput<Tools, E, R>
): Effect.Effect<Toolkit.WithHandler<Tools>, E, R | ActivityTracker> =>
  Effect.flatMap(ActivityTracker, (tracker) => trackWith(toolkit, tracker))

/**
 * {@link track} with the tracker at hand.
 *
 * @category combinators
 * @since 0.1.0
 */
export const trackWith = <Tools extends Record<string, Tool.Any>, E, R>(
  toolkit: LanguageModel.ToolkitInput<Tools, E, R>,
  tracker: Tracker
): Effect.Effect<Toolkit.WithHandler<Tools>, E, R> =>
  Effect.map(
    (Effect.isEffect(toolkit) ? toolkit : Effect.succeed(toolkit)) as Effect.Effect<Toolkit.WithHandler<Tools>, E, R>,
    (resolved) => withTracker(resolved, tracker)
  )
