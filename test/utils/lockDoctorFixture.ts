/**
 * A lock directory with every case the doctor must handle, and a directory
 * outside it that nothing may touch.
 */
import { createHash } from "node:crypto"
import { chmod, lstat, mkdir, readdir, readFile, symlink, utimes, writeFile } from "node:fs/promises"
import { hostname } from "node:os"
import { deadPid, selfStartTime } from "./lockFixtures.ts"

const payload = (fields: Record<string, unknown>) =>
  JSON.stringify({
    v: 1,
    pid: process.pid,
    startTime: null,
    host: hostname(),
    ownerId: "fixture",
    token: 1,
    createdAt: Date.now(),
    maxHoldMs: 3_600_000 * 4,
    leaseMs: 30_000,
    ...fields
  })

const old = async (path: string) => {
  const then = new Date(Date.now() - 120_000)
  await utimes(path, then, then)
}

/** Files the doctor must remove with --fix (as root; mode-0000 files cannot be read otherwise). */
export const removableNames = (root: boolean) =>
  [
    "binary.lock",
    "dead.lock",
    "empty.lock",
    "huge.lock",
    "invalid-json.lock",
    ...(root ? ["perm.lock"] : []),
    "reused.lock",
    "stale.reclaim"
  ].sort()

/** Files that must remain after --fix. */
export const remainingNames = (root: boolean) =>
  [
    "dir.lock",
    "link.lock",
    "live-old.lock",
    "live.lock",
    "notes.txt",
    ...(root ? [] : ["perm.lock"]),
    "session.fence",
    "something.lock.bak",
    "young-empty.lock"
  ].sort()

/** Builds the hostile fixture in `dir`, with `outside` holding the files links point to. */
export const makeDoctorFixture = async (dir: string, outside: string): Promise<void> => {
  const start = await selfStartTime()
  await writeFile(`${outside}/victim`, payload({ pid: deadPid }), { mode: 0o600 })
  const file = async (name: string, content: string | Uint8Array, age = true) => {
    await writeFile(`${dir}/${name}`, content, { mode: 0o600 })
    if (age) await old(`${dir}/${name}`)
  }
  await file("empty.lock", "")
  await file("invalid-json.lock", "{\"v\":1,")
  await file("binary.lock", Buffer.from([0x00, 0xff, 0xfe, 0x80]))
  await file("huge.lock", Buffer.alloc(10 * 1024 * 1024, 0x7b))
  await symlink(`${outside}/victim`, `${dir}/link.lock`)
  await mkdir(`${dir}/dir.lock`)
  await writeFile(`${dir}/dir.lock/inside`, "inside")
  await file("perm.lock", payload({ pid: deadPid }))
  await chmod(`${dir}/perm.lock`, 0o000)
  await file("dead.lock", payload({ pid: deadPid }))
  await file("reused.lock", payload({ startTime: (start ?? 0) + 777 }))
  await file("live.lock", payload({ startTime: start }), false)
  await file("live-old.lock", payload({ startTime: start, createdAt: Date.now() - 2 * 3_600_000 }), false)
  await file("young-empty.lock", "", false)
  await file("stale.reclaim", payload({ pid: deadPid, ownerId: "reclaimer" }))
  await file("notes.txt", "operator notes", false)
  await file("session.fence", "\n\n\n", false)
  await file("something.lock.bak", payload({ pid: deadPid }))
}

/** Names, kinds, sizes, mtimes and content hashes of a directory's entries. */
export const snapshotDir = async (dir: string): Promise<string> => {
  const lines: Array<string> = []
  for (const name of (await readdir(dir)).sort()) {
    const s = await lstat(`${dir}/${name}`)
    const hash = s.isFile() && (s.mode & 0o400) !== 0
      ? createHash("sha256").update(await readFile(`${dir}/${name}`)).digest("hex")
      : ""
    lines.push(`${name} ${s.mode} ${s.size} ${s.mtimeMs} ${hash}`)
  }
  return lines.join("\n")
}
