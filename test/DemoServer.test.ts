/**
 * The demo agent server end to end: a real HTTP server on an ephemeral port,
 * driven over real HTTP (and, for the lock contention, a real second process).
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { FetchHttpClient, HttpBody, HttpClient } from "effect/http"
import * as DemoServer from "../examples/demo/DemoServer.ts"
import * as EventFeed from "../examples/demo/EventFeed.ts"
import * as Scenario from "../examples/demo/Scenario.ts"
import * as Settings from "../examples/demo/Settings.ts"
import * as Prometheus from "./utils/prometheus.ts"

const serverLayer = (settings: Settings.Settings) =>
  DemoServer.layer(settings).pipe(Layer.provideMerge(Layer.mergeAll(FetchHttpClient.layer, NodeServices.layer)))

interface Reply {
  readonly status: number
  readonly body: Record<string, unknown>
}

const http = Effect.gen(function*() {
  const client = yield* HttpClient.HttpClient
  const { url } = yield* DemoServer.DemoAddress
  const reply = (response: { readonly status: number; readonly text: Effect.Effect<string, unknown> }) =>
    Effect.map(response.text, (text): Reply => ({ status: response.status, body: JSON.parse(text) }))
  return {
    url,
    get: (path: string) => client.get(`${url}${path}`).pipe(Effect.flatMap(reply), Effect.orDie),
    post: (path: string, body: string, contentType = "application/json") =>
      client.post(`${url}${path}`, { body: HttpBody.text(body, contentType) }).pipe(Effect.flatMap(reply), Effect.orDie),
    metrics: client.get(`${url}/metrics`).pipe(
      Effect.flatMap((response) => response.text),
      Effect.map(Prometheus.parse),
      Effect.orDie
    )
  }
})

const messages = (key: string) => `/sessions/${encodeURIComponent(key)}/messages`

describe("DemoServer", () => {
  layer(serverLayer({ ...Settings.scenario, maxQueueDepth: 2 }), { excludeTestServices: true })("bad requests", (it) => {
    it.effect("get clear 4xx JSON errors and change nothing", () =>
      Effect.gen(function*() {
        const api = yield* http
        const before = {
          sessions: (yield* api.get("/sessions")).body,
          log: ((yield* api.get("/stability?limit=1")).body.summary as { total: number }).total,
          admissions: Prometheus.sum(yield* api.metrics, "session_runtime_turn_admissions_total")
        }
        const expectError = (reply: Reply, status: number, error: string) => {
          assert.strictEqual(reply.status, status, JSON.stringify(reply.body))
          assert.strictEqual(reply.body.error, error)
          assert.isString(reply.body.message)
          assert.isAbove((reply.body.message as string).length, 10)
        }
        const ok = JSON.stringify({ text: "hello" })

        const control = yield* api.post(messages("agent:\u0001:x"), ok)
        expectError(control, 400, "InvalidSessionKey")
        assert.strictEqual(control.body.rule, "control_character")
        const long = yield* api.post(messages("k".repeat(513)), ok)
        expectError(long, 400, "InvalidSessionKey")
        assert.strictEqual(long.body.rule, "too_long")
        expectError(yield* api.get(`/sessions/${encodeURIComponent("a\u007fb")}`), 400, "InvalidSessionKey")

        expectError(yield* api.post(messages("agent:demo:ok"), "{\"text\": \"unterminated"), 400, "MalformedJson")
        expectError(yield* api.post(messages("agent:demo:ok"), "[1, 2"), 400, "MalformedJson")
        for (const body of [{}, { text: "" }, { text: 42 }, { text: "x", behaviour: "explode" }, { text: "x", admission: "later" }]) {
          expectError(yield* api.post(messages("agent:demo:ok"), JSON.stringify(body)), 400, "InvalidBody")
        }
        const oversized = yield* api.post(messages("agent:demo:ok"), JSON.stringify({ text: "x".repeat(100_000) }))
        expectError(oversized, 413, "BodyTooLarge")
        assert.strictEqual(oversized.body.limitBytes, 64 * 1024)
        expectError(yield* api.post(messages("agent:demo:ok"), "hello", "text/plain"), 415, "UnsupportedMediaType")

        expectError(yield* api.get("/sessions/agent%3Ademo%3Anobody"), 404, "SessionNotFound")
        expectError(yield* api.get("/no/such/route"), 404, "NotFound")
        for (
          const [query, field] of [
            ["limit=0", "limit"],
            ["limit=abc", "limit"],
            ["limit=1001", "limit"],
            ["sinceSeq=-1", "sinceSeq"],
            ["type=session.nonsense", "type"]
          ]
        ) {
          const reply = yield* api.get(`/stability?${query}`)
          expectError(reply, 400, "InvalidStabilityQuery")
          assert.strictEqual(reply.body.field, field, query)
        }

        // Nothing changed: no session, no event, no admission.
        assert.deepStrictEqual((yield* api.get("/sessions")).body, before.sessions)
        assert.deepStrictEqual((yield* api.get("/sessions")).body, { sessions: [] })
        assert.strictEqual(((yield* api.get("/stability?limit=1")).body.summary as { total: number }).total, before.log)
        assert.strictEqual(Prometheus.sum(yield* api.metrics, "session_runtime_turn_admissions_total"), before.admissions)
      }))

    it.effect("a full queue answers 429 LaneFull and a busy session 409 under 'reject', keeping the queue", () =>
      Effect.gen(function*() {
        const api = yield* http
        const key = "agent:demo:full"
        const hang = yield* api.post(messages(key), JSON.stringify({ text: "block", behaviour: "hang" }))
        assert.strictEqual(hang.status, 202)
        assert.strictEqual(hang.body.admission, "started")
        for (const position of [1, 2]) {
          const queued = yield* api.post(messages(key), JSON.stringify({ text: `q${position}` }))
          assert.strictEqual(queued.status, 202)
          assert.deepInclude(queued.body, { admission: "enqueued", position })
        }
        const full = yield* api.post(messages(key), JSON.stringify({ text: "one too many" }))
        assert.strictEqual(full.status, 429)
        assert.strictEqual(full.body.error, "LaneFull")
        assert.strictEqual(full.body.maxQueueDepth, 2)
        const rejected = yield* api.post(messages(key), JSON.stringify({ text: "now", admission: "reject" }))
        assert.strictEqual(rejected.status, 409)
        assert.deepInclude(rejected.body, { error: "SessionBusy", admission: "rejected" })
        // The hung tool opens after the planner's model call.
        let markers: Array<[string, boolean]> = []
        for (let i = 0; i < 60 && markers.length === 0; i++) {
          yield* Effect.sleep("50 millis")
          const session = (yield* api.get(`/sessions/${encodeURIComponent(key)}`)).body
          assert.deepInclude(session, { state: "processing", queueDepth: 2 })
          markers = (session.markers as Array<{ name: string; kind: string; owned: boolean }>)
            .filter((m) => m.kind === "tool_call")
            .map((m) => [m.name, m.owned])
        }
        assert.deepStrictEqual(markers, [["shell", true]])
      }))
  })

  layer(serverLayer(Settings.scenario), { excludeTestServices: true })("seed-failures scenario", (it) => {
    it.effect("recovers each of the three production failures, as /sessions, /events and /metrics show", () =>
      Effect.gen(function*() {
        const address = yield* DemoServer.DemoAddress
        const api = yield* http
        const feed = yield* EventFeed.connect(address.url, () => {})
        // Starting the test process itself may starve the loop once; count only the scenario's own.
        const delayWarnings = (metrics: Prometheus.Exposition) =>
          Prometheus.sum(metrics, "session_runtime_liveness_warning_total", { reason: "event_loop_delay_p99" }) +
          Prometheus.sum(metrics, "session_runtime_liveness_warning_total", { reason: "event_loop_delay_max" })
        const warningsBefore = delayWarnings(yield* api.metrics)
        const lines: Array<string> = []
        const report = yield* Scenario.run({
          baseUrl: address.url,
          lockDirectory: address.lockDirectory,
          thresholds: Settings.scenario.thresholds,
          log: (line) => lines.push(line),
          // The whole suite runs in parallel on small machines: a wider budget than the demo's 1 s.
          paceBudgetMs: 2000
        })
        if (!report.ok) console.log(lines.join("\n"))
        assert.deepStrictEqual(report.failed, [])
        assert.deepStrictEqual(report.failures.map((f) => [f.id, f.recovered]), [
          ["1", true],
          ["2", true],
          ["3a", true],
          ["3b", true]
        ])
        assert.isTrue(report.pace.every((p) => p.kept && p.sent >= 5))
        assert.include(lines.join("\n"), "every failure was recovered and every healthy session kept its pace")

        // /events
        const events = feed.all().map((r) => r.event)
        const of = <T extends (typeof events)[number]["_tag"]>(type: T, key?: string) =>
          events.filter((e): e is Extract<typeof e, { _tag: T }> =>
            e._tag === type && (key === undefined || ("sessionKey" in e && e.sessionKey === key))
          )
        const stuck = of("session.stuck", Scenario.keys.orphan)
        assert.isAbove(stuck.length, 0)
        assert.strictEqual(stuck[0]!.reason, "queued_work_without_active_run")
        assert.match(stuck[0]!.evidence, /^rule 1 orphaned activity: idle, queue 2, tool_call open .* with no owner/)
        assert.deepStrictEqual(
          of("session.recovery.completed", Scenario.keys.orphan).map((e) => [e.status, e.action, e.reason]),
          [["released", "release_lane", "orphaned_activity_evicted"]]
        )
        assert.deepStrictEqual(of("session.activity.evicted", Scenario.keys.orphan).map((e) => e.reason), ["recovery"])

        const reclaimed = of("lock.reclaimed").filter((e) => e.sessionKey.startsWith("agent:demo:locked:"))
        assert.strictEqual(new Set(reclaimed.map((e) => e.sessionKey)).size, 32)
        assert.isTrue(reclaimed.every((e) => e.reason === "holder_dead" && e.previousHolder.status === "dead"))

        assert.deepStrictEqual(of("session.activity.evicted", Scenario.keys.leak).map((e) => e.reason), [
          "orphaned_no_owner"
        ])
        assert.strictEqual(of("session.activity.fenced", Scenario.keys.leak).length, 1)
        assert.deepStrictEqual(of("session.stalled", Scenario.keys.leak), [])
        assert.isTrue(of("session.long_running", Scenario.keys.leak).every((e) => e.reason === "active_work"))

        const blocked = of("session.stalled", Scenario.keys.hang)
        assert.isAbove(blocked.length, 0)
        assert.isTrue(blocked.every((e) => e.classification === "blocked_tool_call"))
        const aborted = of("session.recovery.completed", Scenario.keys.hang)
        assert.deepStrictEqual(aborted.map((e) => [e.status, e.action, e.reason]), [["aborted", "abort_run", "run_interrupted"]])
        const hangStart = of("session.lane.turn_completed", Scenario.keys.hang)
        assert.deepStrictEqual(hangStart.map((e) => e.outcome), ["interrupted", "success"])
        assert.isAtLeast(hangStart[0]!.durationMs, 6000, "aborted at the abort threshold, not before")
        // A blocked loop would show as a delay warning; a busy test machine may still show utilisation ones.
        assert.deepStrictEqual(of("diagnostic.liveness.warning").filter(Scenario.isDelayWarning), [])

        // /sessions: every scenario session drained, nothing left open
        const sessions = (yield* api.get("/sessions")).body.sessions as Array<{
          sessionKey: string
          state: string
          queueDepth: number
          markers: Array<unknown>
          owners: number
        }>
        const scenarioSessions = sessions.filter((s) => s.sessionKey.startsWith("agent:demo:"))
        assert.strictEqual(scenarioSessions.length, 1 + 1 + 1 + 32 + 3)
        for (const session of scenarioSessions) {
          assert.deepInclude(session, { state: "idle", queueDepth: 0, owners: 0, markers: [] }, session.sessionKey)
        }

        // /metrics
        const metrics = yield* api.metrics
        const count = (name: string, labels: Record<string, string>) => Prometheus.sum(metrics, name, labels)
        assert.isAtLeast(
          count("session_runtime_recovery_total", {
            phase: "completed",
            trigger: "stuck",
            action: "release_lane",
            status: "released"
          }),
          1
        )
        assert.isAtLeast(
          count("session_runtime_recovery_total", {
            phase: "completed",
            trigger: "active_abort",
            action: "abort_run",
            status: "aborted"
          }),
          1
        )
        assert.strictEqual(count("session_runtime_lock_reclaimed_total", { reason: "holder_dead" }), 32)
        assert.isAtLeast(count("session_runtime_activity_evicted_total", { reason: "orphaned_no_owner" }), 1)
        assert.isAtLeast(count("session_runtime_activity_evicted_total", { reason: "recovery" }), 1)
        assert.strictEqual(count("session_runtime_activity_fenced_total", { kind: "tool_call" }), 1)
        assert.isAtLeast(
          count("session_runtime_attention_total", {
            classification: "stale_session_state",
            reason: "queued_work_without_active_run"
          }),
          1
        )
        assert.isAtLeast(
          count("session_runtime_attention_total", { classification: "blocked_tool_call", reason: "blocked_tool_call" }),
          1
        )
        assert.strictEqual(delayWarnings(metrics), warningsBefore)
        assert.strictEqual(count("session_runtime_sessions", { state: "processing" }), 0)
        assert.strictEqual(count("session_runtime_queue_depth", {}), 0)
        assert.strictEqual(count("session_runtime_active_calls", {}), 0)
        // The event-loop gauges follow every watchdog sample, not only liveness warnings.
        assert.isAbove(count("session_runtime_event_loop_utilization", {}), 0)
        assert.isBelow(count("session_runtime_event_loop_delay_max_seconds", {}), 1)
      }))
  })
})
