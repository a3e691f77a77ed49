/**
 * The lock storm, the failure that froze production gateways: 20 session
 * locks held by 20 live child processes, 200 fibers waiting for them, and
 * meanwhile 200 unrelated sessions running short turns. Measured: the event
 * loop's delay (`monitorEventLoopDelay`, 1 ms resolution) and the unrelated
 * sessions' completed turns, against the same workload without the storm,
 * and against the field's lock (`baselines/fieldLock.ts`: polls every 50 ms
 * and runs `ps` synchronously on every poll).
 *
 * Figures: `storm_event_loop_p99_ms` (goal ≤ 20), `storm_event_loop_max_ms`
 * (goal ≤ 100), `storm_unrelated_throughput_ratio` (storm ÷ no storm, goal
 * ≥ 0.9), `storm_baseline_event_loop_max_ms` (the field's lock, same storm).
 */
import { Effect, Fiber, Layer, ManagedRuntime } from "effect"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockFile from "../src/SessionLockFile.ts"
import * as FieldLock from "./baselines/fieldLock.ts"
import type { Suite } from "./index.ts"

const holderScript = fileURLToPath(new URL("../test/workers/lock-holder.ts", import.meta.url))

const HOLDERS = 20
const WAITERS = 200
const SESSIONS = 200

type Histogram = ReturnType<typeof monitorEventLoopDelay>

// One unrelated session: short turns (a 1 ms wait, then a little work) until the deadline.
const unrelatedSession = (deadline: number, counter: { turns: number }) =>
  Effect.gen(function*() {
    let acc = 0
    while (performance.now() < deadline) {
      yield* Effect.sleep("1 millis")
      for (let i = 0; i < 2_000; i++) acc += i % 7
      counter.turns++
    }
    return acc
  })

// Runs the unrelated sessions for `ms` while `histogram` samples the event
// loop. The storm (if any) starts once the histogram has taken its first
// samples, so its waiters' arrival counts, and settles for 20 ms (every waiter
// has made its first attempt) before the sessions start; it is stopped after
// the slice. Returns the turns completed, and how long starting the storm took.
const slice = (
  ms: number,
  histogram: Histogram,
  storm: { readonly start: () => void; readonly stop: () => Promise<void> } | undefined
) =>
  Effect.gen(function*() {
    histogram.enable()
    yield* Effect.sleep("5 millis")
    const arrival = performance.now()
    storm?.start()
    const arrivalMs = performance.now() - arrival
    yield* Effect.sleep("20 millis")
    const counter = { turns: 0 }
    const deadline = performance.now() + ms
    yield* Effect.forEach(
      Array.from({ length: SESSIONS }),
      () => unrelatedSession(deadline, counter),
      { concurrency: SESSIONS, discard: true }
    )
    histogram.disable()
    if (storm !== undefined) yield* Effect.promise(storm.stop)
    return { turns: counter.turns, arrivalMs }
  })

const startHolder = (directory: string, key: string, started: Array<ChildProcess>) =>
  new Promise<ChildProcess>((resolve, reject) => {
    const child = spawn(process.execPath, [holderScript, directory, key], { stdio: ["ignore", "pipe", "inherit"] })
    started.push(child)
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("ACQUIRED")) resolve(child)
    })
    child.once("exit", (code) => reject(new Error(`lock holder exited with ${code}`)))
  })

const suite: Suite = {
  name: "Lock storm",
  run: async ({ log, quick }) => {
    const slices = quick ? 4 : 10
    const sliceMs = quick ? 400 : 600
    const directory = await mkdtemp(`${tmpdir()}/lock-storm-`)
    const fieldDirectory = await mkdtemp(`${tmpdir()}/lock-storm-field-`)
    const keys = Array.from({ length: HOLDERS }, (_, i) => SessionKey.makeUnsafe(`agent:storm:${i}`))
    const children: Array<ChildProcess> = []

    const runtime = ManagedRuntime.make(SessionLockFile.layer({ directory }).pipe(Layer.provideMerge(DiagnosticBus.layer())))
    // 200 fibers waiting for the 20 held locks (ten per lock), interrupted after the slice.
    const ourStorm = (lock: SessionLock.SessionLock["Service"]) => () => {
      const waiters: Array<Fiber.Fiber<unknown, unknown>> = []
      return {
        start: () => {
          for (let i = 0; i < WAITERS; i++) {
            waiters.push(runtime.runFork(Effect.scoped(lock.acquire(keys[i % HOLDERS]!, { timeout: "10 minutes" }))))
          }
        },
        stop: async () => {
          await runtime.runPromise(Effect.forEach(waiters, Fiber.interrupt, { discard: true }))
          for (const waiter of waiters) {
            if (waiter.pollUnsafe()?._tag === "Success") throw new Error("a waiter took a lock held by a live process")
          }
        }
      }
    }
    // The same storm with the field's lock.
    const fieldStorm = () => {
      let cancelled = false
      const waiters: Array<Promise<unknown>> = []
      return {
        start: () => {
          for (let i = 0; i < WAITERS; i++) {
            waiters.push(FieldLock.acquire(`${fieldDirectory}/${i % HOLDERS}.lock`, { cancelled: () => cancelled }))
          }
        },
        stop: async () => {
          cancelled = true
          await Promise.all(waiters)
        }
      }
    }

    try {
      await Promise.all(keys.map(async (key, i) => {
        const child = await startHolder(directory, key, children)
        FieldLock.hold(`${fieldDirectory}/${i}.lock`, child.pid!)
      }))
      log(`  ${HOLDERS} holder processes up`)
      const lock = await runtime.runPromise(Effect.gen(function*() {
        return yield* SessionLock.SessionLock
      }))
      const idle = monitorEventLoopDelay({ resolution: 1 })
      const stormy = monitorEventLoopDelay({ resolution: 1 })
      const field = monitorEventLoopDelay({ resolution: 1 })
      await Effect.runPromise(slice(300, monitorEventLoopDelay({ resolution: 1 }), undefined)) // warm up
      let none = 0
      let storm = 0
      let arrivalMs = 0
      // Short alternating slices (A-B-B-A), so that drift and noise weigh on both sides alike.
      for (let pair = 0; pair < slices; pair++) {
        const order = pair % 2 === 0 ? [false, true] : [true, false]
        for (const withStorm of order) {
          if (withStorm) {
            const result = await Effect.runPromise(slice(sliceMs, stormy, ourStorm(lock)()))
            storm += result.turns
            arrivalMs = Math.max(arrivalMs, result.arrivalMs)
          } else {
            none += (await Effect.runPromise(slice(sliceMs, idle, undefined))).turns
          }
        }
      }
      const fieldResult = await Effect.runPromise(slice(sliceMs, field, fieldStorm()))
      const fieldTurns = fieldResult.turns
      log(`  turns: no storm ${none}, storm ${storm} (${slices} slices of ${sliceMs} ms each), field storm ${fieldTurns} (1 slice)`)
      const ms = (ns: number) => ns / 1e6
      return {
        storm_event_loop_p99_ms: ms(stormy.percentile(99)),
        storm_event_loop_max_ms: ms(stormy.max),
        storm_unrelated_throughput_ratio: storm / none,
        storm_baseline_event_loop_max_ms: ms(field.max),
        storm_baseline_event_loop_p99_ms: ms(field.percentile(99)),
        storm_baseline_unrelated_throughput_ratio: fieldTurns / (none / slices),
        storm_no_storm_event_loop_p99_ms: ms(idle.percentile(99)),
        storm_no_storm_event_loop_max_ms: ms(idle.max),
        storm_waiters_arrival_ms: arrivalMs,
        storm_baseline_waiters_arrival_ms: fieldResult.arrivalMs
      }
    } finally {
      await runtime.dispose()
      await Promise.all(children.map((child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve()
          child.once("exit", () => resolve())
          child.kill("SIGTERM")
        })
      ))
      await rm(directory, { recursive: true, force: true })
      await rm(fieldDirectory, { recursive: true, force: true })
    }
  }
}

export default suite
