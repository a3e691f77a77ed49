/**
 * Telemetry under load. First: does the default runtime lose diagnostic
 * events at its own maximum turn rate? `SessionRuntime.layer` with its default bus, metrics and stability
 * log (no session lock, so turns run as fast as the library allows), and
 * 1, 10, 100 and 1,000 sessions each running turns back to back (closed loop:
 * submit, await, submit the next), every turn a run with one tool and one
 * model marker. All four are measured in the same run.
 *
 * Figures, per session count N:
 * - `bus_drop_share_N_sessions`: events the bus dropped for its subscribers
 *   ÷ events it delivered to them (published × subscribers); 0 when there
 *   is no subscriber to drop for. Goal 0 with default settings.
 * - `bus_turn_us_N_sessions`: wall time per turn.
 * - `bus_metrics_exact_N_sessions`: whether the metrics' admission counter
 *   equals the turns run and the stability log recorded every event.
 * - `bus_events_per_turn`: events published per turn.
 * - `bus_subscribers_default`, `bus_observers_default`: the default runtime's
 *   bus readers. Its metrics and stability log observe the bus (see
 *   `DiagnosticBus.observe`): nothing can be dropped for them.
 * - `bus_observers_ns_per_event`: what the runtime's observers (metrics and
 *   stability log) add to publishing one event, measured over a real turn's
 *   events against the same publishing on a bare bus
 *   (`bus_publish_ns_per_event_bare`, `bus_publish_ns_per_event_observed`).
 * - `bus_drop_share_100_sessions_one_user_subscriber`: the same with 100
 *   sessions plus one user subscriber that drains the stream and does
 *   nothing else (what a user's sink gets at the default capacity).
 *
 * Then: what reading the gauges of state costs (they are read from the lanes
 * and the tracker at every scrape): `gauges_read_ms_10000_sessions`, one
 * `Metric.snapshot` of the runtime's registry with 10,000 open sessions, each
 * with a turn in a tool call; `snapshot_ms_10000_sessions_without_state_gauges`
 * is the same snapshot of the counters alone, as a baseline.
 */
import { Context, Deferred, Effect, Exit, Layer, Metric, Scope, Stream } from "effect"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import type * as DiagnosticEvent from "../src/DiagnosticEvent.ts"
import * as MetricsFromEvents from "../src/MetricsFromEvents.ts"
import * as SessionKey from "../src/SessionKey.ts"
import * as SessionLanes from "../src/SessionLanes.ts"
import * as SessionRuntime from "../src/SessionRuntime.ts"
import * as StabilityLog from "../src/StabilityLog.ts"
import type { Suite } from "./index.ts"
import { alternate } from "./utils/stats.ts"

interface Measured {
  readonly subscribers: number
  readonly observers: number
  readonly dropShare: number
  readonly turnUs: number
  readonly eventsPerTurn: number
  readonly exact: boolean
}

const measure = (sessions: number, turnsPerSession: number, userSubscriber = false): Promise<Measured> =>
  Effect.runPromise(Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      SessionRuntime.layer({ lock: { backend: "none" }, lanes: { spans: false }, tracker: { spans: false } }).pipe(
        Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
      ),
      scope
    )
    const lanes = Context.get(context, SessionLanes.SessionLanes)
    const tracker = Context.get(context, ActivityTracker.ActivityTracker)
    const bus = Context.get(context, DiagnosticBus.DiagnosticBus)
    const log = Context.get(context, StabilityLog.StabilityLog)
    const turn = tracker.tool({ name: "search" }, Effect.void).pipe(
      Effect.andThen(tracker.model({ provider: "openai", model: "gpt" }, Effect.void))
    )
    if (userSubscriber) {
      const events = yield* bus.subscribe({ name: "bench-user" }).pipe(Scope.provide(scope))
      yield* events.pipe(Stream.runForEachArray(() => Effect.void), Effect.forkIn(scope))
    }
    const keys = Array.from({ length: sessions }, (_, i) => SessionKey.makeUnsafe(`agent:bench:drops:${i}`))
    const before = yield* bus.stats
    const recordedBefore = (yield* log.summary).recorded
    const started = performance.now()
    yield* Effect.forEach(
      keys,
      (key) =>
        Effect.gen(function*() {
          for (let i = 0; i < turnsPerSession; i++) {
            const submission = yield* lanes.submit(key, turn)
            yield* submission.result
          }
        }),
      { concurrency: "unbounded", discard: true }
    )
    const elapsed = performance.now() - started
    // Let every subscriber catch up, then read the figures.
    for (let i = 0; i < 50; i++) yield* Effect.yieldNow
    const after = yield* bus.stats
    const published = after.published - before.published
    const subscribers = after.subscribers.length
    const dropped = after.dropped - before.dropped
    const turns = sessions * turnsPerSession
    const summary = yield* log.summary
    const counted = Metric.snapshotUnsafe(context as Context.Context<never>)
      .filter((s) => s.id === "session_runtime_turn_admissions_total")
      .reduce((n, s) => n + (s.state as Metric.CounterState<number>).count, 0)
    yield* Scope.close(scope, Exit.void)
    return {
      subscribers,
      observers: after.observers,
      dropShare: subscribers === 0 ? 0 : dropped / (published * subscribers),
      turnUs: (elapsed * 1000) / turns,
      eventsPerTurn: published / turns,
      exact: counted === turns && summary.recorded - recordedBefore === published
    }
  }).pipe(Effect.scoped))

/**
 * Nanoseconds per event of publishing one turn's events (captured from a real
 * turn) `rounds` times, on a bus with the runtime's observers (metrics and
 * stability log) or on a bare bus.
 */
const publishCost = (withObservers: boolean, drafts: ReadonlyArray<DiagnosticEvent.Draft>, rounds: number) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const scope = yield* Scope.make()
    const bare = DiagnosticBus.layer()
    const context = yield* Layer.buildWithScope(
      (withObservers
        ? Layer.mergeAll(MetricsFromEvents.layer(), StabilityLog.layer()).pipe(Layer.provideMerge(bare))
        : bare).pipe(Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))),
      scope
    )
    const bus = Context.get(context as Context.Context<DiagnosticBus.DiagnosticBus>, DiagnosticBus.DiagnosticBus)
    const started = performance.now()
    for (let r = 0; r < rounds; r++) for (const draft of drafts) bus.publishUnsafe(draft)
    const elapsed = performance.now() - started
    yield* Scope.close(scope, Exit.void)
    return (elapsed * 1e6) / (rounds * drafts.length)
  })))

/** The drafts of one turn with a tool and a model call, as the runtime publishes them. */
const oneTurn = (): Promise<ReadonlyArray<DiagnosticEvent.Draft>> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      SessionRuntime.layer({ lock: { backend: "none" }, lanes: { spans: false }, tracker: { spans: false } }).pipe(
        Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
      )
    )
    const bus = Context.get(context, DiagnosticBus.DiagnosticBus)
    const lanes = Context.get(context, SessionLanes.SessionLanes)
    const tracker = Context.get(context, ActivityTracker.ActivityTracker)
    const seen: Array<DiagnosticEvent.DiagnosticEvent> = []
    yield* bus.observe((event) => seen.push(event))
    const key = SessionKey.makeUnsafe("agent:bench:drops:one")
    const turn = tracker.tool({ name: "search" }, Effect.void).pipe(
      Effect.andThen(tracker.model({ provider: "openai", model: "gpt" }, Effect.void))
    )
    yield* (yield* lanes.submit(key, turn)).result
    yield* (yield* lanes.submit(key, turn)).result
    // The second turn: the lane was open already, as for most turns.
    const second = seen.slice(seen.findLastIndex((e) => e._tag === "session.lane.admitted"))
    return second.map(({ seq: _seq, ts: _ts, ...draft }) => draft as unknown as DiagnosticEvent.Draft)
  })))

/** Milliseconds per `Metric.snapshot` with 10,000 sessions busy in a tool call. */
const gaugeReadCost = (sessions: number, reads: number) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      SessionRuntime.layer({ lock: { backend: "none" }, lanes: { spans: false }, tracker: { spans: false } }).pipe(
        Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
      )
    )
    const lanes = Context.get(context, SessionLanes.SessionLanes)
    const tracker = Context.get(context, ActivityTracker.ActivityTracker)
    const release = yield* Deferred.make<void>()
    for (let i = 0; i < sessions; i++) {
      const key = SessionKey.makeUnsafe(`agent:bench:gauges:${i}`)
      yield* lanes.submit(key, tracker.tool({ name: "exec" }, Deferred.await(release)))
    }
    for (let i = 0; i < 20; i++) yield* Effect.yieldNow
    const registry = Context.get(context, Metric.MetricRegistry)
    const nouns = ["sessions", "queue_depth", "active_calls", "active_runs"]
    const stateIds = new Set(nouns.map((noun) => `session_runtime_${noun}`))
    const counters = new Map([...registry].filter(([, m]) => !stateIds.has(m.id)))
    const withoutState = Context.add(context, Metric.MetricRegistry, counters)
    const time = (ctx: Context.Context<never>) =>
      Effect.promise(async () => {
        const started = performance.now()
        for (let i = 0; i < reads; i++) {
          Metric.snapshotUnsafe(ctx)
          await new Promise<void>((resolve) => queueMicrotask(resolve)) // a new reading each time
        }
        return (performance.now() - started) / reads
      })
    const full = yield* time(context as Context.Context<never>)
    const bare = yield* time(withoutState as Context.Context<never>)
    const processing = Metric.snapshotUnsafe(context as Context.Context<never>).find((m) =>
      m.id === "session_runtime_sessions" && m.attributes?.["state"] === "processing"
    )
    yield* Deferred.succeed(release, undefined)
    return { full, bare, processing: (processing?.state as Metric.GaugeState<number> | undefined)?.value ?? -1 }
  })))

const suite: Suite = {
  name: "Telemetry under load: bus drops, observer cost, gauge reads",
  run: async ({ quick }) => {
    const total = quick ? 20_000 : 60_000
    await measure(10, 200) // warm up
    const figures: Record<string, number | boolean> = {}
    for (const sessions of [1, 10, 100, 1000]) {
      const result = await measure(sessions, Math.max(10, Math.floor(total / sessions)))
      figures[`bus_drop_share_${sessions}_sessions`] = result.dropShare
      figures[`bus_turn_us_${sessions}_sessions`] = result.turnUs
      figures[`bus_metrics_exact_${sessions}_sessions`] = result.exact
      figures.bus_events_per_turn = result.eventsPerTurn
      figures.bus_subscribers_default = result.subscribers
      figures.bus_observers_default = result.observers
    }
    const drafts = await oneTurn()
    const rounds = quick ? 20_000 : 50_000
    await publishCost(true, drafts, 2_000) // warm up
    await publishCost(false, drafts, 2_000)
    const cost = await alternate(quick ? 3 : 5, {
      observed: () => publishCost(true, drafts, rounds),
      bare: () => publishCost(false, drafts, rounds)
    })
    figures.bus_publish_ns_per_event_bare = cost.bare
    figures.bus_publish_ns_per_event_observed = cost.observed
    figures.bus_observers_ns_per_event = cost.observed - cost.bare
    const reads = await gaugeReadCost(10_000, quick ? 10 : 30)
    figures.gauges_read_ms_10000_sessions = reads.full
    figures.snapshot_ms_10000_sessions_without_state_gauges = reads.bare
    figures.gauges_processing_seen_10000_sessions = reads.processing
    const withUser = await measure(100, Math.floor(total / 100), true)
    figures.bus_drop_share_100_sessions_one_user_subscriber = withUser.dropShare
    figures.bus_turn_us_100_sessions_one_user_subscriber = withUser.turnUs
    return figures
  }
}

export default suite
