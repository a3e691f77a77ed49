/**
 * The price of an uncontended lock: one acquire + release of the file
 * backend, through the SessionLock service (events, refresh fiber, fencing
 * token and all), against one lock + unlock of `proper-lockfile` with its
 * defaults, in the same directory, in alternating rounds.
 *
 * Figures: `uncontended_vs_proper_lockfile_ratio` (goal ≤ 1),
 * `uncontended_acquire_release_us`, `proper_lockfile_lock_unlock_us`.
 */
import { Effect, Layer, ManagedRuntime } from "effect"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import lockfile from "proper-lockfile"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockFile from "../src/SessionLockFile.ts"
import type { Suite } from "./index.ts"

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const suite: Suite = {
  name: "Uncontended lock",
  run: async ({ quick }) => {
    const n = quick ? 300 : 2_000
    const rounds = quick ? 5 : 9
    const directory = await mkdtemp(`${tmpdir()}/lock-uncontended-`)
    const target = `${directory}/transcript.jsonl`
    await writeFile(target, "")
    const key = SessionKey.makeUnsafe("agent:bench:uncontended")
    let cleanup = async () => {}
    try {
      // One service for all rounds, as an application would have.
      const runtime = ManagedRuntime.make(
        SessionLockFile.layer({ directory }).pipe(Layer.provideMerge(DiagnosticBus.layer()))
      )
      cleanup = () => runtime.dispose()
      const ours = (count: number) =>
        runtime.runPromise(Effect.gen(function*() {
          const lock = yield* SessionLock.SessionLock
          const started = performance.now()
          for (let i = 0; i < count; i++) yield* Effect.scoped(lock.acquire(key))
          return ((performance.now() - started) / count) * 1000
        }))
      const theirs = async (count: number) => {
        const started = performance.now()
        for (let i = 0; i < count; i++) {
          const release = await lockfile.lock(target)
          await release()
        }
        return ((performance.now() - started) / count) * 1000
      }
      await ours(200)
      await theirs(200)
      const a: Array<number> = []
      const b: Array<number> = []
      for (let round = 0; round < rounds; round++) {
        if (round % 2 === 0) {
          a.push(await ours(n))
          b.push(await theirs(n))
        } else {
          b.push(await theirs(n))
          a.push(await ours(n))
        }
      }
      const oursUs = median(a)
      const theirsUs = median(b)
      return {
        uncontended_vs_proper_lockfile_ratio: oursUs / theirsUs,
        uncontended_acquire_release_us: oursUs,
        proper_lockfile_lock_unlock_us: theirsUs
      }
    } finally {
      await cleanup()
      await rm(directory, { recursive: true, force: true })
    }
  }
}

export default suite
