import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, FileSystem, Option, Schema } from "effect"
import type { Scope } from "effect"
import { Command } from "effect/cli"
import { TestConsole } from "effect/testing"
import { spawn } from "node:child_process"
import { chmod, mkdir, readdir, rm, symlink, utimes, writeFile } from "node:fs/promises"
import { hostname } from "node:os"
import { fileURLToPath } from "node:url"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as Doctor from "../src/Doctor.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockFile from "../src/SessionLockFile.ts"
import {
  foreignNames,
  makeDoctorFixture,
  named,
  remainingNames,
  removableNames,
  snapshotDir,
  writeForeignFiles
} from "./utils/lockDoctorFixture.ts"
import { deadPid, selfStartTime } from "./utils/lockFixtures.ts"
import { asOtherUser, makeSharedTmp, otherUid, runAsOtherUser } from "./utils/otherUser.ts"

const root = process.getuid?.() === 0
const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

const run = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += String(c)))
    child.stderr.on("data", (c) => (stderr += String(c)))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

const dirs = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "doctor-" })
  const outside = yield* fs.makeTempDirectoryScoped({ prefix: "doctor-outside-" })
  return { dir, outside }
})

const live = (name: string, body: () => Effect.Effect<void, unknown, NodeServices.NodeServices | Scope.Scope>, timeout = 30_000) =>
  it.live(name, () => body().pipe(Effect.scoped, Effect.provide(NodeServices.layer)) as Effect.Effect<void, unknown>, timeout)

const names = (dir: string) => Effect.promise(async () => (await readdir(dir)).sort())

const decodeReport = Schema.decodeUnknownSync(Doctor.LockReportJson)

/** The protocol files of the fixture the doctor examines (locks and guards; fence logs are left alone). */
const examinedNames = (root: boolean) =>
  [...removableNames(root), ...remainingNames(root)].filter((n) =>
    !foreignNames.includes(n) && (n.endsWith(".lock") || n.endsWith(".reclaim"))
  ).sort()

describe("Doctor", () => {
  describe("lockCheck", () => {
    live("lists every lock and guard with holder, liveness, age, verdict and reasons; touches nothing", () =>
      Effect.gen(function*() {
        const { dir, outside } = yield* dirs
        yield* Effect.promise(() => makeDoctorFixture(dir, outside))
        const before = yield* Effect.promise(() => snapshotDir(dir))
        const outsideBefore = yield* Effect.promise(() => snapshotDir(outside))
        const result = yield* Doctor.lockCheck({ directory: dir }).run
        const byName = new Map(result.items.map((item) => [item.path.slice(dir.length + 1), item]))
        assert.deepStrictEqual([...byName.keys()].sort(), examinedNames(root))
        assert.deepStrictEqual(result.problems, [])
        assert.deepStrictEqual(
          result.ignored.map((entry) => [entry.path.slice(dir.length + 1), entry.why]),
          [...foreignNames.map((n) => [n, "not_a_protocol_file"]), [named("session.fence"), "fence_log"]].sort((a, b) =>
            a[0]! < b[0]! ? -1 : 1
          )
        )
        assert.isFalse(result.healthy)
        const dead = byName.get(named("dead.lock"))!
        assert.strictEqual(dead.pid, deadPid)
        assert.strictEqual(dead.host, hostname())
        assert.isFalse(dead.alive)
        assert.isTrue(dead.stale && dead.removable && !dead.removed)
        assert.include(dead.reasons, "holder_dead")
        const reused = byName.get(named("reused.lock"))!
        assert.strictEqual(reused.status, "pid_reused")
        assert.include(reused.reasons, "pid_reused")
        const alive = byName.get(named("live.lock"))!
        assert.isTrue(alive.alive)
        assert.isFalse(alive.stale)
        assert.isFalse(alive.removable)
        const oldLive = byName.get(named("live-old.lock"))!
        assert.isTrue(oldLive.stale)
        assert.isFalse(oldLive.removable)
        assert.include(oldLive.reasons, "older_than_stale_time")
        for (const name of ["link.lock", "dir.lock"]) {
          const item = byName.get(named(name))!
          assert.strictEqual(item.status, "not_a_regular_file")
          assert.isTrue(item.stale)
          assert.isFalse(item.removable)
        }
        const young = byName.get(named("young-empty.lock"))!
        assert.isFalse(young.stale)
        for (const name of ["empty.lock", "invalid-json.lock", "binary.lock", "huge.lock"]) {
          assert.include(byName.get(named(name))!.reasons, "unreadable", name)
        }
        assert.isTrue(byName.get(named("stale.reclaim"))!.removable)
        assert.strictEqual(byName.get(named("stale.reclaim"))!.kind, "guard")
        // Listing alone changes nothing, inside or outside.
        assert.strictEqual(yield* Effect.promise(() => snapshotDir(dir)), before)
        assert.strictEqual(yield* Effect.promise(() => snapshotDir(outside)), outsideBefore)
      }))

    live("--fix removes exactly the reclaimable locks and guards, through the reclaim path", () =>
      Effect.gen(function*() {
        const { dir, outside } = yield* dirs
        yield* Effect.promise(() => makeDoctorFixture(dir, outside))
        const outsideBefore = yield* Effect.promise(() => snapshotDir(outside))
        const result = yield* Doctor.lockCheck({ directory: dir, fix: true }).run
        assert.deepStrictEqual(yield* names(dir), remainingNames(root))
        const removed = result.items.filter((item) => item.removed).map((item) => item.path.slice(dir.length + 1)).sort()
        assert.deepStrictEqual(removed, removableNames(root))
        assert.isFalse(result.healthy) // a link, a directory and a live old holder need a person
        assert.strictEqual(yield* Effect.promise(() => snapshotDir(outside)), outsideBefore)
        // A second pass finds nothing more to remove.
        const again = yield* Doctor.lockCheck({ directory: dir, fix: true }).run
        assert.strictEqual(again.items.filter((item) => item.removed).length, 0)
        assert.deepStrictEqual(yield* names(dir), remainingNames(root))
      }))

    live("judges garbage at a protocol name as the backend does: left alone in the grace period, then reclaimed", () =>
      Effect.gen(function*() {
        const { dir } = yield* dirs
        const key = SessionKey.makeUnsafe("agent:main:garbage")
        const path = `${dir}/${SessionKey.toFileName(key)}.lock`
        yield* Effect.promise(() => writeFile(path, "{not json", { mode: 0o600 }))
        const young = (yield* Doctor.lockCheck({ directory: dir, fix: true, grace: "1 hour" }).run).items[0]!
        assert.isFalse(young.removable)
        assert.isFalse(young.removed)
        const lock = yield* Effect.flatMap(
          SessionLockFile.makeBackend({ directory: dir, grace: "1 hour" }),
          SessionLock.make
        ).pipe(Effect.provide(DiagnosticBus.layer()))
        assert.strictEqual(
          Option.getOrThrow(yield* lock.inspect(key)).reclaimable,
          undefined,
          "the backend leaves it alone too"
        )
        const old = new Date(Date.now() - 2 * 3_600_000)
        yield* Effect.promise(() => utimes(path, old, old))
        const listed = (yield* Doctor.lockCheck({ directory: dir, grace: "1 hour" }).run).items[0]!
        assert.isTrue(listed.removable)
        assert.include(listed.reasons, "unreadable")
        assert.strictEqual(Option.getOrThrow(yield* lock.inspect(key)).reclaimable, "unreadable", "the backend too")
        const fixed = (yield* Doctor.lockCheck({ directory: dir, fix: true, grace: "1 hour" }).run).items[0]!
        assert.isTrue(fixed.removed)
      }))
  })

  describe("renderLocks", () => {
    it("prints one line per file and a summary with the --fix hint", () => {
      const text = Doctor.renderLocks("/locks", {
        name: "locks",
        healthy: false,
        problems: [],
        ignored: [{ path: "/locks/yarn.lock", why: "not_a_protocol_file" }],
        items: [
          {
            path: "/locks/a.lock", kind: "lock", pid: 7, host: "h", ownerId: "o", token: 3, status: "dead",
            alive: false, ageMs: 65_000, stale: true, reasons: ["holder_dead"], removable: true, removed: false
          },
          {
            path: "/locks/b.lock", kind: "lock", pid: 8, host: "h", ownerId: "p", token: 1, status: "alive",
            alive: true, ageMs: 1_000, stale: false, reasons: [], removable: false, removed: false
          }
        ]
      }, { fix: false })
      assert.strictEqual(
        text,
        [
          "Locks in /locks: 2 files",
          "  a.lock  pid 7 on h  dead  age 1m 05s  STALE (removable) - holder_dead",
          "  b.lock  pid 8 on h  alive  age 1.0 s  ok",
          "Ignored, not locks of this protocol (never read or touched): yarn.lock.",
          "Summary: 2 examined, 1 stale.",
          "Run again with --fix to remove the 1 removable lock (only what the lock protocol itself would reclaim)."
        ].join("\n")
      )
      assert.strictEqual(Doctor.exitCodeOf({ name: "locks", healthy: true, items: [] }), 0)
    })
  })

  describe("command (in process)", () => {
    const cli = Command.runWith(Doctor.cli, { version: "0.1.0" })
    const withConsole = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, TestConsole.layer)

    live("reports, fixes, prints JSON and fails with exit code 1 while stale locks remain", () =>
      Effect.gen(function*() {
        const { dir, outside } = yield* dirs
        yield* Effect.promise(() => makeDoctorFixture(dir, outside))
        const listed = yield* withConsole(Effect.gen(function*() {
          const exit = yield* Effect.exit(cli(["doctor", "locks", "--dir", dir]))
          return { exit, lines: yield* TestConsole.logLines }
        }))
        assert.isTrue(Exit.isFailure(listed.exit))
        if (Exit.isFailure(listed.exit)) {
          const error = listed.exit.cause.reasons[0]
          assert.strictEqual(error?._tag, "Fail")
          if (error?._tag === "Fail") assert.strictEqual((error.error as Doctor.DoctorFailed).exitCode, 1)
        }
        const text = listed.lines.join("\n")
        assert.include(text, named("dead.lock"))
        assert.include(text, "STALE (removable)")
        assert.include(text, "--fix")
        const fixed = yield* withConsole(Effect.gen(function*() {
          yield* Effect.exit(cli(["doctor", "locks", "--dir", dir, "--fix", "--json"]))
          return yield* TestConsole.logLines
        }))
        const findings = decodeReport(fixed[0]).findings
        assert.deepStrictEqual(
          findings.filter((f) => f.removed).map((f) => f.path.slice(dir.length + 1)).sort(),
          removableNames(root)
        )
        assert.deepStrictEqual(yield* names(dir), remainingNames(root))
      }))

    live("succeeds on a healthy directory and after a fix that leaves nothing stale", () =>
      Effect.gen(function*() {
        const { dir } = yield* dirs
        const start = yield* Effect.promise(selfStartTime)
        const payload = (pid: number) =>
          JSON.stringify({ v: 1, pid, startTime: start, host: hostname(), ownerId: "x", token: 1, createdAt: Date.now(), maxHoldMs: 60_000, leaseMs: 30_000 })
        yield* Effect.promise(() => writeFile(`${dir}/${named("live.lock")}`, payload(process.pid), { mode: 0o600 }))
        yield* Effect.promise(() => writeFile(`${dir}/readme.txt`, "x"))
        yield* withConsole(cli(["doctor", "locks", "--dir", dir]))
        yield* Effect.promise(() => writeFile(`${dir}/${named("dead.lock")}`, payload(deadPid), { mode: 0o600 }))
        yield* withConsole(cli(["doctor", "locks", "--dir", dir, "--fix"]))
        assert.deepStrictEqual(yield* names(dir), [named("live.lock"), "readme.txt"].sort())
      }))

    live("bad usage fails with a CLI error", () =>
      Effect.gen(function*() {
        const missing = yield* withConsole(Effect.flip(cli(["doctor", "locks"])))
        assert.strictEqual(missing._tag, "ShowHelp")
        const unknown = yield* withConsole(Effect.flip(cli(["doctor", "locks", "--dir", ".", "--frobnicate"])))
        assert.strictEqual(unknown._tag, "ShowHelp")
      }))
  })

  describe("bin (a real process)", () => {
    live("exit codes: 1 with stale locks, JSON that parses, 1 after a partial fix, 0 when healthy, 2 on bad usage", () =>
      Effect.gen(function*() {
        const { dir, outside } = yield* dirs
        yield* Effect.promise(() => makeDoctorFixture(dir, outside))
        const listed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", dir, "--json"]))
        assert.strictEqual(listed.code, 1, listed.stderr)
        const findings = decodeReport(listed.stdout.trim()).findings
        for (const f of findings) {
          for (const field of ["path", "pid", "host", "alive", "ageMs", "stale", "reasons", "removable", "removed"]) {
            assert.property(f, field)
          }
        }
        assert.include(listed.stderr, "stale lock")
        const fixed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", dir, "--fix"]))
        assert.strictEqual(fixed.code, 1)
        assert.include(fixed.stdout, "REMOVED")
        assert.deepStrictEqual(yield* names(dir), remainingNames(root))
        const { dir: healthy } = yield* dirs
        const ok = yield* Effect.promise(() => run(["doctor", "locks", "--dir", healthy]))
        assert.strictEqual(ok.code, 0, ok.stderr)
        assert.include(ok.stdout, "Healthy.")
        assert.strictEqual((yield* Effect.promise(() => run(["doctor", "locks"]))).code, 2)
        assert.strictEqual((yield* Effect.promise(() => run(["doctor", "locks", "--dir", dir, "--bogus"]))).code, 2)
        assert.strictEqual((yield* Effect.promise(() => run(["doctor", "locks", "--dir", `${dir}/missing`]))).code, 2)
      }), 60_000)
  })

  describe("lock directory (a real process)", () => {
    const sharedTmp = Effect.acquireRelease(
      Effect.promise(makeSharedTmp),
      (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
    )
    const deadLock = JSON.stringify({
      v: 1, pid: deadPid, startTime: null, host: hostname(), ownerId: "crashed", token: 1,
      createdAt: Date.now() - 3_600_000, maxHoldMs: 60_000, leaseMs: 30_000
    })
    const reasonsOf = (stdout: string) => decodeReport(stdout.trim()).problems.map((p) => p.reason)

    live("--fix among yarn.lock, Cargo.lock, flake.lock, a hidden .lock (1 h old) removes none; --json: ignored", () =>
      Effect.gen(function*() {
        const { dir } = yield* dirs
        yield* Effect.promise(() => writeForeignFiles(dir))
        yield* Effect.promise(() => writeFile(`${dir}/${named("crashed.lock")}`, deadLock, { mode: 0o600 }))
        const before = yield* Effect.promise(() => snapshotDir(dir))
        const listed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", dir, "--json"]))
        assert.strictEqual(listed.code, 1, listed.stderr)
        const report = decodeReport(listed.stdout.trim())
        assert.deepStrictEqual(
          report.ignored.map((entry) => [entry.path.slice(dir.length + 1), entry.why]),
          foreignNames.map((n) => [n, "not_a_protocol_file"])
        )
        assert.deepStrictEqual(report.findings.map((f) => f.path.slice(dir.length + 1)), [named("crashed.lock")])
        assert.strictEqual(yield* Effect.promise(() => snapshotDir(dir)), before, "listing changes nothing")
        const fixed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", dir, "--fix"]))
        assert.strictEqual(fixed.code, 0, fixed.stderr)
        assert.include(fixed.stdout, "Ignored, not locks of this protocol (never read or touched): .lock, Cargo.lock")
        assert.include(fixed.stdout, "Healthy.")
        // Only the protocol's own dead lock went; every foreign file is byte for byte as it was.
        assert.deepStrictEqual(yield* names(dir), [...foreignNames].sort())
        const after = yield* Effect.promise(() => snapshotDir(dir))
        const untouched = before.split("\n").filter((line) => !line.startsWith(named("crashed.lock")))
        assert.strictEqual(after, untouched.join("\n"))
      }), 60_000)

    live("flags a directory another user pre-created 0777, and --fix changes nothing in it (exit 1)", () =>
      Effect.gen(function*() {
        const tmp = yield* sharedTmp
        const squatted = `${tmp}/locks`
        yield* Effect.promise(() =>
          asOtherUser(
            "await fs.mkdir(args[0]); await fs.chmod(args[0], 0o777); await fs.writeFile(args[1], args[2])",
            squatted,
            `${squatted}/${named("planted.lock")}`,
            deadLock
          )
        )
        const listed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", squatted, "--json"]))
        assert.strictEqual(listed.code, 1, listed.stderr)
        assert.deepStrictEqual(reasonsOf(listed.stdout), ["directory_not_owned", "directory_writable_by_others"])
        assert.include(listed.stderr, "is refused (directory_not_owned, directory_writable_by_others)")
        const fixed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", squatted, "--fix"]))
        assert.strictEqual(fixed.code, 1)
        assert.include(fixed.stdout, "REFUSED")
        assert.include(fixed.stdout, `owned by uid ${otherUid}`)
        assert.include(fixed.stdout, "Nothing was changed")
        assert.notInclude(fixed.stdout, "Healthy.")
        assert.deepStrictEqual(yield* names(squatted), [named("planted.lock")])
      }), 60_000)

    live("flags a symbolic link unless --allow-symlink, and a regular file where the directory should be", () =>
      Effect.gen(function*() {
        const { dir } = yield* dirs
        yield* Effect.promise(() => mkdir(`${dir}/real`, { mode: 0o700 }))
        yield* Effect.promise(() => symlink(`${dir}/real`, `${dir}/link`))
        const linked = yield* Effect.promise(() => run(["doctor", "locks", "--dir", `${dir}/link`, "--json"]))
        assert.strictEqual(linked.code, 1)
        assert.deepStrictEqual(reasonsOf(linked.stdout), ["directory_is_symlink"])
        const allowed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", `${dir}/link`, "--allow-symlink"]))
        assert.strictEqual(allowed.code, 0, allowed.stderr)
        assert.include(allowed.stdout, "Healthy.")
        yield* Effect.promise(() => writeFile(`${dir}/file`, "x"))
        const file = yield* Effect.promise(() => run(["doctor", "locks", "--dir", `${dir}/file`]))
        assert.strictEqual(file.code, 1)
        assert.include(file.stdout, "not_a_directory")
        assert.include(file.stdout, "a regular file sits where the lock directory should be")
        assert.notInclude(file.stdout + file.stderr, "EEXIST")
        assert.notInclude(file.stdout, "Healthy.")
      }), 60_000)

    live("flags a directory on a read-only mount (exit 1)", () =>
      Effect.gen(function*() {
        const { dir } = yield* dirs
        const mount = (args: ReadonlyArray<string>) =>
          Effect.promise(() =>
            new Promise<void>((resolve, reject) => {
              const child = spawn(args[0]!, args.slice(1), { stdio: "ignore" })
              child.once("error", reject)
              child.once("exit", (code) =>
                code === 0 ? resolve() : reject(new Error(`${args.join(" ")}: exit ${code}`))
              )
            })
          )
        yield* Effect.acquireRelease(
          mount(["mount", "-t", "tmpfs", "-o", "ro,size=1m,mode=0700", "tmpfs", dir]),
          () => mount(["umount", dir])
        )
        const listed = yield* Effect.promise(() => run(["doctor", "locks", "--dir", dir, "--json"]))
        assert.strictEqual(listed.code, 1, listed.stderr)
        assert.deepStrictEqual(reasonsOf(listed.stdout), ["read_only"])
        const text = yield* Effect.promise(() => run(["doctor", "locks", "--dir", dir]))
        assert.include(text.stdout, "read-only file system")
        assert.notInclude(text.stdout, "Healthy.")
      }), 60_000)

    live("flags a directory the user running it cannot write to (exit 1)", () =>
      Effect.gen(function*() {
        const tmp = yield* sharedTmp
        const theirs = `${tmp}/locks`
        yield* Effect.promise(() => asOtherUser("await fs.mkdir(args[0]); await fs.chmod(args[0], 0o500)", theirs))
        const listed = yield* Effect.promise(() => runAsOtherUser([bin, "doctor", "locks", "--dir", theirs, "--json"]))
        assert.strictEqual(listed.code, 1, listed.stderr)
        assert.deepStrictEqual(reasonsOf(listed.stdout), ["permission_denied"])
        yield* Effect.promise(() => chmod(theirs, 0o700))
        const ok = yield* Effect.promise(() => runAsOtherUser([bin, "doctor", "locks", "--dir", theirs]))
        assert.strictEqual(ok.code, 0, ok.stderr)
        assert.include(ok.stdout, "Healthy.")
      }), 60_000)
  })
})
