/**
 * The lock storm, the failure that froze production gateways: 20 session
 * locks held by 20 live child processes, 200 fibers waiting for them, and
 * meanwhile 200 unrelated sessions running short turns. Measured: the event
 * loop's delay (`monitorEventLoopDelay`, 1 ms resolution, one histogram per
 * slice, pooled) and the unrelated
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

// Event-loop delay per kind of slice. Each slice has its own histogram (a
// re-enabled one would count the gap since it was disabled as one delay);
// a kind's p99 is that of all its slices' samples pooled (each slice's
// distribution read from its histogram's percentile points), its max the
// largest of its slices' maxima.
class Delays {
  private readonly slices: Array<{ readonly count: number; readonly points: ReadonlyArray<readonly [number, number]> }> =
    []
  maxNs = 0
  add(histogram: ReturnType<typeof monitorEventLoopDelay>) {
    if (histogram.count === 0) return
    this.slices.push({ count: histogram.count, points: [...histogram.percentiles.entries()] })
    this.maxNs = Math.max(this.maxNs, histogram.max)
  }
  percentileNs(percentile: number): number {
    const total = this.slices.reduce((n, slice) => n + slice.count, 0)
    if (total === 0) return 0
    // The share of one slice's samples at or below `value`.
    const cdf = (points: ReadonlyArray<readonly [number, number]>, value: number) => {
      let share = 0
      for (const [p, v] of points) if (v <= value && p > share) share = p
      return share / 100
    }
    const values = [...new Set(this.slices.flatMap((slice) => slice.points.map(([, v]) => v)))].sort((a, b) => a - b)
    for (const value of values) {
      const below = this.slices.reduce((n, slice) => n + slice.count * cdf(slice.points, value), 0)
      if (below / total >= percentile / 100) return value
    }
    return values.at(-1) ?? 0
  }
}

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
  delays: Delays,
  storm: { readonly start: () => void; readonly stop: () => Promise<void> } | undefined
) =>
  Effect.gen(function*() {
    const histogram = monitorEventLoopDelay({ resolution: 1 })
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
    delays.add(histogram)
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
      const idle = new Delays()
      const stormy = new Delays()
      const field = new Delays()
      // Warm up (JIT) both kinds of slice, unmeasured.
      await Effect.runPromise(slice(300, new Delays(), undefined))
      await Effect.runPromise(slice(300, new Delays(), ourStorm(lock)()))
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
        storm_event_loop_p99_ms: ms(stormy.percentileNs(99)),
        storm_event_loop_max_ms: ms(stormy.maxNs),
        storm_unrelated_throughput_ratio: storm / none,
        storm_baseline_event_loop_max_ms: ms(field.maxNs),
        storm_baseline_event_loop_p99_ms: ms(field.percentileNs(99)),
        storm_baseline_unrelated_throughput_ratio: fieldTurns / (none / slices),
        storm_no_storm_event_loop_p99_ms: ms(idle.percentileNs(99)),
        storm_no_storm_event_loop_max_ms: ms(idle.maxNs),
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
