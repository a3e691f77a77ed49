/**
 * effect-session-runtime: keeps every chat session of an AI agent server
 * moving. The root entry point is the core and needs `effect` alone: session
 * keys, the diagnostic events and their bus, activity tracking, lanes,
 * attention, the watchdog, recovery, the session write lock with its memory
 * and file backends, the lane guard, and `SessionRuntime.layer` wiring them.
 *
 * The other domains have their own entry points, as effect ships
 * `effect/cluster`:
 * - `effect-session-runtime/observability`: metrics, Prometheus, OTLP, span
 *   attributes, the stability log, the event-loop monitor;
 * - `effect-session-runtime/sql`: the PostgreSQL session lock;
 * - `effect-session-runtime/cluster`: sessions as Effect Cluster entities;
 * - `effect-session-runtime/cli`: the doctor (the `effect-session-runtime` bin).
 *
 * Every module is also importable alone by its name
 * (`effect-session-runtime/SessionLock`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as ActivityTracker from "./ActivityTracker.ts"
/** @since 0.1.0 */
export * as Attention from "./Attention.ts"
/** @since 0.1.0 */
export * as DiagnosticBus from "./DiagnosticBus.ts"
/** @since 0.1.0 */
export * as DiagnosticEvent from "./DiagnosticEvent.ts"
/** @since 0.1.0 */
export * as LaneGuard from "./LaneGuard.ts"
/** @since 0.1.0 */
export * as Recovery from "./Recovery.ts"
/** @since 0.1.0 */
export * as SessionKey from "./SessionKey.ts"
/** @since 0.1.0 */
export * as SessionLanes from "./SessionLanes.ts"
/** @since 0.1.0 */
export * as SessionLock from "./SessionLock.ts"
/** @since 0.1.0 */
export * as SessionLockFile from "./SessionLockFile.ts"
/** @since 0.1.0 */
export * as SessionRuntime from "./SessionRuntime.ts"
/** @since 0.1.0 */
export * as Watchdog from "./Watchdog.ts"
