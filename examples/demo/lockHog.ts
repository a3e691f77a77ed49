/**
 * Another process that holds session locks: it takes the file lock of every
 * key it is given, in the same lock directory as the demo server, prints
 * `HOLDING <count> <pid>` and holds them until it is killed. The
 * seed-failures scenario SIGKILLs it, as a crashed agent process would die,
 * and the server's waiters reclaim its locks (`lock.reclaimed`, `holder_dead`).
 *
 *   npx node examples/demo/lockHog.ts <lock dir> <session key>...
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionLockFile from "../../src/SessionLockFile.ts"

const [directory, ...keys] = process.argv.slice(2)

const program = Effect.gen(function*() {
  if (directory === undefined || keys.length === 0) {
    return yield* Effect.die(new Error("usage: node lockHog.ts <lock dir> <session key>..."))
  }
  const lock = yield* SessionLock.SessionLock
  yield* Effect.forEach(keys, (key) => lock.acquire(SessionKey.makeUnsafe(key), { timeout: "10 seconds" }), {
    concurrency: 8,
    discard: true
  })
  console.log(`HOLDING ${keys.length} ${process.pid}`)
  return yield* Effect.never
})

program.pipe(
  Effect.scoped,
  Effect.provide(SessionLockFile.layer({ directory: directory ?? "." }).pipe(Layer.provideMerge(DiagnosticBus.layer()))),
  NodeRuntime.runMain
)
