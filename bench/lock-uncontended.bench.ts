/**
 * The price of an uncontended lock: one acquire + release of the file
 * backend, through the SessionLock service (events, refresh fiber, fencing
 * token and all), against one lock + unlock of `proper-lockfile` with its
 * defaults, in the same directory, in many short alternating blocks (the
 * figure is the ratio of the medians).
 *
 * Figures: `uncontended_vs_proper_lockfile_ratio` (goal ≤ 1),
 * `uncontended_acquire_release_us`, `proper_lockfile_lock_unlock_us`, and
 * `uncontended_backend_primitives_vs_proper_lockfile_ratio` (the file
 * backend's try-once + release alone, without the service around them).
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
import { median } from "./utils/stats.ts"

const suite: Suite = {
  name: "Uncontended lock",
  run: async ({ quick }) => {
    // Many short alternating blocks: load drifts on a shared machine, and
    // each block pair sees the same conditions.
    const n = 100
    const rounds = quick ? 20 : 60
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
      // The backend's primitives alone (try once, release), without the service around them.
      const backend = await runtime.runPromise(Effect.scoped(SessionLockFile.makeBackend({ directory })))
      const primitives = (count: number) =>
        Effect.runPromise(Effect.gen(function*() {
          const started = performance.now()
          for (let i = 0; i < count; i++) {
            const ownerId = `bench-${i}`
            const attempt = yield* backend.tryAcquire({ sessionKey: key, ownerId, now: Date.now(), maxHoldMs: 60_000 })
            if (attempt._tag === "Acquired") {
              yield* backend.release({ sessionKey: key, ownerId, token: attempt.token, acquiredAt: 0 })
            }
          }
          return ((performance.now() - started) / count) * 1000
        }))
      await ours(200)
      await theirs(200)
      await primitives(200)
      const a: Array<number> = []
      const b: Array<number> = []
      const c: Array<number> = []
      const variants = [() => ours(n).then((us) => a.push(us)), () => theirs(n).then((us) => b.push(us)), () =>
        primitives(n).then((us) => c.push(us))]
      for (let round = 0; round < rounds; round++) {
        for (const run of round % 2 === 0 ? variants : [...variants].reverse()) await run()
      }
      const oursUs = median(a)
      const theirsUs = median(b)
      return {
        uncontended_vs_proper_lockfile_ratio: oursUs / theirsUs,
        uncontended_acquire_release_us: oursUs,
        proper_lockfile_lock_unlock_us: theirsUs,
        uncontended_backend_primitives_vs_proper_lockfile_ratio: median(c) / theirsUs
      }
    } finally {
      await cleanup()
      await rm(directory, { recursive: true, force: true })
    }
  }
}

export default suite
