/**
 * `effect-session-runtime/cli`: the doctor, as checks (data) and as the
 * `effect/cli` command `doctor locks` that the `effect-session-runtime` bin
 * runs. Needs `effect` alone to import; running the command needs a platform
 * (the bin uses `@effect/platform-node`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Doctor from "./Doctor.ts"
