/**
 * Span names and attributes for turns, tool calls and model calls, after the
 * OpenTelemetry GenAI semantic conventions: a model call is a `chat {model}`
 * span with `gen_ai.operation.name = "chat"`, a tool call an
 * `execute_tool {tool}` span with `gen_ai.operation.name = "execute_tool"`, a
 * turn an `invoke_agent [{agent}]` span.
 *
 * Privacy policy: a session key goes into a span only as its
 * {@link SessionKey.hash} (in `gen_ai.conversation.id` and
 * `session_runtime.session.key_hash`), and a tool call id not at all, unless
 * the {@link SpanPolicy} reference opts in (`includeSessionKeys`,
 * `includeCallIds`). The policy is read when the span starts, so one layer
 * (`OtelExporter.layer({ includeSessionKeys })` or {@link layerPolicy}) sets it
 * for the whole program.
 *
 * The pure builders (`modelAttributes`, `modelSpanName`, ...) are exported so
 * other code can name spans the same way; the wrappers (`modelSpan`,
 * `toolSpan`, `turnSpan`) put an Effect in such a span.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import type * as Tracer from "effect/Tracer"
import * as SessionKey from "./SessionKey.ts"

/**
 * The attribute names used on spans.
 *
 * @category constants
 * @since 0.1.0
 */
export const Attr = {
  /** GenAI: `chat`, `execute_tool` or `invoke_agent`. */
  operationName: "gen_ai.operation.name",
  /** GenAI: the model provider, e.g. `openai`, `anthropic`. */
  providerName: "gen_ai.provider.name",
  /** GenAI: the model asked for. */
  requestModel: "gen_ai.request.model",
  /** GenAI: the tool's name. */
  toolName: "gen_ai.tool.name",
  /** GenAI: the tool call id (only with `includeCallIds`). */
  toolCallId: "gen_ai.tool.call.id",
  /** GenAI: `function`, `extension` or `datastore`. */
  toolType: "gen_ai.tool.type",
  /** GenAI: the agent's name on a turn span. */
  agentName: "gen_ai.agent.name",
  /** GenAI: the conversation: the session key's hash, or the key itself with `includeSessionKeys`. */
  conversationId: "gen_ai.conversation.id",
  /** The session key's hash, always (for joining with logs and records that hash). */
  sessionKeyHash: "session_runtime.session.key_hash",
  /** The turn id on a turn span (only with `includeCallIds`). */
  turnId: "session_runtime.turn.id",
  /** The error's `_tag` (or name) when the wrapped Effect fails. */
  errorType: "error.type"
} as const

/**
 * The values of `gen_ai.operation.name` used here.
 *
 * @category constants
 * @since 0.1.0
 */
export const Operation = {
  chat: "chat",
  executeTool: "execute_tool",
  invokeAgent: "invoke_agent"
} as const

/**
 * What identifying data spans may carry.
 *
 * @category models
 * @since 0.1.0
 */
export interface SpanPolicy {
  /** Put the raw session key in `gen_ai.conversation.id` (default: its hash). */
  readonly includeSessionKeys: boolean
  /** Put tool call ids and turn ids in spans (default: left out). */
  readonly includeCallIds: boolean
}

/**
 * The span policy in effect; by default nothing identifying leaves the process.
 *
 * @category references
 * @since 0.1.0
 */
export const SpanPolicy = Context.Reference<SpanPolicy>("effect-session-runtime/SpanAttributes/SpanPolicy", {
  defaultValue: () => defaultPolicy
})

/**
 * The default policy: session keys hashed, call ids left out.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultPolicy: SpanPolicy = { includeSessionKeys: false, includeCallIds: false }

/**
 * Sets the span policy for everything the layer is provided to.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerPolicy = (policy: Partial<SpanPolicy>): Layer.Layer<never> =>
  Layer.succeed(SpanPolicy, { ...defaultPolicy, ...policy })

/**
 * A model call, as described on its span.
 *
 * @category models
 * @since 0.1.0
 */
export interface ModelCall {
  /** The provider, e.g. `openai`. */
  readonly provider: string
  /** The model, e.g. `gpt-4o`. */
  readonly model: string
  readonly sessionKey?: SessionKey.SessionKey | undefined
}

/**
 * A tool call, as described on its span.
 *
 * @category models
 * @since 0.1.0
 */
export interface ToolCall {
  /** The tool's name, e.g. `web_search`. */
  readonly tool: string
  /** The call id; exported only with `includeCallIds`. */
  readonly callId?: string | undefined
  /** `function` (default when unset: not exported), `extension` or `datastore`. */
  readonly toolType?: "function" | "extension" | "datastore" | undefined
  readonly sessionKey?: SessionKey.SessionKey | undefined
}

/**
 * A turn (one agent invocation on a session), as described on its span.
 *
 * @category models
 * @since 0.1.0
 */
export interface Turn {
  readonly sessionKey: SessionKey.SessionKey
  /** The agent's name, when there is one (it becomes part of the span name). */
  readonly agent?: string | undefined
  /** The turn id; exported only with `includeCallIds`. */
  readonly turnId?: string | undefined
}

type Attributes = Record<string, string>

const sessionAttributes = (out: Attributes, key: SessionKey.SessionKey | undefined, policy: SpanPolicy) => {
  if (key === undefined) return
  const hash = SessionKey.hash(key)
  out[Attr.sessionKeyHash] = hash
  out[Attr.conversationId] = policy.includeSessionKeys ? key : hash
}

/**
 * The span name of a model call: `chat {model}`.
 *
 * @category names
 * @since 0.1.0
 */
export const modelSpanName = (call: ModelCall): string => `${Operation.chat} ${call.model}`

/**
 * The span name of a tool call: `execute_tool {tool}`.
 *
 * @category names
 * @since 0.1.0
 */
export const toolSpanName = (call: ToolCall): string => `${Operation.executeTool} ${call.tool}`

/**
 * The span name of a turn: `invoke_agent {agent}`, or `invoke_agent`.
 *
 * @category names
 * @since 0.1.0
 */
export const turnSpanName = (turn: Turn): string =>
  turn.agent === undefined || turn.agent.length === 0 ? Operation.invokeAgent : `${Operation.invokeAgent} ${turn.agent}`

/**
 * The attributes of a model call span under a policy.
 *
 * @category attributes
 * @since 0.1.0
 */
export const modelAttributes = (call: ModelCall, policy: SpanPolicy = defaultPolicy): Attributes => {
  const out: Attributes = {
    [Attr.operationName]: Operation.chat,
    [Attr.providerName]: call.provider,
    [Attr.requestModel]: call.model
  }
  sessionAttributes(out, call.sessionKey, policy)
  return out
}

/**
 * The attributes of a tool call span under a policy.
 *
 * @category attributes
 * @since 0.1.0
 */
export const toolAttributes = (call: ToolCall, policy: SpanPolicy = defaultPolicy): Attributes => {
  const out: Attributes = {
    [Attr.operationName]: Operation.executeTool,
    [Attr.toolName]: call.tool
  }
  if (call.toolType !== undefined) out[Attr.toolType] = call.toolType
  if (policy.includeCallIds && call.callId !== undefined) out[Attr.toolCallId] = call.callId
  sessionAttributes(out, call.sessionKey, policy)
  return out
}

/**
 * The attributes of a turn span under a policy.
 *
 * @category attributes
 * @since 0.1.0
 */
export const turnAttributes = (turn: Turn, policy: SpanPolicy = defaultPolicy): Attributes => {
  const out: Attributes = { [Attr.operationName]: Operation.invokeAgent }
  if (turn.agent !== undefined && turn.agent.length > 0) out[Attr.agentName] = turn.agent
  if (policy.includeCallIds && turn.turnId !== undefined) out[Attr.turnId] = turn.turnId
  sessionAttributes(out, turn.sessionKey, policy)
  return out
}

// `error.type` names the failure by its tag, never by its message (messages may
// quote inputs).
const errorType = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    if ("_tag" in error && typeof error._tag === "string") return error._tag
    if (error instanceof Error) return error.name
  }
  return "_OTHER"
}

const inSpan = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  attributes: (policy: SpanPolicy) => Attributes,
  kind: Tracer.SpanKind
): Effect.Effect<A, E, R> =>
  Effect.flatMap(SpanPolicy, (policy) =>
    self.pipe(
      Effect.tapError((error) => Effect.annotateCurrentSpan(Attr.errorType, errorType(error))),
      // No stack capture: these spans wrap every tool and model call, and the
      // caller's frame says nothing the span's name and attributes do not.
      Effect.withSpan(name, { attributes: attributes(policy), kind }, { captureStackTrace: false })
    ))

/**
 * Runs an Effect in a `chat {model}` client span with the GenAI model-call
 * attributes; a typed failure also sets `error.type` to its tag.
 *
 * @category spans
 * @since 0.1.0
 */
export const modelSpan: {
  (call: ModelCall): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, call: ModelCall): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, call: ModelCall): Effect.Effect<A, E, R> =>
    inSpan(self, modelSpanName(call), (policy) => modelAttributes(call, policy), "client")
)

/**
 * Runs an Effect in an `execute_tool {tool}` span with the GenAI tool-call
 * attributes; a typed failure also sets `error.type` to its tag.
 *
 * @category spans
 * @since 0.1.0
 */
export const toolSpan: {
  (call: ToolCall): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, call: ToolCall): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, call: ToolCall): Effect.Effect<A, E, R> =>
    inSpan(self, toolSpanName(call), (policy) => toolAttributes(call, policy), "internal")
)

/**
 * Runs an Effect in an `invoke_agent` span for one turn of a session; a typed
 * failure also sets `error.type` to its tag.
 *
 * @category spans
 * @since 0.1.0
 */
export const turnSpan: {
  (turn: Turn): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, turn: Turn): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, turn: Turn): Effect.Effect<A, E, R> =>
    inSpan(self, turnSpanName(turn), (policy) => turnAttributes(turn, policy), "internal")
)
