/**
 * A process that takes the PostgreSQL session lock many times over a few keys
 * and records each critical section in a shared file:
 *
 *   <worker> begin <key> <token>
 *   <worker> end <key> <token>
 *
 * Usage: node pg-lock-worker.ts <url> <table> <worker> <iterations> <log file> <key>...
 * Prints `done <iterations>` and exits 0, or the error and exits 1.
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Redacted, Schedule } from "effect"
import { appendFile } from "node:fs/promises"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionLockSql from "../../src/SessionLockSql.ts"

const [url, table, worker, iterations, logFile, ...keys] = process.argv.slice(2)
if (url === undefined || table === undefined || worker === undefined || iterations === undefined ||
  logFile === undefined || keys.length === 0) {
  console.error("usage: pg-lock-worker.ts <url> <table> <worker> <iterations> <log file> <key>...")
  process.exit(2)
}

// Short polls: the critical sections are a few milliseconds long.
const retry = Schedule.exponential("2 millis", 1.5).pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.millis(25)))),
  Schedule.jittered
)

const sessionKeys = keys.map(SessionKey.makeUnsafe)

const program = Effect.gen(function*() {
  const lock = yield* SessionLock.SessionLock
  for (let i = 0; i < Number(iterations); i++) {
    const key = sessionKeys[Math.floor(Math.random() * sessionKeys.length)]!
    yield* Effect.scoped(Effect.gen(function*() {
      const held = yield* lock.acquire(key, { timeout: "60 seconds", retry })
      yield* Effect.promise(() => appendFile(logFile, `${worker} begin ${key} ${held.token}\n`))
      // Let other fibers and processes run inside the critical section.
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      yield* lock.assertCurrent(held)
      yield* Effect.promise(() => appendFile(logFile, `${worker} end ${key} ${held.token}\n`))
    }))
  }
  console.log(`done ${iterations}`)
})

const layer = SessionLockSql.layer({ table }).pipe(
  Layer.provideMerge(DiagnosticBus.layer()),
  Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }))
)

Effect.runPromise(program.pipe(Effect.provide(layer))).then(
  () => process.exit(0),
  (error) => {
    console.error(String(error))
    process.exit(1)
  }
)
