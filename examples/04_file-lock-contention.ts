/**
 * @title The file lock under contention
 *
 * The session write lock over a lock directory (`SessionLockFile`, the embedded default): two fibers of
 * this process take turns on one session's lock; then another process takes it, a short acquire times
 * out with a typed error that names the holder, and a waiter gets the lock as soon as that process is
 * SIGKILLed (`lock.reclaimed`, `holder_dead`). Every wait is asynchronous: nothing blocks the event loop.
 * The `LockLog` layer prints the lock events from the bus.
 *
 *   npx node examples/04_file-lock-contention.ts [--short]
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Console, Context, Duration, Effect, Fiber, Layer, Option, Stream } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { DiagnosticBus } from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLock } from "../src/SessionLock.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

const short = process.env.EXAMPLE_SHORT === "1" || process.argv.includes("--short")
const hold = Duration.millis(short ? 150 : 1000)
const key = SessionKey.makeUnsafe("agent:main:shared")
const hog = fileURLToPath(new URL("./demo/lockHog.ts", import.meta.url))

/** Prints the lock events of the bus. */
const LockLog = Layer.effectDiscard(Effect.gen(function*() {
  const bus = yield* DiagnosticBus
  const events = yield* bus.subscribe({ name: "lock-log" })
  yield* events.pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "lock.contended":
          return Console.log(`  lock.contended  held by pid ${event.holder.pid} (${event.holder.status})`)
        case "lock.acquired":
          return Console.log(
            `  lock.acquired   token ${event.token} after ${event.waitedMs}ms, ${event.attempts} attempt(s)` +
              (event.reclaimed ? ", reclaimed" : "")
          )
        case "lock.reclaimed":
          return Console.log(`  lock.reclaimed  from pid ${event.previousHolder.pid}: ${event.reason}`)
        case "lock.timeout":
          return Console.log(`  lock.timeout    after ${event.waitedMs}ms`)
        default:
          return Effect.void
      }
    }),
    Effect.forkScoped({ startImmediately: true })
  )
}))

/** Where this run keeps its locks. */
class LockDirectory extends Context.Service<LockDirectory, string>()("example/LockDirectory") {}

/** The runtime over a fresh lock directory (removed at the end), with the lock log. */
const Runtime = Layer.unwrap(Effect.gen(function*() {
  const directory = yield* Effect.acquireRelease(
    Effect.promise(() => mkdtemp(join(tmpdir(), "esr-example-locks-"))),
    (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
  )
  yield* Console.log(`lock directory ${directory}`)
  return LockLog.pipe(
    Layer.provideMerge(SessionRuntime.layer({ lock: { directory }, watchdog: false })),
    Layer.provideMerge(Layer.succeed(LockDirectory, directory))
  )
}))

const program = Effect.gen(function*() {
  const lock = yield* SessionLock
  const directory = yield* LockDirectory
  const spawner = yield* ChildProcessSpawner.ChildProcessSpawner

  yield* Console.log("two fibers, one session:")
  const writer = (name: string) =>
    Effect.scoped(Effect.gen(function*() {
      const lease = yield* lock.acquire(key)
      yield* Console.log(`  ${name} writes with token ${lease.token}`)
      yield* Effect.sleep(hold)
    }))
  yield* Effect.all([writer("fiber A"), writer("fiber B")], { concurrency: 2, discard: true })

  yield* Console.log("another process takes the lock:")
  const child = yield* spawner.spawn(ChildProcess.make(process.execPath, [hog, directory, key]))
  yield* child.stdout.pipe(Stream.decodeText(), Stream.splitLines, Stream.runHead, Effect.map(Option.getOrThrow))
  const error = yield* Effect.flip(Effect.scoped(lock.acquire(key, { timeout: "300 millis" })))
  yield* Console.log(`  a 300ms acquire fails with ${error._tag}: ${error.message}`)

  const waiter = yield* Effect.forkChild(
    Effect.scoped(Effect.flatMap(lock.acquire(key), (lease) => Console.log(`  the waiter writes with token ${lease.token}`))),
    { startImmediately: true }
  )
  yield* Effect.sleep(hold)
  yield* Console.log(`  SIGKILL pid ${child.pid}`)
  yield* child.kill({ killSignal: "SIGKILL" })
  yield* Fiber.join(waiter)
  yield* Console.log("done: the fencing token grew with every holder, across processes")
}).pipe(Effect.scoped)

program.pipe(Effect.provide(Runtime), Effect.provide(NodeServices.layer), NodeRuntime.runMain)
