/**
 * The doctor: checks an operator runs against a deployment, as data (a
 * {@link Check} has a name and an effect producing typed findings), a pure
 * renderer for people, JSON for machines, and the `effect/cli` command
 * `doctor locks --dir <dir> [--fix] [--json]`.
 *
 * The lock check lists every lock (and reclaim guard) in a lock directory
 * with its holder (pid, host, alive or dead, age), the stale verdict and its
 * reasons. `--fix` removes exactly what the lock protocol itself would
 * reclaim, through the same race-free reclaim path as an acquire, and never
 * touches a file that is not a lock: symbolic links and directories named
 * like a lock are reported, never followed or removed, and every other file
 * is ignored.
 *
 * Exit codes: 0 when healthy (or everything stale was fixed), 1 when stale
 * locks remain, 2 on bad usage (unknown flags, a missing directory).
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
import * as lockFile from "./internal/lockFile.ts"
import type * as SessionLock from "./SessionLock.ts"
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
 * The JSON form of the lock check's findings (`--json`).
 *
 * @category codecs
 * @since 0.1.0
 */
export const LockFindingsJson = Schema.fromJsonString(Schema.Array(LockFinding))

/**
 * Options of the lock check.
 *
 * @category config
 * @since 0.1.0
 */
export interface LockCheckOptions {
  readonly directory: string
  /** Remove what the lock protocol would reclaim. @default false */
  readonly fix?: boolean | undefined
  /** A live holder older than this is reported stale (never removed). @default "30 minutes" */
  readonly staleTime?: Duration.Input | undefined
  /** As for the file backend. @default "10 seconds" */
  readonly grace?: Duration.Input | undefined
}

const kindOf = (name: string): "lock" | "guard" | undefined =>
  name.endsWith(lockFile.lockSuffix) ? "lock" : name.endsWith(lockFile.guardSuffix) ? "guard" : undefined

const baseOf = (name: string, kind: "lock" | "guard") =>
  name.slice(0, name.length - (kind === "lock" ? lockFile.lockSuffix : lockFile.guardSuffix).length)

/**
 * The lock check over a directory.
 *
 * @category checks
 * @since 0.1.0
 */
export const lockCheck = (options: LockCheckOptions): Check<LockFinding, SessionLock.LockIoError> => ({
  name: "locks",
  run: Effect.gen(function*() {
    const directory = resolve(options.directory)
    const staleMs = Duration.toMillis(Duration.fromInputUnsafe(options.staleTime ?? "30 minutes"))
    const world = yield* SessionLockFile.makeContext({ grace: options.grace })
    const names = yield* Effect.tryPromise({
      try: () => readdir(directory),
      catch: SessionLockFile.toIoError("list lock directory", directory)
    })
    const items: Array<LockFinding> = []
    for (const name of names.sort()) {
      const kind = kindOf(name)
      if (kind === undefined) continue
      const path = `${directory}/${name}`
      const finding = yield* Effect.tryPromise({
        try: () => examine(directory, name, kind, staleMs, options.fix === true, world.context),
        catch: SessionLockFile.toIoError("examine", path)
      })
      items.push(finding)
    }
    return { name: "locks", healthy: items.every((item) => !item.stale || item.removed), items }
  })
})

const examine = async (
  directory: string,
  name: string,
  kind: "lock" | "guard",
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
      const result = await lockFile.reclaim(lockFile.pathsOf(directory, baseOf(name, kind)), verdict.fingerprint, reclaimer)
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

/**
 * The lock check's findings for people: one line per file, then a summary
 * with what to do.
 *
 * @category rendering
 * @since 0.1.0
 */
export const renderLocks = (
  directory: string,
  result: CheckResult<LockFinding>,
  options: { readonly fix: boolean }
): string => {
  const lines = [`Locks in ${directory}: ${result.items.length} file${result.items.length === 1 ? "" : "s"}`]
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
  const stale = result.items.filter((item) => item.stale && !item.removed)
  const removable = stale.filter((item) => item.removable)
  const removed = result.items.filter((item) => item.removed)
  const summary = [`${result.items.length} examined`, `${stale.length} stale`]
  if (removed.length > 0) summary.push(`${removed.length} removed`)
  lines.push(`Summary: ${summary.join(", ")}.`)
  if (removable.length > 0 && !options.fix) {
    lines.push(`Run again with --fix to remove the ${removable.length} removable lock${removable.length === 1 ? "" : "s"} (only what the lock protocol itself would reclaim).`)
  }
  const manual = stale.filter((item) => !item.removable)
  if (manual.length > 0) {
    lines.push(`${manual.length} need${manual.length === 1 ? "s" : ""} a person: a live holder past its limits is never robbed, and a non-file is never removed.`)
  }
  if (stale.length === 0) lines.push("Healthy.")
  return lines.join("\n")
}

/**
 * The process exit code for a lock check: 0 healthy, 1 stale locks remain.
 *
 * @category rendering
 * @since 0.1.0
 */
export const exitCodeOf = (result: CheckResult<unknown>): 0 | 1 => (result.healthy ? 0 : 1)

// ---------------------------------------------------------------------------
// command
// ---------------------------------------------------------------------------

/**
 * The doctor failed: stale locks remain (exit code 1) or it could not run
 * (exit code 2). Its message is shown to the user.
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
    json: Flag.Boolean("json").pipe(Flag.withDescription("Print one JSON array instead of text."), Flag.withDefault(false)),
    staleMinutes: Flag.Int("stale-minutes").pipe(
      Flag.withDescription("Report live holders older than this many minutes."),
      Flag.withDefault(30)
    )
  },
  Effect.fn("Doctor.locks")(function*({ dir, fix, json, staleMinutes }) {
    if (staleMinutes <= 0) {
      return yield* new DoctorFailed({ exitCode: 2, detail: "--stale-minutes must be a positive number of minutes." })
    }
    const result = yield* lockCheck({ directory: dir, fix, staleTime: Duration.minutes(staleMinutes) }).run.pipe(
      Effect.mapError((error) =>
        new DoctorFailed({
          exitCode: 2,
          detail: error.reason === "directory_missing"
            ? `No lock directory at ${resolve(dir)}: check --dir.`
            : error.message
        })
      )
    )
    if (json) yield* Console.log(Schema.encodeSync(LockFindingsJson)(result.items))
    else yield* Console.log(renderLocks(resolve(dir), result, { fix }))
    if (exitCodeOf(result) === 1) {
      const left = result.items.filter((item) => item.stale && !item.removed).length
      return yield* new DoctorFailed({
        exitCode: 1,
        detail: `${left} stale lock${left === 1 ? "" : "s"} remain${left === 1 ? "s" : ""} in ${resolve(dir)}.`
      })
    }
  })
).pipe(Command.withDescription("List the session locks of a lock directory; --fix removes the reclaimable ones."))

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
