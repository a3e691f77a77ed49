import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem } from "effect"
import type { Scope } from "effect"
import * as fc from "fast-check"
import { chmod, chown, lstat, mkdir, realpath, stat, symlink, writeFile } from "node:fs/promises"
import * as lockDirectory from "../../src/internal/lockDirectory.ts"
import * as SessionKey from "../../src/SessionKey.ts"
import * as SessionLock from "../../src/SessionLock.ts"
import { otherUid } from "../utils/otherUser.ts"

const me = { uid: 1000 }
const dir = (mode: number, uid = 1000): lockDirectory.Observed => ({ kind: "directory", uid, mode })

const live = (name: string, body: () => Effect.Effect<void, unknown, NodeServices.NodeServices | Scope.Scope>) =>
  it.live(name, () => body().pipe(Effect.scoped, Effect.provide(NodeServices.layer)) as Effect.Effect<void, unknown>)

const tempDir = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  return yield* fs.makeTempDirectoryScoped({ prefix: "lockdir-" })
})

const refusal = (path: string, options: lockDirectory.Options = {}) =>
  Effect.flip(lockDirectory.prepare(path, options))

describe("lockDirectory", () => {
  describe("judgeDirectory", () => {
    it("accepts a directory of this user closed to others", () => {
      assert.deepStrictEqual(lockDirectory.judgeDirectory("/l", dir(0o700), me), [])
      assert.deepStrictEqual(lockDirectory.judgeDirectory("/l", dir(0o755), me), [])
    })

    it("refuses a directory of another user and one writable by group or others, naming both", () => {
      const problems = lockDirectory.judgeDirectory("/l", dir(0o777, otherUid), me)
      assert.deepStrictEqual(problems.map((p) => p.reason), ["directory_not_owned", "directory_writable_by_others"])
      assert.include(problems[0]!.detail, `uid ${otherUid}`)
      assert.include(problems[1]!.detail, "0777")
      assert.deepStrictEqual(
        lockDirectory.judgeDirectory("/l", dir(0o770), me).map((p) => p.reason),
        ["directory_writable_by_others"]
      )
    })

    it("says what sits there when it is not a directory", () => {
      const [problem] = lockDirectory.judgeDirectory("/l", { kind: "file", uid: 1000, mode: 0o600 }, me)
      assert.strictEqual(problem!.reason, "not_a_directory")
      assert.include(problem!.detail, "a regular file")
    })

    it("judges no ownership or mode where the platform has no uids", () => {
      assert.deepStrictEqual(lockDirectory.judgeDirectory("/l", dir(0o777, 5), { uid: undefined }), [])
    })
  })

  describe("judgeAncestor", () => {
    it("accepts root's and this user's directories, and sticky shared ones such as /tmp", () => {
      assert.deepStrictEqual(lockDirectory.judgeAncestor("/", dir(0o755, 0), me), [])
      assert.deepStrictEqual(lockDirectory.judgeAncestor("/tmp", dir(0o1777, 0), me), [])
      assert.deepStrictEqual(lockDirectory.judgeAncestor("/home/me", dir(0o700), me), [])
    })

    it("refuses another user's directory and a shared one without the sticky bit", () => {
      assert.deepStrictEqual(
        lockDirectory.judgeAncestor("/srv/x", dir(0o755, otherUid), me).map((p) => p.reason),
        ["directory_not_owned"]
      )
      const [open] = lockDirectory.judgeAncestor("/srv/shared", dir(0o777, 0), me)
      assert.strictEqual(open!.reason, "directory_writable_by_others")
      assert.include(open!.detail, "sticky")
    })
  })

  describe("judgeAccess", () => {
    it("tells a read-only file system from missing permission", () => {
      assert.strictEqual(lockDirectory.judgeAccess("/l", "EROFS", 0o700)?.reason, "read_only")
      assert.strictEqual(lockDirectory.judgeAccess("/l", "EACCES", 0o500)?.reason, "permission_denied")
      assert.isUndefined(lockDirectory.judgeAccess("/l", undefined, 0o700))
    })
  })

  describe("classifyName", () => {
    it("recognises every file the protocol names for a key", () => {
      fc.assert(
        fc.property(
          fc.oneof(fc.string({ minLength: 1, maxLength: 120 }), fc.stringMatching(/^[A-Za-z0-9:_\-./ ]{1,90}$/)),
          (raw) => {
            const decoded = SessionKey.decodeResult(raw)
            if (decoded._tag === "Failure") return true
            const base = SessionKey.toFileName(decoded.success)
            return lockDirectory.classifyName(`${base}.lock`).kind === "lock" &&
              lockDirectory.classifyName(`${base}.reclaim`).kind === "guard" &&
              lockDirectory.classifyName(`${base}.fence`).kind === "fence" &&
              lockDirectory.classifyName(`${base}.reclaim.0b9d6a4e-8f1c-4e0a-9d3b-2f6c1a7e5d40.stale`).kind === "aside"
          }
        ),
        { numRuns: 500 }
      )
    })

    it("takes nothing else for a lock: project lockfiles, hidden files, near-misses", () => {
      const digest = "0123456789abcdef0123456789abcdef"
      for (
        const name of [
          "yarn.lock",
          "Cargo.lock",
          "flake.lock",
          "package-lock.json",
          ".lock",
          ".reclaim",
          ".fence",
          `.${digest}.lock`,
          `${digest.slice(1)}.lock`,
          `${digest.toUpperCase()}.lock`,
          `Agent-${digest}.lock`,
          `_agent-${digest}.lock`,
          `${"a".repeat(49)}-${digest}.lock`,
          `${digest}.lock.bak`,
          `${digest}.lock~`,
          `${digest}.stale`,
          "notes.txt"
        ]
      ) {
        assert.strictEqual(lockDirectory.classifyName(name).kind, "foreign", name)
      }
      assert.deepStrictEqual(lockDirectory.classifyName(`${digest}.lock`), { kind: "lock", base: digest })
    })
  })

  describe("prepare", () => {
    live("creates a missing directory and its parents with mode 0700 and returns its real path", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const path = `${root}/a/b/locks`
        const used = yield* lockDirectory.prepare(path)
        assert.strictEqual(used, yield* Effect.promise(() => realpath(path)))
        for (const created of [`${root}/a`, `${root}/a/b`, path]) {
          assert.strictEqual((yield* Effect.promise(() => stat(created))).mode & 0o777, 0o700, created)
        }
        // A second start accepts what the first created.
        assert.strictEqual(yield* lockDirectory.prepare(path), used)
      }))

    live("refuses a regular file where the directory should be, saying so (not EEXIST)", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        yield* Effect.promise(() => writeFile(`${root}/file`, "x"))
        for (const path of [`${root}/file`, `${root}/file/locks`]) {
          const error = yield* refusal(path)
          assert.instanceOf(error, SessionLock.LockIoError)
          assert.strictEqual(error.reason, "not_a_directory", path)
          assert.strictEqual(error.path, `${root}/file`)
          assert.include(error.message, "a regular file")
          assert.include(error.message, "Move it away")
          assert.notInclude(error.message, "EEXIST")
        }
      }))

    live("refuses a symbolic link unless allowed, and then uses (and judges) its target", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        yield* Effect.promise(() => mkdir(`${root}/real`, { mode: 0o700 }))
        yield* Effect.promise(() => symlink(`${root}/real`, `${root}/link`))
        const error = yield* refusal(`${root}/link`)
        assert.strictEqual(error.reason, "directory_is_symlink")
        assert.include(error.message, "allowSymlinkDirectory")
        assert.strictEqual(yield* lockDirectory.prepare(`${root}/link`, { allowSymlink: true }), `${root}/real`)
        yield* Effect.promise(() => chmod(`${root}/real`, 0o777))
        assert.strictEqual(
          (yield* refusal(`${root}/link`, { allowSymlink: true })).reason,
          "directory_writable_by_others"
        )
        yield* Effect.promise(() => symlink(`${root}/nowhere`, `${root}/dangling`))
        assert.strictEqual((yield* refusal(`${root}/dangling`)).reason, "directory_is_symlink")
        assert.strictEqual((yield* refusal(`${root}/dangling`, { allowSymlink: true })).reason, "not_a_directory")
      }))

    live("refuses a directory writable by others, or owned by another user, with the fix in the message", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        yield* Effect.promise(() => mkdir(`${root}/open`, { mode: 0o700 }))
        yield* Effect.promise(() => chmod(`${root}/open`, 0o777))
        const open = yield* refusal(`${root}/open`)
        assert.strictEqual(open.reason, "directory_writable_by_others")
        assert.include(open.message, "chmod 0700")
        assert.isFalse(open.isRetryable)
        yield* Effect.promise(() => mkdir(`${root}/theirs`, { mode: 0o700 }))
        yield* Effect.promise(() => chown(`${root}/theirs`, otherUid, otherUid))
        const theirs = yield* refusal(`${root}/theirs`)
        assert.strictEqual(theirs.reason, "directory_not_owned")
        assert.include(theirs.message, `uid ${otherUid}`)
        assert.include(theirs.message, "owned by this user")
      }))

    live("refuses a directory under a shared directory without the sticky bit; accepts one under a sticky one", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        yield* Effect.promise(() => mkdir(`${root}/shared/locks`, { recursive: true, mode: 0o700 }))
        yield* Effect.promise(() => chmod(`${root}/shared`, 0o777))
        const error = yield* refusal(`${root}/shared/locks`)
        assert.strictEqual(error.reason, "directory_writable_by_others")
        assert.strictEqual(error.path, `${root}/shared`)
        yield* Effect.promise(() => chmod(`${root}/shared`, 0o1777))
        assert.strictEqual(yield* lockDirectory.prepare(`${root}/shared/locks`), `${root}/shared/locks`)
      }))
  })

  describe("defaultFor", () => {
    live("is under XDG_RUNTIME_DIR when that is this user's private directory, else per user under tmpdir", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const self = { uid: process.getuid!() }
        const runtimeDir = `${root}/run`
        yield* Effect.promise(() => mkdir(runtimeDir, { mode: 0o700 }))
        assert.strictEqual(
          yield* Effect.promise(() => lockDirectory.defaultFor({ runtimeDir, tmpdir: "/t", self })),
          `${runtimeDir}/effect-session-runtime/locks`
        )
        const fallback = `/t/effect-session-runtime-${self.uid}/locks`
        assert.strictEqual(yield* Effect.promise(() => lockDirectory.defaultFor({ tmpdir: "/t", self })), fallback)
        yield* Effect.promise(() => chmod(runtimeDir, 0o755))
        assert.strictEqual(
          yield* Effect.promise(() => lockDirectory.defaultFor({ runtimeDir, tmpdir: "/t", self })),
          fallback
        )
        yield* Effect.promise(() => chmod(runtimeDir, 0o700))
        yield* Effect.promise(() => chown(runtimeDir, otherUid, otherUid))
        assert.strictEqual(
          yield* Effect.promise(() => lockDirectory.defaultFor({ runtimeDir, tmpdir: "/t", self })),
          fallback
        )
        assert.strictEqual(
          yield* Effect.promise(() => lockDirectory.defaultFor({ runtimeDir: "relative", tmpdir: "/t", self })),
          fallback
        )
        assert.isTrue((yield* Effect.promise(() => lstat(root))).isDirectory())
      }))
  })
})
