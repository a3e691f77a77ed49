/**
 * The seed-failures scenario: drives the three production failures the
 * runtime exists to end against a running demo server, over real HTTP, while
 * a few healthy sessions send messages at a fixed pace, and reports what the
 * runtime saw (the verdict with its evidence) and what recovery did.
 *
 * 1. **Orphaned activity wedges a queue.** A `crash` turn dies while an
 *    external runtime it started reports a native tool afterwards, with no
 *    owner; two messages queue behind it. The watchdog classifies the idle
 *    session with queued work and orphaned activity (rule 1, stuck,
 *    recoverable), recovery releases the lane, and the queued turns run.
 * 2. **Lock contention.** Another process (`lockHog.ts`) holds the locks of
 *    many sessions while their turns wait; the event loop stays free (the
 *    event-loop gauges of `/metrics`, no liveness warning) and the healthy
 *    sessions keep their pace. The hog is SIGKILLed and every waiter
 *    reclaims its lock (`holder_dead`) and runs.
 * 3. **A leaked marker.** A `native-leak` turn leaves a reported tool open;
 *    teardown evicts it and fences a late start, and the next, long and
 *    healthy turn on that session is `long_running`, never
 *    `blocked_tool_call`. Meanwhile a `hang` tool under a live owner is
 *    reported `blocked_tool_call` and actively aborted at the abort
 *    threshold; the message queued behind it completes.
 *
 * The phases run at the same time on different sessions (sessions are
 * isolated), so the whole run takes about the abort threshold plus a few
 * seconds.
 */
import { Clock, Duration, Effect, Fiber, Option, Schema, Stream } from "effect"
import { HttpBody, HttpClient } from "effect/http"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { fileURLToPath } from "node:url"
import type * as DiagnosticEvent from "../../src/DiagnosticEvent.ts"
import * as EventFeed from "./EventFeed.ts"
import type { Thresholds } from "./Settings.ts"
import * as Summary from "./Summary.ts"

/** The scenario did not end with every failure recovered and every healthy session on pace. */
export class ScenarioFailed extends Schema.TaggedError<ScenarioFailed>()("ScenarioFailed", {
  failed: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `The seed-failures scenario failed: ${this.failed.join("; ")}.`
  }
}

export interface Options {
  readonly baseUrl: string
  /** The server's lock directory (the lock hog takes its locks there). */
  readonly lockDirectory: string
  /** The thresholds the server runs with. */
  readonly thresholds: Thresholds
  /** Where the timeline and the summary go. */
  readonly log: (line: string) => void
  /**
   * Sessions whose locks the hog holds.
   * @default 32
   */
  readonly lockedSessions?: number | undefined
  /**
   * Healthy sessions sending at a fixed pace.
   * @default 3
   */
  readonly healthySessions?: number | undefined
  /**
   * How long after being sent a healthy session's message must have completed.
   * @default 1000
   */
  readonly paceBudgetMs?: number | undefined
}

/** The session keys the scenario uses, by role. */
export const keys = {
  orphan: "agent:demo:orphan:1",
  leak: "agent:demo:leak:1",
  hang: "agent:demo:hang:1",
  locked: (i: number) => `agent:demo:locked:${String(i).padStart(2, "0")}`,
  healthy: (i: number) => `agent:demo:healthy:${i}`
} as const

const roleOf = (key: string): string => key.split(":")[2] ?? "?"

/** The pace: one message every 500 ms, each to complete within 1 s (by default). */
export const pace = { intervalMs: 500, budgetMs: 1000 } as const

type Event = DiagnosticEvent.DiagnosticEvent
type Of<T extends Event["_tag"]> = Extract<Event, { readonly _tag: T }>

const ofType = <T extends Event["_tag"]>(
  received: ReadonlyArray<EventFeed.Received>,
  type: T,
  sessionKey?: string
): Array<Of<T>> =>
  received.flatMap(({ event }) =>
    event._tag === type && (sessionKey === undefined || ("sessionKey" in event && event.sessionKey === sessionKey))
      ? [event as Of<T>]
      : []
  )

interface Accepted {
  readonly turnId: string
  readonly admission: string
}

const hogPath = fileURLToPath(new URL("./lockHog.ts", import.meta.url))

/** A liveness warning for event-loop delay (a blocked loop), as opposed to utilisation alone (a busy one). */
export const isDelayWarning = (event: Of<"diagnostic.liveness.warning">): boolean =>
  event.reasons.some((reason) => reason !== "event_loop_utilization")

export const run = (options: Options) =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const { baseUrl, thresholds } = options
    const warnMs = Duration.toMillis(thresholds.warn)
    const abortMs = Duration.toMillis(thresholds.abort)
    const heartbeatMs = Duration.toMillis(thresholds.heartbeat)
    const lockedCount = options.lockedSessions ?? 32
    const healthyCount = options.healthySessions ?? 3
    const budgetMs = options.paceBudgetMs ?? pace.budgetMs
    const t0 = yield* Clock.currentTimeMillis
    const now = () => Clock.currentTimeMillis
    let nowMs = t0
    const line = (role: string, text: string) => options.log(`${Summary.clock(nowMs - t0)}  ${role.padEnd(8)} ${text}`)
    const note = (role: string, text: string) => Effect.map(now(), (t) => ((nowMs = t), line(role, text)))

    // ---- the timeline, from /events ------------------------------------------------
    const seenVerdicts = new Map<string, number>()
    const lockLines = { contended: 0, reclaimed: 0, stalled: 0 }
    const onEvent = ({ event, receivedAt }: EventFeed.Received) => {
      nowMs = receivedAt
      if (event._tag === "diagnostic.liveness.warning") return line("process", Summary.describe(event)!)
      if (!("sessionKey" in event)) return
      const role = roleOf(event.sessionKey)
      if (role === "healthy") {
        if (event._tag === "session.lane.turn_completed" && event.outcome !== "success") {
          line(role, `${event.sessionKey}: ${Summary.describe(event)}`)
        }
        return
      }
      if (role === "locked") {
        // Dozens of sessions do the same thing: one line for the first of each kind.
        if (event._tag === "lock.contended" && lockLines.contended++ === 0) {
          line(role, `${event.sessionKey}: ${Summary.describe(event)} (one line for all locked sessions)`)
        }
        if (event._tag === "lock.reclaimed" && lockLines.reclaimed++ === 0) {
          line(role, `${event.sessionKey}: ${Summary.describe(event)} (one line for all locked sessions)`)
        }
        // A turn waiting for its lock makes no progress: past warn, rule 4 says so.
        if (event._tag === "session.stalled" && lockLines.stalled++ === 0) {
          line(role, `${event.sessionKey}: ${Summary.describe(event)} (one line for all locked sessions)`)
        }
        return
      }
      if (event._tag === "session.long_running" || event._tag === "session.stalled" || event._tag === "session.stuck") {
        // Stalled verdicts repeat every tick: the first one of each kind gets a line.
        const id = `${event.sessionKey}|${event._tag}|${event.reason}`
        const count = (seenVerdicts.get(id) ?? 0) + 1
        seenVerdicts.set(id, count)
        if (count > 1) return
      }
      const text = Summary.describe(event)
      if (text !== undefined) line(role, text)
    }
    const feed = yield* EventFeed.connect(baseUrl, onEvent)

    // ---- HTTP ----------------------------------------------------------------------
    const post = (key: string, body: Record<string, unknown>) =>
      client.post(`${baseUrl}/sessions/${encodeURIComponent(key)}/messages`, { body: HttpBody.jsonUnsafe(body) }).pipe(
        Effect.flatMap((response) => response.json),
        Effect.map((json) => json as unknown as Accepted),
        Effect.orDie
      )
    const getJson = (path: string) =>
      client.get(`${baseUrl}${path}`).pipe(Effect.flatMap((response) => response.json), Effect.orDie)
    const metricValue = (text: string, name: string): number => {
      const match = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, "m").exec(text)
      return match === null ? Number.NaN : Number(match[1])
    }
    const completion = (key: string, turnId: string) => (received: ReadonlyArray<EventFeed.Received>) =>
      ofType(received, "session.lane.turn_completed", key).find((e) => e.turnId === turnId)

    // ---- healthy sessions at a fixed pace --------------------------------------------
    let pacing = true
    const sends: Array<{ key: string; turnId: string; sentAt: number }> = []
    const pacer = (key: string) =>
      Effect.gen(function*() {
        while (pacing) {
          const sentAt = yield* Clock.currentTimeMillis
          const accepted = yield* post(key, { text: "status?", behaviour: "normal" })
          sends.push({ key, turnId: accepted.turnId, sentAt })
          const spent = (yield* Clock.currentTimeMillis) - sentAt
          yield* Effect.sleep(Duration.millis(Math.max(0, pace.intervalMs - spent)))
        }
      })
    const healthyKeys = Array.from({ length: healthyCount }, (_, i) => keys.healthy(i + 1))
    const pacers = yield* Effect.forEach(healthyKeys, (key) => Effect.forkChild(pacer(key)))
    yield* note("healthy", `${healthyCount} healthy sessions send a normal message every ${pace.intervalMs}ms`)

    // ---- 1. orphaned activity wedges a queue -------------------------------------------
    const orphan = Effect.gen(function*() {
      const key = keys.orphan
      const crash = yield* post(key, { text: "run the build", behaviour: "crash" })
      yield* note("orphan", `POST crash -> ${crash.admission} (${crash.turnId}); the turn hands a native tool to an external runtime and dies`)
      const leftover = yield* feed.waitFor(
        (r) => ofType(r, "session.activity.marker_opened", key).find((e) => e.source === "reported"),
        "5 seconds"
      )
      if (Option.isNone(leftover)) {
        return { id: "1", title: "orphaned activity wedges a queue", verdict: "no orphaned marker appeared", recovery: "-", recovered: false }
      }
      const queued = [
        yield* post(key, { text: "are you there?", behaviour: "normal" }),
        yield* post(key, { text: "hello?", behaviour: "normal" })
      ]
      const queuedAt = yield* Clock.currentTimeMillis
      const view = (yield* getJson(`/sessions/${encodeURIComponent(key)}`)) as {
        state: string
        queueDepth: number
        gated: boolean
        verdict: { classification: string; reason: string }
      }
      yield* note(
        "orphan",
        `2 messages queued (${queued.map((q) => q.admission).join(", ")}): lane ${view.state}, queue ${view.queueDepth}, ` +
          `gated ${view.gated}, verdict now ${view.verdict.classification}/${view.verdict.reason}`
      )
      const released = yield* feed.waitFor(
        (r) => ofType(r, "session.recovery.completed", key).find((e) => e.status === "released"),
        Duration.millis(warnMs + 4 * heartbeatMs + 5000)
      )
      const done = yield* feed.waitFor(
        (r) => {
          const all = queued.map((q) => completion(key, q.turnId)(r))
          return all.every((e) => e !== undefined) ? all : undefined
        },
        "10 seconds"
      )
      const stuck = ofType(feed.all(), "session.stuck", key)[0]
      const evicted = ofType(feed.all(), "session.activity.evicted", key).find((e) => e.reason === "recovery")
      const drained = Option.isSome(done) && done.value.every((e) => e!.outcome === "success")
      const lastDone = feed.all().find(({ event }) =>
        event._tag === "session.lane.turn_completed" && event.turnId === queued[1]!.turnId
      )
      return {
        id: "1",
        title: "orphaned activity wedges a queue",
        verdict: stuck === undefined
          ? "no stuck verdict"
          : `${stuck.classification}/${stuck.reason} (recoverable): ${stuck.evidence}`,
        recovery: Option.isSome(released)
          ? `released the lane (release_lane, ${released.value.reason}): ${
            evicted?.evictedTools ?? 0
          } orphaned tool marker evicted and fenced; ${
            drained
              ? `both queued turns done ${Summary.ms((lastDone?.receivedAt ?? queuedAt) - queuedAt)} after queueing`
              : "the queued turns did NOT complete"
          }`
          : "the lane was not released",
        recovered: stuck?.recoverable === true && Option.isSome(released) && drained
      }
    })

    // ---- 2. lock contention ---------------------------------------------------------------
    const sample = { samples: 0, p99MaxMs: 0, maxMs: 0, utilizationMax: 0 }
    const locks = Effect.scoped(Effect.gen(function*() {
      const lockedKeys = Array.from({ length: lockedCount }, (_, i) => keys.locked(i + 1))
      const hog = yield* spawner.spawn(ChildProcess.make(process.execPath, [hogPath, options.lockDirectory, ...lockedKeys]))
      const holding = yield* hog.stdout.pipe(
        Stream.decodeText(),
        Stream.splitLines,
        Stream.filter((text) => text.startsWith("HOLDING")),
        Stream.runHead,
        Effect.timeoutOption("15 seconds"),
        Effect.map(Option.flatten),
        Effect.orDie
      )
      if (Option.isNone(holding)) {
        return { id: "2", title: "lock contention starves the event loop", verdict: "the lock hog did not start", recovery: "-", recovered: false }
      }
      yield* note("locks", `another process (lock hog, pid ${hog.pid}) holds the locks of ${lockedCount} sessions`)
      const accepted = yield* Effect.forEach(
        lockedKeys.flatMap((key) => [key, key]),
        (key, i) => Effect.map(post(key, { text: `task ${i}`, behaviour: "normal" }), (a) => ({ key, ...a })),
        { concurrency: 16 }
      )
      const contended = yield* feed.waitFor(
        (r) => new Set(ofType(r, "lock.contended").filter((e) => roleOf(e.sessionKey) === "locked").map((e) => e.sessionKey)).size >= lockedCount ? true : undefined,
        "5 seconds"
      )
      yield* note(
        "locks",
        `${Option.isSome(contended) ? lockedCount : "not all"} turns wait for their lock, ${lockedCount} more queued behind them`
      )
      // Hold the contention for a while and read the event-loop gauges meanwhile.
      const holdUntil = (yield* Clock.currentTimeMillis) + Math.min(800, warnMs / 2)
      while ((yield* Clock.currentTimeMillis) < holdUntil) {
        yield* Effect.sleep(Duration.millis(Math.min(250, heartbeatMs / 2)))
        const text = yield* client.get(`${baseUrl}/metrics`).pipe(Effect.flatMap((r) => r.text), Effect.orDie)
        const p99 = metricValue(text, "session_runtime_event_loop_delay_p99_seconds") * 1000
        const max = metricValue(text, "session_runtime_event_loop_delay_max_seconds") * 1000
        const utilization = metricValue(text, "session_runtime_event_loop_utilization")
        sample.samples++
        sample.p99MaxMs = Math.max(sample.p99MaxMs, p99)
        sample.maxMs = Math.max(sample.maxMs, max)
        sample.utilizationMax = Math.max(sample.utilizationMax, utilization)
      }
      yield* note(
        "locks",
        `meanwhile the event loop stays free: delay p99 <= ${Summary.ms(sample.p99MaxMs)}, max <= ${Summary.ms(sample.maxMs)} ` +
          `(${sample.samples} reads of /metrics); healthy sessions keep sending`
      )
      yield* hog.kill({ killSignal: "SIGKILL" }).pipe(Effect.orDie)
      const killedAt = yield* Clock.currentTimeMillis
      yield* note("locks", `SIGKILL the lock hog (pid ${hog.pid}): its locks now belong to a dead process`)
      const reclaimed = yield* feed.waitFor(
        (r) => {
          const events = ofType(r, "lock.reclaimed").filter((e) => roleOf(e.sessionKey) === "locked")
          return new Set(events.map((e) => e.sessionKey)).size >= lockedCount ? events : undefined
        },
        "10 seconds"
      )
      const done = yield* feed.waitFor(
        (r) => {
          const all = accepted.map((a) => completion(a.key, a.turnId)(r))
          return all.every((e) => e !== undefined) ? all : undefined
        },
        "15 seconds"
      )
      const reclaimedAll = Option.isSome(reclaimed) && reclaimed.value.every((e) => e.reason === "holder_dead")
      const lastReclaim = Option.isSome(reclaimed)
        ? Math.max(...feed.all().filter(({ event }) => event._tag === "lock.reclaimed").map((r) => r.receivedAt))
        : killedAt
      const succeeded = Option.isSome(done) && done.value.every((e) => e!.outcome === "success")
      const warnings = ofType(feed.all(), "diagnostic.liveness.warning").filter(isDelayWarning).length
      yield* note(
        "locks",
        `${Option.isSome(reclaimed) ? reclaimed.value.length : 0} locks reclaimed (holder_dead) within ${
          Summary.ms(lastReclaim - killedAt)
        } of the kill; ${succeeded ? `all ${accepted.length}` : "NOT all"} turns of the locked sessions done`
      )
      const stalledWaiters = new Set(
        ofType(feed.all(), "session.stalled").filter((e) => roleOf(e.sessionKey) === "locked").map((e) => e.sessionKey)
      ).size
      return {
        id: "2",
        title: "lock contention starves the event loop",
        verdict: `${lockedCount} turns waited for locks held by another process; the event loop stayed free: ` +
          `delay p99 <= ${Summary.ms(sample.p99MaxMs)}, max <= ${Summary.ms(sample.maxMs)}, ` +
          `${warnings} event-loop delay warnings (starved means a delay >= 1s)` +
          (stalledWaiters > 0
            ? `; ${stalledWaiters} waiters passed warn and were reported stalled_agent_run (rule 4), never aborted`
            : ""),
        recovery: `hog SIGKILLed: ${Option.isSome(reclaimed) ? reclaimed.value.length : 0} locks reclaimed ` +
          `(holder_dead) within ${Summary.ms(lastReclaim - killedAt)}; ${
            succeeded ? `all ${accepted.length}` : "NOT all"
          } turns of the locked sessions done`,
        recovered: reclaimedAll && succeeded && warnings === 0 && sample.maxMs < 1000
      }
    }))

    // ---- 3a. a leaked marker, then a healthy long turn ------------------------------------
    const leak = Effect.gen(function*() {
      const key = keys.leak
      const first = yield* post(key, { text: "open the page", behaviour: "native-leak" })
      yield* note("leak", `POST native-leak -> ${first.admission}: a reported native tool that never reports completion`)
      const evicted = yield* feed.waitFor(
        (r) => ofType(r, "session.activity.evicted", key).find((e) => e.reason === "orphaned_no_owner"),
        "5 seconds"
      )
      const fenced = yield* feed.waitFor((r) => ofType(r, "session.activity.fenced", key)[0], "3 seconds")
      const slow = yield* post(key, { text: "read the whole site", behaviour: "slow" })
      const slowFrom = feed.all().length
      yield* note("leak", `POST slow -> ${slow.admission}: a long, healthy turn on the same session`)
      // Watch the session while the slow turn runs.
      const verdicts = new Set<string>()
      while (completion(key, slow.turnId)(feed.all()) === undefined) {
        const view = (yield* getJson(`/sessions/${encodeURIComponent(key)}`)) as {
          verdict?: { classification: string; reason: string; watched: boolean; evidence: string }
        }
        if (view.verdict?.watched === true && !verdicts.has(view.verdict.classification)) {
          verdicts.add(view.verdict.classification)
          yield* note("leak", `GET /sessions: ${view.verdict.classification}/${view.verdict.reason}: ${view.verdict.evidence}`)
        }
        yield* Effect.sleep("250 millis")
        if ((yield* Clock.currentTimeMillis) - t0 > 60_000) break
      }
      const after = feed.all().slice(slowFrom)
      const blocked = ofType(after, "session.stalled", key).length
      const longRunning = ofType(after, "session.long_running", key)[0]
      const slowDone = completion(key, slow.turnId)(feed.all())
      return {
        id: "3a",
        title: "a leaked marker re-blocks later turns",
        verdict: `the next (long, healthy) turn: ${
          longRunning === undefined
            ? "no verdict"
            : `${longRunning.classification}/${longRunning.reason}: ${longRunning.evidence}`
        }; ${blocked === 0 ? "never blocked_tool_call" : `${blocked} stalled verdicts`}`,
        recovery: `${
          Option.isSome(evicted) ? "teardown evicted the leaked marker (orphaned_no_owner)" : "the marker was NOT evicted"
        }; ${
          Option.isSome(fenced) ? "its late start was fenced" : "no late start was fenced"
        }; the next turn ended ${slowDone?.outcome ?? "(not done)"}`,
        recovered: Option.isSome(evicted) && blocked === 0 && !verdicts.has("blocked_tool_call") &&
          longRunning !== undefined && slowDone?.outcome === "success"
      }
    })

    // ---- 3b. a hung tool under a live owner ----------------------------------------------
    const hang = Effect.gen(function*() {
      const key = keys.hang
      const hung = yield* post(key, { text: "run the migration", behaviour: "hang" })
      const startedAt = yield* Clock.currentTimeMillis
      const queued = yield* post(key, { text: "and then?", behaviour: "normal" })
      yield* note("hang", `POST hang -> ${hung.admission} (a tool that never returns); POST normal -> ${queued.admission}`)
      const aborted = yield* feed.waitFor(
        (r) => ofType(r, "session.recovery.completed", key).find((e) => e.status === "aborted"),
        Duration.millis(abortMs + 4 * heartbeatMs + 5000)
      )
      const abortedAt = feed.all().find(({ event }) =>
        event._tag === "session.recovery.requested" && event.sessionKey === key
      )?.receivedAt
      const done = yield* feed.waitFor(completion(key, queued.turnId), "5 seconds")
      const stalled = ofType(feed.all(), "session.stalled", key)
      const first = stalled[0]
      return {
        id: "3b",
        title: "a hung tool under a live owner",
        verdict: first === undefined
          ? "no stalled verdict"
          : `${first.classification}/${first.reason} (published on each of ${stalled.length} ticks): ${first.evidence}`,
        recovery: Option.isSome(aborted)
          ? `active abort at ${Summary.ms((abortedAt ?? startedAt) - startedAt)} (abort threshold ${
            Summary.ms(abortMs)
          }): abort_run, ${aborted.value.reason}; the queued turn ended ${Option.isSome(done) ? done.value.outcome : "(not done)"}`
          : "not aborted",
        recovered: first?.classification === "blocked_tool_call" && Option.isSome(aborted) &&
          Option.isSome(done) && done.value.outcome === "success"
      }
    })

    const failures = yield* Effect.all([orphan, locks, leak, hang], { concurrency: "unbounded" })

    // ---- pace ---------------------------------------------------------------------------
    pacing = false
    yield* Effect.forEach(pacers, Fiber.join, { discard: true })
    yield* feed.waitFor(
      (r) => sends.every((s) => completion(s.key, s.turnId)(r) !== undefined) ? true : undefined,
      "5 seconds"
    )
    const received = feed.all()
    const paceResults: Array<Summary.PaceResult> = healthyKeys.map((key) => {
      const mine = sends.filter((s) => s.key === key)
      const latencies: Array<number> = []
      let completed = 0
      let failed = 0
      for (const send of mine) {
        const done = received.find(({ event }) =>
          event._tag === "session.lane.turn_completed" && event.sessionKey === key && event.turnId === send.turnId
        )
        if (done === undefined) continue
        if ((done.event as Of<"session.lane.turn_completed">).outcome === "success") completed++
        else failed++
        latencies.push(done.receivedAt - send.sentAt)
      }
      const maxMs = Math.max(0, ...latencies)
      return {
        sessionKey: key,
        sent: mine.length,
        completed,
        failed,
        p50Ms: Summary.percentile(latencies, 50),
        p95Ms: Summary.percentile(latencies, 95),
        maxMs,
        budgetMs,
        kept: mine.length > 0 && completed === mine.length && maxMs <= budgetMs
      }
    })

    const failed = [
      ...failures.filter((f) => !f.recovered).map((f) => `failure ${f.id} (${f.title}) not recovered`),
      ...paceResults.filter((p) => !p.kept).map((p) => `${p.sessionKey} missed its pace`)
    ]
    const report: Summary.Report = {
      ok: failed.length === 0,
      failed,
      failures,
      pace: paceResults,
      eventLoop: {
        ...sample,
        delayWarnings: ofType(received, "diagnostic.liveness.warning").filter(isDelayWarning).length,
        busyWarnings: ofType(received, "diagnostic.liveness.warning").filter((e) => !isDelayWarning(e)).length
      },
      durationMs: (yield* Clock.currentTimeMillis) - t0,
      events: received.length
    }
    options.log(Summary.render(report))
    return report
  }))
