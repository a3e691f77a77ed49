/**
 * Any effect/ai `LanguageModel`, tracked by the `ActivityTracker` without a
 * marker placed by hand.
 *
 * {@link layer} decorates the `LanguageModel` it is given (a provider's, the
 * scripted one, a test double); inside a session turn (a fiber with a
 * `CurrentRun`, as every turn of `SessionLanes` has):
 *
 * - each `generateText`, `generateObject` and `streamText` call is a model
 *   marker named `provider/model` (from the model layer's `Model.ProviderName`
 *   and `Model.ModelName`, or the options), open for the whole call: for a
 *   stream, until the stream ends, fails or is abandoned;
 * - each chunk of streamed parts is progress (`model_stream`): a model that
 *   keeps streaming is `long_running`, never aborted; one that stops streaming
 *   goes stale and is seen as stalled (`active_work_without_progress`), and
 *   aborted at the abort threshold like any stalled work;
 * - each tool call the model makes (resolved by effect/ai through the call's
 *   toolkit) is a tool marker with the tool's name and call id, failing or
 *   interrupted as the tool does (see `TrackedToolkit`); a tool that hangs
 *   under the model call is `blocked_tool_call` and aborted at the threshold.
 *
 * An interrupted turn (admission `interrupt`, a recovery abort) interrupts the
 * call: the model stream, the running tool handlers, and their markers close
 * as `interrupted`. Outside a turn the model behaves exactly as the original.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as LanguageModel from "effect/ai/LanguageModel"
import * as Model from "effect/ai/Model"
import { ActivityTracker, CurrentRun } from "./ActivityTracker.ts"
import * as TrackedToolkit from "./TrackedToolkit.ts"

/**
 * Options of the decoration.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * The provider named on model markers.
   * @default the `Model.ProviderName` of the decorated model's layer, else "unknown"
   */
  readonly provider?: string | undefined
  /**
   * The model named on model markers.
   * @default the `Model.ModelName` of the decorated model's layer, else "unknown"
   */
  readonly model?: string | undefined
}

/**
 * The progress reason of a chunk of streamed response parts.
 *
 * @category constants
 * @since 0.1.0
 */
export const streamProgressReason = "model_stream"

type Tracker = Context.Service.Shape<typeof ActivityTracker>

/**
 * `model` decorated with the markers of `tracker`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const decorate = (
  model: LanguageModel.LanguageModel,
  tracker: Tracker,
  names: { readonly provider: string; readonly model: string }
): LanguageModel.LanguageModel => {
  const info = { provider: names.provider, model: names.model }
  const currentRun = Effect.contextWith((context: Context.Context<never>) =>
    Effect.succeed(Context.getOption(context as Context.Context<CurrentRun>, CurrentRun))
  )
  const withTrackedTools = <O extends { readonly toolkit?: unknown }>(options: O): O =>
    options.toolkit === undefined
      ? options
      : { ...options, toolkit: TrackedToolkit.trackWith(options.toolkit as LanguageModel.ToolkitInput<any>, tracker) }

  const marked = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.flatMap(currentRun, (run) =>
      Option.isNone(run) ? effect : tracker.model(info, effect).pipe(Effect.provideService(CurrentRun, run.value)))

  const markedStream = <A, E, R>(stream: Stream.Stream<A, E, R>): Stream.Stream<A, E, R> =>
    Stream.unwrap(Effect.map(currentRun, (run) =>
      Option.isNone(run) ? stream : Stream.callback<A, E, R>((queue) =>
        tracker.model(
          info,
          Stream.runForEachArray(stream, (parts) =>
            Effect.andThen(tracker.progress(streamProgressReason), Queue.offerAll(queue, parts)))
        ).pipe(
          Effect.andThen(Queue.end(queue)),
          Effect.provideService(CurrentRun, run.value)
        ), { bufferSize: 16 })))

  return {
    ...model,
    generateText: ((options: LanguageModel.GenerateTextOptions<any>) =>
      marked(model.generateText(withTrackedTools(options) as any))) as LanguageModel.LanguageModel["generateText"],
    generateObject: ((options: LanguageModel.GenerateObjectOptions<any, any>) =>
      marked(model.generateObject(withTrackedTools(options) as any))) as LanguageModel.LanguageModel["generateObject"],
    streamText: ((options: LanguageModel.GenerateTextOptions<any>) =>
      markedStream(model.streamText(withTrackedTools(options) as any))) as LanguageModel.LanguageModel["streamText"]
  }
}

/**
 * The `LanguageModel` in context, decorated (reads the provider and model
 * names from the context unless given).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  options: Options = {}
): Effect.Effect<LanguageModel.LanguageModel, never, LanguageModel.LanguageModel | ActivityTracker> =>
  Effect.gen(function*() {
    const model = yield* LanguageModel.LanguageModel
    const tracker = yield* ActivityTracker
    const named = <I>(service: Context.Key<I, string>) =>
      Effect.map(Effect.serviceOption(service), Option.getOrElse(() => "unknown"))
    const provider = options.provider ?? (yield* named(Model.ProviderName))
    const modelName = options.model ?? (yield* named(Model.ModelName))
    return decorate(model, tracker, { provider, model: modelName })
  })

/**
 * Decorates the `LanguageModel` it is given: provide the model's layer to it
 * (`TrackedLanguageModel.layer().pipe(Layer.provide(modelLayer))`), or use
 * {@link track}.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<LanguageModel.LanguageModel, never, LanguageModel.LanguageModel | ActivityTracker> =>
  Layer.effect(LanguageModel.LanguageModel, make(options))

/**
 * A model layer (a provider's `model(...)`, the scripted one) with its
 * `LanguageModel` tracked; whatever else it provides (its names) stays.
 *
 * @example
 * ```ts
 * const Gpt = OpenAiLanguageModel.model("gpt-5.2").pipe(TrackedLanguageModel.track())
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const track = (options?: Options) =>
<ROut, E, RIn>(
  self: Layer.Layer<ROut, E, RIn>
): Layer.Layer<ROut | LanguageModel.LanguageModel, E, RIn | ActivityTracker> =>
  layer(options).pipe(Layer.provideMerge(self)) as Layer.Layer<
    ROut | LanguageModel.LanguageModel,
    E,
    RIn | ActivityTracker
  >
