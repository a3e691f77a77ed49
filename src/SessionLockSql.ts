/**
 * A PostgreSQL backend for the session write lock, through `effect/sql`
 * (`SqlClient`) and `@effect/sql-pg`: one lease row per session key, shared by
 * every process and host that reaches the database.
 *
 * - **Schema** ({@link migrations}): a `session_locks` table (key, owner,
 *   holder pid/host/start time, fencing token, acquired/refreshed/expires
 *   times, lease and max hold) and a sequence that hands out the fencing
 *   tokens. The layer runs
 *   the migration unless told not to; {@link migrate} runs it on its own.
 * - **Acquire** is one statement: insert the row, or take it over if it is
 *   free (released), with a token from the sequence drawn under the row lock.
 *   A lease that was not refreshed before its expiry is *reclaimed* by a
 *   conditional update that matches the observed token and the expiry, so a
 *   lease taken in between is never touched. Only expiry makes a lease
 *   reclaimable; when its holder ran on this host, a process probe only names
 *   the reason (`holder_dead`, `pid_reused`, else `lease_expired`).
 * - **Expiry** uses the database's clock (`now()`), so hosts with skewed
 *   clocks agree. The holder refreshes its lease every third of the lease time;
 *   a refresh only extends a lease that has not yet expired.
 * - **Release** frees the row (owner cleared, token kept) only if the token
 *   still matches. Rows are never deleted, so the tokens of a key strictly
 *   increase: each is drawn after the previous holder's row was committed.
 * - **assertCurrent** fails with `LockLost` once the lease's local validity
 *   (last successful refresh + lease time) has passed, without asking the
 *   database, and otherwise checks the row by token.
 * - Every statement runs outside any ambient transaction and under an
 *   operation timeout, so a database that stops answering gives a typed
 *   `LockIoError` (retryable), never a hang past the acquire budget plus one
 *   operation timeout.
 *
 * @since 0.1.0
 */
import { hostname } from "node:os"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Migrator from "effect/sql/Migrator"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { DiagnosticBus } from "./DiagnosticBus.ts"
import * as lease from "./internal/lease.ts"
import { makeProcessProbe, probeProcess } from "./internal/processProbe.ts"
import type { SessionKey } from "./SessionKey.ts"
import * as SessionLock from "./SessionLock.ts"

/**
 * Options of the PostgreSQL backend.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * The lease table; the token sequence is `<table>_tokens` and the migration
   * history `<table>_migrations`. A lowercase SQL identifier.
   * @default "session_locks"
   */
  readonly table?: string | undefined
  /**
   * How long a lease stands without a refresh. The holder refreshes every
   * third of it; a holder that cannot reach the database loses its lease when
   * it runs out, and the lease is then reclaimed by the next waiter.
   * @default "30 seconds"
   */
  readonly lease?: Duration.Input | undefined
  /**
   * The longest one statement may take before it counts as a failure
   * (`LockIoError`, reason `unavailable`, retryable). Bounds how far an
   * acquire can overrun its budget when the database stops answering.
   * @default "5 seconds"
   */
  readonly operationTimeout?: Duration.Input | undefined
  /**
   * Whether {@link layer} runs the migration before it starts.
   * @default true
   */
  readonly migrate?: boolean | undefined
}

interface Resolved {
  readonly table: string
  readonly sequence: string
  readonly history: string
  readonly leaseMs: number
  readonly operationTimeoutMs: number
}

const identifier = /^[a-z_][a-z0-9_]{0,49}$/

const resolve = (options: Options = {}): Resolved => {
  const table = options.table ?? "session_locks"
  if (!identifier.test(table)) {
    throw new Error(
      `SessionLockSql: the table name ${JSON.stringify(table)} is not a plain lowercase SQL identifier ` +
        "(letters, digits and underscores, starting with a letter or underscore, at most 50 characters)."
    )
  }
  const leaseMs = Duration.toMillis(Duration.fromInputUnsafe(options.lease ?? "30 seconds"))
  if (!(leaseMs >= 30 && leaseMs <= 24 * 3_600_000)) {
    throw new Error(`SessionLockSql: lease must be between 30 ms and 24 hours, got ${leaseMs} ms.`)
  }
  const operationTimeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options.operationTimeout ?? "5 seconds"))
  if (!(operationTimeoutMs > 0)) {
    throw new Error(`SessionLockSql: operationTimeout must be positive, got ${operationTimeoutMs} ms.`)
  }
  return { table, sequence: `${table}_tokens`, history: `${table}_migrations`, leaseMs, operationTimeoutMs }
}

/**
 * The schema as `effect/sql` migrations: the lease table and the token
 * sequence. Safe to run concurrently from several processes (the migrator
 * locks its history table) and on a database that already has them.
 *
 * @category migrations
 * @since 0.1.0
 */
export const migrations = (options?: Options): Migrator.Loader => {
  const { table, sequence } = resolve(options)
  return Migrator.fromRecord({
    "1_create_session_locks": Effect.gen(function*() {
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      // CACHE 1: every nextval is globally ordered, which the per-key order of tokens relies on.
      yield* sql.unsafe(`CREATE SEQUENCE IF NOT EXISTS ${sequence} AS bigint START WITH 1 CACHE 1 NO CYCLE`)
      yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS ${table} (
  session_key  text PRIMARY KEY CHECK (char_length(session_key) BETWEEN 1 AND 512),
  owner_id     text,
  holder_pid   integer,
  holder_host  text,
  holder_start bigint,
  token        bigint NOT NULL,
  acquired_at  timestamptz NOT NULL,
  refreshed_at timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL,
  lease_ms     integer NOT NULL CHECK (lease_ms > 0),
  max_hold_ms  bigint NOT NULL CHECK (max_hold_ms >= 0)
)`)
      yield* sql.unsafe(`COMMENT ON TABLE ${table} IS 'effect-session-runtime: one lease row per session key; ` +
        `owner_id IS NULL when free; token is the last fencing token handed out for the key'`)
    })
  })
}

/**
 * Runs the migration with the `SqlClient` in context; returns the migrations
 * it applied.
 *
 * @category migrations
 * @since 0.1.0
 */
export const migrate = (
  options?: Options
): Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  Migrator.MigrationError | SqlError,
  SqlClient.SqlClient
> =>
  Effect.suspend(() => Migrator.make({})({ loader: migrations(options), table: resolve(options).history }))

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

const sqlState = (error: SqlError): string | undefined => {
  const cause = error.reason.cause as { readonly code?: unknown } | undefined
  return typeof cause?.code === "string" ? cause.code : undefined
}

/**
 * Turns an `effect/sql` failure into the lock's typed storage error: the
 * reason, whether retrying can help, and what to do.
 *
 * @category errors
 * @since 0.1.0
 */
export const toLockIoError = (table: string, operation: string, error: SqlError): SessionLock.LockIoError => {
  const code = sqlState(error)
  const text = error.reason.message ?? error.message
  const causeText = (error.reason.cause as { readonly message?: unknown } | undefined)?.message
  const detail = `${operation}: ${typeof causeText === "string" ? causeText : text}${code ? ` (SQLSTATE ${code})` : ""}`
  const make = (reason: SessionLock.LockIoReason, retryable: boolean, extra = "") =>
    new SessionLock.LockIoError({
      reason,
      path: `postgres table ${table}`,
      retryable,
      detail: detail + extra,
      cause: error
    })
  if (code === "42P01") {
    return make(
      "io",
      false,
      "; the lock table is missing: run SessionLockSql.migrate (or the layer with migrate: true)"
    )
  }
  if (code === "42501" || error.reason._tag === "AuthorizationError" || error.reason._tag === "AuthenticationError") {
    return make(
      "permission_denied",
      false,
      "; grant this role SELECT, INSERT, UPDATE on the table and USAGE on its sequence"
    )
  }
  if (code === "25006") return make("read_only", false, "; the lock needs a writable primary, not a standby")
  if (code === "53100") return make("no_space", false)
  if (code === "53300" || code === "53400") return make("busy", true)
  if (code !== undefined && (code.startsWith("57P") || code.startsWith("08"))) return make("unavailable", true)
  switch (error.reason._tag) {
    case "ConnectionError":
      return make("unavailable", true)
    case "DeadlockError":
    case "SerializationError":
    case "LockTimeoutError":
    case "StatementTimeoutError":
      return make("busy", true)
    default:
      return make("io", error.reason.isRetryable)
  }
}

// ---------------------------------------------------------------------------
// backend
// ---------------------------------------------------------------------------

interface Row {
  readonly acquired: boolean
  readonly token: bigint | number | string
  readonly owner_id: string | null
  readonly holder_pid: number | null
  readonly holder_host: string | null
  readonly holder_start: bigint | number | string | null
  readonly age_ms: number | string | null
  readonly expired: boolean
  readonly max_hold_ms: bigint | number | string | null
}

/**
 * What is known about an expired lease's holder from here: on this host its
 * pid can be probed (dead, reused, alive); elsewhere nothing. The probe only
 * names the holder and the reclaim reason; it never decides a reclaim, which
 * the lease's expiry alone does (another host may share this host name but
 * not its process table).
 */
type HolderVerdict = "dead" | "pid_reused" | "alive" | "unknown"

const observe = (row: Row, verdict: HolderVerdict | undefined): SessionLock.Observation => {
  const ageMs = row.age_ms === null ? undefined : Math.max(0, Math.round(Number(row.age_ms)))
  // A lease that is still refreshed proves its holder alive.
  const status: HolderVerdict = row.expired ? verdict ?? "unknown" : "alive"
  return {
    holder: {
      ...(row.holder_pid !== null ? { pid: row.holder_pid } : {}),
      ...(row.holder_host !== null ? { host: row.holder_host } : {}),
      ...(row.owner_id !== null ? { ownerId: row.owner_id } : {}),
      status,
      ...(ageMs !== undefined ? { ageMs } : {})
    },
    ...(row.max_hold_ms !== null ? { maxHoldMs: Number(row.max_hold_ms) } : {}),
    ...(row.expired
      ? { reclaimable: status === "dead" ? "holder_dead" : status === "pid_reused" ? "pid_reused" : "lease_expired" }
      : {}),
    fingerprint: String(row.token)
  } as SessionLock.Observation
}

/**
 * Builds the backend over the `SqlClient` in context, without running the
 * migration. Each process building one describes itself (pid, host) in the
 * rows it holds.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeBackend = Effect.fnUntraced(function*(options?: Options) {
  const config = resolve(options)
  const client = yield* SqlClient.SqlClient
  const sql = client.withoutTransforms()
  const clock = yield* Clock.Clock
  const pid = process.pid
  const host = hostname()
  const self = yield* Effect.promise(() => probeProcess(pid))
  const startTime = self._tag === "Alive" && self.startTime !== undefined ? self.startTime : null
  const probe = makeProcessProbe({ ttlMs: 1_000, now: () => clock.currentTimeMillisUnsafe() })
  const verdictOf = (row: Row): Effect.Effect<HolderVerdict | undefined> =>
    !row.expired || row.holder_host !== host || row.holder_pid === null
      ? Effect.succeed(undefined)
      : Effect.map(Effect.promise(() => probe(row.holder_pid!)), (state): HolderVerdict => {
        if (state._tag === "Dead") return "dead"
        if (state._tag === "Unknown") return "unknown"
        const written = row.holder_start === null ? undefined : Number(row.holder_start)
        return written !== undefined && state.startTime !== undefined && written !== state.startTime
          ? "pid_reused"
          : "alive"
      })
  const observeRow = (row: Row) => Effect.map(verdictOf(row), (verdict) => observe(row, verdict))
  const table = sql(config.table)
  const nextToken = sql.literal(`nextval('${config.sequence}')`)
  const leaseInterval = sql.literal(`interval '${config.leaseMs} milliseconds'`)
  const holderColumns = sql.literal(
    "owner_id, holder_pid, holder_host, holder_start, token, " +
      "(extract(epoch FROM (now() - acquired_at)) * 1000)::float8 AS age_ms, " +
      "expires_at <= now() AS expired, max_hold_ms"
  )
  // Local validity of each lease this process holds: the start of its last successful write + the lease time.
  const validUntil = new Map<string, number>()

  // Statements run in detached fibers, so that a timed-out statement is abandoned at once: cancelling it can
  // itself hang when the server stops answering, and must hold up neither the caller nor a shutdown.
  const timedOut = (operation: string) =>
    new SessionLock.LockIoError({
      reason: "unavailable",
      path: `postgres table ${config.table}`,
      retryable: true,
      detail: `${operation}: no answer from PostgreSQL within ${config.operationTimeoutMs} ms`
    })

  // Outside any transaction of the caller (a lock row must be visible at once), bounded in time.
  const run = <A>(
    operation: string,
    statement: Effect.Effect<A, SqlError>
  ): Effect.Effect<A, SessionLock.LockIoError> =>
    Effect.gen(function*() {
      const fiber = yield* statement.pipe(
        Effect.updateContext((context: Context.Context<never>) => Context.omit(client.transactionService)(context)),
        Effect.mapError((error) => toLockIoError(config.table, operation, error)),
        Effect.forkDetach({ startImmediately: true })
      )
      const abandon = Effect.forkDetach(Fiber.interrupt(fiber))
      const exit = yield* Fiber.await(fiber).pipe(
        Effect.interruptible,
        Effect.timeoutOption(Duration.millis(config.operationTimeoutMs)),
        Effect.onInterrupt(() => abandon)
      )
      if (Option.isNone(exit)) {
        yield* abandon
        return yield* timedOut(operation)
      }
      return yield* exit.value
    })

  const lost = (reason: string): SessionLock.LeaseCheck => ({ _tag: "Lost", reason })

  const explain = (held: SessionLock.Lease, row: Row | undefined): string => {
    if (row === undefined || row.owner_id === null) {
      return row !== undefined && BigInt(row.token) !== BigInt(held.token)
        ? `the lock was reclaimed and then released by a later holder (token ${row.token})`
        : "the lease was released or reclaimed"
    }
    if (BigInt(row.token) !== BigInt(held.token)) {
      return `the lock is now held by ${row.owner_id} (pid ${row.holder_pid ?? "?"} on ${row.holder_host ?? "?"}) ` +
        `with token ${row.token}`
    }
    return "the lease expired without a refresh (the holder could not reach the database in time)"
  }

  const selectRow = (key: SessionKey) =>
    sql<Row>`SELECT false AS acquired, ${holderColumns} FROM ${table} WHERE session_key = ${key}`.pipe(
      Effect.map((rows) => rows[0])
    )

  const localCheck = (held: SessionLock.Lease, now: number): SessionLock.LeaseCheck | undefined => {
    const until = validUntil.get(held.ownerId)
    if (until === undefined) return lost("the lease was released")
    if (now >= until) {
      return lost(
        `its lease ran out ${lease.formatDuration(now - until)} ago without a successful refresh ` +
          "(the holder could not reach the database)"
      )
    }
    return undefined
  }

  const backend: SessionLock.Backend = {
    name: "postgres",
    refreshInterval: Duration.millis(lease.refreshEvery(config.leaseMs)),

    tryAcquire: (request) =>
      Effect.gen(function*() {
        const sentAt = clock.currentTimeMillisUnsafe()
        const rows = yield* run(
          "acquire",
          sql<Row>`WITH attempt AS (
  INSERT INTO ${table} AS l
    (session_key, owner_id, holder_pid, holder_host, holder_start, token, acquired_at, refreshed_at, expires_at,
     lease_ms, max_hold_ms)
  VALUES (${request.sessionKey}, ${request.ownerId}, ${pid}, ${host}, ${startTime}, ${nextToken}, now(), now(),
    now() + ${leaseInterval}, ${config.leaseMs}, ${Math.round(request.maxHoldMs)})
  ON CONFLICT (session_key) DO UPDATE SET
    owner_id = EXCLUDED.owner_id, holder_pid = EXCLUDED.holder_pid, holder_host = EXCLUDED.holder_host,
    holder_start = EXCLUDED.holder_start, token = ${nextToken}, acquired_at = now(), refreshed_at = now(),
    expires_at = EXCLUDED.expires_at,
    lease_ms = EXCLUDED.lease_ms, max_hold_ms = EXCLUDED.max_hold_ms
  WHERE l.owner_id IS NULL
  RETURNING l.token
)
SELECT true AS acquired, NULL::text AS owner_id, NULL::integer AS holder_pid, NULL::text AS holder_host,
  NULL::bigint AS holder_start, token,
  0::float8 AS age_ms, false AS expired, NULL::bigint AS max_hold_ms FROM attempt
UNION ALL
SELECT false, ${holderColumns} FROM ${table}
WHERE session_key = ${request.sessionKey} AND NOT EXISTS (SELECT 1 FROM attempt)`
        )
        const row = rows[0]
        if (row?.acquired === true) {
          validUntil.set(request.ownerId, sentAt + config.leaseMs)
          return { _tag: "Acquired", token: Number(row.token) } as const
        }
        if (row === undefined || row.owner_id === null) {
          // The row changed under the statement's snapshot (inserted or released concurrently): look again soon.
          return {
            _tag: "Held",
            observation: { holder: { status: "unknown" }, fingerprint: "changing" }
          } as const
        }
        return { _tag: "Held", observation: yield* observeRow(row) } as const
      }),

    reclaim: (key, observation) =>
      Effect.map(
        run(
          "reclaim",
          sql<{ readonly token: unknown }>`UPDATE ${table}
SET owner_id = NULL, holder_pid = NULL, holder_host = NULL, holder_start = NULL, expires_at = '-infinity'
WHERE session_key = ${key} AND token::text = ${observation.fingerprint}
  AND owner_id IS NOT NULL AND expires_at <= now()
RETURNING token`
        ),
        (rows) => rows.length > 0
      ),

    refresh: (held, now) =>
      Effect.gen(function*() {
        const local = localCheck(held, now)
        if (local !== undefined) return local
        const rows = yield* run(
          "refresh",
          sql<{ readonly token: unknown }>`UPDATE ${table}
SET refreshed_at = now(), expires_at = now() + ${leaseInterval}
WHERE session_key = ${held.sessionKey} AND token = ${held.token} AND owner_id = ${held.ownerId}
  AND expires_at > now()
RETURNING token`
        )
        if (rows.length > 0) {
          validUntil.set(held.ownerId, now + config.leaseMs)
          return { _tag: "Current" } as const
        }
        validUntil.delete(held.ownerId)
        const row = yield* run("refresh", selectRow(held.sessionKey))
        return lost(explain(held, row))
      }),

    release: (held) =>
      Effect.gen(function*() {
        validUntil.delete(held.ownerId)
        yield* run(
          "release",
          sql`UPDATE ${table}
SET owner_id = NULL, holder_pid = NULL, holder_host = NULL, holder_start = NULL, expires_at = '-infinity'
WHERE session_key = ${held.sessionKey} AND token = ${held.token} AND owner_id = ${held.ownerId}`
        )
      }),

    isCurrent: (held) =>
      Effect.gen(function*() {
        const local = localCheck(held, clock.currentTimeMillisUnsafe())
        if (local !== undefined) return local
        const row = yield* run("check", selectRow(held.sessionKey))
        if (
          row !== undefined && row.owner_id === held.ownerId && BigInt(row.token) === BigInt(held.token) &&
          !row.expired
        ) {
          return { _tag: "Current" } as const
        }
        return lost(explain(held, row))
      }),

    inspect: (key) =>
      Effect.flatMap(
        run("inspect", selectRow(key)),
        (row) =>
          row === undefined || row.owner_id === null
            ? Effect.succeed(Option.none())
            : Effect.map(observeRow(row), Option.some)
      )
  }
  return backend
})

/**
 * The session lock over PostgreSQL, as a layer: runs the migration (unless
 * `migrate: false`), then serves `SessionLock` through the shared adapter.
 * Needs a `SqlClient` (for example `PgClient.layer({ url })`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<SessionLock.SessionLock, SessionLock.LockIoError, SqlClient.SqlClient | DiagnosticBus> =>
  SessionLock.layerBackend(
    Effect.gen(function*() {
      const config = resolve(options)
      if (options?.migrate !== false) {
        yield* migrate(options).pipe(
          Effect.mapError((error) =>
            error._tag === "SqlError"
              ? toLockIoError(config.table, "migrate", error)
              : new SessionLock.LockIoError({
                reason: "io",
                path: `postgres table ${config.table}`,
                retryable: false,
                detail: `migrate: ${error.message}`,
                cause: error
              })
          )
        )
      }
      return yield* makeBackend(options)
    })
  )
