/**
 * Asynchronous process probes for lock holders: is a pid alive, and when did
 * the process behind it start (Linux `/proc/<pid>/stat`, field 22, in clock
 * ticks since boot)? Comparing that start time with the one a holder wrote
 * into its lock tells a live holder from an unrelated process that reuses
 * its pid.
 *
 * Nothing here blocks the event loop: `/proc` is read with `fs/promises`,
 * and the portable fallback is `process.kill(pid, 0)`, a signal-less system
 * call that returns at once. No child process is ever spawned. Probes are
 * memoised per pid for a short time, and concurrent probes of one pid share
 * one read.
 *
 * @since 0.1.0
 */
import { readFile } from "node:fs/promises"

/**
 * What a probe found.
 *
 * @internal
 */
export type ProcessState =
  | { readonly _tag: "Alive"; readonly startTime: number | undefined }
  | { readonly _tag: "Dead" }
  | { readonly _tag: "Unknown"; readonly detail: string }

/**
 * The process state letter (field 3) and start time (field 22) of a
 * `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and
 * may itself contain spaces and parentheses, so fields are counted from the
 * last `)`.
 *
 * @internal
 */
export const parseStat = (text: string): { readonly state: string; readonly startTime: number } | undefined => {
  const close = text.lastIndexOf(")")
  if (close < 0) return undefined
  const fields = text.slice(close + 1).trim().split(/\s+/)
  // fields[0] is field 3 (state); field 22 is fields[19].
  const state = fields[0]
  const start = fields[19]
  if (state === undefined || start === undefined || !/^\d+$/.test(start)) return undefined
  return { state, startTime: Number(start) }
}

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error ? String((error as { code: unknown }).code) : undefined

/**
 * Probes one pid, once, without memoisation.
 *
 * Gotchas: a zombie (`Z`) or dead (`X`) entry in `/proc` counts as dead: a
 * holder killed with SIGKILL whose parent has not reaped it yet can no longer
 * touch its lock.
 *
 * @internal
 */
export const probeProcess = async (pid: number): Promise<ProcessState> => {
  if (!Number.isSafeInteger(pid) || pid <= 0) return { _tag: "Dead" }
  if (process.platform === "linux") {
    try {
      const text = await readFile(`/proc/${pid}/stat`, { encoding: "utf8" })
      const parsed = parseStat(text)
      if (parsed === undefined) return { _tag: "Unknown", detail: `unparsable /proc/${pid}/stat` }
      if (parsed.state === "Z" || parsed.state === "X" || parsed.state === "x") return { _tag: "Dead" }
      return { _tag: "Alive", startTime: parsed.startTime }
    } catch (error) {
      const code = errorCode(error)
      if (code === "ENOENT" || code === "ESRCH") return { _tag: "Dead" }
      // No /proc (a container without it mounted): fall through to the signal probe.
      if (code !== "ENOTDIR" && code !== "EACCES") return { _tag: "Unknown", detail: `reading /proc/${pid}/stat: ${code}` }
    }
  }
  try {
    process.kill(pid, 0)
    return { _tag: "Alive", startTime: undefined }
  } catch (error) {
    const code = errorCode(error)
    if (code === "ESRCH") return { _tag: "Dead" }
    if (code === "EPERM") return { _tag: "Alive", startTime: undefined }
    return { _tag: "Unknown", detail: `signal probe: ${code}` }
  }
}

/**
 * A memoised probe: each pid is probed at most once per `ttlMs` (by the given
 * clock), and concurrent callers share one probe.
 *
 * @internal
 */
export const makeProcessProbe = (options: {
  readonly ttlMs: number
  readonly now: () => number
  readonly probe?: ((pid: number) => Promise<ProcessState>) | undefined
  readonly capacity?: number | undefined
}): (pid: number) => Promise<ProcessState> => {
  const probe = options.probe ?? probeProcess
  const capacity = options.capacity ?? 4096
  const entries = new Map<number, { readonly at: number; readonly result: Promise<ProcessState> }>()
  return (pid) => {
    const now = options.now()
    const entry = entries.get(pid)
    if (entry !== undefined && now - entry.at < options.ttlMs && now >= entry.at) return entry.result
    if (entries.size >= capacity) {
      for (const [key, value] of entries) {
        if (now - value.at >= options.ttlMs) entries.delete(key)
      }
      if (entries.size >= capacity) entries.clear()
    }
    const result = probe(pid)
    entries.set(pid, { at: now, result })
    return result
  }
}
