/**
 * A session write lock as the field's gateways implemented it, kept only as
 * the benchmark's baseline: waiters poll every 50 ms and, on every poll,
 * inspect the holder synchronously (read the lock file, check the pid, and
 * run `ps` for the holder's command line, as on macOS). Every waiter blocks
 * the event loop for the length of a child process on every poll; with many
 * waiters, nothing else runs. Do not use it.
 */
import { spawnSync } from "node:child_process"
import { readFileSync, unlinkSync, writeFileSync } from "node:fs"

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Writes a baseline lock naming `pid` as its holder (as a holder process would). */
export const hold = (path: string, pid: number): void => {
  writeFileSync(path, JSON.stringify({ pid, createdAt: Date.now() }), { flag: "wx" })
}

export interface FieldLockOptions {
  readonly pollMs?: number
  /** Stops waiting when this returns true (the bench ends the storm). */
  readonly cancelled?: () => boolean
}

/**
 * Waits for the lock at `path`; resolves with a release function, or with
 * `undefined` when cancelled.
 */
export const acquire = async (
  path: string,
  options: FieldLockOptions = {}
): Promise<(() => void) | undefined> => {
  const pollMs = options.pollMs ?? 50
  while (options.cancelled?.() !== true) {
    try {
      writeFileSync(path, JSON.stringify({ pid: process.pid, createdAt: Date.now() }), { flag: "wx" })
      return () => unlinkSync(path)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
    }
    // The field's holder inspection, synchronous, on every poll.
    try {
      const holder = JSON.parse(readFileSync(path, "utf8")) as { pid: number }
      let alive = true
      try {
        process.kill(holder.pid, 0)
      } catch {
        alive = false
      }
      if (!alive) {
        unlinkSync(path)
        continue
      }
      spawnSync("ps", ["-o", "command=", "-p", String(holder.pid)], { encoding: "utf8" })
    } catch {
      // A lock that vanished or is half-written: poll again.
    }
    await sleep(pollMs)
  }
  return undefined
}
