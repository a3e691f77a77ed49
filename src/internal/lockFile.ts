/**
 * The on-disk protocol of the file lock backend: names, the versioned JSON
 * payload, the reclaim verdict (pure), and the few asynchronous file
 * operations the protocol is made of. Everything here uses `fs/promises`;
 * nothing blocks the event loop and nothing ever follows a symbolic link.
 *
 * Files in a lock directory, for a key whose encoded name is `<base>`:
 * - `<base>.lock`: the lock, created with `O_CREAT|O_EXCL` (mode 0600). Its
 *   JSON payload names the holder (pid, process start time, host, owner id,
 *   fencing token, created at, max hold, lease time). Its mtime is the lease:
 *   the holder refreshes it while it holds the lock.
 * - `<base>.fence`: the fencing log. Each acquisition appends one byte after
 *   creating the lock and takes the file's size as its token, so tokens
 *   strictly increase per key across holders and restarts without a
 *   read-modify-write race.
 * - `<base>.reclaim`: the reclaim guard, created exclusively by whoever
 *   removes a stale lock, so that two reclaimers can never both act on one
 *   stale lock, and a lock created in between is never removed.
 *
 * @since 0.1.0
 */
import { createHash, randomUUID } from "node:crypto"
import * as fs from "node:fs"
import { constants } from "node:fs"
import type { BigIntStats } from "node:fs"
import { link, lstat, open, rename, unlink } from "node:fs/promises"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type { LockHolder, ReclaimReason } from "../DiagnosticEvent.ts"
import type { ProcessState } from "./processProbe.ts"

/** @internal */
export const lockSuffix = ".lock"
/** @internal */
export const fenceSuffix = ".fence"
/** @internal */
export const guardSuffix = ".reclaim"
/**
 * Lock payloads are a few hundred bytes; anything past this many bytes is
 * never read, and a larger file is unreadable by definition.
 *
 * @internal
 */
export const maxPayloadBytes = 4096

/** @internal */
export const readFlags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK
/** @internal */
export const createFlags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW
/** @internal */
export const appendFlags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW |
  constants.O_NONBLOCK

/**
 * The paths of one key's files.
 *
 * @internal
 */
export interface Paths {
  readonly lock: string
  readonly fence: string
  readonly guard: string
}

/** @internal */
export const pathsOf = (directory: string, base: string): Paths => ({
  lock: `${directory}/${base}${lockSuffix}`,
  fence: `${directory}/${base}${fenceSuffix}`,
  guard: `${directory}/${base}${guardSuffix}`
})

// ---------------------------------------------------------------------------
// payload
// ---------------------------------------------------------------------------

const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/**
 * The lock payload, version 1. Guards use the same shape.
 *
 * @internal
 */
export const Payload = Schema.Struct({
  v: Schema.Literal(1),
  pid: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 2 ** 31 - 1 })),
  /** Process start time in clock ticks since boot (`/proc/<pid>/stat` field 22); null where unknown. */
  startTime: Schema.NullOr(NonNegativeInt),
  host: Schema.String.check(Schema.isMaxLength(255)),
  ownerId: Schema.String.check(Schema.isMaxLength(128)),
  token: NonNegativeInt,
  createdAt: NonNegativeInt,
  maxHoldMs: NonNegativeInt,
  leaseMs: NonNegativeInt
})
export type Payload = typeof Payload.Type

const decodePayloadJson = Schema.decodeUnknownResult(Schema.fromJsonString(Payload))

/** @internal */
export const encodePayload = (payload: Payload): Uint8Array => Buffer.from(JSON.stringify(payload), "utf8")

/**
 * Decodes a payload, or says in a few words why it is unreadable.
 *
 * @internal
 */
export const decodePayload = (
  bytes: Uint8Array,
  size: number
): Result.Result<Payload, string> => {
  if (size === 0) return Result.fail("empty file")
  if (size > maxPayloadBytes) return Result.fail(`${size} bytes, more than the ${maxPayloadBytes}-byte payload limit`)
  let text: string
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes)
  } catch {
    return Result.fail("binary content (not UTF-8)")
  }
  const decoded = decodePayloadJson(text)
  if (Result.isSuccess(decoded)) return Result.succeed(decoded.success)
  try {
    JSON.parse(text)
  } catch {
    return Result.fail("not JSON")
  }
  return Result.fail("JSON that is not a version-1 lock payload")
}

// ---------------------------------------------------------------------------
// reading
// ---------------------------------------------------------------------------

/**
 * What sits at a path, read without following links and without reading more
 * than {@link maxPayloadBytes}.
 *
 * @internal
 */
export type Entry =
  | { readonly _tag: "Missing" }
  | { readonly _tag: "NotRegular"; readonly kind: "directory" | "symlink" | "other" }
  | {
    readonly _tag: "Regular"
    readonly dev: bigint
    readonly ino: bigint
    readonly birthtimeNs: bigint
    readonly mtimeMs: number
    readonly size: number
    readonly mode: number
    readonly bytes: Uint8Array
  }

/** @internal */
export const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error ? String((error as { code: unknown }).code) : undefined

// The hot path (create, token, release) works on plain descriptors through
// the callback API: one thread-pool round trip per call and no FileHandle
// bookkeeping.
const fdOpen = (path: string, flags: number, mode: number) =>
  new Promise<number>((resolve, reject) => fs.open(path, flags, mode, (e, fd) => (e ? reject(e) : resolve(fd))))
const fdWrite = (fd: number, bytes: Uint8Array, position: number | null) =>
  new Promise<number>((resolve, reject) =>
    fs.write(fd, bytes, 0, bytes.length, position, (e, written) => (e ? reject(e) : resolve(written)))
  )
const fdStat = (fd: number) =>
  new Promise<BigIntStats>((resolve, reject) =>
    fs.fstat(fd, { bigint: true }, (e, stats) => (e ? reject(e) : resolve(stats)))
  )
const fdClose = (fd: number) => new Promise<void>((resolve) => fs.close(fd, () => resolve()))
const fdUtimes = (fd: number, seconds: number) =>
  new Promise<void>((resolve, reject) => fs.futimes(fd, seconds, seconds, (e) => (e ? reject(e) : resolve())))
const pathUnlink = (path: string) =>
  new Promise<boolean>((resolve, reject) =>
    fs.unlink(path, (e) => (e ? (e.code === "ENOENT" ? resolve(false) : reject(e)) : resolve(true)))
  )

/** @internal */
export const readEntry = async (path: string): Promise<Entry> => {
  let handle
  try {
    handle = await open(path, readFlags)
  } catch (error) {
    const code = errorCode(error)
    if (code === "ENOENT") return { _tag: "Missing" }
    if (code === "ELOOP" || code === "EMLINK") return { _tag: "NotRegular", kind: "symlink" }
    if (code === "ENXIO" || code === "EOPNOTSUPP") return { _tag: "NotRegular", kind: "other" }
    throw error
  }
  try {
    const stats = await handle.stat({ bigint: true })
    if (stats.isDirectory()) return { _tag: "NotRegular", kind: "directory" }
    if (!stats.isFile()) return { _tag: "NotRegular", kind: "other" }
    const size = Number(stats.size)
    const buffer = Buffer.alloc(Math.min(size, maxPayloadBytes))
    const { bytesRead } = buffer.length === 0 ? { bytesRead: 0 } : await handle.read(buffer, 0, buffer.length, 0)
    return {
      _tag: "Regular",
      dev: stats.dev,
      ino: stats.ino,
      birthtimeNs: stats.birthtimeNs,
      mtimeMs: Number(stats.mtimeMs),
      size,
      mode: Number(stats.mode) & 0o7777,
      bytes: buffer.subarray(0, bytesRead)
    }
  } finally {
    await handle.close()
  }
}

/**
 * The fingerprint of exactly one lock instance: its inode identity and the
 * hash of its content. A lock removed and re-created (even reusing the inode
 * number) or rewritten has a different fingerprint.
 *
 * @internal
 */
export const fingerprintOf = (entry: Extract<Entry, { readonly _tag: "Regular" }>): string =>
  `${entry.dev}:${entry.ino}:${entry.birthtimeNs}:${entry.size}:${
    createHash("sha256").update(entry.bytes).digest("hex").slice(0, 24)
  }`

// ---------------------------------------------------------------------------
// judging
// ---------------------------------------------------------------------------

/**
 * What a judge needs to know about the world.
 *
 * @internal
 */
export interface JudgeContext {
  /** Epoch milliseconds. */
  readonly now: number
  /** This host's name: pids are probed only for holders on this host. */
  readonly host: string
  /** How long a lock without a readable payload is left alone (it may be being written). */
  readonly graceMs: number
  readonly probe: (pid: number) => Promise<ProcessState>
}

/**
 * The verdict on one regular lock file.
 *
 * @internal
 */
export interface Verdict {
  readonly holder: LockHolder
  readonly payload: Payload | undefined
  /** Set when the lock protocol may remove this lock. */
  readonly reclaimable: ReclaimReason | undefined
  /** Human-readable findings, for messages and the doctor. */
  readonly findings: ReadonlyArray<string>
  readonly fingerprint: string
  readonly leaseAgeMs: number
}

/**
 * Judges a lock (pure, given the probe's answer). Reclaimable, and only then:
 * the holder on this host is dead; the pid now belongs to a process with
 * another start time; the payload is unreadable and the file older than the
 * grace period; or the holder cannot be probed (another host) and has not
 * refreshed its lease for its lease time plus the grace period.
 *
 * @internal
 */
export const judgeWith = (
  entry: Extract<Entry, { readonly _tag: "Regular" }>,
  probed: ProcessState | undefined,
  context: Omit<JudgeContext, "probe">
): Verdict => {
  const fingerprint = fingerprintOf(entry)
  const leaseAgeMs = Math.max(0, context.now - entry.mtimeMs)
  const decoded = decodePayload(entry.bytes, entry.size)
  if (Result.isFailure(decoded)) {
    const old = leaseAgeMs > context.graceMs
    return {
      holder: { status: "unknown", ageMs: leaseAgeMs },
      payload: undefined,
      reclaimable: old ? "unreadable" : undefined,
      findings: [`unreadable payload: ${decoded.failure}`, ...(old ? [] : ["younger than the grace period"])],
      fingerprint,
      leaseAgeMs
    }
  }
  const payload = decoded.success
  const base = {
    pid: payload.pid,
    host: payload.host,
    ownerId: payload.ownerId,
    ageMs: Math.max(0, context.now - payload.createdAt)
  }
  const leaseExpired = leaseAgeMs > payload.leaseMs + context.graceMs
  const unknown = (finding: string): Verdict => ({
    holder: { ...base, status: "unknown" },
    payload,
    reclaimable: leaseExpired ? "lease_expired" : undefined,
    findings: leaseExpired ? [finding, `lease not refreshed for ${Math.round(leaseAgeMs)} ms`] : [finding],
    fingerprint,
    leaseAgeMs
  })
  if (payload.host !== context.host || probed === undefined) return unknown("holder on another host")
  switch (probed._tag) {
    case "Dead":
      return {
        holder: { ...base, status: "dead" },
        payload,
        reclaimable: "holder_dead",
        findings: ["holder process is dead"],
        fingerprint,
        leaseAgeMs
      }
    case "Unknown":
      return unknown(`holder process cannot be probed (${probed.detail})`)
    case "Alive": {
      if (payload.startTime !== null && probed.startTime !== undefined && payload.startTime !== probed.startTime) {
        return {
          holder: { ...base, status: "pid_reused" },
          payload,
          reclaimable: "pid_reused",
          findings: [`pid ${payload.pid} now belongs to another process (start time ${probed.startTime}, lock says ${payload.startTime})`],
          fingerprint,
          leaseAgeMs
        }
      }
      return { holder: { ...base, status: "alive" }, payload, reclaimable: undefined, findings: [], fingerprint, leaseAgeMs }
    }
  }
}

/**
 * Judges a lock, probing its holder when it is on this host.
 *
 * @internal
 */
export const judge = async (
  entry: Extract<Entry, { readonly _tag: "Regular" }>,
  context: JudgeContext
): Promise<Verdict> => {
  const decoded = decodePayload(entry.bytes, entry.size)
  const probed = Result.isSuccess(decoded) && decoded.success.host === context.host
    ? await context.probe(decoded.success.pid)
    : undefined
  return judgeWith(entry, probed, context)
}

// ---------------------------------------------------------------------------
// operations
// ---------------------------------------------------------------------------

/**
 * The inode identity of a file we created.
 *
 * @internal
 */
export interface Identity {
  readonly dev: bigint
  readonly ino: bigint
}

const sameFile = (stats: BigIntStats, identity: Identity) => stats.dev === identity.dev && stats.ino === identity.ino

const fenceByte = Buffer.from("\n")

/**
 * The fence logs of one backend, kept open (at most `capacity`, least
 * recently used closed first) so that taking a token costs one append and
 * one stat.
 *
 * @internal
 */
export interface FenceLog {
  /**
   * Appends one byte to a key's fence log and returns the log's size: the
   * new token. Appends are serialised by the kernel, so each appender sees a
   * size at least one past every earlier append. A log that was replaced or
   * removed since it was opened is reopened and appended to again.
   */
  readonly append: (path: string) => Promise<number>
  readonly close: () => Promise<void>
}

interface OpenFence {
  readonly fd: number
  users: number
}

/** @internal */
export const makeFenceLog = (capacity = 128): FenceLog => {
  const opened = new Map<string, OpenFence>()
  const drop = (path: string, fence: OpenFence) => {
    if (opened.get(path) === fence) opened.delete(path)
    if (fence.users === 0) void fdClose(fence.fd)
  }
  const evict = () => {
    for (const [path, fence] of opened) {
      if (opened.size <= capacity) return
      if (fence.users === 0) drop(path, fence)
    }
  }
  const get = async (path: string): Promise<OpenFence> => {
    const known = opened.get(path)
    if (known !== undefined) {
      opened.delete(path)
      opened.set(path, known)
      return known
    }
    const fd = await fdOpen(path, appendFlags, 0o600)
    let stats
    try {
      stats = await fdStat(fd)
    } catch (error) {
      await fdClose(fd)
      throw error
    }
    if (!stats.isFile()) {
      await fdClose(fd)
      throw Object.assign(new Error(`${path} is not a regular file`), { code: "EFTYPE" })
    }
    const raced = opened.get(path)
    if (raced !== undefined) {
      await fdClose(fd)
      return raced
    }
    const fence: OpenFence = { fd, users: 0 }
    opened.set(path, fence)
    evict()
    return fence
  }
  const append = async (path: string): Promise<number> => {
    for (let round = 0; round < 3; round++) {
      const fence = await get(path)
      fence.users++
      let size: number | undefined
      try {
        await fdWrite(fence.fd, fenceByte, null)
        // The size after our append is the token. A log removed or replaced
        // since it was opened has no link left: reopen it and append again.
        const stats = await fdStat(fence.fd)
        if (stats.nlink > 0n) size = Number(stats.size)
      } finally {
        fence.users--
      }
      if (size !== undefined) return size
      drop(path, fence)
    }
    throw Object.assign(new Error(`the fence log ${path} keeps being replaced`), { code: "EBUSY" })
  }
  const close = async () => {
    const all = Array.from(opened.values())
    opened.clear()
    await Promise.all(all.map((fence) => fdClose(fence.fd)))
  }
  return { append, close }
}

/**
 * A lock held by this process: its descriptor (kept open while held; closed
 * on release) and its inode identity, read when first needed.
 *
 * @internal
 */
export interface Held {
  readonly fd: number
  identity: Identity | undefined
}

/** @internal */
export const identityOf = async (held: Held): Promise<Identity> => {
  if (held.identity === undefined) {
    const stats = await fdStat(held.fd)
    held.identity = { dev: stats.dev, ino: stats.ino }
  }
  return held.identity
}

/**
 * The result of one creation attempt.
 *
 * @internal
 */
export type Created =
  | { readonly _tag: "Created"; readonly token: number; readonly held: Held }
  | { readonly _tag: "Exists" }

/**
 * Creates the lock exclusively, takes the next token from the fence log and
 * writes the payload.
 *
 * Until its payload is written, a new lock can only be reclaimed as
 * unreadable, and only once it is older than the grace period. So when the
 * whole creation took less than half the grace period, nobody can have
 * removed it meanwhile; otherwise the lock is checked to be still linked (a
 * holder stalled that long could have been reclaimed, and must not believe
 * it holds the lock nor use its token). Lock files are never renamed or
 * linked by the protocol, so a link count of one means the file is still at
 * its path.
 *
 * @internal
 */
export const create = async (
  paths: Paths,
  fence: FenceLog,
  payloadFor: (token: number) => Payload,
  timing: { readonly now: () => number; readonly graceMs: number }
): Promise<Created> => {
  const started = timing.now()
  let fd: number
  try {
    fd = await fdOpen(paths.lock, createFlags, 0o600)
  } catch (error) {
    if (errorCode(error) === "EEXIST") return { _tag: "Exists" }
    throw error
  }
  const held: Held = { fd, identity: undefined }
  try {
    const token = await fence.append(paths.fence)
    await fdWrite(fd, encodePayload(payloadFor(token)), 0)
    const elapsed = timing.now() - started
    if (elapsed < 0 || elapsed >= timing.graceMs / 2) {
      const stats = await fdStat(fd)
      held.identity = { dev: stats.dev, ino: stats.ino }
      if (stats.nlink !== 1n) {
        await fdClose(fd)
        return { _tag: "Exists" }
      }
    }
    return { _tag: "Created", token, held }
  } catch (error) {
    const identity = await identityOf(held).catch(() => undefined)
    await fdClose(fd)
    if (identity !== undefined) await unlinkIfSame(paths.lock, identity).catch(() => undefined)
    else await unlinkIfEmpty(paths.lock).catch(() => undefined)
    throw error
  }
}

/**
 * Releases a lock held by this process: removes it if it is still linked
 * (still at its path), and closes its descriptor.
 *
 * @internal
 */
export const release = async (path: string, held: Held): Promise<boolean> => {
  let stats
  try {
    stats = await fdStat(held.fd)
  } catch (error) {
    await fdClose(held.fd)
    throw error
  }
  if (stats.nlink !== 1n) {
    await fdClose(held.fd)
    return false
  }
  const [removed] = await Promise.all([pathUnlink(path), fdClose(held.fd)])
  return removed
}

/**
 * Removes a file only if the path still names the given inode.
 *
 * @internal
 */
export const unlinkIfSame = async (path: string, identity: Identity): Promise<boolean> => {
  let stats
  try {
    stats = await lstat(path, { bigint: true })
  } catch (error) {
    if (errorCode(error) === "ENOENT") return false
    throw error
  }
  if (!sameFile(stats, identity)) return false
  try {
    await unlink(path)
    return true
  } catch (error) {
    if (errorCode(error) === "ENOENT") return false
    throw error
  }
}

// A creation that failed before its inode was known leaves an empty file at
// most; remove it only if it is still empty and regular (never someone's lock).
const unlinkIfEmpty = async (path: string): Promise<void> => {
  const stats = await lstat(path, { bigint: true })
  if (stats.isFile() && stats.size === 0n) await unlink(path)
}

/**
 * Whether the path still names our lock (by inode), and why not.
 *
 * @internal
 */
export const checkIdentity = async (path: string, identity: Identity): Promise<string | undefined> => {
  try {
    const stats = await lstat(path, { bigint: true })
    return sameFile(stats, identity) ? undefined : "the lock file was replaced by another holder's"
  } catch (error) {
    if (errorCode(error) === "ENOENT") return "the lock file is gone (released or reclaimed)"
    throw error
  }
}

/**
 * Refreshes the lease (the lock's mtime) through the held handle, if the
 * path still names our lock. Returns why not otherwise.
 *
 * @internal
 */
export const refresh = async (path: string, held: Held, nowMs: number): Promise<string | undefined> => {
  const lost = await checkIdentity(path, await identityOf(held))
  if (lost !== undefined) return lost
  // Through our own descriptor: the path is never followed.
  await fdUtimes(held.fd, nowMs / 1000)
  return undefined
}

/**
 * Whether the lock is still ours: same inode, same owner and token.
 *
 * @internal
 */
export const checkCurrent = async (
  path: string,
  held: Held,
  ownerId: string,
  token: number
): Promise<string | undefined> => {
  const [identity, entry] = await Promise.all([identityOf(held), readEntry(path)])
  if (entry._tag === "Missing") return "the lock file is gone (released or reclaimed)"
  if (entry._tag === "NotRegular") return `a ${entry.kind} now sits at the lock's path`
  if (entry.dev !== identity.dev || entry.ino !== identity.ino) return "the lock file was replaced by another holder's"
  const decoded = decodePayload(entry.bytes, entry.size)
  if (Result.isFailure(decoded)) return `the lock file's payload is unreadable (${decoded.failure})`
  if (decoded.success.ownerId !== ownerId || decoded.success.token !== token) {
    return `the lock now names owner ${decoded.success.ownerId} with token ${decoded.success.token}`
  }
  return undefined
}

// ---------------------------------------------------------------------------
// reclaim
// ---------------------------------------------------------------------------

/**
 * What a reclaim did.
 *
 * @internal
 */
export type Reclaimed =
  | { readonly _tag: "Removed"; readonly verdict: Verdict }
  /** The lock changed, vanished or is no longer reclaimable: nothing removed. */
  | { readonly _tag: "Changed" }
  /** Another live reclaimer holds the guard: nothing removed. */
  | { readonly _tag: "Busy" }
  /** Something that is not a regular file sits at the lock's (or guard's) path. */
  | { readonly _tag: "NotRegular"; readonly path: string; readonly kind: "directory" | "symlink" | "other" }

/**
 * Who is reclaiming (written into the guard).
 *
 * @internal
 */
export interface Reclaimer extends JudgeContext {
  readonly guardPayload: () => Payload
}

// Takes the guard; a guard whose holder is dead (or unreadable past the grace
// period, or on another host past its lease) is moved aside first.
const takeGuard = async (
  path: string,
  reclaimer: Reclaimer
): Promise<Identity | "busy" | { readonly kind: "directory" | "symlink" | "other" }> => {
  for (let round = 0; round < 3; round++) {
    let handle
    try {
      handle = await open(path, createFlags, 0o600)
    } catch (error) {
      if (errorCode(error) !== "EEXIST") throw error
      const entry = await readEntry(path)
      if (entry._tag === "Missing") continue
      if (entry._tag === "NotRegular") return { kind: entry.kind }
      const verdict = await judge(entry, reclaimer)
      if (verdict.reclaimable === undefined) return "busy"
      await moveAsideIfSame(path, verdict.fingerprint)
      continue
    }
    try {
      const stats = await handle.stat({ bigint: true })
      const bytes = encodePayload(reclaimer.guardPayload())
      await handle.write(bytes, 0, bytes.length, 0)
      return { dev: stats.dev, ino: stats.ino }
    } finally {
      await handle.close()
    }
  }
  return "busy"
}

// Removes a stale guard race-free: rename it to a private name (only one
// renamer can succeed), then check that what was moved is the guard judged
// stale; if a fresh guard was moved instead, put it back.
const moveAsideIfSame = async (path: string, fingerprint: string): Promise<boolean> => {
  const aside = `${path}.${randomUUID()}.stale`
  try {
    await rename(path, aside)
  } catch (error) {
    if (errorCode(error) === "ENOENT") return false
    throw error
  }
  const moved = await readEntry(aside)
  const same = moved._tag === "Regular" && fingerprintOf(moved) === fingerprint
  if (!same) await link(aside, path).catch(() => undefined)
  await unlink(aside).catch(() => undefined)
  return same
}

/**
 * Removes a reclaim guard judged stale, if it is still the guard judged
 * (same fingerprint). Returns whether it removed it.
 *
 * @internal
 */
export const removeStaleGuard = (path: string, fingerprint: string): Promise<boolean> => moveAsideIfSame(path, fingerprint)

/**
 * The race-free reclaim: take the guard, re-read the lock and re-judge it
 * under the guard, and remove it only if it is still exactly the instance
 * judged stale (same fingerprint) and still reclaimable. Two reclaimers that
 * judged one lock stale are serialised by the guard, and the second finds a
 * different fingerprint (the lock was removed, or re-created by someone else)
 * and removes nothing.
 *
 * @internal
 */
export const reclaim = async (paths: Paths, fingerprint: string, reclaimer: Reclaimer): Promise<Reclaimed> => {
  const guard = await takeGuard(paths.guard, reclaimer)
  if (guard === "busy") return { _tag: "Busy" }
  if ("kind" in guard) return { _tag: "NotRegular", path: paths.guard, kind: guard.kind }
  try {
    const entry = await readEntry(paths.lock)
    if (entry._tag === "Missing") return { _tag: "Changed" }
    if (entry._tag === "NotRegular") return { _tag: "NotRegular", path: paths.lock, kind: entry.kind }
    const verdict = await judge(entry, reclaimer)
    if (verdict.fingerprint !== fingerprint || verdict.reclaimable === undefined) return { _tag: "Changed" }
    try {
      await unlink(paths.lock)
    } catch (error) {
      if (errorCode(error) === "ENOENT") return { _tag: "Changed" }
      throw error
    }
    return { _tag: "Removed", verdict }
  } finally {
    await unlinkIfSame(paths.guard, guard).catch(() => undefined)
  }
}
