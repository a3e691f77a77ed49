/**
 * The attacker's side of the lock directory tests: another local user
 * (`nobody`, uid 65534), as a real child process with dropped privileges.
 * The tests run as root, which may drop to any uid; `spawn` with `uid` and
 * `gid` also clears the supplementary groups.
 */
import { spawn } from "node:child_process"
import { chmod, mkdtemp } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** The other user's uid and gid. */
export const otherUid = 65534

/** Whether this process may act as another user (the tests need root). */
export const canActAsOtherUser = process.getuid?.() === 0

export interface Ran {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `node <args>` as the other user, with `env` added to this process's environment. */
export const runAsOtherUser = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {}
): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      uid: otherUid,
      gid: otherUid,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += String(c)))
    child.stderr.on("data", (c) => (stderr += String(c)))
    child.once("error", reject)
    child.once("exit", (code) => resolve({ code, stdout, stderr }))
  })

/**
 * Runs a short script as the other user and fails when it fails. The script
 * gets `fs` (`node:fs/promises`) and its arguments as `args`.
 */
export const asOtherUser = async (script: string, ...args: ReadonlyArray<string>): Promise<void> => {
  const ran = await runAsOtherUser([
    "--input-type=module",
    "-e",
    `import * as fs from "node:fs/promises"\nconst args = process.argv.slice(1)\n${script}`,
    ...args
  ])
  if (ran.code !== 0) throw new Error(`as uid ${otherUid}: exit ${ran.code}: ${ran.stderr}`)
}

/**
 * A shared temporary directory like `/tmp` (mode 1777: everyone may create
 * entries, nobody may remove another's), for the other user to squat in.
 */
export const makeSharedTmp = async (): Promise<string> => {
  const dir = await mkdtemp(join(tmpdir(), "shared-tmp-"))
  await chmod(dir, 0o1777)
  return dir
}
