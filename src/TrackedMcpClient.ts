/**
 * Tools called through an effect/ai `McpClient`, tracked by the
 * `ActivityTracker`.
 *
 * {@link layer} decorates the `McpClient` it is given: inside a session turn,
 * each `callTool` is a tool marker named after the remote tool (with an
 * optional prefix, e.g. the server's name), open until the call returns, fails,
 * times out or is interrupted; a result the server marks `isError` closes it
 * as a failure (the caller still gets the result). A call made by the handler of a tool call that
 * is already tracked (the model calling `McpClient.toolkit` tools through a
 * `TrackedLanguageModel`) opens no second marker: one marker per call, with the
 * model's call id. Outside a turn the client behaves exactly as the original.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as McpClient from "effect/ai/McpClient"
import { ActivityTracker, CurrentRun } from "./ActivityTracker.ts"
import { CurrentToolCall } from "./TrackedToolkit.ts"

/**
 * Options of the decoration.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * Put before the tool's name on its marker (for example `"github/"`).
   * @default ""
   */
  readonly prefix?: string | undefined
}

type Tracker = Context.Service.Shape<typeof ActivityTracker>

// A result the server marked `isError` ends the marker as a failure; the
// caller still gets the result, as `callTool` returns it.
class ReportedError {
  readonly result: unknown
  constructor(result: unknown) {
    this.result = result
  }
}

const isErrorResult = (result: unknown): boolean =>
  typeof result === "object" && result !== null && "isError" in result && result.isError === true

/**
 * `client` with each tool call, inside a session turn, as a tool marker of `tracker`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const decorate = (client: McpClient.McpClient, tracker: Tracker, options: Options = {}): McpClient.McpClient => {
  const prefix = options.prefix ?? ""
  const callTool = (
    params: Parameters<McpClient.McpClient["callTool"]>[0],
    callOptions?: Parameters<McpClient.McpClient["callTool"]>[1]
  ) => {
    const call = client.callTool(params, callOptions)
    return Effect.contextWith((context: Context.Context<never>) => {
      const run = Context.getOption(context as Context.Context<CurrentRun>, CurrentRun)
      if (run._tag === "None" || Context.get(context, CurrentToolCall) !== undefined) return call
      const checked = Effect.flatMap(
        call,
        (result) => isErrorResult(result) ? Effect.fail(new ReportedError(result)) : Effect.succeed(result)
      )
      return tracker.tool({ name: `${prefix}${params.tool.name}` }, checked).pipe(
        Effect.catchIf((error) => error instanceof ReportedError, (error) => Effect.succeed(error.result)),
        Effect.provideService(CurrentRun, run.value)
      )
    })
  }
  return { ...client, callTool: callTool as McpClient.McpClient["callTool"] }
}

/**
 * The `McpClient` in context, decorated.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  options?: Options
): Effect.Effect<McpClient.McpClient, never, McpClient.McpClient | ActivityTracker> =>
  Effect.gen(function*() {
    return decorate(yield* McpClient.McpClient, yield* ActivityTracker, options)
  })

/**
 * Decorates the `McpClient` it is given (provide the client's layer to it,
 * e.g. `McpClient.layerStdio(...)`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<McpClient.McpClient, never, McpClient.McpClient | ActivityTracker> =>
  Layer.effect(McpClient.McpClient, make(options))
