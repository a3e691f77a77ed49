/**
 * A cluster runner for the ClusterSessions tests: hosts session entities whose turns
 *
 * 1. record `<runner> begin <session> <message>` in a shared log file,
 * 2. report an external tool as started (a reported marker, as a non-Effect runtime would),
 * 3. work for <turn ms>,
 * 4. check its session lease (`assertCurrent`), commit the message once in `<prefix>_commits` (an idempotent
 *    insert keyed by session and message, with the lease's fencing token) and record
 *    `<runner> commit|duplicate <session> <message>`,
 * 5. report the tool as completed and record `<runner> end <session> <message>`.
 *
 * A turn interrupted on the way records `<runner> interrupted <session> <message>` in its finalizer, before
 * its run ends (so before the session can move to another runner).
 *
 * Every `session.activity.evicted` event of this runner is recorded as
 * `<runner> evicted <session> <tools> <model calls>`. Prints `ready` once serving.
 *
 * Usage: node cluster-runner.ts <url> <prefix> <port> <name> <log file> <turn ms>
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Option, Schedule, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { appendFile } from "node:fs/promises"
import { clusterLayer, runtimeLayer } from "../../examples/10_cluster-sessions.ts"
import * as ActivityTracker from "../../src/ActivityTracker.ts"
import * as ClusterSessions from "../../src/ClusterSessions.ts"
import * as DiagnosticBus from "../../src/DiagnosticBus.ts"
import * as LaneGuard from "../../src/LaneGuard.ts"
import * as SessionLock from "../../src/SessionLock.ts"

const [url, prefix, port, name, logFile, turnMs] = process.argv.slice(2)
if (
  url === undefined || prefix === undefined || port === undefined || name === undefined || logFile === undefined ||
  turnMs === undefined
) {
  console.error("usage: cluster-runner.ts <url> <prefix> <port> <name> <log file> <turn ms>")
  process.exit(2)
}

const record = (line: string) => Effect.promise(() => appendFile(logFile, `${name} ${line}\n`))

const handler: ClusterSessions.Handler<
  unknown,
  ActivityTracker.ActivityTracker | SqlClient.SqlClient | SessionLock.SessionLock
> = (request) =>
  Effect.suspend(() => {
    let begun = false
    return Effect.gen(function*() {
      const tracker = yield* ActivityTracker.ActivityTracker
      const run = yield* ActivityTracker.CurrentRun
      const sql = yield* SqlClient.SqlClient
      const { messageId, sessionKey } = request
      const signal = { kind: "tool_call" as const, sessionKey, runId: run.runId, callId: `tool-${messageId}` }
      // Each record goes with its signal, uninterrupted: a `begin` line means the tool marker is open, an `end`
      // line that it was closed.
      yield* Effect.uninterruptible(Effect.gen(function*() {
        yield* tracker.report({ ...signal, type: "started", seq: yield* tracker.nextSeq, name: "external" })
        yield* record(`begin ${sessionKey} ${messageId}`)
        begun = true
      }))
      yield* Effect.sleep(Number(turnMs))
      const lease = Option.getOrThrow(yield* LaneGuard.CurrentLease)
      yield* SessionLock.SessionLock.use((lock) => lock.assertCurrent(lease))
      const inserted = yield* sql.unsafe(
        `INSERT INTO ${prefix}_commits (session_key, message_id, runner, token) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING RETURNING 1`,
        [sessionKey, messageId, name, lease.token]
      )
      yield* record(`${inserted.length > 0 ? "commit" : "duplicate"} ${sessionKey} ${messageId}`)
      yield* Effect.uninterruptible(Effect.gen(function*() {
        yield* tracker.report({ ...signal, type: "completed", seq: yield* tracker.nextSeq })
        yield* record(`end ${sessionKey} ${messageId}`)
        begun = false
      }))
      return `${name}:${messageId}`
    }).pipe(
      Effect.onInterrupt(() =>
        begun ? record(`interrupted ${request.sessionKey} ${request.messageId}`) : Effect.void
      )
    )
  })

// Between the entity and the runtime, so that it sees what happens while the entity is given up at shutdown;
// on release it first drains what is still queued.
const evictionLog = Layer.effectDiscard(Effect.gen(function*() {
  const bus = yield* DiagnosticBus.DiagnosticBus
  const events = yield* bus.subscribe({ name: "cluster-runner-log" })
  let writing = false
  yield* events.pipe(
    Stream.runForEach((event) =>
      event._tag === "session.activity.evicted"
        ? Effect.sync(() => (writing = true)).pipe(
          Effect.andThen(record(`evicted ${event.sessionKey} ${event.evictedTools} ${event.evictedModelCalls}`)),
          Effect.ensuring(Effect.sync(() => (writing = false)))
        )
        : Effect.void
    ),
    Effect.forkScoped({ startImmediately: true })
  )
  const idle = Effect.gen(function*() {
    const stats = yield* bus.stats
    const backlog = stats.subscribers.find((s) => s.name === "cluster-runner-log")?.backlog ?? 0
    return backlog === 0 && !writing
  })
  yield* Effect.addFinalizer(() =>
    idle.pipe(
      Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("10 millis") }),
      Effect.timeout("3 seconds"),
      Effect.ignore
    )
  )
}))

const options = {
  url,
  prefix,
  host: "127.0.0.1",
  port: Number(port),
  name,
  sharding: {
    shardsPerGroup: 30,
    refreshAssignmentsInterval: "250 millis",
    runnerHealthCheckInterval: "500 millis",
    entityMessagePollInterval: "200 millis",
    entityReplyPollInterval: "100 millis",
    entityTerminationTimeout: "3 seconds",
    // A crashed runner's shards move once its shard locks expire.
    shardLockRefreshInterval: "1 second",
    shardLockExpiration: "3 seconds",
    sendRetryInterval: "50 millis"
  }
} as const

// The example's runner, with the eviction log between the entity and the runtime, and a short session lease:
// a killed runner's sessions go on elsewhere as soon as its shard locks expire.
const runner = ClusterSessions.layer(handler, { runnerName: name }).pipe(
  Layer.provideMerge(evictionLog),
  Layer.provideMerge(
    runtimeLayer({ lockLease: "3 seconds", lockTable: `${prefix}_session_locks`, watchdog: { interval: "1 second" } })
  ),
  Layer.provideMerge(clusterLayer(options))
)

NodeRuntime.runMain(
  Effect.sync(() => console.log("ready")).pipe(Effect.andThen(Effect.never), Effect.provide(runner))
)
