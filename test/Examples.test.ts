/**
 * Every numbered example (01–09, 11) runs as a real child process in its short
 * mode, exits 0 and prints the line that shows what it is about.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { fileURLToPath } from "node:url"

const examples = fileURLToPath(new URL("../examples/", import.meta.url))

const text = <E>(stream: Stream.Stream<Uint8Array, E>) => stream.pipe(Stream.decodeText(), Stream.mkString)

const run = (file: string) =>
  Effect.gen(function*() {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const child = yield* spawner.spawn(
      ChildProcess.make(process.execPath, [`${examples}${file}`, "--short"], {
        env: { EXAMPLE_SHORT: "1" },
        extendEnv: true
      })
    )
    const [stdout, stderr, code] = yield* Effect.all([text(child.stdout), text(child.stderr), child.exitCode], {
      concurrency: 3
    })
    return { code: Number(code), stdout, stderr }
  }).pipe(Effect.scoped, Effect.timeout("45 seconds"), Effect.provide(NodeServices.layer))

// What each example must print: the line that shows it did its job.
const expected: ReadonlyArray<readonly [string, RegExp]> = [
  ["01_minimal-runtime.ts", /^turn finished: 3 results$/m],
  ["02_structured-markers.ts", /closed {2}tool_call m-\d+: defect[\s\S]*open markers after the turn: 0/],
  ["03_reported-markers.ts", /evicted 1 \(orphaned_no_owner\)[\s\S]*-> Ignored \(run_ended\)/],
  ["04_file-lock-contention.ts", /fails with LockTimeout: .*held by pid \d+[\s\S]*lock\.reclaimed {2}from pid \d+: holder_dead/],
  ["05_watchdog-recovery.ts", /recovery released agent:main:orphaned[\s\S]*recovery aborted agent:main:hung: abort_run, run_interrupted/],
  ["06_prometheus.ts", /session_runtime_tool_calls_total\{tool="fetch",outcome="failure"\} 1/],
  ["07_otlp.ts", /trace export\(s\), \d+ spans: (?=.*invoke_agent)(?=.*chat gpt-4o)(?=.*execute_tool search)/],
  ["08_event-sink.ts", /\d+ events read back and decoded/],
  ["09_custom-lock-backend.ts", /held by [\s\S]*acquired, token 3/],
  ["11_ai-agent-server.ts", /opened tool_call get_weather\n {2}closed tool_call success[\s\S]*agent:main:2 -> It is sunny/]
]

describe.concurrent("Examples", () => {
  for (const [file, pattern] of expected) {
    it.live(`${file} runs in short mode, exits 0 and shows its point`, () =>
      Effect.gen(function*() {
        const { code, stdout, stderr } = yield* run(file)
        assert.strictEqual(code, 0, `${file} exited ${code}\n${stdout}\n${stderr}`)
        assert.match(stdout, pattern)
      }))
  }
})
