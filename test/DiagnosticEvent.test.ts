import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as DiagnosticEvent from "../src/DiagnosticEvent.ts"
import * as SessionKey from "../src/SessionKey.ts"

const key = SessionKey.makeUnsafe("agent:main:telegram:direct:42")

describe("DiagnosticEvent", () => {
  describe("fromDraft", () => {
    it("builds exactly what the class constructor builds", () => {
      const fast = DiagnosticEvent.fromDraft({
        _tag: "session.activity.evicted",
        sessionKey: key,
        reason: "orphaned_no_owner",
        evictedTools: 1,
        evictedModelCalls: 0,
        cutoffSeq: 7
      }, 8, 1000)
      const slow = new DiagnosticEvent.ActivityEvicted({
        seq: 8,
        ts: 1000,
        sessionKey: key,
        reason: "orphaned_no_owner",
        evictedTools: 1,
        evictedModelCalls: 0,
        cutoffSeq: 7
      })
      assert.instanceOf(fast, DiagnosticEvent.ActivityEvicted)
      assert.deepStrictEqual({ ...fast }, { ...slow })
      assert.strictEqual(DiagnosticEvent.encodeJson(fast), DiagnosticEvent.encodeJson(slow))
    })
  })

  describe("Json", () => {
    it.effect("round-trips every event type through JSON", () =>
      Effect.gen(function*() {
        const holder = { pid: 12, host: "h", status: "dead" as const, ageMs: 5 }
        const drafts: Array<DiagnosticEvent.Draft> = [
          { _tag: "session.activity.run_started", sessionKey: key, runId: "r1", owners: 1 },
          { _tag: "session.activity.run_ended", sessionKey: key, runId: "r1", outcome: "defect", durationMs: 3, owners: 0 },
          {
            _tag: "session.activity.marker_opened",
            sessionKey: key,
            runId: "r1",
            markerId: "m1",
            kind: "tool_call",
            source: "reported",
            name: "bash"
          },
          {
            _tag: "session.activity.marker_closed",
            sessionKey: key,
            runId: "r1",
            markerId: "m1",
            kind: "model_call",
            source: "structured",
            outcome: "interrupted",
            durationMs: 1
          },
          { _tag: "session.activity.progress", sessionKey: key, reason: "stream", terminal: false },
          {
            _tag: "session.activity.evicted",
            sessionKey: key,
            reason: "owner_exited",
            evictedTools: 0,
            evictedModelCalls: 2,
            cutoffSeq: 4
          },
          { _tag: "session.activity.fenced", sessionKey: key, runId: "r", kind: "tool_call", signalSeq: 3, cutoffSeq: 4 },
          { _tag: "session.activity.signal_ignored", reason: "end_without_start", detail: "x" },
          { _tag: "session.state", sessionKey: key, state: "idle", queueDepth: 2, generation: 9, reason: "turn_finished" },
          { _tag: "session.lane.admitted", sessionKey: key, turnId: "t", admission: "enqueued", position: 2 },
          { _tag: "session.lane.turn_completed", sessionKey: key, turnId: "t", outcome: "success", durationMs: 2 },
          { _tag: "session.lane.opened", sessionKey: key },
          { _tag: "session.lane.closed", sessionKey: key, reason: "idle_ttl" },
          ...(["session.long_running", "session.stalled", "session.stuck"] as const).map((tag) => ({
            _tag: tag,
            sessionKey: key,
            classification: "stale_session_state" as const,
            reason: "queued_work_without_active_run" as const,
            recoverable: true,
            state: "idle" as const,
            queueDepth: 1,
            generation: 3,
            activeWorkKind: "model_call" as const,
            ageMs: 130_000,
            evidence: "rule 1"
          })),
          {
            _tag: "session.recovery.requested",
            sessionKey: key,
            recoveryId: "rc",
            trigger: "stuck",
            expectedState: "idle",
            generation: 3,
            allowActiveAbort: false
          },
          {
            _tag: "session.recovery.completed",
            sessionKey: key,
            recoveryId: "rc",
            status: "released",
            action: "release_lane",
            reason: "ok",
            stale: false,
            forced: false,
            durationMs: 0
          },
          { _tag: "lock.acquired", sessionKey: key, backend: "file", token: 3, waitedMs: 1, attempts: 2, reclaimed: true },
          { _tag: "lock.contended", sessionKey: key, backend: "file", holder },
          { _tag: "lock.reclaimed", sessionKey: key, backend: "file", reason: "holder_dead", previousHolder: holder },
          { _tag: "lock.released", sessionKey: key, backend: "file", token: 3, heldMs: 10 },
          { _tag: "lock.timeout", sessionKey: key, backend: "file", waitedMs: 60_000, attempts: 30, holder },
          { _tag: "lock.stale", sessionKey: key, backend: "file", reasons: ["too_old"], holder },
          { _tag: "lock.lost", sessionKey: key, backend: "file", token: 3, reason: "superseded" },
          {
            _tag: "diagnostic.liveness.warning",
            reasons: ["event_loop_delay_max"],
            p99Ms: 20,
            maxMs: 1200,
            utilization: 0.5,
            intervalMs: 30_000
          },
          { _tag: "diagnostic.events.dropped", subscriber: "slow", dropped: 3, totalDropped: 3 }
        ]
        const seen = new Set(drafts.map((d) => d._tag))
        assert.deepStrictEqual([...seen].sort(), [...DiagnosticEvent.eventTypes].sort(), "every type is covered")
        for (const [i, draft] of drafts.entries()) {
          const event = DiagnosticEvent.fromDraft(draft, i + 1, 1_000 + i)
          const json = DiagnosticEvent.encodeJson(event)
          const back = yield* DiagnosticEvent.decodeJson(json)
          assert.strictEqual(back._tag, draft._tag)
          assert.deepStrictEqual({ ...back }, { ...event })
          assert.strictEqual(JSON.parse(json).seq, i + 1)
        }
      }))

    it.effect("rejects undecodable input with a SchemaError that names the problem", () =>
      Effect.gen(function*() {
        const inputs = [
          "not json",
          "{}",
          JSON.stringify({ _tag: "session.nope", seq: 1, ts: 1 }),
          JSON.stringify({
            _tag: "session.activity.evicted",
            seq: 1,
            ts: 1,
            sessionKey: "",
            reason: "orphaned_no_owner",
            evictedTools: 1,
            evictedModelCalls: 0,
            cutoffSeq: 1
          }),
          JSON.stringify({
            _tag: "session.activity.evicted",
            seq: "1",
            ts: 1,
            sessionKey: "k",
            reason: "bogus",
            evictedTools: 1,
            evictedModelCalls: 0,
            cutoffSeq: 1
          })
        ]
        for (const input of inputs) {
          const error = yield* Effect.flip(DiagnosticEvent.decodeJson(input))
          assert.strictEqual(error._tag, "SchemaError")
          assert.isAbove(error.message.length, 0)
        }
      }))

    it("validates when decoding unknown values", () => {
      const decode = Schema.decodeUnknownResult(DiagnosticEvent.DiagnosticEvent)
      assert.strictEqual(decode({ _tag: "session.lane.opened", seq: 1, ts: 2, sessionKey: "a\nb" })._tag, "Failure")
      assert.strictEqual(decode({ _tag: "session.lane.opened", seq: 1, ts: 2, sessionKey: "ok" })._tag, "Success")
    })
  })
})
