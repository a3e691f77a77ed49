/**
 * A process that holds one session's PostgreSQL lock and answers questions
 * about its lease on stdin, one per line:
 *
 *   assert   -> `current` or `lost <error tag> <reason>` (or `error <tag> <message>`)
 *   exit     -> releases the lease and exits 0
 *
 * On start it prints `acquired <token>`. Its database access is one
 * connection (`single`, no reconnection: once that connection is killed the
 * process cannot reach the database at all) or a pool (`pool`, which replaces
 * a killed connection). The connection carries `application_name` = <name>, so
 * a test can find and terminate it.
 *
 * Usage: node pg-holder.ts <url> <table> <key> <lease ms> <single|pool> <name>
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Layer, Queue, Redacted, Scope } from "effect"
import { createInterface } from "node:readline"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionLockSql from "../../src/SessionLockSql.ts"

const [url, table, key, leaseMs, mode, name] = process.argv.slice(2)
if (url === undefined || table === undefined || key === undefined || leaseMs === undefined || name === undefined) {
  console.error("usage: pg-holder.ts <url> <table> <key> <lease ms> <single|pool> <name>")
  process.exit(2)
}

const client = mode === "pool"
  ? PgClient.layer({ url: Redacted.make(url), applicationName: name })
  : PgClient.layerFrom(PgClient.makeClient({ url: Redacted.make(url), applicationName: name }))

const layer = SessionLockSql.layer({ table, lease: Number(leaseMs), operationTimeout: "1 second" }).pipe(
  Layer.provideMerge(DiagnosticBus.layer()),
  Layer.provide(client)
)

const program = Effect.gen(function*() {
  const lock = yield* SessionLock.SessionLock
  const scope = yield* Scope.make()
  const held = yield* lock.acquire(SessionKey.makeUnsafe(key)).pipe(Scope.provide(scope))
  console.log(`acquired ${held.token}`)
  const commands = yield* Queue.unbounded<string>()
  createInterface({ input: process.stdin }).on("line", (line) => Queue.offerUnsafe(commands, line.trim()))
  while (true) {
    const command = yield* Queue.take(commands)
    if (command === "assert") {
      const result = yield* Effect.result(lock.assertCurrent(held))
      if (result._tag === "Success") console.log("current")
      else if (result.failure._tag === "LockLost") console.log(`lost ${result.failure._tag} ${result.failure.reason}`)
      else console.log(`error ${result.failure._tag} ${result.failure.message}`)
    } else if (command === "exit") {
      yield* Scope.close(scope, Exit.void)
      return
    }
  }
})

Effect.runPromise(program.pipe(Effect.provide(layer))).then(
  () => process.exit(0),
  (error) => {
    console.error(String(error))
    process.exit(1)
  }
)
