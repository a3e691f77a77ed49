/**
 * Contract harnesses for the memory and file backends of SessionLock, and
 * helpers to write lock files the way another process would.
 */
import { NodeServices } from "@effect/platform-node"
import { Clock, Effect, FileSystem, Layer } from "effect"
import { hostname } from "node:os"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as lockFile from "../../src/internal/lockFile.ts"
import { probeProcess } from "../../src/internal/processProbe.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import * as SessionLockFile from "../../src/SessionLockFile.ts"
import { LockFixtures } from "../SessionLock.contract.ts"
import type { Harness } from "../SessionLock.contract.ts"
import { open } from "node:fs/promises"

/** A pid that no process can have (above the largest pid_max Linux allows). */
export const deadPid = 2 ** 22 + 17

/** This process's start time as written into its locks. */
export const selfStartTime = async (): Promise<number | null> => {
  const state = await probeProcess(process.pid)
  return state._tag === "Alive" ? state.startTime ?? null : null
}

/** Writes a lock file (exclusively, mode 0600) with the given payload fields; returns its token. */
export const writeLock = async (
  directory: string,
  key: SessionKey.SessionKey,
  fields: Partial<lockFile.Payload> & { readonly pid: number }
): Promise<number> => {
  const paths = lockFile.pathsOf(directory, SessionKey.toFileName(key))
  const fence = lockFile.makeFenceLog()
  try {
    const token = await fence.append(paths.fence)
    const payload: lockFile.Payload = {
      v: 1,
      startTime: null,
      host: hostname(),
      ownerId: "planted",
      token,
      createdAt: Date.now(),
      maxHoldMs: 300_000,
      leaseMs: 30_000,
      ...fields
    }
    const handle = await open(paths.lock, lockFile.createFlags, 0o600)
    try {
      await handle.write(lockFile.encodePayload(payload))
    } finally {
      await handle.close()
    }
    return token
  } finally {
    await fence.close()
  }
}

export const memoryHarness: Harness = {
  name: "memory",
  clock: "test",
  layer: Layer.unwrap(Effect.sync(() => {
    const store = SessionLock.makeMemoryStore()
    const fixtures = Layer.succeed(LockFixtures, {
      another: Effect.suspend(() => SessionLock.make(SessionLock.makeMemoryBackend(store))),
      plantDead: (key) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          store.processes.set("crashed", false)
          const token = (store.tokens.get(key) ?? 0) + 1
          store.tokens.set(key, token)
          store.locks.set(key, { ownerId: "crashed-1", token, process: "crashed", createdAt: now, maxHoldMs: 300_000 })
          return token
        }),
      plantLive: (key, ageMs) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const token = (store.tokens.get(key) ?? 0) + 1
          store.tokens.set(key, token)
          store.locks.set(key, {
            ownerId: "elsewhere-1",
            token,
            process: "elsewhere",
            createdAt: now - ageMs,
            maxHoldMs: 3 * ageMs
          })
        })
    })
    return Layer.mergeAll(SessionLock.layerMemory({ store }), fixtures).pipe(
      Layer.provideMerge(DiagnosticBus.layer())
    )
  }))
}

/** A fresh temporary lock directory per build, removed when the layer is released. */
export const fileHarness = (options: Omit<SessionLockFile.Options, "directory"> = {}): Harness => ({
  name: "file",
  clock: "live",
  layer: Layer.unwrap(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const directory = yield* fs.makeTempDirectoryScoped({ prefix: "session-lock-" })
    const start = yield* Effect.promise(selfStartTime)
    const fixtures = Layer.succeed(LockFixtures, {
      another: Effect.flatMap(SessionLockFile.makeBackend({ ...options, directory }), SessionLock.make),
      plantDead: (key) => Effect.promise(() => writeLock(directory, key, { pid: deadPid, ownerId: "crashed-1" })),
      plantLive: (key, ageMs) =>
        Effect.promise(() =>
          writeLock(directory, key, {
            pid: process.pid,
            startTime: start,
            ownerId: "elsewhere-1",
            createdAt: Date.now() - ageMs,
            maxHoldMs: 3 * ageMs
          })
        ).pipe(Effect.asVoid)
    })
    return Layer.mergeAll(SessionLockFile.layer({ ...options, directory }), fixtures).pipe(
      Layer.provideMerge(DiagnosticBus.layer())
    )
  })).pipe(Layer.provide(NodeServices.layer))
})
