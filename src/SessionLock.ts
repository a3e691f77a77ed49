/**
 * The session write lock: one writer per session transcript, across fibers,
 * processes and (with a shared backend) hosts.
 *
 * `SessionLock.acquire(key, options)` is a scoped, interruptible Effect that
 * yields a {@link Lease} `{ sessionKey, ownerId, token, acquiredAt }`; closing
 * the scope releases it. A writer checks its lease with `assertCurrent`
 * before it commits, and the fencing `token` strictly increases per key
 * across holders, so a store can refuse writes from an older token.
 *
 * Backends are small sets of primitive operations ({@link Backend}: try once,
 * reclaim if stale, refresh, release, check, inspect). The retry loop, the
 * single time budget, in-process queueing, reentrancy, the diagnostic events
 * and the typed errors live once, here, in {@link make}, so every backend
 * behaves the same and passes the same conformance suite. This module also
 * contains the in-memory backend ({@link layerMemory}) and the default retry
 * schedule ({@link lockRetry}); the file backend is `SessionLockFile`.
 *
 * Every wait is asynchronous and every time comes from `Clock`: nothing on the
 * acquire path blocks the event loop.
 *
 * @since 0.1.0
 */
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as DiagnosticBus from "./DiagnosticBus.ts"
import { LockHolder, ReclaimReason } from "./DiagnosticEvent.ts"
import * as lease from "./internal/lease.ts"
import * as SessionKey from "./SessionKey.ts"

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * A held lock. `token` is the fencing token: strictly increasing per session
 * key across holders (and, for persistent backends, across restarts).
 *
 * @category models
 * @since 0.1.0
 */
export interface Lease {
  readonly sessionKey: SessionKey.SessionKey
  /** Unique per acquisition: identifies this holder in the backend. */
  readonly ownerId: string
  readonly token: number
  /** Epoch milliseconds, from `Clock`. */
  readonly acquiredAt: number
}

/**
 * Options of one acquire.
 *
 * @category config
 * @since 0.1.0
 */
export interface AcquireOptions {
  /**
   * One budget for the whole acquire: in-process queueing, every attempt and
   * every wait between attempts.
   * @default "60 seconds"
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * A live holder that has held the lock for longer than this is reported
   * (`lock.stale`, and `LockStale` if the budget runs out); it is never robbed.
   * @default "30 minutes"
   */
  readonly staleTime?: Duration.Input | undefined
  /**
   * The longest this holder means to hold the lock; written into the lock so
   * that waiters can report a holder that overruns it.
   * @default "5 minutes"
   */
  readonly maxHold?: Duration.Input | undefined
  /**
   * Delays between attempts while the lock is held elsewhere. Its input is
   * the holder as last observed. Waits are always clipped to the budget; a
   * schedule that ends stops the acquire early.
   * @default lockRetry
   */
  readonly retry?: Schedule.Schedule<unknown, LockHolder> | undefined
  /**
   * Whether the fiber that holds a key may acquire it again (it gets the same
   * lease; the lock is released when the outermost scope closes). When off, a
   * nested acquire of a key by its holding fiber is a defect (it would wait
   * for itself).
   * @default false
   */
  readonly reentrant?: boolean | undefined
}

/**
 * The default retry schedule: exponential from 10 ms (factor 2), each delay
 * capped at 500 ms, with ±20% jitter so that waiters of one lock spread out.
 *
 * @category schedules
 * @since 0.1.0
 */
export const lockRetry: Schedule.Schedule<Duration.Duration, LockHolder> = Schedule.exponential("10 millis", 2).pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.millis(500)))),
  Schedule.jittered
)

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

const doctorHint = "Inspect the lock directory with `effect-session-runtime doctor locks --dir <lock dir>`."

/**
 * The acquire budget ran out while a holder that may not be reclaimed held
 * the lock. Names the holder and what to do.
 *
 * @category errors
 * @since 0.1.0
 */
export class LockTimeout extends Schema.TaggedError<LockTimeout>()("LockTimeout", {
  sessionKey: SessionKey.SessionKey,
  backend: Schema.String,
  waitedMs: Schema.Number,
  attempts: Schema.Number,
  holder: LockHolder
}) {
  /** A later acquire may succeed once the holder finishes. */
  get isRetryable(): boolean {
    return true
  }
  override get message(): string {
    return `Timed out after ${lease.formatDuration(this.waitedMs)} (${this.attempts} attempt${
      this.attempts === 1 ? "" : "s"
    }) waiting for the ${this.backend} write lock of session ${JSON.stringify(this.sessionKey)}, held by ` +
      `${lease.describeHolder(this.holder)}. ${lease.adviceFor(this.holder)}`
  }
}

/**
 * The lock is held by a live holder (or one that cannot be probed) past the
 * stale time or its declared maximum hold. It is reported, never taken away.
 *
 * @category errors
 * @since 0.1.0
 */
export class LockStale extends Schema.TaggedError<LockStale>()("LockStale", {
  sessionKey: SessionKey.SessionKey,
  backend: Schema.String,
  reasons: Schema.Array(Schema.String),
  waitedMs: Schema.Number,
  attempts: Schema.Number,
  holder: LockHolder
}) {
  /** Retrying does not help until an operator looks at the holder. */
  get isRetryable(): boolean {
    return false
  }
  override get message(): string {
    return `The ${this.backend} write lock of session ${JSON.stringify(this.sessionKey)} is held by ` +
      `${lease.describeHolder(this.holder)} past its limits (${this.reasons.join(", ")}); waited ` +
      `${lease.formatDuration(this.waitedMs)}. A live holder is never robbed: find out whether that process is ` +
      `hung and stop it if so (its lock is then reclaimed automatically), or raise staleTime/maxHold if such ` +
      `long turns are expected. ${doctorHint}`
  }
}

/**
 * A lease is no longer current: the lock was released, reclaimed or replaced
 * by another holder. Do not commit the write.
 *
 * @category errors
 * @since 0.1.0
 */
export class LockLost extends Schema.TaggedError<LockLost>()("LockLost", {
  sessionKey: SessionKey.SessionKey,
  backend: Schema.String,
  token: Schema.Number,
  reason: Schema.String
}) {
  get isRetryable(): boolean {
    return true
  }
  override get message(): string {
    return `The ${this.backend} lease (token ${this.token}) on session ${JSON.stringify(this.sessionKey)} is no ` +
      `longer current: ${this.reason}. Do not commit the pending write; acquire the lock again and redo the turn.`
  }
}

/**
 * What went wrong talking to the lock's storage.
 *
 * @category errors
 * @since 0.1.0
 */
export const LockIoReason = Schema.Literals([
  "permission_denied",
  "not_a_regular_file",
  "directory_missing",
  "no_space",
  "read_only",
  "too_many_open_files",
  "busy",
  "unavailable",
  "io",
  "not_a_directory",
  "directory_is_symlink",
  "directory_not_owned",
  "directory_writable_by_others"
])
export type LockIoReason = typeof LockIoReason.Type

const ioAdvice: Record<LockIoReason, string> = {
  permission_denied: "Give this process read and write access to the lock directory (lock files are mode 0600).",
  not_a_regular_file:
    "Something that is not a lock file (a directory, a symbolic link, a device) sits at the lock's path; " +
    "the lock protocol never creates one and never follows or removes it. Check it and remove it by hand.",
  directory_missing: "Create the lock directory (or fix the configured path).",
  no_space: "Free space on the lock directory's file system.",
  read_only: "Put the lock directory on a writable file system.",
  too_many_open_files: "Raise the open-file limit or lower the concurrency; the acquire retries meanwhile.",
  busy: "A transient condition; the acquire retries within its budget.",
  unavailable: "The lock backend is unreachable; check its connection. The acquire retries within its budget.",
  io: "An unexpected I/O error; see the detail.",
  not_a_directory: "Something that is not a directory (a regular file, a device) sits where the lock directory " +
    "should be. Move it away, or configure another lock directory.",
  directory_is_symlink: "The lock directory is a symbolic link: whoever can change the link chooses where lock " +
    "files are written. Configure the real directory, or set `allowSymlinkDirectory: true` (doctor: " +
    "`--allow-symlink`) if only this user can change the link.",
  directory_not_owned: "The lock directory (or a directory above it) belongs to another user, who could plant, " +
    "remove or redirect locks. Use a directory owned by this user (the default is per user), or `chown` it.",
  directory_writable_by_others: "Other users can write to the lock directory (or replace it through a directory " +
    "above it): `chmod 0700` it (`chmod go-w`, or add the sticky bit, for the directory above), or use a per-user " +
    "directory."
}

/**
 * What the user can do about a storage error of this reason.
 *
 * @category errors
 * @since 0.1.0
 */
export const ioAdviceFor = (reason: LockIoReason): string => ioAdvice[reason]

/**
 * A storage error of a lock backend, with the path (or resource) involved
 * and whether retrying may help.
 *
 * @category errors
 * @since 0.1.0
 */
export class LockIoError extends Schema.TaggedError<LockIoError>()("LockIoError", {
  reason: LockIoReason,
  path: Schema.String,
  retryable: Schema.Boolean,
  /** The operation and the system's error code or message. */
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {
  get isRetryable(): boolean {
    return this.retryable
  }
  override get message(): string {
    return `Lock storage error (${this.reason}) at ${this.path}: ${this.detail}. ${ioAdvice[this.reason]}`
  }
}

/**
 * Every way an acquire can fail.
 *
 * @category errors
 * @since 0.1.0
 */
export type AcquireError = LockTimeout | LockStale | LockIoError | SessionKey.InvalidSessionKey

/**
 * Every error of this module.
 *
 * @category errors
 * @since 0.1.0
 */
export type SessionLockError = AcquireError | LockLost

// ---------------------------------------------------------------------------
// backend
// ---------------------------------------------------------------------------

/**
 * A lock as a backend sees it while someone else holds it.
 *
 * @category backend
 * @since 0.1.0
 */
export interface Observation {
  /** The holder, as described in events and errors. */
  readonly holder: LockHolder
  /** The maximum hold the holder declared, if known. */
  readonly maxHoldMs?: number | undefined
  /**
   * Set when the backend's own rules allow taking the lock away (dead
   * holder, reused pid, unreadable past a grace period, expired lease).
   */
  readonly reclaimable?: ReclaimReason | undefined
  /**
   * An opaque fingerprint of exactly this lock instance. `reclaim` removes
   * the lock only if it still matches, so a lock created in between is
   * never removed.
   */
  readonly fingerprint: string
}

/**
 * What one attempt found.
 *
 * @category backend
 * @since 0.1.0
 */
export type Attempt =
  | { readonly _tag: "Acquired"; readonly token: number }
  | { readonly _tag: "Held"; readonly observation: Observation }

/**
 * Whether a lease still stands.
 *
 * @category backend
 * @since 0.1.0
 */
export type LeaseCheck =
  | { readonly _tag: "Current" }
  | { readonly _tag: "Lost"; readonly reason: string }

/**
 * One attempt's request.
 *
 * @category backend
 * @since 0.1.0
 */
export interface AcquireRequest {
  readonly sessionKey: SessionKey.SessionKey
  readonly ownerId: string
  /** Epoch milliseconds from `Clock`. */
  readonly now: number
  readonly maxHoldMs: number
}

/**
 * The primitive operations a lock backend implements. None of them waits for
 * the lock: waiting, budgets, events and errors are the adapter's job
 * ({@link make}). Each operation is short and runs uninterruptibly where it
 * matters (an `Acquired` attempt is always paired with a release).
 *
 * @category backend
 * @since 0.1.0
 */
export interface Backend {
  /** A short name used in events, errors and metrics, e.g. `file`, `memory`, `postgres`. */
  readonly name: string
  /** Tries once to take the lock. */
  readonly tryAcquire: (request: AcquireRequest) => Effect.Effect<Attempt, LockIoError>
  /**
   * Removes a lock judged reclaimable, if and only if it is still the
   * instance observed (same fingerprint) and still reclaimable. Returns
   * whether it removed it.
   */
  readonly reclaim: (
    sessionKey: SessionKey.SessionKey,
    observation: Observation
  ) => Effect.Effect<boolean, LockIoError>
  /** Extends a held lease (for backends whose leases expire). */
  readonly refresh: (lease: Lease, now: number) => Effect.Effect<LeaseCheck, LockIoError>
  /** How often `refresh` runs while a lease is held; `undefined` for none. */
  readonly refreshInterval?: Duration.Input | undefined
  /** Releases a held lease; a lease that is no longer current is left alone. */
  readonly release: (lease: Lease) => Effect.Effect<void, LockIoError>
  /** Tells whether a lease still stands. */
  readonly isCurrent: (lease: Lease) => Effect.Effect<LeaseCheck, LockIoError>
  /** Describes the current holder of a key, if any. */
  readonly inspect: (
    sessionKey: SessionKey.SessionKey,
    now: number
  ) => Effect.Effect<Option.Option<Observation>, LockIoError>
}

// ---------------------------------------------------------------------------
// service
// ---------------------------------------------------------------------------

/**
 * The session write lock service.
 *
 * @category services
 * @since 0.1.0
 */
export class SessionLock extends Context.Service<SessionLock, {
  /** The backend's name (`file`, `memory`, ...). */
  readonly backend: string
  /**
   * Waits (asynchronously, within one budget) for the lock of a session and
   * yields its lease; closing the scope releases it. Interruptible while
   * waiting; a lock taken just before an interruption is released.
   */
  readonly acquire: (
    sessionKey: SessionKey.SessionKey,
    options?: AcquireOptions
  ) => Effect.Effect<Lease, AcquireError, Scope.Scope>
  /** Fails with `LockLost` unless the lease still stands: call it before committing a write. */
  readonly assertCurrent: (lease: Lease) => Effect.Effect<void, LockLost | LockIoError>
  /** The current holder of a key, if any. */
  readonly inspect: (
    sessionKey: SessionKey.SessionKey
  ) => Effect.Effect<Option.Option<Observation>, LockIoError | SessionKey.InvalidSessionKey>
}>()("effect-session-runtime/SessionLock") {}

/**
 * Runs an effect while holding the session's write lock; the lock is
 * released when it ends, however it ends.
 *
 * @category combinators
 * @since 0.1.0
 */
export const withLock = (sessionKey: SessionKey.SessionKey, options?: AcquireOptions) =>
<A, E, R>(
  self: (lease: Lease) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | AcquireError, R | SessionLock> =>
  Effect.scoped(Effect.gen(function*() {
    const lock = yield* SessionLock
    return yield* self(yield* lock.acquire(sessionKey, options))
  }))

interface Resolved {
  readonly timeoutMs: number
  readonly staleMs: number
  readonly maxHoldMs: number
  readonly retry: Schedule.Schedule<unknown, LockHolder>
  readonly reentrant: boolean
}

const millis = (input: Duration.Input | undefined, fallback: number): number =>
  input === undefined ? fallback : Math.max(0, Duration.toMillis(Duration.fromInputUnsafe(input)))

const resolve = (options: AcquireOptions): Resolved => ({
  timeoutMs: millis(options.timeout, lease.defaults.timeoutMs),
  staleMs: millis(options.staleTime, lease.defaults.staleMs),
  maxHoldMs: millis(options.maxHold, lease.defaults.maxHoldMs),
  retry: options.retry ?? lockRetry,
  reentrant: options.reentrant ?? false
})

// In-process state of one key: a FIFO permit so that fibers of this process
// queue locally instead of polling the backend, and the current local holder.
interface Local {
  readonly permit: Semaphore.Semaphore
  users: number
  held: { readonly lease: Lease; readonly fiberId: number } | undefined
}

/**
 * Builds the service over a backend; its lease refresher runs until the
 * scope closes. Publishes `lock.acquired`,
 * `lock.contended` (once per wait), `lock.reclaimed`, `lock.stale` (once per
 * wait), `lock.timeout`, `lock.released` and `lock.lost` on the
 * `DiagnosticBus`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(backend: Backend) {
  const bus = yield* DiagnosticBus.DiagnosticBus
  const clock = yield* Clock.Clock
  const instance = randomUUID().slice(0, 8)
  const pid = process.pid
  const host = hostname()
  let counter = 0
  const locals = new Map<SessionKey.SessionKey, Local>()
  const refreshMs = backend.refreshInterval === undefined
    ? undefined
    : Duration.toMillis(Duration.fromInputUnsafe(backend.refreshInterval))

  const retain = (key: SessionKey.SessionKey): Local => {
    let local = locals.get(key)
    if (local === undefined) {
      local = { permit: Semaphore.makeUnsafe(1), users: 0, held: undefined }
      locals.set(key, local)
    }
    local.users++
    return local
  }
  const unretain = (key: SessionKey.SessionKey, local: Local) => {
    if (--local.users === 0 && locals.get(key) === local) locals.delete(key)
  }

  const localHolder = (local: Local, now: number): LockHolder =>
    local.held === undefined
      ? { pid, host, status: "alive" }
      : { pid, host, ownerId: local.held.lease.ownerId, status: "alive", ageMs: now - local.held.lease.acquiredAt }

  const releaseLease = (local: Local, held: Lease) =>
    Effect.gen(function*() {
      holdings.delete(held)
      const exit = yield* Effect.exit(backend.release(held))
      if (Exit.isFailure(exit)) {
        yield* Effect.logWarning("SessionLock: release failed; the lock is reclaimed once its holder is gone", exit.cause)
      }
      if (local.held?.lease === held) local.held = undefined
      yield* bus.publish({
        _tag: "lock.released",
        sessionKey: held.sessionKey,
        backend: backend.name,
        token: held.token,
        heldMs: clock.currentTimeMillisUnsafe() - held.acquiredAt
      })
    })

  const publishLost = (held: Lease, reason: string) =>
    bus.publish({
      _tag: "lock.lost",
      sessionKey: held.sessionKey,
      backend: backend.name,
      token: held.token,
      reason
    })

  // One refresher per service, not one fiber per lease: every held lease is
  // refreshed each interval until it is released or turns out lost.
  const holdings = new Set<Lease>()
  const refreshOne = (held: Lease) =>
    Effect.gen(function*() {
      const result = yield* Effect.exit(backend.refresh(held, clock.currentTimeMillisUnsafe()))
      if (Exit.isFailure(result)) {
        yield* Effect.logWarning("SessionLock: lease refresh failed; retrying at the next interval", result.cause)
      } else if (result.value._tag === "Lost" && holdings.delete(held)) {
        yield* publishLost(held, result.value.reason)
      }
    })
  if (refreshMs !== undefined) {
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.andThen(
          Effect.sleep(Duration.millis(refreshMs)),
          Effect.suspend(() => Effect.forEach(Array.from(holdings), refreshOne, { concurrency: 16, discard: true }))
        )
      )
    )
  }

  const acquireUntraced = Effect.fnUntraced(function*(
    sessionKey: SessionKey.SessionKey,
    options: AcquireOptions = {}
  ): Effect.fn.Return<Lease, AcquireError, Scope.Scope> {
    const key = yield* SessionKey.decode(sessionKey)
    const opts = resolve(options)
    const fiberId = yield* Effect.fiberId
    const parent = yield* Effect.scope

    const existing = locals.get(key)
    if (existing?.held !== undefined && existing.held.fiberId === fiberId) {
      if (!opts.reentrant) {
        return yield* Effect.die(
          new Error(
            `SessionLock: this fiber already holds the lock of session ${JSON.stringify(key)}; a nested acquire ` +
              "would wait for itself. Pass { reentrant: true } to reuse the held lease."
          )
        )
      }
      return existing.held.lease
    }

    const start = clock.currentTimeMillisUnsafe()
    const deadline = start + opts.timeoutMs

    return yield* Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const leaseScope = yield* Scope.fork(parent)
        const local = retain(key)
        yield* Scope.addFinalizer(leaseScope, Effect.sync(() => unretain(key, local)))
        const exit = yield* Effect.exit(restore(waitFor(key, local, leaseScope, opts, start, deadline, fiberId)))
        if (Exit.isFailure(exit)) yield* Scope.close(leaseScope, exit)
        return yield* exit
      })
    )
  })

  // A span per acquire, without a captured stack trace: this is the hot path.
  const acquire = (sessionKey: SessionKey.SessionKey, options?: AcquireOptions) =>
    Effect.withSpan(acquireUntraced(sessionKey, options), "SessionLock.acquire", {
      attributes: { "session.lock.backend": backend.name },
      captureStackTrace: false
    })

  const timeoutError = (
    key: SessionKey.SessionKey,
    opts: Resolved,
    start: number,
    attempts: number,
    holder: LockHolder,
    maxHoldMs: number | undefined
  ) =>
    Effect.gen(function*() {
      const now = clock.currentTimeMillisUnsafe()
      const waitedMs = now - start
      yield* bus.publish({ _tag: "lock.timeout", sessionKey: key, backend: backend.name, waitedMs, attempts, holder })
      const reasons = holder.status === "alive" || holder.status === "unknown"
        ? lease.staleReasons(holder.ageMs, maxHoldMs, opts.staleMs)
        : []
      return yield* reasons.length > 0
        ? new LockStale({ sessionKey: key, backend: backend.name, reasons, waitedMs, attempts, holder })
        : new LockTimeout({ sessionKey: key, backend: backend.name, waitedMs, attempts, holder })
    })

  const waitFor = (
    key: SessionKey.SessionKey,
    local: Local,
    leaseScope: Scope.Closeable,
    opts: Resolved,
    start: number,
    deadline: number,
    fiberId: number
  ): Effect.Effect<Lease, AcquireError> =>
    Effect.gen(function*() {
      let contended = false

      // 1. Queue behind the other fibers of this process waiting for the same key.
      const takeLocal = Scope.provide(local.permit.takeScoped(1), leaseScope)
      if (local.held !== undefined || local.users > 1) {
        contended = true
        yield* bus.publish({
          _tag: "lock.contended",
          sessionKey: key,
          backend: backend.name,
          holder: localHolder(local, clock.currentTimeMillisUnsafe())
        })
        const remaining = deadline - clock.currentTimeMillisUnsafe()
        // A permit taken by the losing side of the race is still released with the lease scope.
        const got = remaining <= 0 ? false : yield* Effect.raceFirst(
          Effect.as(takeLocal, true),
          Effect.as(Effect.sleep(Duration.millis(remaining)), false)
        )
        if (!got) {
          return yield* timeoutError(key, opts, start, 0, localHolder(local, clock.currentTimeMillisUnsafe()), undefined)
        }
      } else {
        yield* takeLocal
      }

      // 2. Poll the backend within the budget (the schedule is started on the first wait).
      let step: ((now: number, holder: LockHolder) => Effect.Effect<[unknown, Duration.Duration], unknown>) | undefined
      const ownerId = `${instance}-${(++counter).toString(36)}`
      let attempts = 0
      let reclaimed = false
      let staleReported = false
      let last: Observation | undefined

      // One attempt, uninterruptible: a lock taken is always paired with its
      // release finalizer, its place among the refreshed leases and its
      // `lock.acquired` event.
      const attempt = Effect.uninterruptible(Effect.gen(function*() {
        const now = clock.currentTimeMillisUnsafe()
        const result = yield* backend.tryAcquire({ sessionKey: key, ownerId, now, maxHoldMs: opts.maxHoldMs })
        if (result._tag === "Held") return result
        const held: Lease = { sessionKey: key, ownerId, token: result.token, acquiredAt: now }
        local.held = { lease: held, fiberId }
        yield* Scope.addFinalizer(leaseScope, releaseLease(local, held))
        holdings.add(held)
        yield* bus.publish({
          _tag: "lock.acquired",
          sessionKey: key,
          backend: backend.name,
          token: held.token,
          waitedMs: now - start,
          attempts,
          reclaimed
        })
        return { _tag: "Leased" as const, lease: held }
      }))

      while (true) {
        attempts++
        const outcome = yield* Effect.result(attempt)
        if (outcome._tag === "Failure") {
          const error = outcome.failure
          if (!error.retryable || clock.currentTimeMillisUnsafe() >= deadline) return yield* error
        } else if (outcome.success._tag === "Leased") {
          return outcome.success.lease
        } else {
          const observation = outcome.success.observation
          last = observation
          if (observation.reclaimable !== undefined) {
            const removed = yield* Effect.result(backend.reclaim(key, observation))
            if (removed._tag === "Failure" && !removed.failure.retryable) return yield* removed.failure
            if (removed._tag === "Success" && removed.success) {
              reclaimed = true
              yield* bus.publish({
                _tag: "lock.reclaimed",
                sessionKey: key,
                backend: backend.name,
                reason: observation.reclaimable,
                previousHolder: observation.holder
              })
              // The lock is free now (unless someone else was quicker): try again at once.
              continue
            }
          }
          if (!contended) {
            contended = true
            yield* bus.publish({ _tag: "lock.contended", sessionKey: key, backend: backend.name, holder: observation.holder })
          }
          if (!staleReported && observation.reclaimable === undefined) {
            const reasons = lease.staleReasons(observation.holder.ageMs, observation.maxHoldMs, opts.staleMs)
            if (reasons.length > 0) {
              staleReported = true
              yield* bus.publish({
                _tag: "lock.stale",
                sessionKey: key,
                backend: backend.name,
                reasons,
                holder: observation.holder
              })
            }
          }
        }

        const now = clock.currentTimeMillisUnsafe()
        step ??= yield* Schedule.toStep(opts.retry)
        const delay = yield* Effect.exit(step(now, last?.holder ?? { status: "unknown" }))
        const delayMs = Exit.isSuccess(delay) ? Duration.toMillis(delay.value[1]) : undefined
        const wait = delayMs === undefined ? undefined : lease.nextWait(delayMs, now, deadline)
        if (wait === undefined) {
          // The budget is spent, or the schedule ended (its only failure is `Done`).
          const holder = last?.holder ?? { status: "unknown" as const }
          return yield* timeoutError(key, opts, start, attempts, holder, last?.maxHoldMs)
        }
        yield* Effect.sleep(Duration.millis(wait))
      }
    })

  const assertCurrent = Effect.fn("SessionLock.assertCurrent")(function*(
    held: Lease
  ): Effect.fn.Return<void, LockLost | LockIoError> {
    const check = yield* backend.isCurrent(held)
    if (check._tag === "Current") return
    yield* publishLost(held, check.reason)
    return yield* new LockLost({
      sessionKey: held.sessionKey,
      backend: backend.name,
      token: held.token,
      reason: check.reason
    })
  })

  const inspect = (sessionKey: SessionKey.SessionKey) =>
    Effect.flatMap(SessionKey.decode(sessionKey), (key) => backend.inspect(key, clock.currentTimeMillisUnsafe()))

  return SessionLock.of({ backend: backend.name, acquire, assertCurrent, inspect })
})

/**
 * The service over a backend, as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (backend: Backend): Layer.Layer<SessionLock, never, DiagnosticBus.DiagnosticBus> =>
  Layer.effect(SessionLock, make(backend))

/**
 * The service over a backend that is itself built by an effect (for example
 * one that needs a database client), as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerBackend = <E, R>(
  backend: Effect.Effect<Backend, E, R>
): Layer.Layer<SessionLock, E, Exclude<R, Scope.Scope> | DiagnosticBus.DiagnosticBus> =>
  Layer.effect(SessionLock, Effect.flatMap(backend, make))

// ---------------------------------------------------------------------------
// memory backend
// ---------------------------------------------------------------------------

/**
 * A lock held in a {@link MemoryStore}.
 *
 * @category memory
 * @since 0.1.0
 */
export interface MemoryLock {
  readonly ownerId: string
  readonly token: number
  /** The simulated process holding it (see {@link MemoryStore}). */
  readonly process: string
  readonly createdAt: number
  readonly maxHoldMs: number
}

/**
 * The state behind memory backends. Several services built over one store
 * behave like several processes sharing a lock directory: each has its own
 * `process` id, and marking a process dead (`processes.set(id, false)`) makes
 * its locks reclaimable (`holder_dead`), as a crashed process's would be.
 *
 * @category memory
 * @since 0.1.0
 */
export interface MemoryStore {
  readonly locks: Map<SessionKey.SessionKey, MemoryLock>
  /** The last token handed out per key. */
  readonly tokens: Map<SessionKey.SessionKey, number>
  /** Simulated processes: id -> alive. Unknown ids count as alive. */
  readonly processes: Map<string, boolean>
}

/**
 * A fresh, empty store.
 *
 * @category memory
 * @since 0.1.0
 */
export const makeMemoryStore = (): MemoryStore => ({ locks: new Map(), tokens: new Map(), processes: new Map() })

const memoryFingerprint = (lock: MemoryLock) => `${lock.ownerId}#${lock.token}`

/**
 * An in-memory backend over a store, acting as one simulated process.
 *
 * @category memory
 * @since 0.1.0
 */
export const makeMemoryBackend = (
  store: MemoryStore,
  options: { readonly process?: string | undefined } = {}
): Backend => {
  const processId = options.process ?? `memory-${randomUUID().slice(0, 8)}`
  store.processes.set(processId, true)

  const observe = (lock: MemoryLock, now: number): Observation => {
    const alive = store.processes.get(lock.process) !== false
    return {
      holder: { host: "memory", ownerId: lock.ownerId, status: alive ? "alive" : "dead", ageMs: now - lock.createdAt },
      maxHoldMs: lock.maxHoldMs,
      reclaimable: alive ? undefined : "holder_dead",
      fingerprint: memoryFingerprint(lock)
    }
  }
  const check = (held: Lease): LeaseCheck => {
    const lock = store.locks.get(held.sessionKey)
    if (lock === undefined) return { _tag: "Lost", reason: "the lock was released or reclaimed" }
    if (lock.ownerId !== held.ownerId || lock.token !== held.token) {
      return { _tag: "Lost", reason: `the lock is now held by ${lock.ownerId} with token ${lock.token}` }
    }
    return { _tag: "Current" }
  }

  return {
    name: "memory",
    tryAcquire: (request) =>
      Effect.sync((): Attempt => {
        const lock = store.locks.get(request.sessionKey)
        if (lock !== undefined) return { _tag: "Held", observation: observe(lock, request.now) }
        const token = (store.tokens.get(request.sessionKey) ?? 0) + 1
        store.tokens.set(request.sessionKey, token)
        store.locks.set(request.sessionKey, {
          ownerId: request.ownerId,
          token,
          process: processId,
          createdAt: request.now,
          maxHoldMs: request.maxHoldMs
        })
        return { _tag: "Acquired", token }
      }),
    reclaim: (key, observation) =>
      Effect.sync(() => {
        const lock = store.locks.get(key)
        if (lock === undefined || memoryFingerprint(lock) !== observation.fingerprint) return false
        if (store.processes.get(lock.process) !== false) return false
        store.locks.delete(key)
        return true
      }),
    refresh: (held) => Effect.sync(() => check(held)),
    release: (held) =>
      Effect.sync(() => {
        if (check(held)._tag === "Current") store.locks.delete(held.sessionKey)
      }),
    isCurrent: (held) => Effect.sync(() => check(held)),
    inspect: (key, now) =>
      Effect.sync(() => {
        const lock = store.locks.get(key)
        return lock === undefined ? Option.none() : Option.some(observe(lock, now))
      })
  }
}

/**
 * The service over an in-memory backend: for tests and single-process use.
 * Pass a shared `store` to simulate several processes.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory = (
  options: { readonly store?: MemoryStore | undefined; readonly process?: string | undefined } = {}
): Layer.Layer<SessionLock, never, DiagnosticBus.DiagnosticBus> =>
  Layer.effect(
    SessionLock,
    Effect.suspend(() => make(makeMemoryBackend(options.store ?? makeMemoryStore(), { process: options.process })))
  )
