/**
 * Child processes for the lock tests: spawned asynchronously with this
 * Node (`process.execPath`), their stdout collected as lines, killed when the
 * test's scope closes.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"

export const workerPath = (name: string): string => fileURLToPath(new URL(`../workers/${name}`, import.meta.url))

export interface Worker {
  readonly child: ChildProcess
  readonly lines: ReadonlyArray<string>
  readonly stderr: () => string
  /** Resolves with the first stdout line matching, or rejects after `timeoutMs`. */
  readonly waitForLine: (pattern: RegExp, timeoutMs?: number) => Promise<string>
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

export const startWorker = (
  args: ReadonlyArray<string>,
  options: { readonly ipc?: boolean | undefined } = {}
): Worker => {
  const child = spawn(process.execPath, args, {
    stdio: options.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"]
  })
  const lines: Array<string> = []
  const listeners = new Set<(line: string) => void>()
  let stderr = ""
  child.stderr!.on("data", (chunk) => {
    stderr += String(chunk)
  })
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(line)
    for (const listener of listeners) listener(line)
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  const waitForLine = (pattern: RegExp, timeoutMs = 15_000) =>
    new Promise<string>((resolve, reject) => {
      const found = lines.find((line) => pattern.test(line))
      if (found !== undefined) return resolve(found)
      const timer = setTimeout(() => {
        listeners.delete(listener)
        reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms; stderr: ${stderr}`))
      }, timeoutMs)
      const listener = (line: string) => {
        if (!pattern.test(line)) return
        clearTimeout(timer)
        listeners.delete(listener)
        resolve(line)
      }
      listeners.add(listener)
      void exited.then(({ code, signal }) => {
        if (!listeners.has(listener)) return
        clearTimeout(timer)
        listeners.delete(listener)
        reject(new Error(`worker exited (${code ?? signal}) before printing ${pattern}; stderr: ${stderr}`))
      })
    })
  return { child, lines, stderr: () => stderr, waitForLine, exited }
}

/** A worker killed (SIGKILL) when the scope closes, if still running. */
export const worker = (
  args: ReadonlyArray<string>,
  options?: { readonly ipc?: boolean | undefined }
): Effect.Effect<Worker, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => startWorker(args, options)),
    (w) =>
      Effect.promise(async () => {
        if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL")
        await w.exited
      })
  )
