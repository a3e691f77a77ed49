/**
 * effect-session-runtime: keeps every chat session of an AI agent server
 * moving. One namespace per module; `SessionRuntime.layer` wires them all.
 *
 * Modules that need optional peers are not re-exported here and are imported
 * by path: `effect-session-runtime/SessionLockSql` and
 * `effect-session-runtime/ClusterSessions` (PostgreSQL through `@effect/sql-pg`).
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
export * as Doctor from "./Doctor.ts"
/** @since 0.1.0 */
export * as LaneGuard from "./LaneGuard.ts"
/** @since 0.1.0 */
export * as MetricsFromEvents from "./MetricsFromEvents.ts"
/** @since 0.1.0 */
export * as MetricsFromState from "./MetricsFromState.ts"
/** @since 0.1.0 */
export * as NodeEventLoopMonitor from "./NodeEventLoopMonitor.ts"
/** @since 0.1.0 */
export * as OtelExporter from "./OtelExporter.ts"
/** @since 0.1.0 */
export * as PrometheusEndpoint from "./PrometheusEndpoint.ts"
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
export * as SessionMetrics from "./SessionMetrics.ts"
/** @since 0.1.0 */
export * as SessionRuntime from "./SessionRuntime.ts"
/** @since 0.1.0 */
export * as SpanAttributes from "./SpanAttributes.ts"
/** @since 0.1.0 */
export * as StabilityLog from "./StabilityLog.ts"
/** @since 0.1.0 */
export * as StabilityRing from "./StabilityRing.ts"
/** @since 0.1.0 */
export * as Watchdog from "./Watchdog.ts"
