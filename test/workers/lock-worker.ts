/**
 * A process that takes a shared lock directory's session locks over and over
 * and logs each critical section into a shared file, for the mutual
 * exclusion test:
 *
 *   node lock-worker.ts <dir> <log file> <iterations> <key,key,...> [holdMs]
 *
 * Each critical section appends `B <key> <token> <pid>` on entry and
 * `E <key> <token> <pid>` on exit (after checking the lease is current).
 * Prints one JSON summary line on stdout.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Layer, Schedule } from "effect"
import { open } from "node:fs/promises"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionLockFile from "../../src/SessionLockFile.ts"

const [dir, logFile, iterationsArg, keysArg, holdArg] = process.argv.slice(2)
const iterations = Number(iterationsArg)
const keys = keysArg!.split(",").map(SessionKey.makeUnsafe)
const holdMs = Number(holdArg ?? "0")
const retry = Schedule.exponential("1 millis").pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.millis(8)))),
  Schedule.jittered
)

const program = Effect.gen(function*() {
  const lock = yield* SessionLock.SessionLock
  const log = yield* Effect.acquireRelease(Effect.promise(() => open(logFile!, "a")), (h) => Effect.promise(() => h.close()))
  const write = (line: string) => Effect.promise(() => log.write(line + "\n"))
  let done = 0
  // Two fibers per process: in-process queueing and cross-process contention at once.
  yield* Effect.forEach([0, 1], (fiber) =>
    Effect.gen(function*() {
      for (let i = fiber; i < iterations; i += 2) {
        const key = keys[(i * 7 + process.pid) % keys.length]!
        yield* Effect.scoped(Effect.gen(function*() {
          const lease = yield* lock.acquire(key, { retry, timeout: "40 seconds" })
          yield* write(`B ${key} ${lease.token} ${process.pid}`)
          if (holdMs > 0) yield* Effect.sleep(Duration.millis(holdMs))
          else yield* Effect.yieldNow
          yield* lock.assertCurrent(lease)
          yield* write(`E ${key} ${lease.token} ${process.pid}`)
          done++
        }))
      }
    }), { concurrency: 2, discard: true })
  console.log(JSON.stringify({ pid: process.pid, done }))
})

program.pipe(
  Effect.scoped,
  Effect.provide(SessionLockFile.layer({ directory: dir! }).pipe(Layer.provideMerge(DiagnosticBus.layer()))),
  NodeRuntime.runMain
)
