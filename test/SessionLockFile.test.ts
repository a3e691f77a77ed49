import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Option } from "effect"
import { spawn } from "node:child_process"
import { chmod, lstat, mkdir, readdir, readFile, stat, symlink, utimes, writeFile } from "node:fs/promises"
import { createHash } from "node:crypto"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as lockFile from "../src/internal/lockFile.ts"
import { parseStat } from "../src/internal/processProbe.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockFile from "../src/SessionLockFile.ts"
import { contract } from "./SessionLock.contract.ts"
import { collectEvents } from "./utils/events.ts"
import { deadPid, fileHarness, selfStartTime } from "./utils/lockFixtures.ts"
import { hostname } from "node:os"

contract(fileHarness())

const key = SessionKey.makeUnsafe("agent:main:hostile")
const base = SessionKey.toFileName(key)

const deadPayload = (token = 1) =>
  JSON.stringify({
    v: 1,
    pid: deadPid,
    startTime: null,
    host: hostname(),
    ownerId: "crashed",
    token,
    createdAt: Date.now(),
    maxHoldMs: 1000,
    leaseMs: 1000
  })

// Everything observable about a directory tree: names, kinds, sizes, mtimes, content hashes.
const snapshot = async (dir: string): Promise<string> => {
  const out: Array<string> = []
  for (const name of (await readdir(dir)).sort()) {
    const s = await lstat(`${dir}/${name}`)
    const hash = s.isFile() ? createHash("sha256").update(await readFile(`${dir}/${name}`)).digest("hex") : ""
    out.push(`${name} ${s.isFile() ? "f" : s.isDirectory() ? "d" : s.isSymbolicLink() ? "l" : "o"} ${s.size} ${s.mtimeMs} ${hash}`)
  }
  return out.join("\n")
}

const setup = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "lock-hostile-" })
  const outside = yield* fs.makeTempDirectoryScoped({ prefix: "lock-outside-" })
  // An outside file that looks like a reclaimable lock, to tempt anything that would follow a link.
  yield* Effect.promise(() => writeFile(`${outside}/victim`, deadPayload(), { mode: 0o600 }))
  yield* Effect.promise(() => mkdir(`${outside}/victim-dir`))
  yield* Effect.promise(() => writeFile(`${outside}/victim-dir/keep`, "keep"))
  const before = yield* Effect.promise(() => snapshot(outside))
  const bus = yield* DiagnosticBus.make()
  const lock = yield* Effect.flatMap(SessionLockFile.makeBackend({ directory }), SessionLock.make).pipe(
    Effect.provideService(DiagnosticBus.DiagnosticBus, bus)
  )
  const events = yield* collectEvents.pipe(Effect.provideService(DiagnosticBus.DiagnosticBus, bus))
  const paths = lockFile.pathsOf(directory, base)
  const outsideUntouched = Effect.gen(function*() {
    assert.strictEqual(yield* Effect.promise(() => snapshot(outside)), before)
  })
  const makeOld = (path: string) => Effect.promise(() => utimes(path, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000)))
  return { directory, outside, lock, events, paths, outsideUntouched, makeOld }
})

const live = (name: string, body: () => Effect.Effect<void, unknown, FileSystem.FileSystem | import("effect").Scope.Scope>) =>
  it.live(name, () => body().pipe(Effect.scoped, Effect.provide(NodeServices.layer)) as Effect.Effect<void, unknown>)

describe("SessionLockFile", () => {
  describe("hostile lock files", () => {
    live("an empty lock is left alone during the grace period, then reclaimed as unreadable", () =>
      Effect.gen(function*() {
        const t = yield* setup
        yield* Effect.promise(() => writeFile(t.paths.lock, "", { mode: 0o600 }))
        const young = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "100 millis" })))
        assert.strictEqual(young._tag, "LockTimeout")
        if (young._tag === "LockTimeout") assert.strictEqual(young.holder.status, "unknown")
        assert.isTrue((yield* Effect.promise(() => stat(t.paths.lock))).isFile())
        yield* t.makeOld(t.paths.lock)
        yield* Effect.scoped(t.lock.acquire(key, { timeout: "1 second" }))
        yield* t.events.settle
        assert.deepStrictEqual(t.events.ofType("lock.reclaimed").map((e) => e.reason), ["unreadable"])
        yield* t.outsideUntouched
      }))

    for (
      const [name, content] of [
        ["invalid JSON", "{\"v\":1,\"pid\":"],
        ["binary", Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x81])],
        ["JSON of another shape", "{\"hello\":\"world\"}"],
        ["a 10 MB file", Buffer.alloc(10 * 1024 * 1024, 0x61)]
      ] as const
    ) {
      live(`a lock holding ${name} is reclaimed as unreadable once past the grace period`, () =>
        Effect.gen(function*() {
          const t = yield* setup
          yield* Effect.promise(() => writeFile(t.paths.lock, content, { mode: 0o600 }))
          const entry = yield* Effect.promise(() => lockFile.readEntry(t.paths.lock))
          assert.strictEqual(entry._tag, "Regular")
          if (entry._tag === "Regular") assert.isAtMost(entry.bytes.length, lockFile.maxPayloadBytes)
          yield* t.makeOld(t.paths.lock)
          const lease = yield* t.lock.acquire(key, { timeout: "1 second" })
          assert.isAbove(lease.token, 0)
          yield* t.events.settle
          assert.deepStrictEqual(t.events.ofType("lock.reclaimed").map((e) => e.reason), ["unreadable"])
          yield* t.outsideUntouched
        }))
    }

    for (const target of ["victim", "victim-dir", "missing"]) {
      live(`a symbolic link named like a lock (to ${target} outside) is never followed nor removed`, () =>
        Effect.gen(function*() {
          const t = yield* setup
          yield* Effect.promise(() => symlink(`${t.outside}/${target}`, t.paths.lock))
          const error = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "5 seconds" })))
          assert.strictEqual(error._tag, "LockIoError")
          if (error._tag === "LockIoError") {
            assert.strictEqual(error.reason, "not_a_regular_file")
            assert.isFalse(error.retryable)
            assert.strictEqual(error.path, t.paths.lock)
            assert.include(error.message, "symbolic link")
          }
          assert.isTrue((yield* Effect.promise(() => lstat(t.paths.lock))).isSymbolicLink())
          const inspected = yield* Effect.flip(t.lock.inspect(key))
          assert.strictEqual(inspected._tag, "LockIoError")
          yield* t.outsideUntouched
        }))
    }

    live("a directory named like a lock is reported, never removed", () =>
      Effect.gen(function*() {
        const t = yield* setup
        yield* Effect.promise(() => mkdir(t.paths.lock))
        yield* Effect.promise(() => writeFile(`${t.paths.lock}/inside`, "x"))
        const error = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "5 seconds" })))
        assert.strictEqual(error._tag, "LockIoError")
        if (error._tag === "LockIoError") {
          assert.strictEqual(error.reason, "not_a_regular_file")
          assert.include(error.message, "directory")
        }
        assert.strictEqual(yield* Effect.promise(() => readFile(`${t.paths.lock}/inside`, "utf8")), "x")
        yield* t.outsideUntouched
      }))

    live("a FIFO named like a lock is reported without blocking", () =>
      Effect.gen(function*() {
        const t = yield* setup
        yield* Effect.promise(() =>
          new Promise<void>((resolve, reject) =>
            spawn("mkfifo", [t.paths.lock]).on("exit", (code) => (code === 0 ? resolve() : reject(new Error("mkfifo"))))
          )
        )
        const error = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "5 seconds" })))
        assert.strictEqual(error._tag, "LockIoError")
        if (error._tag === "LockIoError") assert.strictEqual(error.reason, "not_a_regular_file")
      }))

    live("a fence log replaced by a link to an outside file is refused, and the outside file untouched", () =>
      Effect.gen(function*() {
        const t = yield* setup
        yield* Effect.promise(() => symlink(`${t.outside}/victim`, t.paths.fence))
        const error = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "1 second" })))
        assert.strictEqual(error._tag, "LockIoError")
        if (error._tag === "LockIoError") assert.strictEqual(error.reason, "not_a_regular_file")
        // The half-made lock was removed again: nothing is left held.
        yield* Effect.promise(() => lstat(t.paths.lock).then(() => assert.fail("lock left behind"), () => undefined))
        yield* t.outsideUntouched
      }))

    live("wrong permissions: a mode-0000 lock of a dead holder is reclaimed, or refused with permission_denied", () =>
      Effect.gen(function*() {
        const t = yield* setup
        yield* Effect.promise(() => writeFile(t.paths.lock, deadPayload(), { mode: 0o600 }))
        yield* Effect.promise(() => chmod(t.paths.lock, 0o000))
        const exit = yield* Effect.exit(Effect.scoped(t.lock.acquire(key, { timeout: "1 second" })))
        if (process.getuid?.() === 0) {
          // root reads any file: the payload is judged like any other.
          assert.strictEqual(exit._tag, "Success")
          yield* t.events.settle
          assert.deepStrictEqual(t.events.ofType("lock.reclaimed").map((e) => e.reason), ["holder_dead"])
        } else {
          assert.strictEqual(exit._tag, "Failure")
          const error = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "1 second" })))
          assert.strictEqual(error._tag, "LockIoError")
          if (error._tag === "LockIoError") assert.strictEqual(error.reason, "permission_denied")
        }
        yield* t.outsideUntouched
      }))

    live("wrong permissions on a live holder's lock (0644) do not make it reclaimable", () =>
      Effect.gen(function*() {
        const t = yield* setup
        const start = yield* Effect.promise(selfStartTime)
        yield* Effect.promise(() =>
          writeFile(
            t.paths.lock,
            JSON.stringify({ v: 1, pid: process.pid, startTime: start, host: hostname(), ownerId: "x", token: 1, createdAt: Date.now(), maxHoldMs: 60_000, leaseMs: 30_000 }),
            { mode: 0o644 }
          )
        )
        yield* t.makeOld(t.paths.lock)
        const error = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "100 millis" })))
        assert.strictEqual(error._tag, "LockTimeout")
        assert.isTrue((yield* Effect.promise(() => stat(t.paths.lock))).isFile())
      }))

    live("a reclaim guard left by a dead reclaimer is moved aside and the stale lock reclaimed", () =>
      Effect.gen(function*() {
        const t = yield* setup
        yield* Effect.promise(() => writeFile(t.paths.lock, deadPayload(), { mode: 0o600 }))
        yield* Effect.promise(() => writeFile(t.paths.guard, deadPayload(), { mode: 0o600 }))
        yield* Effect.scoped(t.lock.acquire(key, { timeout: "1 second" }))
        const left = (yield* Effect.promise(() => readdir(t.directory))).sort()
        assert.deepStrictEqual(left, [`${base}.fence`])
      }))

    live("a reclaim guard held by a live reclaimer is respected: nothing is removed", () =>
      Effect.gen(function*() {
        const t = yield* setup
        const start = yield* Effect.promise(selfStartTime)
        yield* Effect.promise(() => writeFile(t.paths.lock, deadPayload(), { mode: 0o600 }))
        yield* Effect.promise(() =>
          writeFile(
            t.paths.guard,
            JSON.stringify({ v: 1, pid: process.pid, startTime: start, host: hostname(), ownerId: "reclaimer", token: 0, createdAt: Date.now(), maxHoldMs: 1000, leaseMs: 1000 }),
            { mode: 0o600 }
          )
        )
        const error = yield* Effect.flip(Effect.scoped(t.lock.acquire(key, { timeout: "150 millis" })))
        assert.strictEqual(error._tag, "LockTimeout")
        if (error._tag === "LockTimeout") {
          assert.strictEqual(error.holder.status, "dead")
          assert.include(error.message, "reclaimed automatically")
        }
        assert.isTrue((yield* Effect.promise(() => stat(t.paths.lock))).isFile())
        assert.isTrue(Option.isSome(yield* t.lock.inspect(key)))
      }))

    live("a missing lock directory is created; an unusable one fails with a typed error", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const root = yield* fs.makeTempDirectoryScoped({ prefix: "lock-dir-" })
        yield* Effect.scoped(SessionLockFile.makeBackend({ directory: `${root}/a/b` }))
        assert.isTrue((yield* Effect.promise(() => stat(`${root}/a/b`))).isDirectory())
        yield* Effect.promise(() => writeFile(`${root}/file`, "x"))
        const error = yield* Effect.flip(Effect.scoped(SessionLockFile.makeBackend({ directory: `${root}/file/locks` })))
        assert.strictEqual(error._tag, "LockIoError")
        assert.strictEqual(error.reason, "not_a_directory")
      }))
  })

  describe("lease refresh", () => {
    live("keeps a held lock's mtime fresh, and reports lock.lost when the lock is taken away", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const directory = yield* fs.makeTempDirectoryScoped({ prefix: "lock-refresh-" })
        const bus = yield* DiagnosticBus.make()
        const lock = yield* Effect.flatMap(SessionLockFile.makeBackend({ directory, lease: "90 millis" }), SessionLock.make).pipe(
          Effect.provideService(DiagnosticBus.DiagnosticBus, bus)
        )
        const events = yield* collectEvents.pipe(Effect.provideService(DiagnosticBus.DiagnosticBus, bus))
        const path = lockFile.pathsOf(directory, base).lock
        const lease = yield* lock.acquire(key)
        const payload = JSON.parse(yield* Effect.promise(() => readFile(path, "utf8")))
        assert.strictEqual(payload.leaseMs, 90)
        assert.strictEqual(payload.token, lease.token)
        assert.strictEqual(payload.ownerId, lease.ownerId)
        assert.strictEqual(payload.pid, process.pid)
        assert.strictEqual((yield* Effect.promise(() => stat(path))).mode & 0o777, 0o600)
        yield* Effect.sleep("250 millis")
        const age = Date.now() - (yield* Effect.promise(() => stat(path))).mtimeMs
        assert.isBelow(age, 90, "refreshed within the last lease third or so")
        // Someone removes the lock behind the holder's back.
        yield* Effect.promise(() => import("node:fs/promises").then((m) => m.unlink(path)))
        yield* Effect.sleep("150 millis")
        yield* events.settle
        const lost = events.ofType("lock.lost")
        assert.strictEqual(lost.length, 1)
        assert.strictEqual(lost[0]!.token, lease.token)
        assert.include(lost[0]!.reason, "gone")
        const error = yield* Effect.flip(lock.assertCurrent(lease))
        assert.strictEqual(error._tag, "LockLost")
      }))
  })

  describe("payload and probes", () => {
    it("reads the state and start time of a /proc stat line, whatever the command name", () => {
      const line = "4242 (we)ird ) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50"
      assert.deepStrictEqual(parseStat(line), { state: "S", startTime: 987654 })
      assert.isUndefined(parseStat("garbage"))
    })

    it("decodes a version-1 payload and names what is wrong with anything else", () => {
      const good = lockFile.encodePayload({
        v: 1, pid: 10, startTime: 5, host: "h", ownerId: "o", token: 3, createdAt: 1, maxHoldMs: 2, leaseMs: 3
      })
      const decoded = lockFile.decodePayload(good, good.length)
      assert.strictEqual(decoded._tag, "Success")
      const reason = (text: string | Uint8Array) => {
        const bytes = typeof text === "string" ? Buffer.from(text) : text
        const result = lockFile.decodePayload(bytes, bytes.length)
        return result._tag === "Failure" ? result.failure : "ok"
      }
      assert.strictEqual(reason(""), "empty file")
      assert.strictEqual(reason("{"), "not JSON")
      assert.strictEqual(reason(Buffer.from([0xff, 0xfe])), "binary content (not UTF-8)")
      assert.strictEqual(reason("{\"v\":2}"), "JSON that is not a version-1 lock payload")
      assert.strictEqual(reason(JSON.stringify({ ...JSON.parse(Buffer.from(good).toString()), pid: -1 })), "JSON that is not a version-1 lock payload")
      assert.include(lockFile.decodePayload(Buffer.alloc(10), 10_000_000)._tag === "Failure" ? "big" : "", "big")
    })
  })
})
