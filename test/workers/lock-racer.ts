/**
 * One contestant of the reclaim race, driven over IPC by the test:
 *
 *   node lock-racer.ts <dir> <log file>
 *
 * On `{ round, key, delayUs }` it waits `delayUs` microseconds, then acquires
 * the key (reclaiming the stale lock the test planted, if it gets there
 * first), logs `B`/`E` records around a short critical section (checking its
 * lease is current before `E`), releases, and answers `{ round, token,
 * reclaimed, error? }`, where `reclaimed` counts the `lock.reclaimed` events this
 * process published in the round.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Layer, Queue, Schedule, Stream } from "effect"
import { open } from "node:fs/promises"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionLockFile from "../../src/SessionLockFile.ts"

const [dir, logFile] = process.argv.slice(2)
const retry = Schedule.spaced("1 millis").pipe(Schedule.jittered)

interface Round {
  readonly round: number
  readonly key: string
  readonly delayUs: number
}

const busyWait = (us: number) =>
  Effect.promise(() => new Promise<void>((resolve) => {
    // Sub-millisecond spread between contestants: a chain of setImmediate turns.
    const until = performance.now() + us / 1000
    const spin = () => (performance.now() >= until ? resolve() : setImmediate(spin))
    spin()
  }))

const program = Effect.gen(function*() {
  const lock = yield* SessionLock.SessionLock
  const bus = yield* DiagnosticBus.DiagnosticBus
  const log = yield* Effect.acquireRelease(Effect.promise(() => open(logFile!, "a")), (h) => Effect.promise(() => h.close()))
  const write = (line: string) => Effect.promise(() => log.write(line + "\n"))
  let reclaimed = 0
  const events = yield* bus.subscribe({ name: "racer" })
  yield* events.pipe(
    Stream.runForEach((event) => Effect.sync(() => {
      if (event._tag === "lock.reclaimed") reclaimed++
    })),
    Effect.forkScoped({ startImmediately: true })
  )
  const rounds = yield* Queue.unbounded<Round>()
  process.on("message", (message) => Queue.offerUnsafe(rounds, message as Round))
  process.on("disconnect", () => process.exit(0))
  process.send!({ ready: true })
  while (true) {
    const { round, key, delayUs } = yield* Queue.take(rounds)
    yield* busyWait(delayUs)
    const before = reclaimed
    const result = yield* Effect.result(Effect.scoped(Effect.gen(function*() {
      const lease = yield* lock.acquire(SessionKey.makeUnsafe(key), { retry, timeout: "20 seconds" })
      yield* write(`B ${key} ${lease.token} ${process.pid}`)
      yield* Effect.sleep(Duration.millis(1))
      yield* lock.assertCurrent(lease)
      yield* write(`E ${key} ${lease.token} ${process.pid}`)
      return lease.token
    })))
    // Let the event collector see this round's events.
    for (let i = 0; i < 20; i++) yield* Effect.yieldNow
    process.send!(
      result._tag === "Success"
        ? { round, token: result.success, reclaimed: reclaimed - before }
        : { round, token: -1, reclaimed: reclaimed - before, error: result.failure.message }
    )
  }
})

program.pipe(
  Effect.scoped,
  Effect.provide(SessionLockFile.layer({ directory: dir! }).pipe(Layer.provideMerge(DiagnosticBus.layer()))),
  NodeRuntime.runMain
)
