import { assert, describe, it } from "@effect/vitest"
import { readFile } from "node:fs/promises"

const read = (path: string) => readFile(new URL(`../${path}`, import.meta.url), "utf8")

describe("README", () => {
  it("its quickstart is examples/01_minimal-runtime.ts, imported from the package", async () => {
    const readme = await read("README.md")
    const quickstart = readme.split("## Quickstart")[1]?.split("```ts\n")[1]?.split("```")[0]
    assert.isDefined(quickstart)
    const example = (await read("examples/01_minimal-runtime.ts"))
      .replace(/^\/\*\*[\s\S]*?\*\/\n/, "")
      .replace(`from "../src/index.ts"`, `from "effect-session-runtime"`)
    assert.strictEqual(quickstart!.trim(), example.trim())
  })

  it("starts with the two set-up commands", async () => {
    const readme = await read("README.md")
    const firstBlock = readme.split("```sh\n")[1]?.split("```")[0] ?? ""
    const commands = firstBlock.trim().split("\n").map((line) => line.split("#")[0]!.trim())
    assert.deepStrictEqual(commands, ["npm install && npm start", "npm test"])
  })

  it("links only to docs that exist", async () => {
    const readme = await read("README.md")
    const links = [...readme.matchAll(/\]\(((?:docs|examples)\/[^)]+)\)/g)].map((m) => m[1]!)
    assert.isAbove(links.length, 5)
    for (const link of links) await read(link)
  })
})
