/**
 * The PostgreSQL lock backend against a real PostgreSQL (see test/setup/postgres.ts for how one is found or
 * started; without one every test here fails, saying how to get one).
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Option, Redacted, Schedule } from "effect"
import { SqlClient, SqlError } from "effect/sql"
import { spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { createServer, type Server, type Socket } from "node:net"
import { hostname, tmpdir } from "node:os"
import { join } from "node:path"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockSql from "../src/SessionLockSql.ts"
import { contract, LockFixtures } from "./SessionLock.contract.ts"
import { requirePgUrl } from "./setup/postgres.ts"
import { collectEvents } from "./utils/events.ts"
import { deadPid } from "./utils/lockFixtures.ts"

const url = requirePgUrl()
const pgPort = Number(new URL(url).port || 5432)

// Through the proxy, a short connect timeout: a black-holed connection attempt is abandoned quickly.
const sqlLayer = (target = url) =>
  PgClient.layer({
    url: Redacted.make(target),
    maxConnections: 6,
    ...(target === url ? {} : { connectTimeout: "1 second" })
  })

const lockLayer = (options: SessionLockSql.Options, target = url) =>
  SessionLockSql.layer(options).pipe(
    Layer.provideMerge(DiagnosticBus.layer()),
    Layer.provideMerge(sqlLayer(target))
  )

const fastRetry = Schedule.spaced("5 millis")

/**
 * One service over the table, as one process would have: its own pool, bus and in-process state. Two of
 * them contend through the database only (one service queues its own fibers in process).
 */
const instance = (options: SessionLockSql.Options, target = url) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(lockLayer(options, target))
    const events = yield* collectEvents.pipe(Effect.provide(context))
    return {
      lock: Context.get(context, SessionLock.SessionLock),
      sql: Context.get(context, SqlClient.SqlClient),
      events
    }
  })

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail")
  return reason?._tag === "Fail" ? reason.error : undefined
}

/** A fresh table name per test, dropped (with its sequence and history) afterwards. */
const withTable = <A, E, R>(body: (table: string) => Effect.Effect<A, E, R>) => {
  const table = `lock_test_${randomUUID().replace(/-/g, "").slice(0, 12)}`
  return Effect.ensuring(
    body(table),
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}`)
      yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}_migrations`)
      yield* sql.unsafe(`DROP SEQUENCE IF EXISTS ${table}_tokens`)
    }).pipe(Effect.provide(sqlLayer()), Effect.orDie)
  )
}

const key = (name: string) => SessionKey.makeUnsafe(`agent:test:${name}`)

// ---------------------------------------------------------------------------
// a TCP proxy in front of PostgreSQL, to make the database go away on demand
// ---------------------------------------------------------------------------

interface Proxy {
  readonly url: string
  /** Closes every connection and refuses new ones: the database is gone. */
  readonly cut: () => void
  /** Keeps connections open but stops forwarding: the database stops answering. */
  readonly blackhole: () => void
}

const makeProxy = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<Proxy & { readonly server: Server; readonly sockets: Set<Socket> }>((resolve) => {
      const sockets = new Set<Socket>()
      let forwarding = true
      const server = createServer((client) => {
        const upstream = new (client.constructor as typeof Socket)()
        sockets.add(client)
        sockets.add(upstream)
        const forget = () => {
          sockets.delete(client)
          sockets.delete(upstream)
        }
        client.on("error", () => upstream.destroy())
        upstream.on("error", () => client.destroy())
        client.on("close", () => {
          upstream.destroy()
          forget()
        })
        upstream.on("close", () => client.destroy())
        client.on("data", (chunk) => {
          if (forwarding) upstream.write(chunk)
        })
        upstream.on("data", (chunk) => {
          if (forwarding) client.write(chunk)
        })
        upstream.connect(pgPort, "127.0.0.1")
      })
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        const proxied = new URL(url)
        proxied.port = String(port)
        resolve({
          url: proxied.toString(),
          server,
          sockets,
          cut: () => {
            server.close()
            for (const socket of sockets) socket.destroy()
          },
          blackhole: () => {
            forwarding = false
          }
        })
      })
    })
  ),
  (proxy) =>
    Effect.sync(() => {
      proxy.server.close()
      for (const socket of proxy.sockets) socket.destroy()
    })
)

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

const workerPath = (name: string) => join(import.meta.dirname, "workers", name)

interface Finished {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const runWorker = (name: string, args: ReadonlyArray<string>) =>
  Effect.promise(() =>
    new Promise<Finished>((resolve) => {
      const child = spawn(process.execPath, [workerPath(name), ...args], { stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk) => (stdout += chunk))
      child.stderr.on("data", (chunk) => (stderr += chunk))
      child.on("close", (code) => resolve({ code, stdout, stderr }))
    })
  )

/** A long-lived worker driven line by line over stdin/stdout; killed when the scope closes. */
const startInteractive = (name: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, [workerPath(name), ...args], { stdio: ["pipe", "pipe", "pipe"] })
      const lines: Array<string> = []
      const waiters: Array<() => void> = []
      let buffer = ""
      let stderr = ""
      child.stderr.on("data", (chunk) => (stderr += chunk))
      child.stdout.on("data", (chunk) => {
        buffer += chunk
        let newline = buffer.indexOf("\n")
        while (newline >= 0) {
          lines.push(buffer.slice(0, newline))
          buffer = buffer.slice(newline + 1)
          newline = buffer.indexOf("\n")
        }
        for (const wake of waiters.splice(0)) wake()
      })
      child.on("close", () => {
        for (const wake of waiters.splice(0)) wake()
      })
      /** Waits for the next line (after `seen` lines) within `ms`. */
      const nextLine = (seen: number, ms: number) =>
        Effect.promise(() =>
          new Promise<string>((resolve, reject) => {
            const timer = setTimeout(
              () => reject(new Error(`no output from ${name} within ${ms} ms; stderr: ${stderr.slice(-2000)}`)),
              ms
            )
            const check = () => {
              if (lines.length > seen) {
                clearTimeout(timer)
                resolve(lines[seen]!)
              } else if (child.exitCode !== null) {
                clearTimeout(timer)
                reject(new Error(`${name} exited with ${child.exitCode}; stderr: ${stderr.slice(-2000)}`))
              } else {
                waiters.push(check)
              }
            }
            check()
          })
        )
      const ask = (command: string, ms = 10_000) =>
        Effect.suspend(() => {
          const seen = lines.length
          child.stdin.write(`${command}\n`)
          return nextLine(seen, ms)
        })
      return { child, nextLine, ask, lines }
    }),
    ({ child }) =>
      Effect.sync(() => {
        if (child.exitCode === null) child.kill("SIGKILL")
      })
  )

// ---------------------------------------------------------------------------
// the shared conformance suite
// ---------------------------------------------------------------------------

/**
 * A fresh table per test. Other processes are other services over the same table; a crashed holder is a row
 * naming a dead pid on this host whose lease ran out (a crash is only noticed once the lease expires); a live
 * holder elsewhere is a row with a long lease that nobody refreshes.
 */
const pgHarness = {
  name: "postgres",
  clock: "live" as const,
  layer: Layer.unwrap(Effect.gen(function*() {
    const table = `lock_contract_${randomUUID().replace(/-/g, "").slice(0, 12)}`
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}`)
        yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}_migrations`)
        yield* sql.unsafe(`DROP SEQUENCE IF EXISTS ${table}_tokens`)
      }).pipe(Effect.provide(sqlLayer()), Effect.ignore)
    )
    const plant = (
      key: SessionKey.SessionKey,
      row: { pid: number; owner: string; ageMs: number; expiresInMs: number }
    ) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [planted] = yield* sql.unsafe<{ token: string }>(
          `INSERT INTO ${table} (session_key, owner_id, holder_pid, holder_host, token, acquired_at, refreshed_at,
             expires_at, lease_ms, max_hold_ms)
           VALUES ($1, $2, $3, $4, nextval('${table}_tokens'), now() - $5 * interval '1 millisecond', now(),
             now() + $6 * interval '1 millisecond', 30000, $7)
           ON CONFLICT (session_key) DO NOTHING
           RETURNING token::text`,
          [key, row.owner, row.pid, hostname(), row.ageMs, row.expiresInMs, 3 * Math.max(row.ageMs, 100_000)]
        )
        return Number(planted!.token)
      })
    const fixtures = Layer.effect(
      LockFixtures,
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        return {
          another: Effect.flatMap(
            SessionLockSql.makeBackend({ table }).pipe(Effect.provideService(SqlClient.SqlClient, sql)),
            SessionLock.make
          ),
          plantDead: (key: SessionKey.SessionKey) =>
            plant(key, { pid: deadPid, owner: "crashed-1", ageMs: 60_000, expiresInMs: -1_000 }).pipe(
              Effect.provideService(SqlClient.SqlClient, sql)
            ),
          plantLive: (key: SessionKey.SessionKey, ageMs: number) =>
            plant(key, { pid: process.pid, owner: "elsewhere-1", ageMs, expiresInMs: 3_600_000 }).pipe(
              Effect.asVoid,
              Effect.provideService(SqlClient.SqlClient, sql)
            )
        }
      })
    )
    return Layer.mergeAll(SessionLockSql.layer({ table }), fixtures).pipe(
      Layer.provideMerge(DiagnosticBus.layer()),
      Layer.provide(sqlLayer())
    )
  }))
}

contract(pgHarness)

// ---------------------------------------------------------------------------

describe("SessionLockSql", () => {
  describe("toLockIoError", () => {
    const pgError = (
      Reason: typeof SqlError.UnknownError | typeof SqlError.ConnectionError | typeof SqlError.AuthorizationError,
      code?: string
    ) =>
      new SqlError.SqlError({
        reason: new Reason({ cause: Object.assign(new Error(`server said ${code ?? "nothing"}`), { code }) })
      })

    it("classifies database failures by what the user can do, and keeps the server's words", () => {
      const cases: ReadonlyArray<readonly [SqlError.SqlError, SessionLock.LockIoReason, boolean]> = [
        [pgError(SqlError.UnknownError, "42P01"), "io", false],
        [pgError(SqlError.AuthorizationError, "42501"), "permission_denied", false],
        [pgError(SqlError.UnknownError, "25006"), "read_only", false],
        [pgError(SqlError.UnknownError, "53100"), "no_space", false],
        [pgError(SqlError.UnknownError, "53300"), "busy", true],
        [pgError(SqlError.UnknownError, "57P01"), "unavailable", true],
        [pgError(SqlError.ConnectionError), "unavailable", true],
        [pgError(SqlError.UnknownError, "XX000"), "io", false]
      ]
      for (const [error, reason, retryable] of cases) {
        const mapped = SessionLockSql.toLockIoError("session_locks", "acquire", error)
        assert.strictEqual(mapped.reason, reason, error.message)
        assert.strictEqual(mapped.isRetryable, retryable, reason)
        assert.strictEqual(mapped.path, "postgres table session_locks")
        assert.match(mapped.detail, /^acquire: server said/)
      }
      assert.match(
        SessionLockSql.toLockIoError("t", "acquire", pgError(SqlError.UnknownError, "42P01")).message,
        /run SessionLockSql\.migrate/
      )
    })
  })

  describe("migrate", () => {
    it.live("creates the lease table and the token sequence, and is idempotent when run concurrently", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const results = yield* Effect.all(
            [SessionLockSql.migrate({ table }), SessionLockSql.migrate({ table }), SessionLockSql.migrate({ table })],
            { concurrency: "unbounded" }
          )
          // Exactly one run applied the migration; the others found it done.
          assert.strictEqual(results.filter((applied) => applied.length === 1).length, 1)
          assert.deepStrictEqual(yield* SessionLockSql.migrate({ table }), [])
          const sql = yield* SqlClient.SqlClient
          const columns = yield* sql<{ column_name: string }>`
            SELECT column_name FROM information_schema.columns WHERE table_name = ${table} ORDER BY ordinal_position`
          assert.deepStrictEqual(columns.map((c) => c.column_name), [
            "session_key",
            "owner_id",
            "holder_pid",
            "holder_host",
            "holder_start",
            "token",
            "acquired_at",
            "refreshed_at",
            "expires_at",
            "lease_ms",
            "max_hold_ms"
          ])
          const sequences = yield* sql`SELECT 1 FROM pg_class WHERE relkind = 'S' AND relname = ${`${table}_tokens`}`
          assert.strictEqual(sequences.length, 1)
        }).pipe(Effect.provide(sqlLayer()))
      ))

    it.live("rejects a table name that is not a plain identifier", () =>
      Effect.gen(function*() {
        for (const table of ["locks; DROP TABLE x", "Locks", "", "a".repeat(60), "1locks"]) {
          const exit = yield* Effect.exit(Effect.suspend(() => SessionLockSql.migrate({ table })))
          assert.isTrue(Exit.hasDies(exit), table)
          assert.match(String(exit), /not a plain lowercase SQL identifier/)
        }
      }).pipe(Effect.provide(sqlLayer())))
  })

  describe("acquire", () => {
    it.live("hands out strictly increasing tokens across holders, keys and a restarted service", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const tokens: Array<number> = []
          const round = Effect.scoped(Effect.gen(function*() {
            const { lock } = yield* instance({ table })
            for (const name of ["a", "b", "a", "c", "a"]) {
              const held = yield* Effect.scoped(lock.acquire(key(name)))
              tokens.push(held.token)
            }
          }))
          yield* round
          // A new service (a restarted process) over the same table continues the sequence.
          yield* round
          assert.strictEqual(tokens.length, 10)
          for (let i = 1; i < tokens.length; i++) assert.isAbove(tokens[i]!, tokens[i - 1]!)
        })
      ))

    it.live("never takes a live lease: a waiter times out with LockTimeout naming the holder", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const a = yield* instance({ table })
          const b = yield* instance({ table, migrate: false })
          const held = yield* a.lock.acquire(key("busy"))
          const exit = yield* Effect.exit(
            Effect.scoped(b.lock.acquire(key("busy"), { timeout: "400 millis", retry: fastRetry }))
          )
          const failure = failureOf(exit)
          assert.strictEqual(failure?._tag, "LockTimeout")
          if (failure?._tag === "LockTimeout") {
            assert.strictEqual(failure.backend, "postgres")
            assert.strictEqual(failure.holder.status, "alive")
            assert.strictEqual(failure.holder.ownerId, held.ownerId)
            assert.strictEqual(failure.holder.pid, process.pid)
            assert.isAtLeast(failure.waitedMs, 400)
            assert.isAbove(failure.attempts, 1)
            assert.match(failure.message, /held by pid \d+ on .*alive/)
          }
          yield* a.lock.assertCurrent(held)
          yield* b.events.settle
          assert.strictEqual(b.events.ofType("lock.contended").length, 1)
          assert.strictEqual(b.events.ofType("lock.reclaimed").length, 0)
          assert.strictEqual(b.events.ofType("lock.timeout").length, 1)
        }).pipe(Effect.scoped)
      ))

    it.live("reclaims an expired lease with a higher token; the old holder's assertCurrent fails with LockLost", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const a = yield* instance({ table })
          const b = yield* instance({ table, migrate: false })
          const old = yield* a.lock.acquire(key("expiring"))
          // The holder could not refresh long enough for its lease to run out (in the database's time).
          yield* a.sql.unsafe(`UPDATE ${table} SET expires_at = now() - interval '1 second'`)
          const lease = yield* b.lock.acquire(key("expiring"), { timeout: "5 seconds", retry: fastRetry })
          assert.isAbove(lease.token, old.token)
          const lost = yield* Effect.flip(a.lock.assertCurrent(old))
          assert.strictEqual(lost._tag, "LockLost")
          if (lost._tag === "LockLost") assert.match(lost.reason, /now held by/)
          yield* b.lock.assertCurrent(lease)
          yield* b.events.settle
          const reclaimed = b.events.ofType("lock.reclaimed")
          assert.strictEqual(reclaimed.length, 1)
          assert.strictEqual(reclaimed[0]!.reason, "lease_expired")
          assert.strictEqual(reclaimed[0]!.previousHolder.ownerId, old.ownerId)
          assert.isTrue(b.events.ofType("lock.acquired").at(-1)!.reclaimed)
        }).pipe(Effect.scoped)
      ))

    it.live("keeps a lease past its lease time by refreshing it", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const a = yield* instance({ table, lease: "300 millis" })
          const b = yield* instance({ table, lease: "300 millis", migrate: false })
          const held = yield* a.lock.acquire(key("refreshed"))
          yield* Effect.sleep("800 millis")
          yield* a.lock.assertCurrent(held)
          const exit = yield* Effect.exit(
            Effect.scoped(b.lock.acquire(key("refreshed"), { timeout: "300 millis", retry: fastRetry }))
          )
          assert.strictEqual(failureOf(exit)?._tag, "LockTimeout")
        }).pipe(Effect.scoped)
      ))

    it.live("frees the row on release, and a late release of a replaced lease leaves the new holder alone", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const a = yield* instance({ table })
          const b = yield* instance({ table, migrate: false })
          yield* Effect.scoped(a.lock.acquire(key("free")))
          const [free] = yield* a.sql.unsafe<{ owner_id: string | null; token: string }>(
            `SELECT owner_id, token::text FROM ${table}`
          )
          assert.isNull(free!.owner_id)
          assert.isTrue(Option.isNone(yield* a.lock.inspect(key("free"))))

          const backend = yield* SessionLockSql.makeBackend({ table }).pipe(
            Effect.provideService(SqlClient.SqlClient, a.sql)
          )
          const first = yield* a.lock.acquire(key("free"))
          yield* a.sql.unsafe(`UPDATE ${table} SET expires_at = now() - interval '1 second'`)
          const second = yield* b.lock.acquire(key("free"), { retry: fastRetry })
          assert.isAbove(second.token, first.token)
          yield* backend.release(first)
          const holder = yield* b.lock.inspect(key("free"))
          assert.strictEqual(Option.getOrThrow(holder).holder.ownerId, second.ownerId)
          yield* b.lock.assertCurrent(second)
        }).pipe(Effect.scoped)
      ))

    it.live("writes the lock outside the caller's transaction", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const a = yield* instance({ table })
          const b = yield* instance({ table, migrate: false })
          yield* a.sql.withTransaction(Effect.gen(function*() {
            const held = yield* a.lock.acquire(key("tx"))
            // Another process sees the lock while the caller's transaction is still open.
            const seen = yield* b.lock.inspect(key("tx"))
            assert.strictEqual(Option.getOrThrow(seen).holder.ownerId, held.ownerId)
          }))
        }).pipe(Effect.scoped)
      ))

    it.live("rejects invalid session keys with InvalidSessionKey and writes nothing", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const { lock, sql } = yield* instance({ table })
          for (const bad of ["", "a\u0000b", "line\nbreak", "x".repeat(513), "\ud800"]) {
            const error = yield* Effect.flip(Effect.scoped(lock.acquire(bad as SessionKey.SessionKey)))
            assert.strictEqual(error._tag, "InvalidSessionKey", JSON.stringify(bad))
            const inspected = yield* Effect.flip(lock.inspect(bad as SessionKey.SessionKey))
            assert.strictEqual(inspected._tag, "InvalidSessionKey")
          }
          const rows = yield* sql.unsafe(`SELECT 1 FROM ${table}`)
          assert.strictEqual(rows.length, 0)
        }).pipe(Effect.scoped)
      ))
  })

  describe("failures", () => {
    it.live("a dropped table gives a non-retryable LockIoError naming the migration, without waiting", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const { lock, sql } = yield* instance({ table })
          yield* sql.unsafe(`DROP TABLE ${table}`)
          const started = Date.now()
          const error = yield* Effect.flip(Effect.scoped(lock.acquire(key("dropped"), { timeout: "20 seconds" })))
          assert.isBelow(Date.now() - started, 5_000)
          assert.strictEqual(error._tag, "LockIoError")
          if (error._tag === "LockIoError") {
            assert.strictEqual(error.retryable, false)
            assert.match(error.message, /lock table is missing: run SessionLockSql\.migrate/)
            assert.match(error.detail, /SQLSTATE 42P01/)
          }
        }).pipe(Effect.scoped)
      ))

    it.live("a table dropped under a holder: assertCurrent gives LockIoError and the release does not hang", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const { lock, sql } = yield* instance({ table })
          const error = yield* Effect.scoped(Effect.gen(function*() {
            const held = yield* lock.acquire(key("held-drop"))
            yield* sql.unsafe(`DROP TABLE ${table}`)
            return yield* Effect.flip(lock.assertCurrent(held))
          }))
          assert.strictEqual(error._tag, "LockIoError")
          if (error._tag === "LockIoError") assert.strictEqual(error.retryable, false)
        }).pipe(Effect.scoped)
      ))

    it.live("a database that goes away mid-wait gives a typed error within the budget", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const holder = yield* instance({ table })
          const proxy = yield* makeProxy
          const waiter = yield* instance({ table, migrate: false, operationTimeout: "500 millis" }, proxy.url)
          yield* holder.lock.acquire(key("gone"))
          const started = Date.now()
          const fiber = yield* Effect.forkChild(
            Effect.scoped(waiter.lock.acquire(key("gone"), { timeout: "1500 millis", retry: fastRetry }))
          )
          yield* Effect.sleep("300 millis")
          proxy.cut()
          const exit = yield* Fiber.await(fiber)
          const elapsed = Date.now() - started
          const failure = failureOf(exit)
          assert.isTrue(failure?._tag === "LockIoError" || failure?._tag === "LockTimeout", String(exit))
          assert.isFalse(Exit.hasDies(exit))
          assert.isBelow(elapsed, 1500 + 500 + 700)
          // The holder, on its own connection, is unaffected.
          assert.isTrue(Option.isSome(yield* holder.lock.inspect(key("gone"))))
        }).pipe(Effect.scoped)
      ))

    it.live("a database that stops answering gives a typed error within the budget plus one operation timeout", () =>
      withTable((table) =>
        Effect.gen(function*() {
          yield* SessionLockSql.migrate({ table }).pipe(Effect.provide(sqlLayer()))
          const proxy = yield* makeProxy
          const { lock } = yield* instance({ table, migrate: false, operationTimeout: "400 millis" }, proxy.url)
          // Closing a pool whose connections hang is the driver's business: cut them first.
          yield* Effect.addFinalizer(() => Effect.sync(() => proxy.cut()))
          yield* Effect.scoped(lock.acquire(key("silent")))
          proxy.blackhole()
          const started = Date.now()
          const exit = yield* Effect.exit(
            Effect.scoped(lock.acquire(key("silent"), { timeout: "800 millis", retry: fastRetry }))
          )
          const elapsed = Date.now() - started
          const failure = failureOf(exit)
          assert.strictEqual(failure?._tag, "LockIoError", String(exit))
          if (failure?._tag === "LockIoError") {
            assert.strictEqual(failure.reason, "unavailable")
            assert.match(failure.detail, /no answer from PostgreSQL within 400 ms/)
          }
          assert.isBelow(elapsed, 800 + 400 + 700)
        }).pipe(Effect.scoped)
      ))

    it.live("a dead port gives LockIoError (unavailable) from the layer when it migrates, else from acquire", () =>
      Effect.gen(function*() {
        const proxy = yield* makeProxy
        proxy.cut()
        const layerError = yield* Effect.flip(Layer.build(lockLayer({ table: "unreachable_locks" }, proxy.url)))
        assert.strictEqual(layerError._tag, "LockIoError")
        if (layerError._tag === "LockIoError") {
          assert.strictEqual(layerError.reason, "unavailable")
          assert.isTrue(layerError.retryable)
        }
        const { lock } = yield* instance({ table: "unreachable_locks", migrate: false }, proxy.url)
        const started = Date.now()
        const acquireError = yield* Effect.flip(
          Effect.scoped(lock.acquire(key("dead"), { timeout: "600 millis", retry: fastRetry }))
        )
        assert.strictEqual(acquireError._tag, "LockIoError")
        if (acquireError._tag === "LockIoError") assert.strictEqual(acquireError.reason, "unavailable")
        assert.isBelow(Date.now() - started, 600 + 5_000)
      }).pipe(Effect.scoped))
  })

  describe("processes", () => {
    it.live(
      "4 processes × 200 acquisitions over 3 keys: no overlapping critical sections, strictly increasing tokens",
      () =>
        withTable((table) =>
          Effect.gen(function*() {
            yield* SessionLockSql.migrate({ table }).pipe(Effect.provide(sqlLayer()))
            const dir = yield* Effect.promise(() => mkdtemp(join(tmpdir(), "pg-lock-stress-")))
            yield* Effect.addFinalizer(() => Effect.promise(() => rm(dir, { recursive: true, force: true })))
            const log = join(dir, "sections.log")
            const keys = ["agent:stress:0", "agent:stress:1", "agent:stress:2"]
            const results = yield* Effect.all(
              Array.from({ length: 4 }, (_, w) =>
                runWorker("pg-lock-worker.ts", [url, table, `w${w}`, "200", log, ...keys])),
              { concurrency: "unbounded" }
            )
            for (const result of results) assert.strictEqual(result.code, 0, result.stderr)
            const records = (yield* Effect.promise(() => readFile(log, "utf8"))).trim().split("\n").map((line) => {
              const [worker, kind, k, token] = line.split(" ")
              return { worker: worker!, kind: kind!, key: k!, token: Number(token) }
            })
            assert.strictEqual(records.length, 4 * 200 * 2)
            const open = new Map<string, { worker: string; token: number }>()
            const lastToken = new Map<string, number>()
            for (const record of records) {
              if (record.kind === "begin") {
                assert.isUndefined(open.get(record.key), `overlap on ${record.key}: ${JSON.stringify(record)}`)
                assert.isAbove(record.token, lastToken.get(record.key) ?? 0, `token order on ${record.key}`)
                open.set(record.key, { worker: record.worker, token: record.token })
                lastToken.set(record.key, record.token)
              } else {
                assert.deepStrictEqual(open.get(record.key), { worker: record.worker, token: record.token })
                open.delete(record.key)
              }
            }
            assert.strictEqual(open.size, 0)
            assert.deepStrictEqual([...lastToken.keys()].sort(), keys)
          }).pipe(Effect.scoped)
        ),
      60_000
    )

    it.live(
      "a holder whose connection is killed loses its lease after expiry; the next waiter gets a higher token",
      () =>
        withTable((table) =>
          Effect.gen(function*() {
            const waiter = yield* instance({ table })
            const name = `holder-${randomUUID().slice(0, 8)}`
            const leaseMs = 1000
            const holder = yield* startInteractive("pg-holder.ts", [
              url,
              table,
              "agent:test:killed",
              String(leaseMs),
              "single",
              name
            ])
            const first = yield* holder.nextLine(0, 15_000)
            assert.match(first, /^acquired \d+$/)
            const oldToken = Number(first.split(" ")[1])
            assert.strictEqual(yield* holder.ask("assert"), "current")

            const killed = yield* waiter.sql<{ killed: boolean }>`
              SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = ${name}`
            assert.isAtLeast(killed.filter((row) => row.killed).length, 1)

            // The next waiter gets the lock once the lease has run out.
            const started = Date.now()
            const lease = yield* waiter.lock.acquire(key("killed"), { timeout: "10 seconds", retry: fastRetry })
            const waited = Date.now() - started
            assert.isAbove(lease.token, oldToken)
            assert.isAtMost(waited, leaseMs + 3_000)
            yield* waiter.events.settle
            const reclaimed = waiter.events.ofType("lock.reclaimed")
            assert.strictEqual(reclaimed.length, 1)
            assert.strictEqual(reclaimed[0]!.reason, "lease_expired")

            // The old holder, cut off from the database, knows its lease is gone.
            assert.match(yield* holder.ask("assert"), /^lost LockLost /)
          }).pipe(Effect.scoped)
        ),
      30_000
    )

    it.live("a pooled holder whose connection is killed reconnects and keeps its lease", () =>
      withTable((table) =>
        Effect.gen(function*() {
          const { lock, sql } = yield* instance({ table })
          const name = `holder-${randomUUID().slice(0, 8)}`
          const holder = yield* startInteractive("pg-holder.ts", [
            url,
            table,
            "agent:test:pooled",
            "1500",
            "pool",
            name
          ])
          assert.match(yield* holder.nextLine(0, 15_000), /^acquired \d+$/)
          yield* sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ${name}`
          yield* Effect.sleep("2500 millis")
          assert.strictEqual(yield* holder.ask("assert"), "current")
          const exit = yield* Effect.exit(
            Effect.scoped(lock.acquire(key("pooled"), { timeout: "300 millis", retry: fastRetry }))
          )
          assert.strictEqual(failureOf(exit)?._tag, "LockTimeout")
        }).pipe(Effect.scoped)
      ), 30_000)
  })
})
