/**
 * The heartbeat that notices wedged sessions and asks for their recovery.
 *
 * Every `interval` (a `Schedule`, default 30 s) one tick:
 * 1. samples the event loop (when an `EventLoopMonitor` is provided); a
 *    starved process publishes `diagnostic.liveness.warning` and takes no
 *    active abort this tick — a silent session may be the process's fault;
 * 2. sweeps the tracker (markers of owners that are gone) and lets lanes
 *    gated on leftover work re-check;
 * 3. classifies every processing session older than the warn threshold and
 *    every idle session with queued work (`Attention.classify`), publishes the
 *    verdict with its evidence (`long_running` and stuck back off, stalled
 *    every tick);
 * 4. asks `Recovery` to release the lane of a recoverable (stuck) session, and
 *    for an active abort of a stalled run, blocked tool or stalled model call
 *    held by a live owner once it reaches the abort threshold.
 *
 * Recoveries run on their own fibers: a session that takes its full settle
 * time never delays the tick, nor any other session.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { ActivityTracker } from "./ActivityTracker.ts"
import * as Attention from "./Attention.ts"
import { DiagnosticBus } from "./DiagnosticBus.ts"
import * as Policy from "./internal/watchdogPolicy.ts"
import { EventLoopMonitor } from "./NodeEventLoopMonitor.ts"
import { Recovery } from "./Recovery.ts"
import type { SessionKey } from "./SessionKey.ts"
import { SessionLanes } from "./SessionLanes.ts"

/**
 * Options of the watchdog. Invalid thresholds fall back to their defaults
 * (see `docs/attention.md`); `notes` on the report say what was ignored.
 *
 * @category config
 * @since 0.1.0
 */
export interface Options {
  /**
   * Heartbeat interval.
   * @default "30 seconds"
   */
  readonly interval?: Duration.Input | undefined
  /**
   * Age past which a session gets attention (valid 1 s–24 h).
   * @default "120 seconds"
   */
  readonly warn?: Duration.Input | undefined
  /**
   * Age at which stalled work with a live owner is aborted; never below warn.
   * @default max(5 minutes, 3 × warn)
   */
  readonly abort?: Duration.Input | undefined
  /**
   * Ask recovery to release stuck sessions.
   * @default true
   */
  readonly autoRecover?: boolean | undefined
  /**
   * Abort stalled work past the abort threshold.
   * @default true
   */
  readonly activeAbort?: boolean | undefined
  /** Limits past which the process counts as starved. */
  readonly starvation?: Partial<Policy.StarvationLimits> | undefined
}

/**
 * What one tick saw and did.
 *
 * @category models
 * @since 0.1.0
 */
export interface TickReport {
  readonly at: number
  readonly starved: boolean
  readonly classified: number
  readonly warned: number
  readonly recoveriesRequested: ReadonlyArray<{ readonly sessionKey: SessionKey; readonly trigger: string }>
  readonly swept: number
  readonly verdicts: ReadonlyArray<{
    readonly sessionKey: SessionKey
    readonly verdict: Attention.Verdict
    readonly ageMs: number
    readonly abort: Policy.AbortEligibility
  }>
}

/**
 * @category services
 * @since 0.1.0
 */
export class Watchdog extends Context.Service<Watchdog, {
  /** Runs one tick now (the schedule also runs them). */
  readonly tick: Effect.Effect<TickReport>
  /** The thresholds in force and any configuration that was ignored. */
  readonly thresholds: Policy.ResolvedThresholds
  /** Waits for every recovery started by past ticks to finish. */
  readonly awaitRecoveries: Effect.Effect<void>
}>()("effect-session-runtime/Watchdog") {}

const toMs = (input: Duration.Input | undefined): number | undefined => {
  if (input === undefined) return undefined
  const decoded = Duration.fromInput(input)
  return Option.isSome(decoded) ? Duration.toMillis(decoded.value) : Number.NaN
}

interface WarnState {
  readonly episode: number
  lastWarnAgeMs: number | undefined
}

/**
 * Builds the watchdog (without starting its schedule; see {@link layer}).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const bus = yield* DiagnosticBus
  const tracker = yield* ActivityTracker
  const lanes = yield* SessionLanes
  const recovery = yield* Recovery
  const monitor = yield* Effect.serviceOption(EventLoopMonitor)
  const clock = yield* Clock.Clock
  const recoveries = yield* FiberSet.make<unknown, never>()
  const thresholds = Policy.resolveThresholds({
    warnMs: toMs(options.warn),
    abortMs: toMs(options.abort),
    intervalMs: toMs(options.interval)
  })
  for (const note of thresholds.notes) yield* Effect.logWarning(`watchdog: ${note}`)
  const autoRecover = options.autoRecover ?? true
  const activeAbort = options.activeAbort ?? true
  const warnings = new Map<SessionKey, WarnState>()

  const sampleLiveness = Effect.gen(function*() {
    if (Option.isNone(monitor)) return false
    const sample = yield* monitor.value.sample
    const verdict = Policy.isStarved(sample, options.starvation)
    if (verdict.starved) {
      yield* bus.publish({
        _tag: "diagnostic.liveness.warning",
        reasons: verdict.reasons,
        p99Ms: sample.p99Ms,
        maxMs: sample.maxMs,
        utilization: sample.utilization,
        intervalMs: sample.intervalMs
      })
    }
    return verdict.starved
  })

  const tick: Effect.Effect<TickReport> = Effect.gen(function*() {
    const starved = yield* sampleLiveness
    const swept = yield* tracker.sweep
    yield* lanes.recheckGated
    const now = clock.currentTimeMillisUnsafe()
    const views = yield* lanes.needingAttention(thresholds.warnMs)
    const requested: Array<{ sessionKey: SessionKey; trigger: string }> = []
    const verdicts: Array<TickReport["verdicts"][number]> = []
    let warned = 0
    const seen = new Set<SessionKey>()
    for (const view of views) {
      const processingAge = now - view.stateSince
      seen.add(view.sessionKey)
      const activity = yield* tracker.snapshot(view.sessionKey)
      const sessionView = Attention.fromSnapshot(view, activity)
      const verdict = Attention.classify(sessionView, { warnMs: thresholds.warnMs })
      const ageMs = view.state === "processing" ? processingAge : activity.lastProgressAgeMs ?? processingAge
      const abort = Policy.activeAbortEligibility(
        verdict,
        Policy.abortInputsOf(activity),
        thresholds.abortMs,
        starved
      )
      verdicts.push({ sessionKey: view.sessionKey, verdict, ageMs, abort })

      // Back-off is per episode: a new state entry starts counting afresh.
      const episode = view.stateSince
      let warnState = warnings.get(view.sessionKey)
      if (warnState === undefined || warnState.episode !== episode) {
        warnState = { episode, lastWarnAgeMs: undefined }
        warnings.set(view.sessionKey, warnState)
      }
      const decision = Policy.shouldWarn(warnState.lastWarnAgeMs, ageMs, thresholds.warnMs, verdict.classification)
      if (decision.warn) {
        warnState.lastWarnAgeMs = ageMs
        warned++
        yield* bus.publish({
          _tag: verdict.eventType as "session.stuck",
          sessionKey: view.sessionKey,
          classification: verdict.classification,
          reason: verdict.reason,
          recoverable: verdict.recoverable,
          state: view.state,
          queueDepth: view.queueDepth,
          generation: view.generation,
          ...(activity.activeWorkKind === undefined ? {} : { activeWorkKind: activity.activeWorkKind }),
          ageMs,
          evidence: Attention.renderEvidence(verdict.evidence)
        })
      }

      if (verdict.recoverable && autoRecover) {
        requested.push({ sessionKey: view.sessionKey, trigger: "stuck" })
        yield* FiberSet.run(recoveries, recovery.recover({
          sessionKey: view.sessionKey,
          trigger: "stuck",
          action: view.state === "idle" ? "release_lane" : "abort_run",
          expectedState: view.state,
          generation: view.generation,
          allowActiveAbort: false
        }))
      } else if (abort.eligible && activeAbort) {
        requested.push({ sessionKey: view.sessionKey, trigger: "active_abort" })
        yield* FiberSet.run(recoveries, recovery.recover({
          sessionKey: view.sessionKey,
          trigger: "active_abort",
          action: "abort_run",
          expectedState: view.state,
          generation: view.generation,
          allowActiveAbort: true
        }))
      }
    }
    for (const key of warnings.keys()) if (!seen.has(key)) warnings.delete(key)
    return {
      at: now,
      starved,
      classified: verdicts.length,
      warned,
      recoveriesRequested: requested,
      swept,
      verdicts
    }
  })

  return Watchdog.of({
    tick,
    thresholds,
    awaitRecoveries: FiberSet.awaitEmpty(recoveries)
  })
})

/**
 * The watchdog as a layer: builds it and runs a tick on `Schedule.spaced`
 * of the interval, in the layer's scope.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<Watchdog, never, DiagnosticBus | ActivityTracker | SessionLanes | Recovery> =>
  Layer.effect(
    Watchdog,
    Effect.gen(function*() {
      const watchdog = yield* make(options)
      const heartbeat = Schedule.spaced(Duration.millis(watchdog.thresholds.intervalMs))
      const safeTick = watchdog.tick.pipe(
        Effect.catchCause((cause) => Effect.logError("watchdog tick failed; the next tick runs on schedule", cause))
      )
      yield* safeTick.pipe(
        Effect.repeat(heartbeat),
        Effect.delay(Duration.millis(watchdog.thresholds.intervalMs)),
        Effect.forkScoped
      )
      return watchdog
    })
  )
