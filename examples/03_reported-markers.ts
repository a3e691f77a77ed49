/**
 * @title Reported markers from a subprocess
 *
 * Runtimes that are not Effect (a CLI, an app server in another process) report their tool calls as
 * `started` / `completed` signals, each numbered with `nextSeq` when it is relayed. Such markers can leak:
 * here the child process exits without reporting the end of its second tool. When the turn (the last
 * owner of the session's activity) ends, the leftover marker is evicted (`orphaned_no_owner`), and a late
 * signal of the ended run changes nothing.
 *
 * The `NativeTools` layer extends the runtime with a service that runs a child process and relays its
 * JSON lines to `ActivityTracker.report`.
 *
 *   npx node examples/03_reported-markers.ts
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Console, Context, Effect, Layer, Stream } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { ActivityTracker, CurrentRun } from "../src/ActivityTracker.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"

// The child: a native runtime printing one JSON line per signal. It never reports upload-1's end.
const child = `
const say = (signal) => console.log(JSON.stringify(signal))
say({ type: "started", callId: "transcode-1", name: "ffmpeg" })
setTimeout(() => say({ type: "progress", reason: "progress" }), 20)
setTimeout(() => {
  say({ type: "completed", callId: "transcode-1" })
  say({ type: "started", callId: "upload-1", name: "s3-upload" })
}, 40)
setTimeout(() => process.exit(0), 60)
`

/** Runs native tools in child processes and relays what they report to the activity tracker. */
class NativeTools extends Context.Service<NativeTools, {
  readonly run: (script: string) => Effect.Effect<void, never, CurrentRun>
}>()("example/NativeTools") {
  static readonly layer = Layer.effect(
    NativeTools,
    Effect.gen(function*() {
      const tracker = yield* ActivityTracker
      const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
      const relay = (line: string) =>
        Effect.gen(function*() {
          const { sessionKey, runId } = yield* CurrentRun
          const signal = { ...JSON.parse(line), kind: "tool_call", sessionKey, runId, seq: yield* tracker.nextSeq }
          const result = yield* tracker.report(signal)
          yield* Console.log(`  relayed ${signal.type} ${signal.callId ?? ""} -> ${result._tag}`)
        })
      return NativeTools.of({
        run: (script) =>
          Effect.scoped(Effect.gen(function*() {
            const handle = yield* spawner.spawn(ChildProcess.make(process.execPath, ["-e", script]))
            yield* handle.stdout.pipe(Stream.decodeText(), Stream.splitLines, Stream.runForEach(relay))
            yield* handle.exitCode
          })).pipe(Effect.orDie)
      })
    })
  )
}

const Runtime = NativeTools.layer.pipe(
  Layer.provideMerge(SessionRuntime.layer({ lock: { backend: "memory" } })),
  Layer.provide(NodeServices.layer)
)

const program = Effect.gen(function*() {
  const tracker = yield* ActivityTracker
  const tools = yield* NativeTools
  const session = SessionKey.makeUnsafe("agent:main:native")
  let runId = ""
  yield* Console.log("a turn runs a native runtime in a child process:")
  yield* SessionLanes.run(
    session,
    Effect.gen(function*() {
      runId = (yield* CurrentRun).runId
      yield* tools.run(child)
      const during = yield* tracker.snapshot(session)
      yield* Console.log(`  child exited; open markers: ${during.markers.map((m) => m.name).join(", ") || "none"}`)
    })
  )
  const after = yield* tracker.snapshot(session)
  const stats = yield* tracker.stats
  yield* Console.log(`turn ended: open markers ${after.markers.length}, evicted ${stats.evicted} (orphaned_no_owner)`)
  const late = yield* tracker.report({
    type: "completed",
    kind: "tool_call",
    sessionKey: session,
    runId,
    callId: "upload-1",
    seq: yield* tracker.nextSeq
  })
  yield* Console.log(`a late completion of upload-1 -> ${late._tag}${late._tag === "Ignored" ? ` (${late.reason})` : ""}`)
})

program.pipe(Effect.provide(Runtime), NodeRuntime.runMain)
