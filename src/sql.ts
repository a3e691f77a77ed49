/**
 * `effect-session-runtime/sql`: the session write lock on PostgreSQL, over
 * effect's `SqlClient`. Needs `effect` alone to import; the application
 * provides the client, for example `PgClient.layer` from `@effect/sql-pg`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as SessionLockSql from "./SessionLockSql.ts"
