import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as DiagnosticEvent from "../src/DiagnosticEvent.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as StabilityLog from "../src/StabilityLog.ts"

// Distinctive values that must never reach a record.
const secret = {
  sessionKey: SessionKey.makeUnsafe("agent:main:telegram:direct:zz-secret-session-4711"),
  runId: "zz-secret-run-id",
  parentRunId: "zz-secret-parent-run",
  markerId: "zz-secret-marker-id",
  toolName: "zz_secret_tool_name",
  modelName: "zz-secret-provider/zz-secret-model",
  turnId: "zz-secret-turn-id",
  recoveryId: "zz-secret-recovery-id",
  detail: "zz-secret-detail: prompt text with /home/zz-secret-user/.ssh/id_rsa",
  path: "/var/lib/zz-secret-locks/zz-secret.lock",
  host: "zz-secret-host.internal",
  ownerId: "zz-secret-owner-id",
  evidence: "zz-secret-evidence: session agent:main:zz-secret-session idle 300s",
  freeReason: "zz-secret-reason for call zz-secret-call-id",
  backend: "zz-secret-backend:/var/lib/zz-secret",
  subscriber: "zz-secret-subscriber"
}
const secretPid = 9_876_543
const isSecretText = (text: string) =>
  text.includes("zz-secret") || text.includes("zz_secret") || text.includes(String(secretPid))

const holder: DiagnosticEvent.LockHolder = {
  pid: secretPid,
  host: secret.host,
  ownerId: secret.ownerId,
  status: "alive",
  ageMs: 1234
}

const attention = {
  sessionKey: secret.sessionKey,
  classification: "stalled_agent_run",
  reason: "active_work_without_progress",
  recoverable: false,
  state: "processing",
  queueDepth: 2,
  generation: 7,
  activeWorkKind: "tool_call",
  ageMs: 300_000,
  evidence: secret.evidence
} as const

/** One draft of every event type of the catalogue, its free-form strings filled with secrets. */
const samples: { readonly [T in DiagnosticEvent.EventType]: DiagnosticEvent.DraftOf<T> } = {
  "session.activity.run_started": {
    _tag: "session.activity.run_started",
    sessionKey: secret.sessionKey,
    runId: secret.runId,
    parentRunId: secret.parentRunId,
    owners: 2
  },
  "session.activity.run_ended": {
    _tag: "session.activity.run_ended",
    sessionKey: secret.sessionKey,
    runId: secret.runId,
    outcome: "failure",
    durationMs: 50,
    owners: 0
  },
  "session.activity.marker_opened": {
    _tag: "session.activity.marker_opened",
    sessionKey: secret.sessionKey,
    runId: secret.runId,
    markerId: secret.markerId,
    kind: "tool_call",
    source: "reported",
    name: secret.toolName
  },
  "session.activity.marker_closed": {
    _tag: "session.activity.marker_closed",
    sessionKey: secret.sessionKey,
    runId: secret.runId,
    markerId: secret.markerId,
    kind: "model_call",
    source: "structured",
    outcome: "interrupted",
    durationMs: 70
  },
  "session.activity.progress": {
    _tag: "session.activity.progress",
    sessionKey: secret.sessionKey,
    reason: secret.toolName,
    terminal: false
  },
  "session.activity.evicted": {
    _tag: "session.activity.evicted",
    sessionKey: secret.sessionKey,
    reason: "orphaned_no_owner",
    evictedTools: 1,
    evictedModelCalls: 0,
    cutoffSeq: 41
  },
  "session.activity.fenced": {
    _tag: "session.activity.fenced",
    sessionKey: secret.sessionKey,
    runId: secret.runId,
    kind: "tool_call",
    signalSeq: 40,
    cutoffSeq: 41
  },
  "session.activity.signal_ignored": {
    _tag: "session.activity.signal_ignored",
    reason: "end_without_start",
    detail: secret.detail
  },
  "session.state": {
    _tag: "session.state",
    sessionKey: secret.sessionKey,
    state: "idle",
    queueDepth: 0,
    generation: 8,
    reason: secret.freeReason
  },
  "session.lane.admitted": {
    _tag: "session.lane.admitted",
    sessionKey: secret.sessionKey,
    turnId: secret.turnId,
    admission: "rejected",
    position: 3,
    reason: secret.freeReason
  },
  "session.lane.turn_completed": {
    _tag: "session.lane.turn_completed",
    sessionKey: secret.sessionKey,
    turnId: secret.turnId,
    outcome: "success",
    durationMs: 900
  },
  "session.lane.opened": { _tag: "session.lane.opened", sessionKey: secret.sessionKey },
  "session.lane.closed": { _tag: "session.lane.closed", sessionKey: secret.sessionKey, reason: "idle_ttl" },
  "session.long_running": { _tag: "session.long_running", ...attention, classification: "long_running" },
  "session.stalled": { _tag: "session.stalled", ...attention },
  "session.stuck": { _tag: "session.stuck", ...attention, classification: "stale_session_state" },
  "session.recovery.requested": {
    _tag: "session.recovery.requested",
    sessionKey: secret.sessionKey,
    recoveryId: secret.recoveryId,
    trigger: "stuck",
    expectedState: "processing",
    generation: 8,
    allowActiveAbort: true
  },
  "session.recovery.completed": {
    _tag: "session.recovery.completed",
    sessionKey: secret.sessionKey,
    recoveryId: secret.recoveryId,
    status: "failed",
    action: "none",
    reason: `defect: ${secret.detail}`,
    stale: false,
    forced: true,
    durationMs: 12
  },
  "lock.acquired": {
    _tag: "lock.acquired",
    sessionKey: secret.sessionKey,
    backend: secret.backend,
    token: 3,
    waitedMs: 20,
    attempts: 2,
    reclaimed: true
  },
  "lock.contended": { _tag: "lock.contended", sessionKey: secret.sessionKey, backend: "file", holder },
  "lock.reclaimed": {
    _tag: "lock.reclaimed",
    sessionKey: secret.sessionKey,
    backend: "file",
    reason: "holder_dead",
    previousHolder: { ...holder, status: "dead" }
  },
  "lock.released": { _tag: "lock.released", sessionKey: secret.sessionKey, backend: "memory", token: 3, heldMs: 99 },
  "lock.timeout": {
    _tag: "lock.timeout",
    sessionKey: secret.sessionKey,
    backend: "file",
    waitedMs: 10_000,
    attempts: 40,
    holder
  },
  "lock.stale": {
    _tag: "lock.stale",
    sessionKey: secret.sessionKey,
    backend: "file",
    reasons: ["older_than_stale_time", secret.freeReason],
    holder
  },
  "lock.lost": {
    _tag: "lock.lost",
    sessionKey: secret.sessionKey,
    backend: "file",
    token: 4,
    reason: `the lock is now held by ${secret.ownerId} with token 5`
  },
  "diagnostic.liveness.warning": {
    _tag: "diagnostic.liveness.warning",
    reasons: ["event_loop_delay_p99"],
    p99Ms: 2500,
    maxMs: 12_600,
    utilization: 0.97,
    intervalMs: 10_000
  },
  "diagnostic.events.dropped": {
    _tag: "diagnostic.events.dropped",
    subscriber: secret.subscriber,
    dropped: 5,
    totalDropped: 9
  }
}

const drafts = DiagnosticEvent.eventTypes.map((type) => samples[type] as DiagnosticEvent.Draft)

/** Replaces every string in a value (at any depth) with a fresh secret, and adds fields nobody allowed. */
const hostile = (draft: DiagnosticEvent.Draft): DiagnosticEvent.Draft => {
  let n = 0
  const poison = (value: unknown): unknown => {
    if (typeof value === "string") return `zz-secret-value-${n++}`
    if (Array.isArray(value)) return value.map(poison)
    if (typeof value === "object" && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, poison(v)]))
    }
    return value
  }
  const { _tag, ...fields } = draft
  return {
    _tag,
    ...(poison(fields) as object),
    sessionKey: secret.sessionKey,
    pid: secretPid,
    path: secret.path,
    callId: "zz-secret-call-id",
    newField: "zz-secret-new-field"
  } as unknown as DiagnosticEvent.Draft
}

const LogLive = (options?: StabilityLog.Options, bus?: DiagnosticBus.Options) =>
  StabilityLog.layer(options).pipe(Layer.provideMerge(DiagnosticBus.layer(bus)))

const publishAll = (list: ReadonlyArray<DiagnosticEvent.Draft>) =>
  Effect.flatMap(DiagnosticBus.DiagnosticBus, (bus) => Effect.forEach(list, bus.publish, { discard: true }))

const progress = (reason: string): DiagnosticEvent.Draft => ({
  _tag: "session.activity.progress",
  sessionKey: secret.sessionKey,
  reason,
  terminal: false
})

describe("StabilityLog", () => {
  describe("sanitize", () => {
    it("no record of any event type contains a session key, id, name, path, host, pid or free text", () => {
      assert.strictEqual(drafts.length, DiagnosticEvent.eventTypes.length)
      for (const [i, draft] of drafts.entries()) {
        const record = StabilityLog.sanitize(DiagnosticEvent.fromDraft(draft, i + 1, 1000))
        const text = JSON.stringify(record)
        assert.isFalse(isSecretText(text), `${draft._tag} leaked: ${text}`)
        assert.deepStrictEqual([record.seq, record.ts, record.type], [i + 1, 1000, draft._tag])
      }
    })

    it("drops fields nobody allowed and records unexpected strings as \"other\", for every event type", () => {
      for (const [i, draft] of drafts.entries()) {
        const record = StabilityLog.sanitize(DiagnosticEvent.fromDraft(hostile(draft), i + 1, 0))
        const text = JSON.stringify(record)
        assert.isFalse(isSecretText(text), `${draft._tag} leaked: ${text}`)
        for (const field of ["sessionKey", "pid", "path", "callId", "newField", "runId", "markerId", "name"]) {
          assert.notProperty(record, field, draft._tag)
        }
      }
    })

    it("keeps numbers, booleans and enum-like fields", () => {
      const record = (type: DiagnosticEvent.EventType) =>
        StabilityLog.sanitize(DiagnosticEvent.fromDraft(samples[type] as DiagnosticEvent.Draft, 1, 5))
      const base = (type: DiagnosticEvent.EventType) => ({ seq: 1, ts: 5, type })
      assert.deepStrictEqual(record("session.activity.marker_closed"), {
        ...base("session.activity.marker_closed"),
        kind: "model_call",
        source: "structured",
        outcome: "interrupted",
        durationMs: 70
      })
      assert.deepStrictEqual(record("session.activity.run_started"), {
        ...base("session.activity.run_started"),
        owners: 2,
        nested: true
      })
      assert.deepStrictEqual(record("session.stalled"), {
        ...base("session.stalled"),
        classification: "stalled_agent_run",
        reason: "active_work_without_progress",
        recoverable: false,
        state: "processing",
        queueDepth: 2,
        generation: 7,
        activeWorkKind: "tool_call",
        ageMs: 300_000
      })
      assert.deepStrictEqual(record("session.recovery.completed"), {
        ...base("session.recovery.completed"),
        status: "failed",
        action: "none",
        reason: "defect",
        stale: false,
        forced: true,
        durationMs: 12
      })
      assert.deepStrictEqual(record("lock.stale"), {
        ...base("lock.stale"),
        backend: "file",
        reasons: ["older_than_stale_time", "other"],
        holderStatus: "alive",
        holderAgeMs: 1234
      })
      assert.deepStrictEqual(record("lock.reclaimed"), {
        ...base("lock.reclaimed"),
        backend: "file",
        reason: "holder_dead",
        previousHolderStatus: "dead",
        previousHolderAgeMs: 1234
      })
      assert.deepStrictEqual(record("lock.acquired"), {
        ...base("lock.acquired"),
        backend: "other",
        token: 3,
        waitedMs: 20,
        attempts: 2,
        reclaimed: true
      })
      assert.deepStrictEqual(record("session.activity.signal_ignored"), {
        ...base("session.activity.signal_ignored"),
        reason: "end_without_start"
      })
      assert.deepStrictEqual(record("diagnostic.events.dropped"), {
        ...base("diagnostic.events.dropped"),
        subscriber: "other",
        dropped: 5,
        totalDropped: 9
      })
    })

    it("keeps a progress reason only from the known vocabulary", () => {
      const reasonOf = (reason: string) =>
        StabilityLog.sanitize(DiagnosticEvent.fromDraft(progress(reason), 1, 0)).reason
      assert.deepStrictEqual(
        ["response_completed", "progress", "zz_secret_tool_name", "agent:main:x"].map(reasonOf),
        ["response_completed", "progress", "other", "other"]
      )
    })
  })

  describe("following the bus", () => {
    it.effect("records every published event of the catalogue, sanitised, with its seq and Clock time", () =>
      Effect.gen(function*() {
        yield* TestClock.adjust("5 seconds")
        yield* publishAll(drafts)
        const records = yield* StabilityLog.query({ limit: 1000 })
        assert.deepStrictEqual(records.map((r) => r.type), DiagnosticEvent.eventTypes)
        assert.deepStrictEqual(records.map((r) => r.seq), drafts.map((_, i) => i + 1))
        assert.isTrue(records.every((r) => r.ts === 5000))
        assert.isFalse(isSecretText(JSON.stringify(records)))
        yield* publishAll(drafts.map(hostile))
        const hostileRecords = yield* StabilityLog.query({ limit: 1000, sinceSeq: drafts.length })
        assert.strictEqual(hostileRecords.length, drafts.length)
        assert.isFalse(isSecretText(JSON.stringify(hostileRecords)))
      }).pipe(Effect.provide(LogLive())))

    it.effect("keeps only the newest records and counts the ones pushed out", () =>
      Effect.gen(function*() {
        yield* publishAll(Array.from({ length: 12 }, () => progress("progress")))
        const records = yield* StabilityLog.query()
        assert.deepStrictEqual(records.map((r) => r.seq), [8, 9, 10, 11, 12])
        const summary = yield* StabilityLog.summary
        assert.deepStrictEqual(
          {
            total: summary.total,
            recorded: summary.recorded,
            dropped: summary.dropped,
            firstSeq: summary.firstSeq,
            lastSeq: summary.lastSeq,
            capacity: summary.capacity
          },
          {
            total: 5,
            recorded: 12,
            dropped: 7,
            firstSeq: 8,
            lastSeq: 12,
            capacity: 5
          }
        )
      }).pipe(Effect.provide(LogLive({ capacity: 5 }))))

    it.effect("holds 1000 records by default", () =>
      Effect.gen(function*() {
        yield* publishAll(Array.from({ length: 1005 }, () => progress("progress")))
        const summary = yield* StabilityLog.summary
        assert.deepStrictEqual([summary.capacity, summary.total, summary.dropped, summary.firstSeq], [
          1000,
          1000,
          5,
          6
        ])
        assert.strictEqual((yield* StabilityLog.query({ limit: 1000 })).length, 1000)
      }).pipe(Effect.provide(LogLive())))

    it.effect("records every event however far the bus's subscribers fall behind", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.DiagnosticBus
        yield* bus.subscribe({ name: "never-reads" })
        yield* publishAll(Array.from({ length: 50 }, () => progress("progress")))
        const stats = yield* bus.stats
        assert.isAbove(stats.dropped, 40, "the bus dropped events for its subscriber")
        const records = yield* StabilityLog.query({ limit: 1000 })
        assert.deepStrictEqual(records.map((r) => r.seq), Array.from({ length: stats.watermark }, (_, i) => i + 1))
        const summary = yield* StabilityLog.summary
        assert.deepStrictEqual([summary.recorded, summary.dropped], [stats.published, 0])
        assert.isAbove(summary.byType["diagnostic.events.dropped"] ?? 0, 0, "the drop reports are recorded too")
      }).pipe(Effect.provide(LogLive({}, { capacity: 4 }))))

    it.effect("two logs on one bus each record every event", () =>
      Effect.gen(function*() {
        const log = yield* StabilityLog.make()
        const twin = yield* StabilityLog.make()
        yield* publishAll(Array.from({ length: 5 }, () => progress("progress")))
        for (const each of [log, twin]) {
          assert.deepStrictEqual((yield* each.query()).map((r) => r.seq), [1, 2, 3, 4, 5])
        }
      }).pipe(Effect.provide(DiagnosticBus.layer({ capacity: 4 }))))
  })

  describe("query", () => {
    it.effect("returns the newest 50 by default, filters by type and sinceSeq, newest last", () =>
      Effect.gen(function*() {
        const list = Array.from({ length: 60 }, (_, i) =>
          i % 3 === 0 ? samples["session.activity.evicted"] : progress("progress")
        )
        yield* publishAll(list)
        const page = yield* StabilityLog.query()
        assert.deepStrictEqual(page.map((r) => r.seq), Array.from({ length: 50 }, (_, i) => i + 11))
        const evicted = yield* StabilityLog.query({ type: "session.activity.evicted", limit: 3 })
        assert.deepStrictEqual(evicted.map((r) => r.seq), [52, 55, 58])
        const after = yield* StabilityLog.query({ sinceSeq: 57 })
        assert.deepStrictEqual(after.map((r) => r.seq), [58, 59, 60])
        const both = yield* StabilityLog.query({ sinceSeq: 50, type: "session.activity.evicted" })
        assert.deepStrictEqual(both.map((r) => r.seq), [52, 55, 58])
      }).pipe(Effect.provide(LogLive())))

    it.effect("rejects an out-of-range limit, a negative sinceSeq or an unknown type with a typed error", () =>
      Effect.gen(function*() {
        yield* publishAll([progress("progress")])
        const cases: Array<[Parameters<typeof StabilityLog.query>[0], string, RegExp]> = [
          [{ limit: 0 }, "limit", /limit must be an integer from 1 to 1000 \(default 50\) \(got 0\)/],
          [{ limit: 1001 }, "limit", /from 1 to 1000.*got 1001/],
          [{ limit: 1.5 }, "limit", /from 1 to 1000.*got 1.5/],
          [{ limit: Number.NaN }, "limit", /from 1 to 1000.*got NaN/],
          [{ sinceSeq: -1 }, "sinceSeq", /sinceSeq must be a non-negative integer.*got -1/],
          [{ type: "session.activity.exploded" }, "type", /type must be an event type of the catalogue/]
        ]
        for (const [query, field, message] of cases) {
          const error = yield* Effect.flip(StabilityLog.query(query))
          assert.strictEqual(error._tag, "InvalidStabilityQuery")
          assert.strictEqual(error.field, field)
          assert.match(error.message, message)
        }
        // A rejected query changed nothing.
        assert.strictEqual((yield* StabilityLog.query()).length, 1)
      }).pipe(Effect.provide(LogLive())))
  })

  describe("layer", () => {
    it.effect("refuses a capacity that is not a positive integer", () =>
      Effect.gen(function*() {
        for (const capacity of [0, -5, 2.5]) {
          const exit = yield* Effect.exit(Effect.provide(StabilityLog.summary, LogLive({ capacity })))
          assert.isTrue(exit._tag === "Failure" && String(exit.cause).includes("capacity must be a positive integer"))
        }
      }))
  })
})
