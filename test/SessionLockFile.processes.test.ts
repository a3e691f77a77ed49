import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Option } from "effect"
import { readFile, stat } from "node:fs/promises"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as lockFile from "../src/internal/lockFile.ts"
import { probeProcess } from "../src/internal/processProbe.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockFile from "../src/SessionLockFile.ts"
import { collectEvents } from "./utils/events.ts"
import { deadPid, writeLock } from "./utils/lockFixtures.ts"
import { worker, workerPath } from "./utils/lockProcesses.ts"

const tempDir = Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "lock-procs-" }))

const lockIn = (directory: string) =>
  Effect.gen(function*() {
    const bus = yield* DiagnosticBus.make()
    const backend = yield* SessionLockFile.makeBackend({ directory })
    const lock = yield* SessionLock.make(backend).pipe(Effect.provideService(DiagnosticBus.DiagnosticBus, bus))
    return { lock, bus }
  })

interface Section {
  readonly kind: "B" | "E"
  readonly key: string
  readonly token: number
  readonly pid: number
}

const parseLog = (text: string): ReadonlyArray<Section> =>
  text.split("\n").filter((l) => l.length > 0).map((line) => {
    const [kind, key, token, pid] = line.split(" ")
    return { kind: kind as "B" | "E", key: key!, token: Number(token), pid: Number(pid) }
  })

// Checks the log: per key, sections never overlap and tokens strictly increase.
const checkSections = (sections: ReadonlyArray<Section>) => {
  const open = new Map<string, Section>()
  const last = new Map<string, number>()
  let overlaps = 0
  let regressions = 0
  let entries = 0
  for (const s of sections) {
    if (s.kind === "B") {
      entries++
      if (open.has(s.key)) overlaps++
      if ((last.get(s.key) ?? 0) >= s.token) regressions++
      last.set(s.key, s.token)
      open.set(s.key, s)
    } else {
      const o = open.get(s.key)
      if (o === undefined || o.token !== s.token || o.pid !== s.pid) overlaps++
      open.delete(s.key)
    }
  }
  return { overlaps, regressions, entries, unclosed: open.size }
}

describe("SessionLockFile with real processes", () => {
  it.live("4 processes × 200 acquisitions over 3 keys: no overlapping sections, strictly increasing tokens", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const log = `${directory}/sections.log`
      const keys = "agent:main:a,agent:main:b,agent:main:c"
      const workers = yield* Effect.forEach(
        [1, 2, 3, 4],
        () => worker([workerPath("lock-worker.ts"), directory, log, "200", keys, "0"])
      )
      const exits = yield* Effect.promise(() => Promise.all(workers.map((w) => w.exited)))
      for (const [i, exit] of exits.entries()) assert.strictEqual(exit.code, 0, workers[i]!.stderr())
      for (const w of workers) assert.strictEqual(JSON.parse(w.lines.at(-1)!).done, 200)
      const sections = parseLog(yield* Effect.promise(() => readFile(log, "utf8")))
      const result = checkSections(sections)
      assert.deepStrictEqual(result, { overlaps: 0, regressions: 0, entries: 800, unclosed: 0 })
      assert.strictEqual(new Set(sections.map((s) => s.pid)).size, 4)
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)), 60_000)

  it.live("reclaims the lock of a holder killed with SIGKILL (holder_dead) within the budget", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const key = SessionKey.makeUnsafe("agent:main:killed")
      const holder = yield* worker([workerPath("lock-holder.ts"), directory, key])
      const line = yield* Effect.promise(() => holder.waitForLine(/^ACQUIRED \d+$/))
      const heldToken = Number(line.split(" ")[1])
      const { lock, bus } = yield* lockIn(directory)
      const events = yield* collectEvents.pipe(Effect.provideService(DiagnosticBus.DiagnosticBus, bus))
      // While the holder lives, the lock is not taken from it.
      const busy = yield* Effect.flip(Effect.scoped(lock.acquire(key, { timeout: "150 millis" })))
      assert.strictEqual(busy._tag, "LockTimeout")
      if (busy._tag === "LockTimeout") {
        assert.strictEqual(busy.holder.status, "alive")
        assert.strictEqual(busy.holder.pid, holder.child.pid)
      }
      holder.child.kill("SIGKILL")
      const lease = yield* lock.acquire(key, { timeout: "5 seconds" })
      assert.isAbove(lease.token, heldToken)
      yield* events.settle
      const reclaimed = events.ofType("lock.reclaimed")
      assert.strictEqual(reclaimed.length, 1)
      assert.strictEqual(reclaimed[0]!.reason, "holder_dead")
      assert.strictEqual(reclaimed[0]!.previousHolder.pid, holder.child.pid)
      const acquired = events.ofType("lock.acquired")
      assert.isTrue(acquired.at(-1)!.reclaimed)
      assert.isBelow(acquired.at(-1)!.waitedMs, 5_000)
      const exit = yield* Effect.promise(() => holder.exited)
      assert.strictEqual(exit.signal, "SIGKILL")
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)), 30_000)

  it.live("reclaims a lock naming a live unrelated process with another start time (pid_reused)", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const key = SessionKey.makeUnsafe("agent:main:reused")
      const unrelated = yield* worker(["-e", "console.log('up'); setTimeout(() => {}, 60000)"])
      yield* Effect.promise(() => unrelated.waitForLine(/^up$/))
      const pid = unrelated.child.pid!
      const state = yield* Effect.promise(() => probeProcess(pid))
      assert.strictEqual(state._tag, "Alive")
      const startTime = state._tag === "Alive" ? state.startTime! : 0
      yield* Effect.promise(() => writeLock(directory, key, { pid, startTime: startTime + 12_345 }))
      const { lock, bus } = yield* lockIn(directory)
      const events = yield* collectEvents.pipe(Effect.provideService(DiagnosticBus.DiagnosticBus, bus))
      yield* lock.acquire(key, { timeout: "2 seconds" })
      yield* events.settle
      const reclaimed = events.ofType("lock.reclaimed")
      assert.strictEqual(reclaimed.length, 1)
      assert.strictEqual(reclaimed[0]!.reason, "pid_reused")
      assert.strictEqual(reclaimed[0]!.previousHolder.status, "pid_reused")
      // The unrelated process was only looked at.
      assert.isNull(unrelated.child.exitCode)
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)), 30_000)

  it.live("a live holder older than the stale time gives LockStale and keeps its file", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const key = SessionKey.makeUnsafe("agent:main:long-turn")
      const holder = yield* worker([workerPath("lock-holder.ts"), directory, key])
      yield* Effect.promise(() => holder.waitForLine(/^ACQUIRED/))
      yield* Effect.sleep("120 millis")
      const { lock } = yield* lockIn(directory)
      const error = yield* Effect.flip(Effect.scoped(
        lock.acquire(key, { timeout: "150 millis", staleTime: "100 millis" })
      ))
      assert.strictEqual(error._tag, "LockStale")
      if (error._tag === "LockStale") {
        assert.include(error.reasons, "older_than_stale_time")
        assert.strictEqual(error.holder.pid, holder.child.pid)
        assert.strictEqual(error.holder.status, "alive")
        assert.include(error.message, `pid ${holder.child.pid}`)
      }
      const path = lockFile.pathsOf(directory, SessionKey.toFileName(key)).lock
      const kept = yield* Effect.promise(() => stat(path))
      assert.isTrue(kept.isFile())
      assert.isNull(holder.child.exitCode)
      assert.isTrue(Option.isSome(yield* lock.inspect(key)))
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)), 30_000)

  it.live("two reclaimers racing over one stale lock while a third creates a fresh one never yield two holders (500 rounds)", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const log = `${directory}/race.log`
      const racers = yield* Effect.forEach(
        [1, 2, 3],
        () => worker([workerPath("lock-racer.ts"), directory, log], { ipc: true })
      )
      const answers = new Map<number, Array<{ token: number; reclaimed: number; error?: string }>>()
      const waiting = new Map<number, () => void>()
      yield* Effect.promise(() =>
        Promise.all(racers.map((racer) =>
          new Promise<void>((resolve, reject) => {
            racer.child.on("message", (message: any) => {
              if (message.ready) return resolve()
              const list = answers.get(message.round) ?? []
              list.push(message)
              answers.set(message.round, list)
              if (list.length === 3) waiting.get(message.round)?.()
            })
            void racer.exited.then(() => reject(new Error(`racer exited: ${racer.stderr()}`)))
          })
        ))
      )
      const rounds = 500
      let reclaimsOverall = 0
      for (let round = 0; round < rounds; round++) {
        const key = SessionKey.makeUnsafe(`agent:race:${round}`)
        const planted = yield* Effect.promise(() => writeLock(directory, key, { pid: deadPid, ownerId: `crashed-${round}` }))
        const done = new Promise<void>((resolve) => waiting.set(round, resolve))
        // Two start at once (the reclaimers); the third comes a little later, when the stale lock may be gone.
        const delays = [0, Math.floor(Math.random() * 200), 100 + Math.floor(Math.random() * 1500)]
        racers.forEach((racer, i) => racer.child.send({ round, key, delayUs: delays[(i + round) % 3] }))
        yield* Effect.promise(() =>
          Promise.race([
            done,
            ...racers.map((racer) => racer.exited.then(() => Promise.reject(new Error(`racer died: ${racer.stderr()}`)))),
            new Promise((_, reject) => setTimeout(() => reject(new Error(`round ${round} did not finish`)), 15_000))
          ])
        )
        const got = answers.get(round)!
        assert.deepStrictEqual(got.flatMap((a) => a.error ?? []), [], `round ${round}: no racer failed`)
        const reclaims = got.reduce((n, a) => n + a.reclaimed, 0)
        assert.strictEqual(reclaims, 1, `round ${round}: the stale lock is reclaimed exactly once`)
        reclaimsOverall += reclaims
        const tokens = got.map((a) => a.token)
        assert.strictEqual(new Set(tokens).size, 3, `round ${round}: distinct tokens ${tokens}`)
        for (const token of tokens) assert.isAbove(token, planted)
      }
      assert.strictEqual(reclaimsOverall, rounds)
      const result = checkSections(parseLog(yield* Effect.promise(() => readFile(log, "utf8"))))
      assert.deepStrictEqual(result, { overlaps: 0, regressions: 0, entries: 3 * rounds, unclosed: 0 })
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)), 60_000)
})
