/**
 * A server process for the cross-process lane test: the whole runtime on a
 * shared lock directory, submitting `turns` turns to each session key; each
 * turn appends `begin`/`end` records (with its lease token) to a shared log.
 *
 *   node test/workers/lane-turns.ts <lockDir> <logFile> <turns> <key> [<key>...]
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Option } from "effect"
import { appendFile } from "node:fs/promises"
import { CurrentLease } from "../../src/LaneGuard.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import { SessionLanes } from "../../src/SessionLanes.ts"
import * as SessionRuntime from "../../src/SessionRuntime.ts"

const [lockDir, logFile, turnsArg, ...rawKeys] = process.argv.slice(2)
const turns = Number(turnsArg)
const keys = rawKeys.map(SessionKey.makeUnsafe)

const record = (line: string) => Effect.promise(() => appendFile(logFile!, `${line}\n`))

const turn = (key: SessionKey.SessionKey, n: number) =>
  Effect.gen(function*() {
    const lease = yield* CurrentLease
    const token = Option.match(lease, { onNone: () => -1, onSome: (l) => l.token })
    yield* record(`begin ${key} ${process.pid} ${n} ${token}`)
    yield* Effect.sleep("2 millis")
    yield* record(`end ${key} ${process.pid} ${n} ${token}`)
  })

const program = Effect.gen(function*() {
  const lanes = yield* SessionLanes
  const submissions = yield* Effect.forEach(keys, (key) =>
    Effect.forEach(Array.from({ length: turns }, (_, n) => n), (n) => lanes.submit(key, turn(key, n))))
  yield* Effect.forEach(submissions.flat(), (s) => s.result, { concurrency: "unbounded", discard: true })
  yield* Effect.sync(() => console.log("done"))
})

program.pipe(
  Effect.provide(SessionRuntime.layer({
    lock: { directory: lockDir!, acquire: { timeout: "60 seconds" } },
    watchdog: false,
    eventLoopMonitor: false
  })),
  NodeRuntime.runMain
)
