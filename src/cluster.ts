/**
 * `effect-session-runtime/cluster`: sessions as Effect Cluster entities, one
 * owner per session across runner processes. Needs `effect` alone to import;
 * the application provides the cluster's storage and transport (for example
 * PostgreSQL through `@effect/sql-pg` and `@effect/platform-node`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as ClusterSessions from "./ClusterSessions.ts"
