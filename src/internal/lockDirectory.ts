/**
 * The lock directory of the file backend: whether it is safe to use, what
 * each of its entries is, and where it is by default. Shared by the file
 * backend (which refuses an unsafe directory at start-up) and the doctor
 * (which reports every problem and every entry), so both judge alike.
 *
 * A lock directory is safe when it is a real directory (not a symbolic link,
 * unless explicitly allowed), owned by the running user, not writable by
 * group or others, writable by this process, and every directory above it
 * is owned by root or the running user and is either not writable by others
 * or sticky (as `/tmp` is), so that nobody else can plant, remove or redirect
 * locks, or swap the directory for their own. The rule is sshd's
 * `StrictModes` rule, applied to the directory that decides who writes a
 * session's transcript.
 *
 * Entries are recognised positively, by the exact names the protocol
 * produces (`SessionKey.toFileName(key)` plus a suffix); every other entry is
 * foreign and is never touched.
 *
 * Everything here uses `fs/promises`; nothing blocks the event loop.
 *
 * @since 0.1.0
 */
import { constants } from "node:fs"
import type { BigIntStats } from "node:fs"
import { access, lstat, mkdir, readlink, realpath, stat } from "node:fs/promises"
import { tmpdir, userInfo } from "node:os"
import { dirname, join, resolve } from "node:path"
import * as Effect from "effect/Effect"
import * as SessionLock from "../SessionLock.ts"
import { errorCode, fenceSuffix, guardSuffix, lockSuffix } from "./lockFile.ts"

// ---------------------------------------------------------------------------
// judging a directory (pure)
// ---------------------------------------------------------------------------

/**
 * Why a lock directory is refused. Each is a {@link SessionLock.LockIoReason}
 * whose message says what to do.
 *
 * @internal
 */
export type ProblemReason =
  | "not_a_directory"
  | "directory_is_symlink"
  | "directory_not_owned"
  | "directory_writable_by_others"
  | "read_only"
  | "permission_denied"

/**
 * One reason to refuse a lock directory: the path at fault (the directory
 * or a directory above it) and what is wrong with it.
 *
 * @internal
 */
export interface Problem {
  readonly reason: ProblemReason
  readonly path: string
  readonly detail: string
}

/**
 * What `lstat` says about one path, reduced to what the rules look at.
 *
 * @internal
 */
export interface Observed {
  readonly kind: "directory" | "symlink" | "file" | "other"
  readonly uid: number
  readonly mode: number
}

/**
 * The running user. `uid` is undefined where the platform has no uids
 * (Windows): ownership and mode bits are not judged there.
 *
 * @internal
 */
export interface Self {
  readonly uid: number | undefined
}

/** @internal */
export const observedOf = (stats: BigIntStats): Observed => ({
  kind: stats.isDirectory()
    ? "directory"
    : stats.isSymbolicLink()
    ? "symlink"
    : stats.isFile()
    ? "file"
    : "other",
  uid: Number(stats.uid),
  mode: Number(stats.mode) & 0o7777
})

/** @internal */
export const octal = (mode: number): string => mode.toString(8).padStart(4, "0")

const kindNames = {
  file: "a regular file",
  symlink: "a symbolic link",
  other: "a special file",
  directory: "a directory"
} as const
const kindName = (kind: Observed["kind"]) => kindNames[kind]

const groupOrOtherWrite = 0o022
const sticky = 0o1000

/**
 * The problems of the lock directory itself (its real target when it is an
 * allowed symbolic link): not a directory, owned by another user, writable
 * by group or others.
 *
 * @internal
 */
export const judgeDirectory = (path: string, observed: Observed, self: Self): ReadonlyArray<Problem> => {
  if (observed.kind !== "directory") {
    return [{
      reason: "not_a_directory",
      path,
      detail: `${kindName(observed.kind)} sits where the lock directory should be`
    }]
  }
  if (self.uid === undefined) return []
  const problems: Array<Problem> = []
  if (observed.uid !== self.uid) {
    problems.push({
      reason: "directory_not_owned",
      path,
      detail: `the lock directory is owned by uid ${observed.uid}; this process runs as uid ${self.uid}`
    })
  }
  if ((observed.mode & groupOrOtherWrite) !== 0) {
    problems.push({
      reason: "directory_writable_by_others",
      path,
      detail: `the lock directory has mode ${octal(observed.mode)}: ${
        (observed.mode & 0o020) !== 0 && (observed.mode & 0o002) !== 0
          ? "group and others"
          : (observed.mode & 0o002) !== 0
          ? "others"
          : "its group"
      } can create, remove and rename its files`
    })
  }
  return problems
}

/**
 * The problems of a directory above the lock directory: owned by someone
 * other than root or the running user, or writable by others without the
 * sticky bit (then anyone could rename the lock directory away and put
 * their own in its place).
 *
 * @internal
 */
export const judgeAncestor = (path: string, observed: Observed, self: Self): ReadonlyArray<Problem> => {
  if (self.uid === undefined) return []
  const problems: Array<Problem> = []
  if (observed.uid !== 0 && observed.uid !== self.uid) {
    problems.push({
      reason: "directory_not_owned",
      path,
      detail: `${path}, above the lock directory, is owned by uid ${observed.uid} (neither root nor this ` +
        `process's uid ${self.uid}): its owner can replace the lock directory`
    })
  }
  if ((observed.mode & groupOrOtherWrite) !== 0 && (observed.mode & sticky) === 0) {
    problems.push({
      reason: "directory_writable_by_others",
      path,
      detail: `${path}, above the lock directory, has mode ${octal(observed.mode)} without the sticky bit: ` +
        "other users can rename the lock directory away and put their own in its place"
    })
  }
  return problems
}

/**
 * The problem a failed write-access check (`access(W_OK | X_OK)`) means.
 *
 * @internal
 */
export const judgeAccess = (path: string, code: string | undefined, mode: number): Problem | undefined =>
  code === undefined
    ? undefined
    : code === "EROFS"
    ? { reason: "read_only", path, detail: "the lock directory is on a read-only file system" }
    : code === "EACCES" || code === "EPERM"
    ? {
      reason: "permission_denied",
      path,
      detail: `this process cannot create files in the lock directory (mode ${octal(mode)})`
    }
    : undefined

// ---------------------------------------------------------------------------
// entries (pure)
// ---------------------------------------------------------------------------

/**
 * The encoded name of a key, exactly as `SessionKey.toFileName` produces it:
 * an optional readable prefix (1 to 48 of `[a-z0-9_-]`, never starting with
 * `_`) and a dash, then 32 lowercase hex digits of the key's SHA-256.
 *
 * @internal
 */
export const baseNamePattern = /^(?:[a-z0-9-][a-z0-9_-]{0,47}-)?[0-9a-f]{32}$/

// What an interrupted reclaim can leave behind: `<base>.reclaim.<uuid>.stale`.
const asidePattern = /^(.+)\.reclaim\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.stale$/

/**
 * What one name of a lock directory is to the protocol. `foreign` is every
 * name the protocol never produces (`yarn.lock`, `Cargo.lock`, a hidden
 * `.lock`, `notes.lock`...): such entries are never read, removed or
 * followed.
 *
 * @internal
 */
export type EntryName =
  | { readonly kind: "lock"; readonly base: string }
  | { readonly kind: "guard"; readonly base: string }
  | { readonly kind: "fence"; readonly base: string }
  | { readonly kind: "aside"; readonly base: string }
  | { readonly kind: "foreign" }

const suffixes = [["lock", lockSuffix], ["guard", guardSuffix], ["fence", fenceSuffix]] as const

/** @internal */
export const classifyName = (name: string): EntryName => {
  for (const [kind, suffix] of suffixes) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, name.length - suffix.length)
      return baseNamePattern.test(base) ? { kind, base } : { kind: "foreign" }
    }
  }
  const aside = asidePattern.exec(name)
  if (aside !== null && baseNamePattern.test(aside[1]!)) return { kind: "aside", base: aside[1]! }
  return { kind: "foreign" }
}

// ---------------------------------------------------------------------------
// inspecting a directory
// ---------------------------------------------------------------------------

/**
 * Options of the directory checks.
 *
 * @internal
 */
export interface Options {
  /** Accept a lock directory that is a symbolic link (its target is judged and used). @default false */
  readonly allowSymlink?: boolean | undefined
}

/**
 * What sits at a lock directory's path. `directory` is the path to use from
 * then on: the real path (every symbolic link above it resolved once, so a
 * link changed later cannot redirect the locks).
 *
 * @internal
 */
export type Inspection =
  | { readonly _tag: "Missing"; readonly path: string }
  | {
    readonly _tag: "Present"
    readonly path: string
    readonly directory: string
    readonly problems: ReadonlyArray<Problem>
  }

/** @internal */
export const selfOf = (): Self => ({ uid: process.getuid?.() })

const lstatOrUndefined = async (path: string) => {
  try {
    return await lstat(path, { bigint: true })
  } catch (error) {
    const code = errorCode(error)
    if (code === "ENOENT" || code === "ENOTDIR") return undefined
    throw error
  }
}

// The first component of a path that exists but is not a directory.
const blockingComponent = async (path: string): Promise<{ path: string; observed: Observed } | undefined> => {
  const components: Array<string> = []
  for (let at = path; dirname(at) !== at; at = dirname(at)) components.unshift(at)
  for (const component of components) {
    const stats = await lstatOrUndefined(component)
    if (stats === undefined) return undefined
    const observed = observedOf(stats)
    if (observed.kind === "file" || observed.kind === "other") return { path: component, observed }
  }
  return undefined
}

/**
 * Inspects a lock directory without changing anything: every problem, in the
 * order the backend refuses on (the first one).
 *
 * @internal
 */
export const inspect = async (input: string, options: Options = {}, self: Self = selfOf()): Promise<Inspection> => {
  const path = resolve(input)
  const stats = await lstatOrUndefined(path)
  if (stats === undefined) {
    const blocking = await blockingComponent(path)
    if (blocking === undefined) return { _tag: "Missing", path }
    return {
      _tag: "Present",
      path,
      directory: path,
      problems: [{
        reason: "not_a_directory",
        path: blocking.path,
        detail: `${kindName(blocking.observed.kind)} sits at ${blocking.path}, on the lock directory's path`
      }]
    }
  }
  const problems: Array<Problem> = []
  let observed = observedOf(stats)
  if (observed.kind === "symlink") {
    const target = await readlink(path).catch(() => "?")
    if (options.allowSymlink !== true) {
      problems.push({
        reason: "directory_is_symlink",
        path,
        detail: `the lock directory is a symbolic link to ${target}`
      })
    }
    const followed = await stat(path, { bigint: true }).catch((error) => {
      const code = errorCode(error)
      if (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP") return undefined
      throw error
    })
    if (followed === undefined) {
      problems.push({
        reason: "not_a_directory",
        path,
        detail: `the lock directory is a symbolic link to ${target}, which does not exist`
      })
      return { _tag: "Present", path, directory: path, problems }
    }
    observed = observedOf(followed)
  }
  const own = judgeDirectory(path, observed, self)
  problems.push(...own)
  if (observed.kind !== "directory") return { _tag: "Present", path, directory: path, problems }
  const directory = await realpath(path)
  for (let at = dirname(directory); ; at = dirname(at)) {
    const above = await lstat(at, { bigint: true })
    problems.push(...judgeAncestor(at, observedOf(above), self))
    if (dirname(at) === at) break
  }
  const denied = await access(directory, constants.W_OK | constants.X_OK).then(
    () => undefined,
    (error) => judgeAccess(path, errorCode(error), observed.mode)
  )
  if (denied !== undefined) problems.push(denied)
  return { _tag: "Present", path, directory, problems }
}

/**
 * A refusal as the typed error the backend fails with.
 *
 * @internal
 */
export const toError = (problem: Problem, cause?: unknown): SessionLock.LockIoError =>
  new SessionLock.LockIoError({
    reason: problem.reason,
    path: problem.path,
    retryable: false,
    detail: problem.detail,
    cause
  })

const ioError = (path: string) => (error: unknown): SessionLock.LockIoError => {
  const code = errorCode(error)
  const detail = `prepare lock directory: ${code ?? (error instanceof Error ? error.message : String(error))}`
  const reason: SessionLock.LockIoReason = code === "EACCES" || code === "EPERM"
    ? "permission_denied"
    : code === "EROFS"
    ? "read_only"
    : code === "ENOSPC" || code === "EDQUOT"
    ? "no_space"
    : "io"
  return new SessionLock.LockIoError({ reason, path, retryable: false, detail, cause: error })
}

/**
 * Makes sure a lock directory exists and is safe: creates it (and any
 * missing parent, mode 0700) when missing, then inspects it, and fails with
 * the first problem. Returns the real path to use from then on.
 *
 * The directory is inspected after creating it, whatever `mkdir` said, so a
 * directory another user created meanwhile is refused like one found there.
 *
 * @internal
 */
export const prepare = (input: string, options: Options = {}): Effect.Effect<string, SessionLock.LockIoError> => {
  const path = resolve(input)
  return Effect.tryPromise({
    try: async () => {
      const first = await inspect(path, options)
      if (first._tag === "Present") return first
      await mkdir(path, { recursive: true, mode: 0o700 }).catch((error) => {
        // A file created meanwhile, or a component that is not a directory:
        // the inspection below says what is wrong.
        const code = errorCode(error)
        if (code !== "EEXIST" && code !== "ENOTDIR") throw error
      })
      return inspect(path, options)
    },
    catch: ioError(path)
  }).pipe(
    Effect.flatMap((seen) =>
      seen._tag === "Missing"
        ? Effect.fail(
          new SessionLock.LockIoError({
            reason: "directory_missing",
            path,
            retryable: false,
            detail: "the lock directory vanished right after it was created"
          })
        )
        : seen.problems.length > 0
        ? Effect.fail(toError(seen.problems[0]!))
        : Effect.succeed(seen.directory)
    )
  )
}

// ---------------------------------------------------------------------------
// the default directory
// ---------------------------------------------------------------------------

/**
 * Where the default lock directory is, given the environment:
 * `$XDG_RUNTIME_DIR/effect-session-runtime/locks` when `XDG_RUNTIME_DIR` is
 * set, absolute, a directory owned by this user and closed to others (as the
 * XDG spec requires), else `<tmpdir>/effect-session-runtime-<uid>/locks`
 * (created 0700). The processes of one user on one host share it; other
 * users get their own.
 *
 * @internal
 */
export const defaultFor = async (environment: {
  readonly runtimeDir?: string | undefined
  readonly tmpdir?: string | undefined
  readonly self?: Self | undefined
}): Promise<string> => {
  const self = environment.self ?? selfOf()
  const runtimeDir = environment.runtimeDir
  if (runtimeDir !== undefined && runtimeDir.startsWith("/") && self.uid !== undefined) {
    // An unreadable runtime directory is simply not used.
    const stats = await lstatOrUndefined(runtimeDir).catch(() => undefined)
    if (stats !== undefined) {
      const observed = observedOf(stats)
      if (observed.kind === "directory" && observed.uid === self.uid && (observed.mode & 0o077) === 0) {
        return join(runtimeDir, "effect-session-runtime", "locks")
      }
    }
  }
  const user = self.uid ?? userInfo().username
  return join(environment.tmpdir ?? tmpdir(), `effect-session-runtime-${user}`, "locks")
}
