/**
 * A scripted scenario published on a real DiagnosticBus, as the runtime's
 * modules publish it: a stuck session recovered, an orphaned tool call evicted,
 * a contended lock acquired. Every identifier in it is distinctive, so a test
 * can assert that none of them reaches an exporter.
 */
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { ActivityTracker, type CurrentRun } from "../../src/ActivityTracker.ts"
import type { TurnGuardFailed } from "../../src/LaneGuard.ts"
import { type LaneFull, SessionLanes, type TurnInterrupted } from "../../src/SessionLanes.ts"
import { type AcquireError, SessionLock } from "../../src/SessionLock.ts"
import { DiagnosticBus } from "../../src/DiagnosticBus.ts"
import type { Draft } from "../../src/DiagnosticEvent.ts"
import * as SessionKey from "../../src/SessionKey.ts"

export const secrets = {
  stuckKey: SessionKey.makeUnsafe("agent:main:telegram:direct:+15550001111-zebra-stuck"),
  orphanKey: SessionKey.makeUnsafe("agent:main:whatsapp:group:quokka-orphan-7781"),
  lockKey: SessionKey.makeUnsafe("agent:ops:slack:channel:narwhal-lock-9902"),
  toolCallId: "toolu_01XyzzyPlughDistinctive",
  modelCallId: "msg_01FrobozzDistinctive",
  runId: "run-gnusto-4242",
  recoveryId: "recovery-rezrov-1717",
  path: "/var/lib/agent-gateway/sessions/frotz-secret-dir/transcript.jsonl"
} as const

/** Every string that must never appear in an exported payload. */
export const forbidden: ReadonlyArray<string> = [
  ...Object.values(secrets),
  "zebra-stuck",
  "quokka-orphan",
  "narwhal-lock",
  "frotz-secret-dir",
  "toolu_01Xyzzy",
  "gnusto"
]

const holder = { pid: 4242, host: "host-a", ownerId: "owner-frotz", status: "alive", ageMs: 1_200 } as const

/** The drafts, in publishing order. */
export const drafts: ReadonlyArray<Draft> = [
  // a stuck session: queued work, no run; recovered by releasing the lane
  { _tag: "session.lane.opened", sessionKey: secrets.stuckKey },
  {
    _tag: "session.state",
    sessionKey: secrets.stuckKey,
    state: "idle",
    queueDepth: 2,
    generation: 3,
    reason: `enqueued from ${secrets.path}`
  },
  {
    _tag: "session.stuck",
    sessionKey: secrets.stuckKey,
    classification: "stale_session_state",
    reason: "queued_work_without_active_run",
    recoverable: true,
    state: "idle",
    queueDepth: 2,
    generation: 3,
    activeWorkKind: "tool_call",
    ageMs: 300_000,
    evidence: `rule 1: idle, queue 2, no owner, progress 300s (${secrets.path})`
  },
  {
    _tag: "session.recovery.requested",
    sessionKey: secrets.stuckKey,
    recoveryId: secrets.recoveryId,
    trigger: "stuck",
    expectedState: "idle",
    generation: 3,
    allowActiveAbort: false
  },
  {
    _tag: "session.recovery.completed",
    sessionKey: secrets.stuckKey,
    recoveryId: secrets.recoveryId,
    status: "released",
    action: "release_lane",
    reason: `released ${secrets.stuckKey}`,
    stale: false,
    forced: false,
    durationMs: 12
  },
  {
    _tag: "session.state",
    sessionKey: secrets.stuckKey,
    state: "processing",
    queueDepth: 1,
    generation: 4,
    reason: "stuck_recovery:released"
  },
  // an orphan: a run opens a tool call and a model call, dies, its markers are evicted
  { _tag: "session.lane.opened", sessionKey: secrets.orphanKey },
  { _tag: "session.activity.run_started", sessionKey: secrets.orphanKey, runId: secrets.runId, owners: 1 },
  {
    _tag: "session.activity.marker_opened",
    sessionKey: secrets.orphanKey,
    runId: secrets.runId,
    markerId: secrets.toolCallId,
    kind: "tool_call",
    source: "reported",
    name: "read_file"
  },
  {
    _tag: "session.activity.marker_opened",
    sessionKey: secrets.orphanKey,
    runId: secrets.runId,
    markerId: secrets.modelCallId,
    kind: "model_call",
    source: "reported",
    name: "anthropic/claude-sonnet"
  },
  {
    _tag: "session.activity.run_ended",
    sessionKey: secrets.orphanKey,
    runId: secrets.runId,
    outcome: "defect",
    durationMs: 5_000,
    owners: 0
  },
  {
    _tag: "session.activity.evicted",
    sessionKey: secrets.orphanKey,
    reason: "orphaned_no_owner",
    evictedTools: 1,
    evictedModelCalls: 1,
    cutoffSeq: 10
  },
  {
    _tag: "session.activity.fenced",
    sessionKey: secrets.orphanKey,
    runId: secrets.runId,
    kind: "tool_call",
    signalSeq: 9,
    cutoffSeq: 10
  },
  { _tag: "session.activity.signal_ignored", reason: "end_without_start", detail: `no start for ${secrets.path}` },
  // a contended lock, acquired after waiting
  { _tag: "lock.contended", sessionKey: secrets.lockKey, backend: "file", holder },
  {
    _tag: "lock.acquired",
    sessionKey: secrets.lockKey,
    backend: "file",
    token: 7,
    waitedMs: 250,
    attempts: 3,
    reclaimed: false
  },
  { _tag: "lock.released", sessionKey: secrets.lockKey, backend: "file", token: 7, heldMs: 1_500 },
  {
    _tag: "lock.stale",
    sessionKey: secrets.lockKey,
    backend: "file",
    reasons: [`held past maxHoldMs at ${secrets.path}`],
    holder
  },
  // a turn, and a starved interval
  { _tag: "session.lane.turn_completed", sessionKey: secrets.stuckKey, turnId: "turn-1", outcome: "success", durationMs: 2_000 },
  {
    _tag: "diagnostic.liveness.warning",
    reasons: ["event_loop_delay_p99"],
    p99Ms: 1_500,
    maxMs: 2_500,
    utilization: 0.5,
    intervalMs: 30_000
  }
]

/** Publishes the scenario; returns the seq of the last event. */
export const publishScenario: Effect.Effect<number, never, DiagnosticBus> = Effect.gen(function*() {
  const bus = yield* DiagnosticBus
  let last = 0
  for (const draft of drafts) last = (yield* bus.publish(draft)).seq
  return last
})

/** The samples the scenario must produce in the Prometheus exposition (default prefix). */
export const expected: ReadonlyArray<readonly [name: string, labels: Record<string, string>, value: number]> = [
  ["session_runtime_attention_total", { classification: "stale_session_state", reason: "queued_work_without_active_run" }, 1],
  ["session_runtime_recovery_total", { phase: "requested", trigger: "stuck", action: "pending", status: "pending" }, 1],
  ["session_runtime_recovery_total", { phase: "completed", trigger: "stuck", action: "release_lane", status: "released" }, 1],
  ["session_runtime_activity_evicted_total", { reason: "orphaned_no_owner" }, 2],
  ["session_runtime_activity_fenced_total", { kind: "tool_call" }, 1],
  ["session_runtime_signals_ignored_total", { reason: "end_without_start" }, 1],
  ["session_runtime_tool_calls_total", { tool: "read_file", outcome: "evicted" }, 1],
  ["session_runtime_model_calls_total", { provider: "anthropic", outcome: "evicted" }, 1],
  ["session_runtime_lock_contended_total", {}, 1],
  ["session_runtime_lock_acquire_total", { outcome: "waited" }, 1],
  ["session_runtime_lock_stale_total", {}, 1],
  ["session_runtime_lock_wait_seconds_count", {}, 1],
  ["session_runtime_lock_wait_seconds_sum", {}, 0.25],
  ["session_runtime_lock_hold_seconds_sum", {}, 1.5],
  ["session_runtime_stuck_age_seconds_count", {}, 1],
  ["session_runtime_stuck_age_seconds_sum", {}, 300],
  ["session_runtime_turn_seconds_count", { outcome: "success" }, 1],
  ["session_runtime_liveness_warning_total", { reason: "event_loop_delay_p99" }, 1],
  ["session_runtime_event_loop_delay_p99_seconds", {}, 1.5],
  ["session_runtime_event_loop_delay_max_seconds", {}, 2.5]
]

/**
 * Drives the real runtime (`SessionRuntime.layerTest`: heartbeat 500 ms,
 * warn 1 s) through a stuck session and a lock wait: a crashed external run
 * leaves a tool marker on `stuckKey` and `turn` queues behind it until the
 * watchdog and recovery release the lane; meanwhile a second writer waits for
 * `lockKey`. Returns the queued turn's result once everything has finished.
 */
export const driveStuckSessionAndLockWait = <A, E>(
  turn: Effect.Effect<A, E, CurrentRun>
): Effect.Effect<A, E | TurnInterrupted | TurnGuardFailed | LaneFull | AcquireError, SessionLanes | ActivityTracker | SessionLock> =>
  Effect.gen(function*() {
    const lanes = yield* SessionLanes
    const tracker = yield* ActivityTracker
    const lock = yield* SessionLock
    yield* tracker.report({
      type: "started",
      kind: "tool_call",
      sessionKey: secrets.stuckKey,
      runId: secrets.runId,
      callId: secrets.toolCallId,
      name: "native_shell",
      seq: yield* tracker.nextSeq
    }).pipe(Effect.orDie)
    const queued = yield* lanes.submit(secrets.stuckKey, turn)
    const answered = yield* Effect.forkChild(queued.result)
    const holding = yield* Effect.scoped(Effect.andThen(lock.acquire(secrets.lockKey), Effect.sleep("1 second"))).pipe(
      Effect.forkChild({ startImmediately: true })
    )
    const waiting = yield* Effect.scoped(lock.acquire(secrets.lockKey)).pipe(
      Effect.forkChild({ startImmediately: true })
    )
    for (let i = 0; i < 6; i++) {
      yield* TestClock.adjust("500 millis")
      for (let j = 0; j < 50; j++) yield* Effect.yieldNow
    }
    yield* Fiber.join(holding)
    yield* Fiber.join(waiting)
    return yield* Fiber.join(answered)
  })
