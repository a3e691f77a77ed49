/**
 * Runs every benchmark suite (`bench/*.bench.ts`) in one process, so each
 * figure is a ratio against a baseline measured in the same run.
 *
 *   npm run bench                 human-readable tables
 *   npm run bench -- --json       one JSON object with every figure
 *   npm run bench -- --only lock  suites whose file name contains "lock"
 */
import { readdir } from "node:fs/promises"
import { fileURLToPath, pathToFileURL } from "node:url"
import { join } from "node:path"

export interface SuiteContext {
  /** Print a human line (suppressed under --json). */
  readonly log: (line: string) => void
  /** Smaller workloads, for CI smoke runs. */
  readonly quick: boolean
}

export interface Suite {
  readonly name: string
  readonly run: (context: SuiteContext) => Promise<Record<string, number | string | boolean>>
}

const args = process.argv.slice(2)
const json = args.includes("--json")
const quick = args.includes("--quick")
const onlyIndex = args.indexOf("--only")
const only = onlyIndex >= 0 ? args[onlyIndex + 1] : undefined

const dir = fileURLToPath(new URL(".", import.meta.url))
const files = (await readdir(dir)).filter((f) => f.endsWith(".bench.ts") && (only === undefined || f.includes(only))).sort()
const figures: Record<string, number | string | boolean> = {
  node: process.version,
  quick
}
const log = (line: string) => {
  if (!json) console.log(line)
}
for (const file of files) {
  const suite = (await import(pathToFileURL(join(dir, file)).href)).default as Suite
  log(`\n## ${suite.name} (${file})`)
  const result = await suite.run({ log, quick })
  for (const [k, v] of Object.entries(result)) {
    figures[k] = v
    log(`  ${k.padEnd(44)} ${typeof v === "number" ? Number(v.toPrecision(4)) : v}`)
  }
}
if (json) console.log(JSON.stringify(figures))
process.exit(0)
