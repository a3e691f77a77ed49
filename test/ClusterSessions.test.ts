/**
 * Sessions on Effect Cluster, with two real runner processes (test/workers/cluster-runner.ts) over a real
 * PostgreSQL, and this process as a client. Each test uses its own table prefix, so runs never see each
 * other's state.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { appendFile, mkdtemp, readFile, rm } from "node:fs/promises"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { clientLayer } from "../examples/10_cluster-sessions.ts"
import * as ClusterSessions from "../src/ClusterSessions.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { requirePgUrl } from "./setup/postgres.ts"

const url = requirePgUrl()
const sharding = { shardsPerGroup: 30, entityReplyPollInterval: "100 millis", sendRetryInterval: "50 millis" } as const

const freePort = () =>
  Effect.promise(() =>
    new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.once("error", reject)
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
      })
    })
  )

interface Runner {
  readonly name: string
  readonly child: ChildProcess
  readonly exited: Promise<number | null>
  output: string
}

/** Starts a runner process and waits until it serves; killed (if still running) when the scope closes. */
const startRunner = (options: { prefix: string; name: string; log: string; turnMs: number }) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const port = yield* freePort()
      const child = spawn(process.execPath, [
        join(import.meta.dirname, "workers", "cluster-runner.ts"),
        url,
        options.prefix,
        String(port),
        options.name,
        options.log,
        String(options.turnMs)
      ], { stdio: ["ignore", "pipe", "pipe"] })
      const runner: Runner = {
        name: options.name,
        child,
        exited: new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? -1 : null)))),
        output: ""
      }
      child.stdout!.on("data", (chunk) => (runner.output += chunk))
      child.stderr!.on("data", (chunk) => (runner.output += chunk))
      yield* Effect.promise(() =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`${options.name} did not start: ${runner.output}`)), 30_000)
          const check = () => {
            if (/^ready$/m.test(runner.output)) {
              clearTimeout(timer)
              resolve()
            }
          }
          child.stdout!.on("data", check)
          child.on("exit", () => reject(new Error(`${options.name} exited: ${runner.output}`)))
        })
      )
      return runner
    }),
    (runner) =>
      Effect.promise(async () => {
        if (runner.child.exitCode === null && runner.child.signalCode === null) {
          runner.child.kill("SIGKILL")
          await runner.exited
        }
      })
  )

/** A fresh cluster: table prefix, commits table, log file; everything dropped afterwards. */
const withCluster = <A, E, R>(body: (cluster: { prefix: string; log: string }) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const prefix = `cs_${randomUUID().replace(/-/g, "").slice(0, 10)}`
    const dir = yield* Effect.promise(() => mkdtemp(join(tmpdir(), "cluster-sessions-")))
    const sql = Context.get(yield* Layer.build(PgClient.layer({ url: Redacted.make(url) })), SqlClient.SqlClient)
    yield* sql.unsafe(`CREATE TABLE ${prefix}_commits (
      session_key text NOT NULL, message_id text NOT NULL, runner text NOT NULL, token bigint NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (session_key, message_id))`)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        for (
          const table of [
            "commits",
            "messages",
            "replies",
            "runners",
            "locks",
            "migrations",
            "runner_migrations",
            "session_locks",
            "session_locks_migrations"
          ]
        ) {
          yield* sql.unsafe(`DROP TABLE IF EXISTS ${prefix}_${table}`)
        }
        yield* sql.unsafe(`DROP SEQUENCE IF EXISTS ${prefix}_session_locks_tokens`)
        yield* Effect.promise(() => rm(dir, { recursive: true, force: true }))
      }).pipe(Effect.ignore)
    )
    return yield* body({ prefix, log: join(dir, "turns.log") }).pipe(Effect.provideService(SqlClient.SqlClient, sql))
  })

interface Commit {
  readonly session_key: string
  readonly message_id: string
  readonly runner: string
  readonly token: string
}

/** Waits until `count` messages are committed (polling the database), within `ms`. */
const awaitCommits = (prefix: string, count: number, ms: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const deadline = Date.now() + ms
    while (true) {
      const rows = yield* sql.unsafe<Commit>(
        `SELECT session_key, message_id, runner, token::text FROM ${prefix}_commits ORDER BY at, session_key`
      )
      if (rows.length >= count || Date.now() > deadline) return rows
      yield* Effect.sleep("100 millis")
    }
  })

const sessionKeys = (n: number) => Array.from({ length: n }, (_, i) => `agent:cluster:s${i}`)
const messageIds = (n: number) => Array.from({ length: n }, (_, i) => `m${String(i).padStart(3, "0")}`)

/** Sends every message of every session without waiting: per session in order, sessions concurrently. */
const sendAll = (sessions: ReadonlyArray<string>, messages: ReadonlyArray<string>) =>
  Effect.forEach(
    sessions,
    (sessionKey) =>
      Effect.forEach(messages, (messageId) => ClusterSessions.sendDiscard({ sessionKey, messageId, text: "hi" }), {
        discard: true
      }),
    { concurrency: "unbounded", discard: true }
  )

interface LogLine {
  readonly runner: string
  readonly kind: string
  readonly session: string
  readonly rest: string
}

const readLog = (log: string) =>
  Effect.promise(async () =>
    (await readFile(log, "utf8").catch(() => "")).trim().split("\n").filter((l) => l.length > 0).map(
      (line): LogLine => {
        const [runner, kind, session, ...rest] = line.split(" ")
        return { runner: runner!, kind: kind!, session: session!, rest: rest.join(" ") }
      }
    )
  )

/** Waits until both runners are registered and healthy, and their first shard assignment has settled. */
const awaitRunners = (prefix: string, count: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (let i = 0; i < 300; i++) {
      const rows = yield* sql.unsafe<{ n: string }>(`SELECT count(*)::text AS n FROM ${prefix}_runners WHERE healthy`)
      if (Number(rows[0]!.n) >= count) break
      yield* Effect.sleep("50 millis")
    }
    yield* Effect.sleep("1500 millis")
  })

/** Waits until `runner` has committed a turn and is in the middle of another. */
const awaitMidTurn = (log: string, runner: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1500; i++) {
      const lines = (yield* readLog(log)).filter((l) => l.runner === runner)
      const begun = lines.filter((l) => l.kind === "begin").length
      const ended = lines.filter((l) => l.kind === "end" || l.kind === "interrupted").length
      if (lines.some((l) => l.kind === "commit") && begun > ended) return
      yield* Effect.sleep("20 millis")
    }
    assert.fail(`${runner} never got to work`)
  })

/**
 * Every message committed exactly once, and each session's messages committed in the order they were sent.
 * The commit is the turn's effect: a row keyed by session and message, inserted idempotently. A turn cut short
 * after its commit (a runner killed outright) runs again elsewhere and finds it done (`duplicate`).
 */
const assertExactlyOnceInOrder = (
  commits: ReadonlyArray<Commit>,
  log: ReadonlyArray<LogLine>,
  sessions: ReadonlyArray<string>,
  messages: ReadonlyArray<string>
) => {
  assert.strictEqual(commits.length, sessions.length * messages.length)
  const seen = new Set<string>()
  for (const line of log.filter((l) => l.kind === "commit")) {
    const id = `${line.session} ${line.rest}`
    assert.isFalse(seen.has(id), `${id} committed twice`)
    seen.add(id)
  }
  for (const session of sessions) {
    const mine = commits.filter((c) => c.session_key === session)
    assert.deepStrictEqual(mine.map((c) => c.message_id), [...messages], `order of ${session}`)
    // Each turn held the session's lease: its fencing tokens increase with the commits.
    for (let i = 1; i < mine.length; i++) assert.isAbove(Number(mine[i]!.token), Number(mine[i - 1]!.token))
  }
}

/**
 * One runner at a time per session: in the shared log, a session's turn begins only after its previous turn
 * ended (`end`), was interrupted (`interrupted`, recorded by the turn's finalizer) or died with its runner
 * (`killed`, recorded by the test once the process is gone).
 */
const assertOneTurnAtATime = (log: ReadonlyArray<LogLine>, sessions: ReadonlyArray<string>) => {
  for (const session of sessions) {
    let open: { runner: string; message: string } | undefined
    for (const line of log) {
      if (line.kind === "killed") {
        if (open?.runner === line.runner) open = undefined
        continue
      }
      if (line.session !== session) continue
      const where = `${session}: ${JSON.stringify(log.filter((l) => l.session === session || l.kind === "killed"))}`
      if (line.kind === "begin") {
        assert.isUndefined(open, `overlapping turns on ${where}`)
        open = { runner: line.runner, message: line.rest }
      } else if (line.kind === "end" || line.kind === "interrupted") {
        assert.deepStrictEqual(open, { runner: line.runner, message: line.rest }, where)
        open = undefined
      } else if (line.kind === "commit" || line.kind === "duplicate") {
        assert.deepStrictEqual(open, { runner: line.runner, message: line.rest }, where)
      }
    }
  }
}

describe("ClusterSessions", () => {
  it.live("processes messages for many sessions each exactly once and in order, one runner at a time per session", () =>
    withCluster(({ log, prefix }) =>
      Effect.gen(function*() {
        yield* startRunner({ prefix, name: "A", log, turnMs: 40 })
        yield* startRunner({ prefix, name: "B", log, turnMs: 40 })
        yield* awaitRunners(prefix, 2)
        const sessions = sessionKeys(20)
        const messages = messageIds(6)
        yield* sendAll(sessions, messages)
        // A message sent again is the same message: one turn, and the sender gets the first reply.
        const first = yield* ClusterSessions.send({ sessionKey: sessions[0]!, messageId: "again", text: "once" })
        const second = yield* ClusterSessions.send({ sessionKey: sessions[0]!, messageId: "again", text: "twice" })
        assert.deepStrictEqual(second, first)
        assert.match(first.output, /^[AB]:again$/)

        const commits = (yield* awaitCommits(prefix, 121, 45_000)).filter((c) => c.message_id !== "again")
        const lines = yield* readLog(log)
        assertExactlyOnceInOrder(commits, lines.filter((l) => l.rest !== "again"), sessions, messages)
        assertOneTurnAtATime(lines, sessions)
        assert.strictEqual(lines.filter((l) => l.kind === "commit" && l.rest === "again").length, 1)
        // Both runners served sessions.
        assert.deepStrictEqual([...new Set(commits.map((c) => c.runner))].sort(), ["A", "B"])
      }).pipe(Effect.provide(clientLayer({ url, prefix, sharding })))
    ).pipe(Effect.scoped), 90_000)

  it.live("rejects a message for an invalid session key with a typed error", () =>
    withCluster(({ prefix }) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          ClusterSessions.send({ sessionKey: "bad\u0000key", messageId: "m", text: "x" })
        )
        assert.strictEqual(error._tag, "InvalidSessionKey")
        const long = SessionKey.makeUnsafe(`agent:${"x".repeat(500)}`)
        assert.isAtMost(ClusterSessions.entityId(long).length, 81)
      }).pipe(Effect.provide(clientLayer({ url, prefix, sharding })))
    ).pipe(Effect.scoped))

  it.live(
    "a runner shut down mid-turn hands its sessions to the other; the markers of its interrupted runs are evicted",
    () =>
      withCluster(({ log, prefix }) =>
        Effect.gen(function*() {
          // A's turns are long, so that whenever the stop reaches them they are still running (a runner's
          // shutdown takes a while to interrupt its entities); B's are short, so the rest goes quickly.
          const a = yield* startRunner({ prefix, name: "A", log, turnMs: 2_000 })
          yield* startRunner({ prefix, name: "B", log, turnMs: 100 })
          yield* awaitRunners(prefix, 2)
          const sessions = sessionKeys(10)
          const messages = messageIds(8)
          yield* sendAll(sessions, messages)
          yield* awaitMidTurn(log, "A")
          a.child.kill("SIGTERM")
          const exitCode = yield* Effect.promise(() => a.exited)
          assert.isNotNull(exitCode, a.output)

          const commits = yield* awaitCommits(prefix, 80, 45_000)
          const lines = yield* readLog(log)
          assertExactlyOnceInOrder(commits, lines, sessions, messages)
          assertOneTurnAtATime(lines, sessions)

          // A's turns that were running when it stopped were interrupted; each had left its reported tool open,
          // and that marker was evicted when the run ended, before A exited: nothing was left to block.
          const interrupted = lines.filter((l) => l.runner === "A" && l.kind === "interrupted")
          assert.isAbove(
            interrupted.length,
            0,
            `A was stopped mid-turn: ${JSON.stringify(lines.filter((l) => l.runner === "A").slice(-12))}`
          )
          const evicted = lines.filter((l) => l.runner === "A" && l.kind === "evicted")
          assert.deepStrictEqual(evicted.map((l) => l.session).sort(), interrupted.map((l) => l.session).sort())
          for (const line of evicted) assert.strictEqual(line.rest, "1 0")
          // Those sessions went on on B.
          for (const line of interrupted) {
            assert.isTrue(commits.some((c) => c.session_key === line.session && c.runner === "B"), line.session)
          }
        }).pipe(Effect.provide(clientLayer({ url, prefix, sharding })))
      ).pipe(Effect.scoped),
    90_000
  )

  it.live("a runner killed outright: its sessions resume on the other, every message committed once, in order", () =>
    withCluster(({ log, prefix }) =>
      Effect.gen(function*() {
        const a = yield* startRunner({ prefix, name: "A", log, turnMs: 150 })
        yield* startRunner({ prefix, name: "B", log, turnMs: 150 })
        yield* awaitRunners(prefix, 2)
        const sessions = sessionKeys(10)
        const messages = messageIds(8)
        yield* sendAll(sessions, messages)
        yield* awaitMidTurn(log, "A")
        a.child.kill("SIGKILL")
        yield* Effect.promise(() => a.exited)
        yield* Effect.promise(() => appendFile(log, "A killed - -\n"))

        const commits = yield* awaitCommits(prefix, 80, 45_000)
        const lines = yield* readLog(log)
        assertExactlyOnceInOrder(commits, lines, sessions, messages)
        assertOneTurnAtATime(lines, sessions)
        // The turns A was running when it died ran again on B.
        const killedAt = lines.findIndex((l) => l.kind === "killed")
        const cut = lines.slice(0, killedAt).filter((l) => l.runner === "A" && l.kind === "begin").filter((begin) =>
          !lines.slice(0, killedAt).some((l) =>
            l.runner === "A" && l.kind === "end" && l.session === begin.session && l.rest === begin.rest
          )
        )
        assert.isAbove(cut.length, 0, "A died mid-turn")
        for (const begin of cut) {
          assert.isTrue(
            lines.slice(killedAt).some((l) =>
              l.runner === "B" && l.kind === "begin" && l.session === begin.session && l.rest === begin.rest
            ),
            `${begin.session} ${begin.rest} ran again on B`
          )
        }
      }).pipe(Effect.provide(clientLayer({ url, prefix, sharding })))
    ).pipe(Effect.scoped), 90_000)
})
