import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, Tracer } from "effect"
import * as SessionKey from "../src/SessionKey.ts"
import * as SpanAttributes from "../src/SpanAttributes.ts"

const key = SessionKey.makeUnsafe("agent:main:telegram:direct:span-secret-4711")

interface Recorded {
  readonly name: string
  readonly kind: Tracer.SpanKind
  readonly attributes: Map<string, unknown>
  readonly parent: string | undefined
  readonly spanId: string
}

// A tracer that records every span it creates (native spans, so parents and
// attributes behave as in production).
const recordingTracer = () => {
  const spans: Array<Recorded> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push({
        name: options.name,
        kind: options.kind,
        attributes: span.attributes,
        parent: options.parent._tag === "Some" ? options.parent.value.spanId : undefined,
        spanId: span.spanId
      })
      return span
    }
  })
  return { spans, tracer }
}

class ToolBroke extends Schema.TaggedError<ToolBroke>()("ToolBroke", {}) {}

describe("SpanAttributes", () => {
  describe("names", () => {
    it("follows the GenAI span names", () => {
      assert.strictEqual(SpanAttributes.modelSpanName({ provider: "openai", model: "gpt-4o" }), "chat gpt-4o")
      assert.strictEqual(SpanAttributes.toolSpanName({ tool: "web_search" }), "execute_tool web_search")
      assert.strictEqual(SpanAttributes.turnSpanName({ sessionKey: key }), "invoke_agent")
      assert.strictEqual(SpanAttributes.turnSpanName({ sessionKey: key, agent: "main" }), "invoke_agent main")
    })
  })

  describe("attributes", () => {
    it("hashes the session key and leaves call ids out by default", () => {
      const attrs = SpanAttributes.toolAttributes({ tool: "exec", callId: "call_secret_1", sessionKey: key })
      assert.deepStrictEqual(attrs, {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "exec",
        "session_runtime.session.key_hash": SessionKey.hash(key),
        "gen_ai.conversation.id": SessionKey.hash(key)
      })
    })

    it("includes the raw key and call ids only when the policy opts in", () => {
      const policy = { includeSessionKeys: true, includeCallIds: true }
      const attrs = SpanAttributes.toolAttributes({ tool: "exec", callId: "call_1", sessionKey: key }, policy)
      assert.strictEqual(attrs["gen_ai.conversation.id"], key)
      assert.strictEqual(attrs["gen_ai.tool.call.id"], "call_1")
      const turn = SpanAttributes.turnAttributes({ sessionKey: key, turnId: "turn-1" }, policy)
      assert.strictEqual(turn["session_runtime.turn.id"], "turn-1")
    })

    it("describes a model call with provider and model", () => {
      assert.deepStrictEqual(SpanAttributes.modelAttributes({ provider: "anthropic", model: "claude" }), {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude"
      })
    })
  })

  describe("spans", () => {
    it.effect("nests tool and model spans under the turn span with their attributes", () =>
      Effect.gen(function*() {
        const { spans, tracer } = recordingTracer()
        const result = yield* Effect.succeed(42).pipe(
          SpanAttributes.toolSpan({ tool: "read_file", callId: "call_x", sessionKey: key }),
          Effect.andThen((n) => SpanAttributes.modelSpan(Effect.succeed(n + 1), { provider: "openai", model: "o3" })),
          SpanAttributes.turnSpan({ sessionKey: key, agent: "main" }),
          Effect.withTracer(tracer)
        )
        assert.strictEqual(result, 43)
        const [turn, tool, model] = spans
        assert.deepStrictEqual(spans.map((s) => s.name), ["invoke_agent main", "execute_tool read_file", "chat o3"])
        assert.strictEqual(tool!.parent, turn!.spanId)
        assert.strictEqual(model!.parent, turn!.spanId)
        assert.strictEqual(model!.kind, "client")
        assert.strictEqual(tool!.attributes.get("gen_ai.conversation.id"), SessionKey.hash(key))
        assert.isFalse(tool!.attributes.has("gen_ai.tool.call.id"))
        assert.strictEqual(turn!.attributes.get("gen_ai.agent.name"), "main")
      }))

    it.effect("reads the policy from the SpanPolicy reference", () =>
      Effect.gen(function*() {
        const { spans, tracer } = recordingTracer()
        yield* Effect.void.pipe(
          SpanAttributes.toolSpan({ tool: "exec", callId: "call_y", sessionKey: key }),
          Effect.withTracer(tracer),
          Effect.provide(SpanAttributes.layerPolicy({ includeSessionKeys: true, includeCallIds: true }))
        )
        assert.strictEqual(spans[0]!.attributes.get("gen_ai.conversation.id"), key)
        assert.strictEqual(spans[0]!.attributes.get("gen_ai.tool.call.id"), "call_y")
      }))

    it.effect("sets error.type to the failure's tag", () =>
      Effect.gen(function*() {
        const { spans, tracer } = recordingTracer()
        const exit = yield* Effect.fail(new ToolBroke()).pipe(
          SpanAttributes.toolSpan({ tool: "exec" }),
          Effect.withTracer(tracer),
          Effect.exit
        )
        assert.strictEqual(exit._tag, "Failure")
        assert.strictEqual(spans[0]!.attributes.get("error.type"), "ToolBroke")
      }))
  })
})
