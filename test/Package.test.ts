/**
 * The package as a user gets it: `npm pack` (which builds on `prepack`), the
 * tarball installed into a fresh project next to `effect` alone, a strict
 * program type-checked against the installed `.d.ts` and run, every entry
 * point imported, and the bin run through `npx`, first without its optional
 * peer (one line saying what to install), then with it.
 *
 * npm runs with `--prefer-offline`, so the dependencies come from the npm
 * cache the repository was installed from.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Effect, FileSystem, Layer, Schema, Stream } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { builtinModules } from "node:module"
import { delimiter, dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as Doctor from "../src/Doctor.ts"
import * as RequireNode from "../scripts/require-node.mjs"

const repository = fileURLToPath(new URL("..", import.meta.url))
const packageName = "effect-session-runtime"

// Entry points that must need `effect` alone. Any other entry point (a file
// `src/<lowercase>.ts`) may also use a declared peer dependency.
const effectOnly = new Set([".", "./observability", "./sql", "./cluster", "./cli", "./ai"])

// Every process runs on this test's Node (>= 22.19) and sees no npm_* settings
// of an enclosing `npm test`, as in a fresh shell.
const environment: Record<string, string> = {
  ...Object.fromEntries(
    Object.entries(process.env).filter((entry): entry is [string, string] =>
      entry[1] !== undefined && !entry[0].toLowerCase().startsWith("npm_")
    )
  ),
  PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ""}`
}

interface Result {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const text = <E>(stream: Stream.Stream<Uint8Array, E>) => stream.pipe(Stream.decodeText(), Stream.mkString)

const exec = (command: string, args: ReadonlyArray<string>, cwd: string) =>
  Effect.gen(function*() {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const child = yield* spawner.spawn(ChildProcess.make(command, args, { cwd, env: environment }))
    const [stdout, stderr, code] = yield* Effect.all([text(child.stdout), text(child.stderr), child.exitCode], {
      concurrency: 3
    })
    return { code: Number(code), stdout, stderr } satisfies Result
  }).pipe(Effect.scoped, Effect.orDie)

const succeeds = (command: string, args: ReadonlyArray<string>, cwd: string) =>
  Effect.tap(exec(command, args, cwd), (result) =>
    Effect.sync(() =>
      assert.strictEqual(result.code, 0, `${command} ${args.join(" ")}\n${result.stdout}\n${result.stderr}`)
    ))

const installedVersion = (name: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const manifest = yield* fs.readFileString(join(repository, "node_modules", name, "package.json"))
    return (JSON.parse(manifest) as { version: string }).version
  }).pipe(Effect.orDie)

const npmInstall = (project: string, specs: ReadonlyArray<string>) =>
  succeeds("npm", ["install", ...specs, "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], project)

/** The entry points, from the repository's entry files: `src/index.ts` is `.`, `src/sql.ts` is `./sql`. */
const entryPoints = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const files = yield* fs.readDirectory(join(repository, "src"))
  return files
    .filter((file) => /^[a-z][A-Za-z]*\.ts$/.test(file) && file !== "bin.ts")
    .map((file) => file.slice(0, -".ts".length))
    .map((name) => ({ name, subpath: name === "index" ? "." : `./${name}` }))
    .sort((a, b) => a.subpath.localeCompare(b.subpath))
}).pipe(Effect.orDie)

/** A fresh project in a temporary directory with the packed tarball and `effect` installed. */
class Consumer extends Context.Service<Consumer, {
  readonly project: string
  readonly installed: string
  readonly tarballFiles: ReadonlyArray<string>
}>()("test/Package/Consumer") {}

const consumerLayer = Layer.effect(
  Consumer,
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const root = yield* fs.makeTempDirectoryScoped({ prefix: "esr-consumer-" })
    const packs = join(root, "pack")
    const project = join(root, "project")
    yield* fs.makeDirectory(packs)
    yield* fs.makeDirectory(project)
    // No build left from before: the tarball has what `prepack` builds, or nothing.
    yield* fs.remove(join(repository, "dist"), { recursive: true, force: true })
    const packed = yield* succeeds("npm", ["pack", "--json", "--pack-destination", packs], repository)
    const manifest = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("\n[") + 1)) as ReadonlyArray<{
      readonly filename: string
      readonly files: ReadonlyArray<{ readonly path: string }>
    }>
    const tarball = join(packs, manifest[0]!.filename)
    yield* fs.writeFileString(
      join(project, "package.json"),
      JSON.stringify({ name: "consumer", private: true, type: "module" })
    )
    yield* npmInstall(project, [tarball, `effect@${yield* installedVersion("effect")}`])
    return {
      project,
      installed: join(project, "node_modules", packageName),
      tarballFiles: manifest[0]!.files.map((file) => file.path)
    }
  }).pipe(Effect.orDie)
).pipe(Layer.provideMerge(NodeServices.layer))

// A strict user program: the core from the root with a file lock, the other
// entry points by name, and every entry point's types resolved.
const program = (entries: ReadonlyArray<{ readonly name: string; readonly subpath: string }>, lockDir: string) =>
  `import { Effect } from "effect"
import { ActivityTracker, SessionKey, SessionLanes, SessionRuntime } from "${packageName}"
import { StabilityLog } from "${packageName}/observability"
import { SessionLockSql } from "${packageName}/sql"
import { ClusterSessions } from "${packageName}/cluster"
import { Doctor } from "${packageName}/cli"
${
    entries.map(({ name, subpath }) =>
      `import * as entry_${name} from "${packageName}${subpath === "." ? "" : subpath.slice(1)}"`
    ).join("\n")
  }

const key: SessionKey.SessionKey = SessionKey.makeUnsafe("agent:main:consumer:1")
const turn = ActivityTracker.tool({ name: "search" }, Effect.succeed("3 results"))
const runtime = SessionRuntime.layer({ lock: { directory: ${JSON.stringify(lockDir)} }, watchdog: false })

const program = Effect.gen(function*() {
  const answer: string = yield* SessionLanes.run(key, turn)
  const log = yield* StabilityLog.StabilityLog
  const summary = yield* log.summary
  return { answer, events: summary.total }
})

const { answer, events } = await Effect.runPromise(program.pipe(Effect.provide(runtime)))
const entries: ReadonlyArray<object> = [${entries.map(({ name }) => `entry_${name}`).join(", ")}]
console.log(JSON.stringify({
  answer,
  events,
  entries: entries.length,
  lockSql: typeof SessionLockSql.layer,
  cluster: typeof ClusterSessions.layer,
  doctor: typeof Doctor.cli
}))
`

const strictTsconfig = {
  compilerOptions: {
    target: "ES2023",
    lib: ["ES2024", "DOM"],
    module: "NodeNext",
    moduleResolution: "NodeNext",
    types: [],
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    verbatimModuleSyntax: true,
    erasableSyntaxOnly: true,
    skipLibCheck: false,
    noEmit: true
  },
  files: ["main.ts"]
}

/** Package names (not `node:` builtins) that `file` reaches through static imports of the installed package. */
const staticPackages = (installed: string, file: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const seen = new Set<string>()
    const packages = new Set<string>()
    const pending = [join(installed, file)]
    while (pending.length > 0) {
      const path = pending.pop()!
      if (seen.has(path)) continue
      seen.add(path)
      const source = yield* fs.readFileString(path)
      const specifiers = [
        ...source.matchAll(/^\s*(?:import|export)\s[^"'`;]*?\sfrom\s*["']([^"']+)["']/gm),
        ...source.matchAll(/^\s*import\s*["']([^"']+)["']/gm)
      ].map((match) => match[1]!)
      for (const specifier of specifiers) {
        if (specifier.startsWith(".")) pending.push(join(dirname(path), specifier))
        else if (!specifier.startsWith("node:") && !builtinModules.includes(specifier)) {
          const parts = specifier.split("/")
          packages.add(specifier.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!)
        }
      }
    }
    return [...packages].sort()
  }).pipe(Effect.orDie)

describe("Package", () => {
  layer(consumerLayer, { excludeTestServices: true, timeout: "120 seconds" })("installed from its tarball", (it) => {
    it.effect("ships built JS, declarations and maps for every entry point, the bin, LICENSE and README", () =>
      Effect.gen(function*() {
        const { tarballFiles } = yield* Consumer
        const files = new Set(tarballFiles)
        for (const required of ["package.json", "LICENSE", "README.md", "dist/bin.js"]) {
          assert.isTrue(files.has(required), `${required} is not in the tarball`)
        }
        for (const { name } of yield* entryPoints) {
          for (const suffix of [".js", ".js.map", ".d.ts", ".d.ts.map"]) {
            assert.isTrue(files.has(`dist/${name}${suffix}`), `dist/${name}${suffix} is not in the tarball`)
          }
        }
        assert.isEmpty(tarballFiles.filter((path) => path.startsWith("test/") || path.endsWith(".test.ts")))
      }))

    it.effect("every entry point reaches only `effect` through static imports (others only declared peers)", () =>
      Effect.gen(function*() {
        const { installed } = yield* Consumer
        const fs = yield* FileSystem.FileSystem
        const manifest = JSON.parse(yield* fs.readFileString(join(installed, "package.json")).pipe(Effect.orDie)) as {
          readonly peerDependencies: Record<string, string>
        }
        const peers = Object.keys(manifest.peerDependencies)
        for (const { name, subpath } of yield* entryPoints) {
          const packages = yield* staticPackages(installed, `dist/${name}.js`)
          if (effectOnly.has(subpath)) assert.deepStrictEqual(packages, ["effect"], `${subpath} imports ${packages}`)
          else assert.includeMembers(peers, packages, `${subpath} imports undeclared packages: ${packages}`)
        }
      }))

    it.effect("a strict program type-checks against the installed declarations and runs with only effect", () =>
      Effect.gen(function*() {
        const { project } = yield* Consumer
        const fs = yield* FileSystem.FileSystem
        const entries = yield* entryPoints
        const lockDir = join(project, "locks")
        yield* fs.writeFileString(join(project, "main.ts"), program(entries, lockDir)).pipe(Effect.orDie)
        yield* fs.writeFileString(join(project, "tsconfig.json"), JSON.stringify(strictTsconfig)).pipe(Effect.orDie)
        const tsc = join(repository, "node_modules", "typescript", "bin", "tsc")
        yield* succeeds(process.execPath, [tsc, "-p", "tsconfig.json"], project)
        const run = yield* succeeds(process.execPath, ["main.ts"], project)
        const output = JSON.parse(run.stdout.trim()) as Record<string, unknown>
        assert.deepStrictEqual(output, {
          answer: "3 results",
          events: output.events,
          entries: entries.length,
          lockSql: "function",
          cluster: "function",
          doctor: "object"
        })
        assert.isNumber(output.events)
      }))

    it.effect("exports package.json and the entry points; internal modules and the bin are not importable", () =>
      Effect.gen(function*() {
        const { project } = yield* Consumer
        const probe = (specifier: string, attributes = "{}") =>
          exec(process.execPath, [
            "--input-type=module",
            "-e",
            `import(${JSON.stringify(specifier)}, { with: ${attributes} })` +
            `.then(() => console.log("ok"), (e) => console.log(e.code))`
          ], project).pipe(Effect.map((result) => result.stdout.trim()))
        assert.strictEqual(yield* probe(`${packageName}/package.json`, `{ type: "json" }`), "ok")
        assert.strictEqual(yield* probe(`${packageName}/internal/lease`), "ERR_PACKAGE_PATH_NOT_EXPORTED")
        assert.strictEqual(yield* probe(`${packageName}/bin`), "ERR_PACKAGE_PATH_NOT_EXPORTED")
        assert.strictEqual(yield* probe(`${packageName}/SessionLock`), "ok")
      }))

    it.effect("the bin says in one line to install @effect/platform-node, then runs the doctor once it is there", () =>
      Effect.gen(function*() {
        const { project } = yield* Consumer
        const fs = yield* FileSystem.FileSystem
        const lockDir = join(project, "doctor-locks")
        yield* fs.makeDirectory(lockDir).pipe(Effect.orDie)
        const doctor = ["--no-install", packageName, "doctor", "locks", "--dir", lockDir, "--json"]
        const missing = yield* exec("npx", doctor, project)
        assert.strictEqual(missing.code, 2, missing.stdout + missing.stderr)
        assert.strictEqual(
          missing.stderr,
          "effect-session-runtime: the command line runs on @effect/platform-node, which is not installed: " +
            "npm install @effect/platform-node\n"
        )
        yield* npmInstall(project, [`@effect/platform-node@${yield* installedVersion("@effect/platform-node")}`])
        const healthy = yield* succeeds("npx", doctor, project)
        const report = Schema.decodeUnknownSync(Doctor.LockReportJson)(healthy.stdout.trim())
        assert.strictEqual(report.healthy, true)
        assert.deepStrictEqual(report.findings, [])
        assert.deepStrictEqual(report.problems, [])
      }))
  })

  describe("npm scripts on an old Node", () => {
    it("say in one line to run `npm rebuild node` when the project's own Node was not installed", () => {
      assert.strictEqual(
        RequireNode.verdict("v20.20.2", false, "test"),
        "effect-session-runtime needs Node >= 22.19 and this is Node v20.20.2: the project's own Node was not " +
          "installed (npm install --ignore-scripts skips it): run `npm rebuild node` once, then `npm test` again"
      )
    })

    it("say in one line to go through npm or `npx node` when the project's own Node is there", () => {
      assert.strictEqual(
        RequireNode.verdict("v18.20.0", true, "bench"),
        "effect-session-runtime needs Node >= 22.19 and this is Node v18.20.0: run it through npm " +
          "(npm run bench) or `npx node <file>`, which use the project's own Node"
      )
    })

    it("let Node 22.19 and newer through, and require what package.json engines says", async () => {
      assert.isUndefined(RequireNode.verdict("v22.19.0", false, "start"))
      assert.isUndefined(RequireNode.verdict(process.version, false, "start"))
      assert.isDefined(RequireNode.verdict("v22.18.1", true, "start"))
      const { readFile } = await import("node:fs/promises")
      const manifest = JSON.parse(await readFile(join(repository, "package.json"), "utf8")) as {
        readonly engines: { readonly node: string }
      }
      assert.strictEqual(manifest.engines.node, `>=${RequireNode.minimum.replace(/\.0$/, "")}`)
    })

    it.effect("the scripts that run TypeScript check the Node first", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const manifest = JSON.parse(yield* fs.readFileString(join(repository, "package.json"))) as {
          readonly scripts: Record<string, string>
        }
        for (const script of ["start", "test", "bench", "cli"]) {
          assert.match(manifest.scripts[script]!, /^node scripts\/require-node\.mjs && /, script)
        }
      }).pipe(Effect.provide(NodeServices.layer), Effect.orDie))
  })
})
