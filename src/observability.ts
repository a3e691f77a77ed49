/**
 * `effect-session-runtime/observability`: what operators see. Metrics fed
 * from the diagnostic events, the Prometheus endpoint, OTLP metrics and
 * GenAI-named traces, span attributes and their privacy policy, the
 * sanitised stability log, and the Node event-loop monitor.
 *
 * Needs `effect` alone; `PrometheusEndpoint.layerServer` (a standalone Node
 * HTTP server) also needs `@effect/platform-node` when it is built.
 * `SessionRuntime.layer` already runs the metrics, the stability log and the
 * event-loop monitor: import their modules from here to read them.
 *
 * @since 0.1.0
 */

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
export * as SessionMetrics from "./SessionMetrics.ts"
/** @since 0.1.0 */
export * as SpanAttributes from "./SpanAttributes.ts"
/** @since 0.1.0 */
export * as StabilityLog from "./StabilityLog.ts"
/** @since 0.1.0 */
export * as StabilityRing from "./StabilityRing.ts"
