import { assert, describe, it } from "@effect/vitest"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startWorker, workerPath } from "./utils/lockProcesses.ts"

describe("SessionLanes", () => {
  describe("across processes", () => {
    it("two servers sharing a lock directory never run turns of one session at the same time", async () => {
      const dir = await mkdtemp(join(tmpdir(), "esr-lanes-"))
      const log = join(dir, "turns.log")
      const keys = ["agent:shared:1", "agent:shared:2"]
      try {
        const workers = [0, 1, 2].map(() =>
          startWorker([workerPath("lane-turns.ts"), join(dir, "locks"), log, "40", ...keys])
        )
        const exits = await Promise.all(workers.map((w) => w.exited))
        for (const [i, exit] of exits.entries()) {
          assert.strictEqual(exit.code, 0, `server ${i} failed: ${workers[i]!.stderr().slice(0, 2000)}`)
        }
        const lines = (await readFile(log, "utf8")).trim().split("\n")
        assert.strictEqual(lines.length, 3 * 2 * 40 * 2)
        const open = new Map<string, string>()
        const tokens = new Map<string, Array<number>>()
        for (const line of lines) {
          const [what, key, pid, n, token] = line.split(" ")
          const who = `${pid}/${n}`
          if (what === "begin") {
            assert.isUndefined(open.get(key!), `overlap on ${key}: ${who} began while ${open.get(key!)} ran`)
            open.set(key!, who)
            tokens.set(key!, [...(tokens.get(key!) ?? []), Number(token)])
          } else {
            assert.strictEqual(open.get(key!), who)
            open.delete(key!)
          }
        }
        for (const [key, seen] of tokens) {
          assert.strictEqual(seen.length, 3 * 40)
          for (let i = 1; i < seen.length; i++) {
            assert.isAbove(seen[i]!, seen[i - 1]!, `fencing tokens of ${key} strictly increase`)
          }
        }
      } finally {
        await rm(dir, { recursive: true, force: true })
      }
    }, 60_000)
  })
})
