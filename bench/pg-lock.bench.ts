/**
 * The PostgreSQL lock backend, uncontended: time per acquire + release, and
 * the same against the file backend in the same run.
 *
 * Figures:
 * - `pg_acquire_release_ms`: mean time of one uncontended acquire + release
 *   (two statements: the upsert and the release update), median over rounds.
 * - `pg_vs_file_acquire_ratio`: that time ÷ the file backend's, measured in
 *   alternating rounds in the same process.
 *
 * The database comes from SESSION_RUNTIME_PG_URL; when it is unset, a private
 * server is started from the installed PostgreSQL binaries for the run (as
 * the tests do), and stopped afterwards.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockFile from "../src/SessionLockFile.ts"
import * as SessionLockSql from "../src/SessionLockSql.ts"
import startPostgres, { unavailableVariable, urlVariable } from "../test/setup/postgres.ts"
import type { Suite } from "./index.ts"
import { median } from "./utils/stats.ts"

const keys = Array.from({ length: 16 }, (_, i) => SessionKey.makeUnsafe(`agent:bench:pg:${i}`))

/** Mean milliseconds of one acquire + release over `n` sequential rounds. */
const measure = (lock: SessionLock.SessionLock["Service"], n: number) =>
  Effect.gen(function*() {
    const started = performance.now()
    for (let i = 0; i < n; i++) yield* Effect.scoped(lock.acquire(keys[i % keys.length]!))
    return (performance.now() - started) / n
  })

const suite: Suite = {
  name: "PostgreSQL lock backend",
  run: async ({ log, quick }) => {
    const stop = await startPostgres()
    const url = process.env[urlVariable]
    if (url === undefined) {
      const reason = process.env[unavailableVariable] ?? "SESSION_RUNTIME_PG_URL is not set"
      log(`  PostgreSQL unavailable (${reason}); start one with eval "$(.ci/postgres.sh)"`)
      return { pg_acquire_release_ms: "unavailable", pg_vs_file_acquire_ratio: "unavailable" }
    }
    const dir = await mkdtemp(join(tmpdir(), "pg-lock-bench-"))
    const table = `bench_locks_${randomUUID().replace(/-/g, "").slice(0, 10)}`
    const rounds = quick ? 3 : 7
    const perRound = quick ? 100 : 400
    try {
      const program = Effect.gen(function*() {
        const sqlContext = yield* Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }))
        const busContext = yield* Layer.build(DiagnosticBus.layer())
        const pgLayer = SessionLockSql.layer({ table }).pipe(Layer.provide(Layer.succeedContext(sqlContext)))
        const pg = Context.get(
          yield* Layer.build(pgLayer).pipe(Effect.provide(busContext)),
          SessionLock.SessionLock
        )
        const file = Context.get(
          yield* Layer.build(SessionLockFile.layer({ directory: dir })).pipe(Effect.provide(busContext)),
          SessionLock.SessionLock
        )
        // Warm up both (connections, prepared statements, JIT).
        yield* measure(pg, 50)
        yield* measure(file, 50)
        const pgTimes: Array<number> = []
        const fileTimes: Array<number> = []
        for (let round = 0; round < rounds; round++) {
          pgTimes.push(yield* measure(pg, perRound))
          fileTimes.push(yield* measure(file, perRound))
        }
        const sql = Context.get(sqlContext, PgClient.PgClient)
        yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}`)
        yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}_migrations`)
        yield* sql.unsafe(`DROP SEQUENCE IF EXISTS ${table}_tokens`)
        return { pg: median(pgTimes), file: median(fileTimes) }
      }).pipe(Effect.scoped)
      const result = await Effect.runPromise(program)
      log(`  ${rounds} rounds × ${perRound} uncontended acquire + release, 16 keys`)
      log(`  postgres ${result.pg.toFixed(3)} ms, file ${result.file.toFixed(3)} ms`)
      return {
        pg_acquire_release_ms: result.pg,
        pg_vs_file_acquire_ratio: result.pg / result.file
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
      await stop?.()
    }
  }
}

export default suite
