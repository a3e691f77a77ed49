/**
 * @title Sessions on Effect Cluster
 *
 * Several runner processes (on one host or many) share a PostgreSQL database; every session is a cluster
 * entity, so its messages are processed by exactly one runner at a time, in order, and move to another
 * runner when theirs goes away. Inside each runner the whole runtime runs: every turn is tracked, the
 * watchdog classifies the sessions the runner owns, recovery releases or aborts what is stuck, and each turn
 * holds its session's PostgreSQL lease, whose fencing token a store can check before a write.
 *
 *   eval "$(.ci/postgres.sh)"                                            # a throwaway PostgreSQL on loopback
 *   npx node examples/10_cluster-sessions.ts runner 34431 &              # two runners
 *   npx node examples/10_cluster-sessions.ts runner 34432 &
 *   npx node examples/10_cluster-sessions.ts send agent:main:demo:1 m1 "hello"
 *
 * The layers below are the recipe of docs/cluster.md; the tests run them in real processes.
 */
import { NodeClusterSocket, NodeCrypto, NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Console, Duration, Effect, Layer, Option, Redacted } from "effect"
import { RunnerAddress, ShardingConfig, SqlMessageStorage, SqlRunnerStorage } from "effect/cluster"
import type { SqlClient } from "effect/sql"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as ClusterSessions from "../src/ClusterSessions.ts"
import * as SessionLockSql from "../src/SessionLockSql.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"
import type * as Watchdog from "../src/Watchdog.ts"

/** Where the cluster keeps its state and how fast it reacts. */
export interface ClusterOptions {
  /** PostgreSQL URL. */
  readonly url: string
  /** Table prefix of the cluster's storage (one cluster per prefix in a database). @default "cluster" */
  readonly prefix?: string | undefined
  /** Sharding settings shared by every runner and client of the cluster (shardsPerGroup must agree). */
  readonly sharding?: Partial<ShardingConfig.ShardingConfig["Service"]> | undefined
}

/** Options of one runner. */
export interface RunnerOptions extends ClusterOptions {
  /** The address other runners reach this one at. */
  readonly host: string
  readonly port: number
  /** The runner's name in replies and logs. @default "<host>:<port>" */
  readonly name?: string | undefined
  /**
   * The session lease of the PostgreSQL lock taken around each turn: a runner that dies holding one delays its
   * session's next turn by at most this, so keep it no longer than the shard lock expiration.
   * @default "10 seconds"
   */
  readonly lockLease?: Duration.Input | undefined
  /** The lease table of the session lock. @default "session_locks" */
  readonly lockTable?: string | undefined
  readonly watchdog?: Watchdog.Options | undefined
}

const shardingConfig = (options: ClusterOptions, address: Option.Option<RunnerAddress.RunnerAddress>) => ({
  shardsPerGroup: 300,
  ...options.sharding,
  runnerAddress: address
})

const sqlLayer = (options: ClusterOptions) => PgClient.layer({ url: Redacted.make(options.url) })

// The cluster's storage on PostgreSQL, under its own table prefix (so several clusters, or test runs, can share
// one database).
const storage = (options: ClusterOptions, config: Partial<ShardingConfig.ShardingConfig["Service"]>) =>
  Layer.mergeAll(
    SqlMessageStorage.layerWith({ prefix: options.prefix }).pipe(Layer.provide(NodeCrypto.layerDigest)),
    Layer.orDie(SqlRunnerStorage.layerWith({ prefix: options.prefix }))
  ).pipe(Layer.provide(ShardingConfig.layer(config)))

/**
 * The cluster side of a runner: sharding, the runner protocol on `host:port`, storage on PostgreSQL (and the
 * `SqlClient`, for the rest of the program).
 */
export const clusterLayer = (options: RunnerOptions) => {
  const config = shardingConfig(options, Option.some(RunnerAddress.make(options.host, options.port)))
  return NodeClusterSocket.layer({ storage: "byo", shardingConfig: config }).pipe(
    Layer.provideMerge(storage(options, config)),
    Layer.provideMerge(sqlLayer(options))
  )
}

/**
 * The runtime inside a runner: `SessionRuntime` with the session lock on PostgreSQL (the cluster already gives
 * each session one owner; the lease adds a fencing token and covers a runner that lost its shard but still
 * runs a turn). Needs the `SqlClient`.
 */
export const runtimeLayer = (options: Pick<RunnerOptions, "lockLease" | "lockTable" | "watchdog">) =>
  Layer.unwrap(Effect.map(
    Effect.context<SqlClient.SqlClient>(),
    (context) =>
      SessionRuntime.layer({
        lock: {
          layer: SessionLockSql.layer({ lease: options.lockLease ?? "10 seconds", table: options.lockTable }).pipe(
            Layer.provide(Layer.succeedContext(context))
          )
        },
        ...(options.watchdog !== undefined ? { watchdog: options.watchdog } : {})
      })
  ))

/**
 * A runner: registers the session entity with `handler` as the body of every turn, and keeps the runtime's
 * services available to the rest of the program. Released top down: the entity first (its requests are
 * interrupted, its sessions' lanes close, their turns' finalizers run and what they left open is evicted),
 * then the runtime, then the cluster (the runner leaves and its shards move).
 */
export const runnerLayer = <E, R>(handler: ClusterSessions.Handler<E, R>, options: RunnerOptions) =>
  ClusterSessions.layer(handler, { runnerName: options.name ?? `${options.host}:${options.port}` }).pipe(
    Layer.provideMerge(runtimeLayer(options)),
    Layer.provideMerge(clusterLayer(options))
  )

/** A client: sends messages to sessions without hosting any (no address, no shards). */
export const clientLayer = (options: ClusterOptions) => {
  const config = shardingConfig(options, Option.none())
  return NodeClusterSocket.layer({ storage: "byo", clientOnly: true, shardingConfig: config }).pipe(
    Layer.provideMerge(storage(options, config)),
    Layer.provide(sqlLayer(options))
  )
}

/** The demo turn: a "model call" marker around some work, then an answer. */
export const echoHandler: ClusterSessions.Handler<never, ActivityTracker.ActivityTracker> = (request) =>
  ActivityTracker.model(
    { provider: "demo", model: "echo" },
    Effect.sleep(Duration.millis(50)).pipe(Effect.as(`echo: ${request.text}`))
  )

const url = process.env.SESSION_RUNTIME_PG_URL ?? "postgres://postgres@127.0.0.1:55432/session_runtime"

const main = (args: ReadonlyArray<string>): Effect.Effect<void, unknown> => {
  const [command, ...rest] = args
  if (command === "runner") {
    const port = Number(rest[0] ?? 34431)
    return Layer.launch(runnerLayer(echoHandler, { url, host: "127.0.0.1", port }))
  }
  if (command === "send") {
    const [sessionKey = "agent:main:demo:1", messageId = "m1", text = "hello"] = rest
    return ClusterSessions.send({ sessionKey, messageId, text }).pipe(
      Effect.flatMap((reply) => Console.log(JSON.stringify(reply))),
      Effect.provide(clientLayer({ url }))
    )
  }
  return Console.error(
    "usage: npx node examples/10_cluster-sessions.ts runner <port> | send <session> <message id> <text>"
  )
}

if (import.meta.main) {
  NodeRuntime.runMain(main(process.argv.slice(2)))
}
