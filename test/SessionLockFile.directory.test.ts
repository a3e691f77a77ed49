/**
 * The lock directory under attack by another local user (uid 65534, a real
 * child process with dropped privileges): squatting the default location,
 * redirecting it through a symbolic link, planting a directory at a lock's
 * path. Every attempt ends in a typed refusal that says what to do, at
 * start-up, before a lock file is written anywhere.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, FileSystem } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import { chown, lstat, mkdir, readdir, rm, stat, symlink } from "node:fs/promises"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as lockFile from "../src/internal/lockFile.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLock from "../src/SessionLock.ts"
import * as SessionLockFile from "../src/SessionLockFile.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"
import { workerPath } from "./utils/lockProcesses.ts"
import { asOtherUser, makeSharedTmp, otherUid } from "./utils/otherUser.ts"

const uid = process.getuid!()
const key = SessionKey.makeUnsafe("agent:main:telegram:direct:42")

const live = (name: string, body: () => Effect.Effect<void, unknown, NodeServices.NodeServices | Scope.Scope>) =>
  it.live(
    name,
    () => body().pipe(Effect.scoped, Effect.provide(NodeServices.layer)) as Effect.Effect<void, unknown>,
    30_000
  )

/** A shared `/tmp`-like directory, removed when the test's scope closes. */
const sharedTmp = Effect.acquireRelease(
  Effect.promise(makeSharedTmp),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
)

const tempDir = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  return yield* fs.makeTempDirectoryScoped({ prefix: "lockdir-attack-" })
})

interface Outcome {
  readonly ok: boolean
  readonly directory?: string
  readonly token?: number
  readonly reason?: string
  readonly path?: string
  readonly message?: string
}

/** Starts the runtime on its default lock directory in a child process whose TMPDIR is `tmp`. */
const startWithDefaults = (tmp: string) =>
  Effect.promise(() =>
    new Promise<Outcome>((resolve, reject) => {
      const env: Record<string, string | undefined> = { ...process.env, TMPDIR: tmp }
      delete env.XDG_RUNTIME_DIR
      const child = spawn(process.execPath, [workerPath("default-lock-directory.ts"), key], {
        env,
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (c) => (stdout += String(c)))
      child.stderr.on("data", (c) => (stderr += String(c)))
      child.once("exit", (code) => {
        try {
          resolve(JSON.parse(stdout.trim()) as Outcome)
        } catch {
          reject(new Error(`exit ${code}: ${stdout} ${stderr}`))
        }
      })
    })
  )

const backend = (directory: string, options: Partial<SessionLockFile.Options> = {}) =>
  Effect.flatMap(SessionLockFile.makeBackend({ directory, ...options }), SessionLock.make).pipe(
    Effect.provide(DiagnosticBus.layer())
  )

const listing = (dir: string) => Effect.promise(async () => (await readdir(dir)).sort())

describe("SessionLockFile lock directory", () => {
  describe("the default location", () => {
    live("is per user and created 0700, so the processes of one user share it", () =>
      Effect.gen(function*() {
        const tmp = yield* sharedTmp
        const first = yield* startWithDefaults(tmp)
        assert.isTrue(first.ok, first.message)
        assert.strictEqual(first.directory, `${tmp}/effect-session-runtime-${uid}/locks`)
        for (const dir of [`${tmp}/effect-session-runtime-${uid}`, first.directory!]) {
          const info = yield* Effect.promise(() => lstat(dir))
          assert.strictEqual(info.mode & 0o7777, 0o700, dir)
          assert.strictEqual(info.uid, uid)
        }
        const second = yield* startWithDefaults(tmp)
        assert.isTrue(second.ok, second.message)
        assert.strictEqual(second.token, 2)
      }))

    live("pre-created 0777 by another user: the runtime refuses to start with directory_not_owned", () =>
      Effect.gen(function*() {
        const tmp = yield* sharedTmp
        const squatted = `${tmp}/effect-session-runtime-${uid}/locks`
        yield* Effect.promise(() =>
          asOtherUser(
            "await fs.mkdir(args[0], { recursive: true })\n" +
              "await fs.chmod(args[0], 0o777)\nawait fs.chmod(args[1], 0o777)",
            squatted,
            `${tmp}/effect-session-runtime-${uid}`
          )
        )
        const outcome = yield* startWithDefaults(tmp)
        assert.isFalse(outcome.ok)
        assert.strictEqual(outcome.reason, "directory_not_owned")
        assert.include(outcome.message, `owned by uid ${otherUid}`)
        assert.include(outcome.message, "Use a directory owned by this user")
        assert.deepStrictEqual(yield* listing(squatted), [], "no lock file was written into the squatted directory")
      }))

    live("under a parent another user pre-created 0777: refused before any lock is written", () =>
      Effect.gen(function*() {
        const tmp = yield* sharedTmp
        const parent = `${tmp}/effect-session-runtime-${uid}`
        yield* Effect.promise(() => asOtherUser("await fs.mkdir(args[0]); await fs.chmod(args[0], 0o777)", parent))
        const outcome = yield* startWithDefaults(tmp)
        assert.isFalse(outcome.ok)
        assert.strictEqual(outcome.path, parent)
        assert.oneOf(outcome.reason, ["directory_not_owned", "directory_writable_by_others"])
        // What the runtime created in the squatter's directory holds no lock.
        const locks = yield* Effect.promise(() => readdir(`${parent}/locks`).catch(() => []))
        assert.deepStrictEqual(locks, [])
      }))
  })

  describe("defaultLockDirectory", () => {
    live("reads XDG_RUNTIME_DIR through Config and uses it only when it is this user's private directory", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const runtimeDir = `${root}/run`
        yield* Effect.promise(() => mkdir(runtimeDir, { mode: 0o700 }))
        const withEnv = (env: Record<string, string>) =>
          SessionRuntime.defaultLockDirectory.pipe(
            Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
          )
        assert.strictEqual(
          yield* withEnv({ XDG_RUNTIME_DIR: runtimeDir }),
          `${runtimeDir}/effect-session-runtime/locks`
        )
        // Another user's runtime directory is not ours to use.
        yield* Effect.promise(() => chown(runtimeDir, otherUid, otherUid))
        const perUser = new RegExp(`/effect-session-runtime-${uid}/locks$`)
        assert.match(yield* withEnv({ XDG_RUNTIME_DIR: runtimeDir }), perUser)
        assert.match(yield* withEnv({}), perUser)
      }))
  })

  describe("a configured directory", () => {
    live("a symbolic link is refused unless allowed; allowed, locks land in its (checked) target", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        yield* Effect.promise(() => mkdir(`${root}/real`, { mode: 0o700 }))
        yield* Effect.promise(() => symlink(`${root}/real`, `${root}/link`))
        const refused = yield* Effect.flip(Effect.scoped(backend(`${root}/link`)))
        assert.strictEqual(refused.reason, "directory_is_symlink")
        assert.include(refused.message, "allowSymlinkDirectory")
        yield* Effect.scoped(Effect.gen(function*() {
          const lock = yield* backend(`${root}/link`, { allowSymlinkDirectory: true })
          yield* Effect.scoped(lock.acquire(key))
        }))
        assert.include(yield* listing(`${root}/real`), `${SessionKey.toFileName(key)}${lockFile.fenceSuffix}`)
      }))

    live("a symbolic link to another user's 0777 directory is refused even when links are allowed", () =>
      Effect.gen(function*() {
        const tmp = yield* sharedTmp
        const theirs = `${tmp}/theirs`
        yield* Effect.promise(() => asOtherUser("await fs.mkdir(args[0]); await fs.chmod(args[0], 0o777)", theirs))
        const root = yield* tempDir
        yield* Effect.promise(() => symlink(theirs, `${root}/locks`))
        const refused = yield* Effect.flip(Effect.scoped(backend(`${root}/locks`, { allowSymlinkDirectory: true })))
        assert.strictEqual(refused.reason, "directory_not_owned")
        assert.deepStrictEqual(yield* listing(theirs), [])
      }))

    live("a directory planted at a lock's path in a squatted directory: refused at start, not a hang", () =>
      Effect.gen(function*() {
        const tmp = yield* sharedTmp
        const squatted = `${tmp}/locks`
        const planted = lockFile.pathsOf(squatted, SessionKey.toFileName(key)).lock
        yield* Effect.promise(() =>
          asOtherUser(
            "await fs.mkdir(args[0]); await fs.chmod(args[0], 0o777); await fs.mkdir(args[1])",
            squatted,
            planted
          )
        )
        const refused = yield* Effect.flip(Effect.scoped(backend(squatted)))
        assert.strictEqual(refused.reason, "directory_not_owned")
        assert.isTrue((yield* Effect.promise(() => stat(planted))).isDirectory(), "left in place")
      }))

    live("a directory planted at a lock's path in a safe directory fails the acquire at once with a typed error", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const planted = lockFile.pathsOf(root, SessionKey.toFileName(key)).lock
        yield* Effect.promise(() => mkdir(planted))
        const exit = yield* Effect.scoped(Effect.gen(function*() {
          const lock = yield* backend(root)
          return yield* Effect.exit(Effect.scoped(lock.acquire(key, { timeout: "60 seconds" })))
        }))
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const reason = exit.cause.reasons[0]
          assert.strictEqual(reason?._tag, "Fail")
          if (reason?._tag === "Fail") {
            const error = reason.error as SessionLock.LockIoError
            assert.strictEqual(error._tag, "LockIoError")
            assert.strictEqual(error.reason, "not_a_regular_file")
            assert.strictEqual(error.path, planted)
          }
        }
      }))
  })
})
