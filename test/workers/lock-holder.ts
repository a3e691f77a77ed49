/**
 * A process that takes one session lock in a lock directory and holds it
 * until it is killed:
 *
 *   node lock-holder.ts <dir> <key> [maxHold]
 *
 * Prints `ACQUIRED <token>` once it holds the lock.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionLockFile from "../../src/SessionLockFile.ts"

const [dir, keyArg, maxHold] = process.argv.slice(2)

const program = Effect.gen(function*() {
  const lock = yield* SessionLock.SessionLock
  const lease = yield* lock.acquire(SessionKey.makeUnsafe(keyArg!), {
    timeout: "30 seconds",
    ...(maxHold === undefined ? {} : { maxHold: `${Number(maxHold)} millis` as const })
  })
  console.log(`ACQUIRED ${lease.token}`)
  return yield* Effect.never
})

program.pipe(
  Effect.scoped,
  Effect.provide(SessionLockFile.layer({ directory: dir! }).pipe(Layer.provideMerge(DiagnosticBus.layer()))),
  NodeRuntime.runMain
)
