/**
 * The file backend of the session write lock, the embedded default: several
 * processes on one host (or hosts sharing a directory) share a lock directory
 * and never run one session's turns at once.
 *
 * One lock is `<directory>/<SessionKey.toFileName(key)>.lock`, created
 * exclusively with mode 0600 and a versioned JSON payload naming its holder;
 * the fencing token comes from an append-only fence log beside it; a stale
 * lock is removed only through the race-free reclaim protocol (a guard file
 * plus a re-check of the lock's identity and content under it). See
 * `docs/locks.md` for the format and the rules, and `internal/lockFile.ts`
 * for the protocol itself.
 *
 * Every operation is an asynchronous `fs/promises` call: no synchronous I/O
 * and no child process anywhere. Holder probes read `/proc/<pid>/stat`
 * asynchronously and are memoised per pid for `probeTtl`.
 *
 * @since 0.1.0
 */
import { hostname } from "node:os"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as DiagnosticBus from "./DiagnosticBus.ts"
import * as lease from "./internal/lease.ts"
import * as lockDirectory from "./internal/lockDirectory.ts"
import * as lockFile from "./internal/lockFile.ts"
import * as processProbe from "./internal/processProbe.ts"
import * as SessionKey from "./SessionKey.ts"
import * as SessionLock from "./SessionLock.ts"

/**
 * Options of the file backend.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * The lock directory; created (mode 0700) if missing. Refused unless it is
   * a directory owned by this user and not writable by others (see
   * `docs/locks.md`).
   */
  readonly directory: string
  /**
   * Accept a lock directory that is a symbolic link (its target must pass the
   * same checks, and is used from then on).
   * @default false
   */
  readonly allowSymlinkDirectory?: boolean | undefined
  /**
   * The lease time written into each lock: a holder that cannot be probed
   * (another host) and has not refreshed its lock for this long plus the
   * grace period is reclaimed. The holder refreshes every third of it.
   * @default "30 seconds"
   */
  readonly lease?: Duration.Input | undefined
  /**
   * How long a lock without a readable payload is left alone (it may be
   * being written) before it may be reclaimed as `unreadable`.
   * @default "10 seconds"
   */
  readonly grace?: Duration.Input | undefined
  /**
   * How long one probe of a holder's pid is reused.
   * @default "1 second"
   */
  readonly probeTtl?: Duration.Input | undefined
}

const millis = (input: Duration.Input | undefined, fallback: number) =>
  input === undefined ? fallback : Math.max(0, Duration.toMillis(Duration.fromInputUnsafe(input)))

/**
 * Maps a Node file-system error to a typed {@link SessionLock.LockIoError}.
 *
 * @category errors
 * @since 0.1.0
 */
export const toIoError = (operation: string, path: string) => (error: unknown): SessionLock.LockIoError => {
  const code = lockFile.errorCode(error)
  const detail = `${operation}: ${code ?? (error instanceof Error ? error.message : String(error))}`
  const make = (reason: SessionLock.LockIoReason, retryable: boolean) =>
    new SessionLock.LockIoError({ reason, path, retryable, detail, cause: error })
  switch (code) {
    case "EACCES":
    case "EPERM":
      return make("permission_denied", false)
    case "ELOOP":
    case "EISDIR":
    case "EFTYPE":
    case "ENXIO":
      return make("not_a_regular_file", false)
    case "ENOENT":
    case "ENOTDIR":
      return make("directory_missing", false)
    case "ENOSPC":
    case "EDQUOT":
      return make("no_space", true)
    case "EROFS":
      return make("read_only", false)
    case "EMFILE":
    case "ENFILE":
      return make("too_many_open_files", true)
    case "EBUSY":
    case "EAGAIN":
    case "EINTR":
    case "ETIMEDOUT":
      return make("busy", true)
    default:
      return make("io", true)
  }
}

const notRegular = (path: string, kind: "directory" | "symlink" | "other") =>
  new SessionLock.LockIoError({
    reason: "not_a_regular_file",
    path,
    retryable: false,
    detail: kind === "symlink"
      ? "a symbolic link sits at the lock's path"
      : kind === "directory"
      ? "a directory sits at the lock's path"
      : "a special file sits at the lock's path"
  })

/**
 * The world as the file protocol sees it from this process: host, pid and
 * start time, grace period and a memoised probe. Shared by the backend and
 * the doctor, so both judge and reclaim the same way.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeContext = Effect.fnUntraced(function*(options: {
  readonly grace?: Duration.Input | undefined
  readonly probeTtl?: Duration.Input | undefined
}) {
  const clock = yield* Clock.Clock
  const graceMs = millis(options.grace, 10_000)
  const probe = processProbe.makeProcessProbe({
    ttlMs: millis(options.probeTtl, 1_000),
    now: () => clock.currentTimeMillisUnsafe()
  })
  const self = yield* Effect.promise(() => processProbe.probeProcess(process.pid))
  const host = hostname()
  const startTime = self._tag === "Alive" ? self.startTime ?? null : null
  const reclaimerId = `reclaim-${process.pid}`
  const context = (): lockFile.Reclaimer => {
    const now = clock.currentTimeMillisUnsafe()
    return {
      now,
      host,
      graceMs,
      probe,
      guardPayload: () => ({
        v: 1,
        pid: process.pid,
        startTime,
        host,
        ownerId: reclaimerId,
        token: 0,
        createdAt: Math.max(0, Math.floor(now)),
        maxHoldMs: graceMs,
        leaseMs: graceMs
      })
    }
  }
  const now = () => clock.currentTimeMillisUnsafe()
  return { host, startTime, graceMs, now, context }
})

const toObservation = (verdict: lockFile.Verdict): SessionLock.Observation => ({
  holder: verdict.holder,
  maxHoldMs: verdict.payload?.maxHoldMs,
  reclaimable: verdict.reclaimable,
  fingerprint: verdict.fingerprint
})

/**
 * Builds the file backend (and creates the directory if needed). Fails with
 * a `LockIoError` when the directory is unsafe or unusable.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeBackend = Effect.fnUntraced(function*(options: Options) {
  const directory = yield* lockDirectory.prepare(options.directory, { allowSymlink: options.allowSymlinkDirectory })
  const leaseMs = millis(options.lease, 30_000)
  const world = yield* makeContext(options)
  const holds = new Map<string, lockFile.Held>()
  const fence = lockFile.makeFenceLog()
  yield* Effect.addFinalizer(() => Effect.promise(() => fence.close()))
  // Encoding a key hashes it: remember the paths of recently used keys.
  const pathCache = new Map<SessionKey.SessionKey, lockFile.Paths>()
  const pathsOf = (key: SessionKey.SessionKey) => {
    let found = pathCache.get(key)
    if (found === undefined) {
      if (pathCache.size >= 1024) pathCache.clear()
      found = lockFile.pathsOf(directory, SessionKey.toFileName(key))
      pathCache.set(key, found)
    }
    return found
  }

  // Reads and judges whatever holds the lock now.
  const observe = async (paths: lockFile.Paths) => {
    const entry = await lockFile.readEntry(paths.lock)
    if (entry._tag !== "Regular") return entry
    return { _tag: "Judged" as const, verdict: await lockFile.judge(entry, world.context()) }
  }

  const tryAcquire = (request: SessionLock.AcquireRequest) => {
    const paths = pathsOf(request.sessionKey)
    return Effect.tryPromise({
      try: async (): Promise<SessionLock.Attempt | lockFile.Entry> => {
        // A lock released between our create and our read is simply tried again.
        for (let round = 0; round < 3; round++) {
          const created = await lockFile.create(paths, fence, (token) => ({
            v: 1,
            pid: process.pid,
            startTime: world.startTime,
            host: world.host,
            ownerId: request.ownerId,
            token,
            createdAt: Math.max(0, Math.floor(request.now)),
            maxHoldMs: Math.floor(request.maxHoldMs),
            leaseMs
          }), world)
          if (created._tag === "Created") {
            holds.set(request.ownerId, created.held)
            return { _tag: "Acquired", token: created.token }
          }
          const seen = await observe(paths)
          if (seen._tag === "Missing") continue
          if (seen._tag === "NotRegular") return seen
          return { _tag: "Held", observation: toObservation(seen.verdict) }
        }
        return {
          _tag: "Held",
          observation: { holder: { status: "unknown" }, fingerprint: "churning" }
        }
      },
      catch: toIoError("acquire", paths.lock)
    }).pipe(
      Effect.flatMap((result) =>
        result._tag === "NotRegular"
          ? Effect.fail(notRegular(paths.lock, result.kind))
          : Effect.succeed(result as SessionLock.Attempt)
      )
    )
  }

  const reclaim = (key: SessionKey.SessionKey, observation: SessionLock.Observation) => {
    const paths = pathsOf(key)
    return Effect.tryPromise({
      try: () => lockFile.reclaim(paths, observation.fingerprint, world.context()),
      catch: toIoError("reclaim", paths.lock)
    }).pipe(
      Effect.flatMap((result) =>
        result._tag === "NotRegular"
          ? Effect.fail(notRegular(result.path, result.kind))
          : Effect.succeed(result._tag === "Removed")
      )
    )
  }

  const holdOf = (held: SessionLock.Lease) => holds.get(held.ownerId)
  const lostUnknown: SessionLock.LeaseCheck = { _tag: "Lost", reason: "this backend does not know the lease" }

  const refresh = (held: SessionLock.Lease, now: number) => {
    const paths = pathsOf(held.sessionKey)
    const hold = holdOf(held)
    if (hold === undefined) return Effect.succeed(lostUnknown)
    return Effect.tryPromise({
      try: () => lockFile.refresh(paths.lock, hold, now),
      catch: toIoError("refresh", paths.lock)
    }).pipe(Effect.map((lost): SessionLock.LeaseCheck =>
      lost === undefined ? { _tag: "Current" } : { _tag: "Lost", reason: lost }
    ))
  }

  const release = (held: SessionLock.Lease) =>
    Effect.suspend(() => {
      const paths = pathsOf(held.sessionKey)
      const hold = holdOf(held)
      if (hold === undefined) return Effect.void
      holds.delete(held.ownerId)
      return Effect.tryPromise({
        try: () => lockFile.release(paths.lock, hold),
        catch: toIoError("release", paths.lock)
      }).pipe(Effect.asVoid)
    })

  const isCurrent = (held: SessionLock.Lease) => {
    const paths = pathsOf(held.sessionKey)
    const hold = holdOf(held)
    if (hold === undefined) return Effect.succeed(lostUnknown)
    return Effect.tryPromise({
      try: () => lockFile.checkCurrent(paths.lock, hold, held.ownerId, held.token),
      catch: toIoError("check lease", paths.lock)
    }).pipe(Effect.map((lost): SessionLock.LeaseCheck =>
      lost === undefined ? { _tag: "Current" } : { _tag: "Lost", reason: lost }
    ))
  }

  const inspect = (key: SessionKey.SessionKey) => {
    const paths = pathsOf(key)
    return Effect.tryPromise({ try: () => observe(paths), catch: toIoError("inspect", paths.lock) }).pipe(
      Effect.flatMap((seen) =>
        seen._tag === "Missing"
          ? Effect.succeed(Option.none<SessionLock.Observation>())
          : seen._tag === "NotRegular"
          ? Effect.fail(notRegular(paths.lock, seen.kind))
          : Effect.succeed(Option.some(toObservation(seen.verdict)))
      )
    )
  }

  const backend: SessionLock.Backend = {
    name: "file",
    tryAcquire,
    reclaim,
    refresh,
    refreshInterval: Duration.millis(lease.refreshEvery(leaseMs)),
    release,
    isCurrent,
    inspect
  }
  return backend
})

/**
 * The session lock over a lock directory.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<SessionLock.SessionLock, SessionLock.LockIoError, DiagnosticBus.DiagnosticBus> =>
  SessionLock.layerBackend(makeBackend(options))
