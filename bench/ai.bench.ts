/**
 * The cost of tracking effect/ai calls: the same scripted `LanguageModel`
 * called inside a run, decorated by `TrackedLanguageModel` and not, in one
 * process (alternating rounds, medians, after a warm-up). Tracker spans are
 * off in both (effect/ai's own spans are on in both), so the figures are the
 * markers and progress alone.
 *
 * Figures:
 * - `ai_generate_tool_call_ns` / `ai_generate_tool_call_untracked_ns`: one
 *   `generateText` whose model calls one tool (resolved by effect/ai), time per call;
 *   `ai_generate_tool_call_ratio`: tracked ÷ untracked.
 * - `ai_stream_part_ns` / `ai_stream_part_untracked_ns`: time per streamed part of a
 *   1000-part `streamText`, one part per chunk as server-sent events arrive (each
 *   chunk is progress when tracked: an event on the bus);
 *   `ai_stream_ratio`: tracked ÷ untracked.
 */
import { Context, Effect, Exit, Layer, Schema, Scope, Stream } from "effect"
import { LanguageModel, Tool, Toolkit } from "effect/ai"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as ScriptedLanguageModel from "../src/ScriptedLanguageModel.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as TrackedLanguageModel from "../src/TrackedLanguageModel.ts"
import type { Suite } from "./index.ts"
import { alternate } from "./utils/stats.ts"

const key = SessionKey.makeUnsafe("agent:bench:ai:1")

const Tools = Toolkit.make(
  Tool.make("lookup", { parameters: Schema.Struct({ q: Schema.String }), success: Schema.String })
)
const Handlers = Tools.toLayer({ lookup: ({ q }) => Effect.succeed(q) })

const script: ScriptedLanguageModel.Script = (request) =>
  request.tools.length > 0
    ? ScriptedLanguageModel.reply({ toolCalls: [{ name: "lookup", params: { q: "x" }, id: "c" }] })
    // One part per chunk, as a provider's server-sent events arrive: each one is progress.
    : Stream.rechunk(ScriptedLanguageModel.reply({ text: "w ".repeat(998) }), 1)

interface Variant {
  readonly generate: (n: number) => Promise<number>
  readonly stream: (n: number) => Promise<number>
}

const build = async (scope: Scope.Scope, tracked: boolean): Promise<Variant> =>
  Effect.runPromise(
    Effect.gen(function*() {
      const model = ScriptedLanguageModel.layer(script)
      const context = yield* Layer.build(
        Layer.merge(tracked ? model.pipe(TrackedLanguageModel.track()) : model, Handlers).pipe(
          Layer.provideMerge(ActivityTracker.layer({ spans: false })),
          Layer.provideMerge(DiagnosticBus.layer())
        )
      )
      const languageModel = Context.get(context, LanguageModel.LanguageModel)
      const tracker = Context.get(context, ActivityTracker.ActivityTracker)
      const toolkit = yield* Effect.provideContext(Tools, context)
      const timed = (n: number, effect: Effect.Effect<unknown, unknown>): Promise<number> =>
        Effect.runPromise(tracker.run(
          key,
          Effect.gen(function*() {
            const started = performance.now()
            for (let i = 0; i < n; i++) yield* effect
            return ((performance.now() - started) * 1e6) / n
          })
        ) as Effect.Effect<number>)
      return {
        generate: (n: number) => timed(n, languageModel.generateText({ prompt: "go", toolkit })),
        // 1000 parts per stream: text-start, 998 deltas, text-end (and finish).
        stream: (n: number) =>
          timed(n, Stream.runDrain(languageModel.streamText({ prompt: "go" }))).then((ns) => ns / 1000)
      }
    }).pipe(Scope.provide(scope))
  )

const suite: Suite = {
  name: "effect/ai tracking",
  run: async ({ log, quick }) => {
    const scope = Effect.runSync(Scope.make())
    try {
      const tracked = await build(scope, true)
      const untracked = await build(scope, false)
      const calls = quick ? 200 : 1000
      const streams = quick ? 5 : 20
      const rounds = quick ? 5 : 15
      await tracked.generate(calls)
      await untracked.generate(calls)
      await tracked.stream(streams)
      await untracked.stream(streams)
      const generate = await alternate(rounds, {
        tracked: () => tracked.generate(calls),
        untracked: () => untracked.generate(calls)
      })
      const stream = await alternate(rounds, {
        tracked: () => tracked.stream(streams),
        untracked: () => untracked.stream(streams)
      })
      log(`  ${rounds} rounds: ${calls} generateText calls with a tool call, ${streams} streams of 1000 parts; medians`)
      return {
        ai_generate_tool_call_ns: generate.tracked,
        ai_generate_tool_call_untracked_ns: generate.untracked,
        ai_generate_tool_call_ratio: generate.tracked / generate.untracked,
        ai_stream_part_ns: stream.tracked,
        ai_stream_part_untracked_ns: stream.untracked,
        ai_stream_ratio: stream.tracked / stream.untracked
      }
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

export default suite
