/**
 * The doctor: checks an operator runs against a deployment, as data (a
 * {@link Check} has a name and an effect producing typed findings), a pure
 * renderer for people, JSON for machines, and the `effect/cli` command
 * `doctor locks --dir <dir> [--fix] [--json] [--allow-symlink]`.
 *
 * The lock check first judges the lock directory itself, by the file
 * backend's own rules (`internal/lockDirectory.ts`: a real directory, owned
 * by this user, not writable by others, writable by this process, nothing
 * above it that another user could swap), reporting every problem. Then it
 * lists every lock and reclaim guard, recognised positively by the exact
 * names the protocol produces (`SessionKey.toFileName(key)` plus `.lock` or
 * `.reclaim`), with its holder (pid, host, alive or dead, age), the stale
 * verdict and its reasons. Every other entry (`yarn.lock`, `Cargo.lock`, a
 * hidden `.lock`, fence logs) is reported as ignored and never read,
 * followed or removed. `--fix` removes exactly what the lock protocol itself
 * would reclaim, through the same race-free reclaim path as an acquire, and
 * only in a directory that passes every check; symbolic links and
 * directories named like a lock are reported, never followed or removed.
 *
 * Exit codes: 0 when healthy (or everything stale was fixed), 1 when stale
 * locks remain or the directory is refused, 2 on bad usage (unknown flags,
 * a missing directory).
 *
 * @since 0.1.0
 */
import { readdir } from "node:fs/promises"
import { resolve } from "node:path"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as CliError from "effect/cli/CliError"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import { HolderStatus } from "./DiagnosticEvent.ts"
import * as lease from "./internal/lease.ts"
import * as lockDirectory from "./internal/lockDirectory.ts"
import * as lockFile from "./internal/lockFile.ts"
import * as SessionLock from "./SessionLock.ts"
import * as SessionLockFile from "./SessionLockFile.ts"

// ---------------------------------------------------------------------------
// checks as data
// ---------------------------------------------------------------------------

/**
 * One check: a name, and an effect producing its findings.
 *
 * @category models
 * @since 0.1.0
 */
export interface Check<A, E = never, R = never> {
  readonly name: string
  readonly run: Effect.Effect<CheckResult<A>, E, R>
}

/**
 * What a check found: healthy or not, and one item per thing examined.
 *
 * @category models
 * @since 0.1.0
 */
export interface CheckResult<A> {
  readonly name: string
  readonly healthy: boolean
  readonly items: ReadonlyArray<A>
}

/**
 * One file of a lock directory as the doctor sees it. `alive` is `null` when
 * the holder cannot be probed (another host, unreadable payload).
 *
 * @category models
 * @since 0.1.0
 */
export const LockFinding = Schema.Struct({
  path: Schema.String,
  kind: Schema.Literals(["lock", "guard"]),
  pid: Schema.NullOr(Schema.Number),
  host: Schema.NullOr(Schema.String),
  ownerId: Schema.NullOr(Schema.String),
  token: Schema.NullOr(Schema.Number),
  status: Schema.Union([HolderStatus, Schema.Literal("not_a_regular_file")]),
  alive: Schema.NullOr(Schema.Boolean),
  ageMs: Schema.NullOr(Schema.Number),
  stale: Schema.Boolean,
  reasons: Schema.Array(Schema.String),
  /** The lock protocol would reclaim it (and `--fix` does). */
  removable: Schema.Boolean,
  removed: Schema.Boolean
})
export type LockFinding = typeof LockFinding.Type

/**
 * Why the lock directory is refused (as the file backend would refuse it):
 * the reason, the path at fault (the directory or one above it) and what is
 * wrong. The reasons are those of `SessionLock.LockIoError`.
 *
 * @category models
 * @since 0.1.0
 */
export const DirectoryProblem = Schema.Struct({
  reason: Schema.Literals([
    "not_a_directory",
    "directory_is_symlink",
    "directory_not_owned",
    "directory_writable_by_others",
    "read_only",
    "permission_denied"
  ]),
  path: Schema.String,
  detail: Schema.String
})
export type DirectoryProblem = typeof DirectoryProblem.Type

/**
 * An entry of the lock directory the doctor never touches, and why: a fence
 * log (part of the protocol, never removed), a guard moved aside by an
 * interrupted reclaim, or a file the protocol never creates (`yarn.lock`,
 * `Cargo.lock`, a hidden `.lock`, anything not named exactly like a lock).
 *
 * @category models
 * @since 0.1.0
 */
export const IgnoredEntry = Schema.Struct({
  path: Schema.String,
  why: Schema.Literals(["fence_log", "reclaim_leftover", "not_a_protocol_file"])
})
export type IgnoredEntry = typeof IgnoredEntry.Type

/**
 * The whole lock check: the directory, whether it is healthy, its problems,
 * one finding per lock or guard, and the entries left alone.
 *
 * @category models
 * @since 0.1.0
 */
export const LockReport = Schema.Struct({
  directory: Schema.String,
  healthy: Schema.Boolean,
  problems: Schema.Array(DirectoryProblem),
  findings: Schema.Array(LockFinding),
  ignored: Schema.Array(IgnoredEntry)
})
export type LockReport = typeof LockReport.Type

/**
 * The JSON form of the lock check (`--json`): one {@link LockReport} object.
 *
 * @category codecs
 * @since 0.1.0
 */
export const LockReportJson = Schema.fromJsonString(LockReport)

/**
 * What the lock check found: the findings as `items`, plus the directory's
 * problems and the ignored entries.
 *
 * @category models
 * @since 0.1.0
 */
export interface LockCheckResult extends CheckResult<LockFinding> {
  readonly directory: string
  readonly problems: ReadonlyArray<DirectoryProblem>
  readonly ignored: ReadonlyArray<IgnoredEntry>
}

/**
 * The JSON report of a lock check result.
 *
 * @category rendering
 * @since 0.1.0
 */
export const reportOf = (result: LockCheckResult): LockReport => ({
  directory: result.directory,
  healthy: result.healthy,
  problems: result.problems,
  findings: result.items,
  ignored: result.ignored
})

/**
 * Options of the lock check.
 *
 * @category config
 * @since 0.1.0
 */
export interface LockCheckOptions {
  readonly directory: string
  /** Remove what the lock protocol would reclaim (only in a directory without problems). @default false */
  readonly fix?: boolean | undefined
  /** A live holder older than this is reported stale (never removed). @default "30 minutes" */
  readonly staleTime?: Duration.Input | undefined
  /** As for the file backend. @default "10 seconds" */
  readonly grace?: Duration.Input | undefined
  /** As the file backend's `allowSymlinkDirectory`: accept a lock directory that is a symbolic link. @default false */
  readonly allowSymlink?: boolean | undefined
}

const ignoredWhy = {
  fence: "fence_log",
  aside: "reclaim_leftover",
  foreign: "not_a_protocol_file"
} as const

/**
 * The lock check over a directory. Fails only when there is no directory at
 * all (or it cannot be listed); everything else is a finding.
 *
 * @category checks
 * @since 0.1.0
 */
export const lockCheck = (
  options: LockCheckOptions
): Check<LockFinding, SessionLock.LockIoError> & {
  readonly run: Effect.Effect<LockCheckResult, SessionLock.LockIoError>
} => ({
  name: "locks",
  run: Effect.gen(function*() {
    const given = resolve(options.directory)
    const staleMs = Duration.toMillis(Duration.fromInputUnsafe(options.staleTime ?? "30 minutes"))
    const inspection = yield* Effect.tryPromise({
      try: () => lockDirectory.inspect(given, { allowSymlink: options.allowSymlink }),
      catch: SessionLockFile.toIoError("inspect lock directory", given)
    })
    if (inspection._tag === "Missing") {
      return yield* new SessionLock.LockIoError({
        reason: "directory_missing",
        path: given,
        retryable: false,
        detail: "no lock directory at this path"
      })
    }
    const problems = inspection.problems
    const result = (items: ReadonlyArray<LockFinding>, ignored: ReadonlyArray<IgnoredEntry>): LockCheckResult => ({
      name: "locks",
      directory: given,
      healthy: problems.length === 0 && items.every((item) => !item.stale || item.removed),
      problems,
      items,
      ignored
    })
    if (problems.some((problem) => problem.reason === "not_a_directory")) return result([], [])
    // The real path: a symbolic link (when allowed) is resolved once.
    const directory = inspection.directory
    const world = yield* SessionLockFile.makeContext({ grace: options.grace })
    const names = yield* Effect.tryPromise({
      try: () => readdir(directory),
      catch: SessionLockFile.toIoError("list lock directory", directory)
    })
    // Nothing is changed in a directory the backend would refuse: someone
    // else may control what its names point to.
    const fix = options.fix === true && problems.length === 0
    const items: Array<LockFinding> = []
    const ignored: Array<IgnoredEntry> = []
    for (const name of names.sort()) {
      const entry = lockDirectory.classifyName(name)
      const path = `${directory}/${name}`
      if (entry.kind !== "lock" && entry.kind !== "guard") {
        ignored.push({ path, why: ignoredWhy[entry.kind] })
        continue
      }
      const { base, kind } = entry
      const finding = yield* Effect.tryPromise({
        try: () => examine(directory, name, kind, base, staleMs, fix, world.context),
        catch: SessionLockFile.toIoError("examine", path)
      })
      items.push(
        options.fix === true && !fix && finding.removable
          ? { ...finding, reasons: [...finding.reasons, "not removed: the lock directory is refused (see above)"] }
          : finding
      )
    }
    return result(items, ignored)
  })
})

const examine = async (
  directory: string,
  name: string,
  kind: "lock" | "guard",
  base: string,
  staleMs: number,
  fix: boolean,
  context: () => lockFile.Reclaimer
): Promise<LockFinding> => {
  const path = `${directory}/${name}`
  const empty = {
    path,
    kind,
    pid: null,
    host: null,
    ownerId: null,
    token: null,
    alive: null,
    ageMs: null,
    removable: false,
    removed: false
  }
  let entry: lockFile.Entry
  try {
    entry = await lockFile.readEntry(path)
  } catch (error) {
    // One unreadable file must not hide the others: report it and go on.
    return {
      ...empty,
      status: "unknown",
      stale: true,
      reasons: [`cannot be read (${lockFile.errorCode(error) ?? String(error)}): acquiring this key fails until access is fixed`]
    }
  }
  if (entry._tag === "Missing") {
    return { ...empty, status: "unknown", stale: false, reasons: ["gone while examined (released)"] }
  }
  if (entry._tag === "NotRegular") {
    return {
      ...empty,
      status: "not_a_regular_file",
      stale: true,
      reasons: [`a ${entry.kind === "symlink" ? "symbolic link" : entry.kind} named like a ${kind}: never followed or removed; check it and remove it by hand`]
    }
  }
  const reclaimer = context()
  const verdict = await lockFile.judge(entry, reclaimer)
  const { holder } = verdict
  const reasons: Array<string> = [...verdict.findings]
  if (verdict.reclaimable !== undefined) reasons.unshift(verdict.reclaimable)
  if (verdict.reclaimable === undefined && (holder.status === "alive" || holder.status === "unknown")) {
    reasons.push(...lease.staleReasons(holder.ageMs, verdict.payload?.maxHoldMs, staleMs))
  }
  if ((entry.mode & 0o077) !== 0) reasons.push(`mode ${entry.mode.toString(8).padStart(4, "0")} (locks are created 0600)`)
  const removable = verdict.reclaimable !== undefined
  const stale = removable || reasons.some((r) => r === "older_than_stale_time" || r === "past_max_hold")
  let removed = false
  if (fix && removable) {
    if (kind === "lock") {
      const result = await lockFile.reclaim(lockFile.pathsOf(directory, base), verdict.fingerprint, reclaimer)
      removed = result._tag === "Removed"
      if (!removed) reasons.push(`not removed: ${result._tag === "Busy" ? "another reclaim is in progress" : "it changed meanwhile"}`)
    } else {
      removed = await lockFile.removeStaleGuard(path, verdict.fingerprint)
      if (!removed) reasons.push("not removed: it changed meanwhile")
    }
  }
  return {
    path,
    kind,
    pid: holder.pid ?? null,
    host: holder.host ?? null,
    ownerId: holder.ownerId ?? null,
    token: verdict.payload?.token ?? null,
    status: holder.status,
    alive: holder.status === "alive" ? true : holder.status === "dead" || holder.status === "pid_reused" ? false : null,
    ageMs: holder.ageMs ?? null,
    stale,
    reasons,
    removable,
    removed
  }
}

// ---------------------------------------------------------------------------
// rendering (pure)
// ---------------------------------------------------------------------------

const baseName = (path: string) => path.slice(path.lastIndexOf("/") + 1)

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`

// Enough names to recognise the directory; the JSON report has them all.
const shownNames = 12

/**
 * The lock check for people: the directory's problems (each with what to
 * do), one line per lock or guard, the entries left alone, then a summary
 * with what to do.
 *
 * @category rendering
 * @since 0.1.0
 */
export const renderLocks = (
  directory: string,
  result: Omit<LockCheckResult, "directory">,
  options: { readonly fix: boolean }
): string => {
  const lines: Array<string> = []
  if (result.problems.length > 0) {
    lines.push(`Lock directory ${directory}: REFUSED (the file backend will not start on it)`)
    for (const problem of result.problems) {
      const advice = SessionLock.ioAdviceFor(problem.reason)
      lines.push(`  ${problem.reason} at ${problem.path}: ${problem.detail}. ${advice}`)
    }
    if (options.fix) lines.push("  Nothing was changed: --fix acts only in a directory that passes every check.")
  }
  lines.push(`Locks in ${directory}: ${plural(result.items.length, "file")}`)
  for (const item of result.items) {
    const who = item.pid === null ? "holder unknown" : `pid ${item.pid}${item.host === null ? "" : ` on ${item.host}`}`
    const state = item.status === "not_a_regular_file"
      ? "NOT A FILE"
      : item.alive === true
      ? "alive"
      : item.alive === false
      ? item.status === "pid_reused" ? "pid reused" : "dead"
      : "unknown"
    const age = item.ageMs === null ? "age ?" : `age ${lease.formatDuration(item.ageMs)}`
    const verdict = item.removed ? "REMOVED" : item.stale ? (item.removable ? "STALE (removable)" : "STALE") : "ok"
    const reasons = item.reasons.length > 0 ? ` - ${item.reasons.join("; ")}` : ""
    lines.push(`  ${item.kind === "guard" ? "[guard] " : ""}${baseName(item.path)}  ${who}  ${state}  ${age}  ${verdict}${reasons}`)
  }
  const fences = result.ignored.filter((entry) => entry.why === "fence_log").length
  const others = result.ignored.filter((entry) => entry.why !== "fence_log").map((entry) => baseName(entry.path))
  if (fences > 0) lines.push(`Left alone: ${plural(fences, "fence log")} (part of the protocol, never removed).`)
  if (others.length > 0) {
    const shown = others.slice(0, shownNames).join(", ")
    const more = others.length > shownNames ? `, and ${others.length - shownNames} more` : ""
    lines.push(`Ignored, not locks of this protocol (never read or touched): ${shown}${more}.`)
  }
  const stale = result.items.filter((item) => item.stale && !item.removed)
  const removable = stale.filter((item) => item.removable)
  const removed = result.items.filter((item) => item.removed)
  const summary = [`${result.items.length} examined`, `${stale.length} stale`]
  if (removed.length > 0) summary.push(`${removed.length} removed`)
  if (result.problems.length > 0) summary.push(`directory refused (${plural(result.problems.length, "problem")})`)
  lines.push(`Summary: ${summary.join(", ")}.`)
  if (removable.length > 0 && !options.fix && result.problems.length === 0) {
    lines.push(`Run again with --fix to remove the ${plural(removable.length, "removable lock")} (only what the lock protocol itself would reclaim).`)
  }
  const manual = stale.filter((item) => !item.removable)
  if (manual.length > 0) {
    lines.push(`${manual.length} need${manual.length === 1 ? "s" : ""} a person: a live holder past its limits is never robbed, and a non-file is never removed.`)
  }
  if (result.healthy) lines.push("Healthy.")
  return lines.join("\n")
}

/**
 * The process exit code for a check: 0 healthy, 1 otherwise (stale locks
 * remain, or the lock directory is refused).
 *
 * @category rendering
 * @since 0.1.0
 */
export const exitCodeOf = (result: CheckResult<unknown>): 0 | 1 => (result.healthy ? 0 : 1)

// ---------------------------------------------------------------------------
// command
// ---------------------------------------------------------------------------

/**
 * The doctor failed: stale locks remain or the lock directory is refused
 * (exit code 1), or it could not run (exit code 2). Its message is shown to the user.
 *
 * @category errors
 * @since 0.1.0
 */
export class DoctorFailed extends Schema.TaggedError<DoctorFailed>()("DoctorFailed", {
  exitCode: Schema.Literals([1, 2]),
  detail: Schema.String
}) {
  override get message(): string {
    return this.detail
  }
  override get [CliError.userMessage](): string {
    return this.detail
  }
  override get [Runtime.errorExitCode](): number {
    return this.exitCode
  }
}

const locks = Command.make(
  "locks",
  {
    dir: Flag.String("dir").pipe(Flag.withDescription("The lock directory to examine.")),
    fix: Flag.Boolean("fix").pipe(
      Flag.withDescription("Remove what the lock protocol would reclaim (dead holders, reused pids, old unreadable locks)."),
      Flag.withDefault(false)
    ),
    json: Flag.Boolean("json").pipe(Flag.withDescription("Print one JSON object instead of text."), Flag.withDefault(false)),
    allowSymlink: Flag.Boolean("allow-symlink").pipe(
      Flag.withDescription("Accept a lock directory that is a symbolic link (as the backend's allowSymlinkDirectory)."),
      Flag.withDefault(false)
    ),
    staleMinutes: Flag.Int("stale-minutes").pipe(
      Flag.withDescription("Report live holders older than this many minutes."),
      Flag.withDefault(30)
    )
  },
  Effect.fn("Doctor.locks")(function*({ allowSymlink, dir, fix, json, staleMinutes }) {
    if (staleMinutes <= 0) {
      return yield* new DoctorFailed({ exitCode: 2, detail: "--stale-minutes must be a positive number of minutes." })
    }
    const check = lockCheck({ directory: dir, fix, allowSymlink, staleTime: Duration.minutes(staleMinutes) })
    const result = yield* check.run.pipe(
      Effect.mapError((error) =>
        new DoctorFailed({
          exitCode: 2,
          detail: error.reason === "directory_missing"
            ? `No lock directory at ${resolve(dir)}: check --dir.`
            : error.message
        })
      )
    )
    if (json) yield* Console.log(Schema.encodeSync(LockReportJson)(reportOf(result)))
    else yield* Console.log(renderLocks(resolve(dir), result, { fix }))
    if (exitCodeOf(result) === 1) {
      const left = result.items.filter((item) => item.stale && !item.removed).length
      const refused = result.problems.length === 0
        ? []
        : [`The lock directory ${resolve(dir)} is refused (${result.problems.map((p) => p.reason).join(", ")}).`]
      const stale = left === 0 ? [] : [`${plural(left, "stale lock")} remain${left === 1 ? "s" : ""} in ${resolve(dir)}.`]
      return yield* new DoctorFailed({ exitCode: 1, detail: [...refused, ...stale].join(" ") })
    }
  })
).pipe(Command.withDescription("Check a lock directory and list its session locks; --fix removes the reclaimable ones."))

/**
 * `doctor` and its subcommands.
 *
 * @category commands
 * @since 0.1.0
 */
export const command = Command.make("doctor").pipe(
  Command.withDescription("Check a deployment's health."),
  Command.withSubcommands([locks])
)

/**
 * The package's command line: `effect-session-runtime doctor locks ...`.
 *
 * @category commands
 * @since 0.1.0
 */
export const cli = Command.make("effect-session-runtime").pipe(
  Command.withDescription("Operate an effect-session-runtime deployment."),
  Command.withSubcommands([command])
)
