/**
 * @title A custom lock backend
 *
 * The session write lock has interchangeable backends: a backend implements a handful of primitive
 * operations (`SessionLock.Backend`: try once, reclaim, refresh, release, check, inspect) and
 * `SessionLock.layer(backend)` adds everything else — the retry schedule within one time budget,
 * in-process queueing, the events and the typed errors — exactly as for the built-in memory, file and
 * PostgreSQL backends. Here a backend over a `Map`, logging each operation, is given to the runtime with
 * `SessionRuntime.layer({ lock: { layer } })`: every turn then runs under it.
 *
 * A real backend keeps its locks where every process that may write a session sees them (a database, a
 * coordination service) and runs the shared conformance suite (`test/SessionLock.contract.ts`).
 *
 *   npx node examples/09_custom-lock-backend.ts [--short]
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect, Option } from "effect"
import * as SessionKeys from "../src/SessionKey.ts"
import type { SessionKey } from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

const short = process.env.EXAMPLE_SHORT === "1" || process.argv.includes("--short")

interface Held {
  readonly ownerId: string
  readonly token: number
  readonly since: number
}

/** A lock backend over a Map, logging each operation. Locks live in this process only. */
const mapBackend = (log: (line: string) => void): SessionLock.Backend => {
  const locks = new Map<SessionKey, Held>()
  const tokens = new Map<SessionKey, number>()
  const observe = (held: Held, now: number): SessionLock.Observation => ({
    holder: { pid: process.pid, ownerId: held.ownerId, status: "alive", ageMs: now - held.since },
    fingerprint: `${held.ownerId}#${held.token}`
  })
  const check = (lease: SessionLock.Lease): SessionLock.LeaseCheck => {
    const held = locks.get(lease.sessionKey)
    return held?.ownerId === lease.ownerId && held.token === lease.token
      ? { _tag: "Current" }
      : { _tag: "Lost", reason: "the map no longer holds this lease" }
  }
  return {
    name: "map",
    tryAcquire: (request) =>
      Effect.sync((): SessionLock.Attempt => {
        const held = locks.get(request.sessionKey)
        if (held !== undefined) {
          log(`tryAcquire ${request.sessionKey}: held by ${held.ownerId}`)
          return { _tag: "Held", observation: observe(held, request.now) }
        }
        const token = (tokens.get(request.sessionKey) ?? 0) + 1
        tokens.set(request.sessionKey, token)
        locks.set(request.sessionKey, { ownerId: request.ownerId, token, since: request.now })
        log(`tryAcquire ${request.sessionKey}: acquired, token ${token}`)
        return { _tag: "Acquired", token }
      }),
    // Holders in one process never die behind our back: nothing is ever reclaimable here.
    reclaim: () => Effect.succeed(false),
    refresh: (lease) => Effect.sync(() => check(lease)),
    release: (lease) =>
      Effect.sync(() => {
        if (check(lease)._tag === "Current") locks.delete(lease.sessionKey)
        log(`release    ${lease.sessionKey}: token ${lease.token}`)
      }),
    isCurrent: (lease) => Effect.sync(() => check(lease)),
    inspect: (sessionKey, now) =>
      Effect.sync(() => {
        const held = locks.get(sessionKey)
        return held === undefined ? Option.none() : Option.some(observe(held, now))
      })
  }
}

// One backend, two services over it: the runtime's, and one standing for another process.
const backend = mapBackend((line) => console.log(`  [map-lock] ${line}`))
const MapLock = SessionLock.layer(backend)

const program = Effect.gen(function*() {
  const lanes = yield* SessionLanes
  const lock = yield* SessionLock.SessionLock
  const otherProcess = yield* SessionLock.make(backend)
  const key = SessionKeys.makeUnsafe("agent:main:custom-lock")
  yield* Console.log(`the runtime's lock backend: ${lock.backend}`)

  yield* Console.log("a turn runs under the session lock:")
  yield* Effect.flatMap(lanes.submit(key, Console.log("  the turn writes")), (s) => s.result)

  yield* Console.log("another writer holds the lock when a turn arrives; the turn retries until it is free:")
  const turn = yield* Effect.scoped(Effect.gen(function*() {
    yield* otherProcess.acquire(key)
    const submitted = yield* lanes.submit(key, Console.log("  the turn writes"))
    yield* Effect.sleep(short ? "100 millis" : "1 second")
    yield* Console.log("  the other writer releases")
    return submitted
  }))
  const started = yield* Clock.currentTimeMillis
  yield* turn.result
  yield* Console.log(`the turn ran ${(yield* Clock.currentTimeMillis) - started}ms after the release; tokens grew 1, 2, 3`)
}).pipe(Effect.scoped)

program.pipe(Effect.provide(SessionRuntime.layer({ lock: { layer: MapLock } })), NodeRuntime.runMain)
