/**
 * The effect/ai integration: `LanguageModel`, `Toolkit` and `McpClient`
 * tracked by the `ActivityTracker` without a marker placed by hand, and a
 * scripted `LanguageModel` for demos and tests. Needs `effect` only.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as ScriptedLanguageModel from "./ScriptedLanguageModel.ts"

/**
 * @since 0.1.0
 */
export * as TrackedLanguageModel from "./TrackedLanguageModel.ts"

/**
 * @since 0.1.0
 */
export * as TrackedMcpClient from "./TrackedMcpClient.ts"

/**
 * @since 0.1.0
 */
export * as TrackedToolkit from "./TrackedToolkit.ts"
