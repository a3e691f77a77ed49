/**
 * Property test of the ActivityTracker over random interleavings of runs,
 * nested and concurrent runs, structured tool/model markers, interrupts (of
 * runs and of markers), failures, defects, sweeps, recoveries, and reported
 * start/completion/progress signals delivered on time, late, duplicated, or
 * completed without a start.
 *
 * After quiescence: no marker and no owner remains, and the books balance per
 * marker id — every `marker_opened` is followed by exactly one
 * `marker_closed` or is counted in exactly one `session.activity.evicted`
 * (the model below replays each eviction's selection rule and checks its
 * counts) — and every reported start either opened a marker or was fenced or
 * ignored, with exactly one event each.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Scheduler, Scope } from "effect"
import fc from "fast-check"
import * as ActivityTracker from "../src/ActivityTracker.ts"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import type { DiagnosticEvent, MarkerKind } from "../src/DiagnosticEvent.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { collectEvents } from "./utils/events.ts"

// ---------------------------------------------------------------------------
// scenarios
// ---------------------------------------------------------------------------

type Ending = "success" | "fail" | "die" | "interrupt"
/**
 * inline: in place; fork: a child fiber interrupted when the enclosing body
 * ends; cancel: a child fiber interrupted after `after` yields (or with the body).
 */
type Mode =
  | { readonly _tag: "inline" }
  | { readonly _tag: "fork" }
  | { readonly _tag: "cancel"; readonly after: number }
type StartTiming = "now" | "dup" | "late" | "nowAndLate" | "lateFresh"
type EndTiming = "now" | "dup" | "late"

/** A structured tool/model marker around `body`; `hang` ends it with `Effect.never` where something interrupts it. */
interface MarkerStep {
  readonly _tag: "marker"
  readonly kind: MarkerKind
  readonly ending: Ending
  readonly hang: boolean
  readonly mode: Mode
  readonly body: ReadonlyArray<Step>
}

/** A (nested) run around `body`, through `run` or, when `scoped`, through `owner`. */
interface RunStep {
  readonly _tag: "run"
  readonly ending: Ending
  readonly hang: boolean
  readonly scoped: boolean
  readonly mode: Mode
  readonly body: ReadonlyArray<Step>
}

interface StartStep {
  readonly _tag: "start"
  readonly call: number
  readonly kind: MarkerKind
  readonly timing: StartTiming
}

interface EndStep {
  readonly _tag: "end"
  readonly call: number
  readonly kind: MarkerKind
  readonly timing: EndTiming
  readonly outcome: "success" | "failure"
}

type Step =
  | MarkerStep
  | RunStep
  | StartStep
  | EndStep
  | { readonly _tag: "progress"; readonly reported: boolean }
  | { readonly _tag: "yield" }
  | { readonly _tag: "flush" }
  | { readonly _tag: "sweep" }
  | { readonly _tag: "recover" }

interface Top {
  readonly session: number
  readonly run: RunStep
}

const kindArb = fc.constantFrom<MarkerKind>("tool_call", "model_call")
const endingArb = fc.constantFrom<Ending>("success", "success", "fail", "die", "interrupt")
const modeArb: fc.Arbitrary<Mode> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ _tag: "inline" } as const) },
  { weight: 2, arbitrary: fc.constant({ _tag: "fork" } as const) },
  { weight: 2, arbitrary: fc.nat(4).map((after) => ({ _tag: "cancel", after }) as const) }
)

const leafArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      _tag: fc.constant("start" as const),
      call: fc.nat(1),
      kind: kindArb,
      timing: fc.constantFrom<StartTiming>("now", "now", "dup", "late", "nowAndLate", "lateFresh")
    })
  },
  {
    weight: 4,
    arbitrary: fc.record({
      _tag: fc.constant("end" as const),
      call: fc.nat(1),
      kind: kindArb,
      timing: fc.constantFrom<EndTiming>("now", "now", "dup", "late"),
      outcome: fc.constantFrom("success" as const, "failure" as const)
    })
  },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("progress" as const), reported: fc.boolean() }) },
  { weight: 2, arbitrary: fc.constant({ _tag: "yield" } as const) },
  { weight: 1, arbitrary: fc.constant({ _tag: "flush" } as const) },
  { weight: 1, arbitrary: fc.constant({ _tag: "sweep" } as const) },
  { weight: 1, arbitrary: fc.constant({ _tag: "recover" } as const) }
)

const { run: runArb } = fc.letrec<{ step: Step; marker: MarkerStep; run: RunStep }>((tie) => ({
  step: fc.oneof({ depthSize: "small", maxDepth: 3 }, leafArb, tie("marker"), tie("run")),
  marker: fc.record({
    _tag: fc.constant("marker" as const),
    kind: kindArb,
    ending: endingArb,
    hang: fc.boolean(),
    mode: modeArb,
    body: fc.array(tie("step"), { maxLength: 3 })
  }),
  run: fc.record({
    _tag: fc.constant("run" as const),
    ending: endingArb,
    hang: fc.boolean(),
    scoped: fc.boolean(),
    mode: modeArb,
    body: fc.array(tie("step"), { maxLength: 5 })
  })
}))

interface Scenario {
  readonly tops: ReadonlyArray<Top>
  /**
   * The scheduler's operation budget per fiber slice: small budgets make
   * fibers give way at almost any step, so other fibers run (and interrupts
   * land) between any two operations of a transition.
   */
  readonly opsBeforeYield: number
}

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  tops: fc.array(fc.record({ session: fc.nat(1), run: runArb }), { minLength: 1, maxLength: 3 }),
  opsBeforeYield: fc.constantFrom(3, 7, 20, 2048)
})

// ---------------------------------------------------------------------------
// the interpreter
// ---------------------------------------------------------------------------

const keys = [
  SessionKey.makeUnsafe("agent:main:telegram:direct:1"),
  SessionKey.makeUnsafe("agent:main:slack:channel:2")
]

interface StartRecord {
  readonly runId: string
  readonly kind: MarkerKind
  readonly callId: string
  readonly seq: number
  /** Numbered inside its run's body, so at or before the run's cutoff. */
  readonly numberedInBody: boolean
  /** Delivered when its run had certainly ended. */
  readonly afterEnd: boolean
  readonly result: ActivityTracker.SignalResult
}

interface World {
  readonly tracker: typeof ActivityTracker.ActivityTracker.Service
  readonly bus: typeof DiagnosticBus.DiagnosticBus.Service
  /** Deliveries held back to be made later (a flush step, or the end). */
  late: Array<Effect.Effect<void>>
  readonly ended: Set<string>
  readonly starts: Array<StartRecord>
  readonly results: Array<ActivityTracker.SignalResult>
  readonly reportedSeq: Map<string, number>
}

const exitWith = (ending: Ending, hang: boolean): Effect.Effect<void, string> =>
  hang ? Effect.never : ending === "success"
  ? Effect.void
  : ending === "fail"
  ? Effect.fail("boom")
  : ending === "die"
  ? Effect.die(new Error("bug"))
  : Effect.interrupt

// The bookkeeping is uninterruptible with the call, so that an interrupt cannot
// fall between a signal taking effect and the test recording its result.
const report = (world: World, signal: object, after?: (result: ActivityTracker.SignalResult) => void) =>
  world.tracker.report(signal).pipe(
    Effect.tap((result) =>
      Effect.sync(() => {
        world.results.push(result)
        after?.(result)
      })
    ),
    Effect.catchTag("InvalidSignal", (e) => Effect.die(new Error(`generated signal rejected: ${e.message}`))),
    Effect.uninterruptible
  )

const deliverStart = (
  world: World,
  base: {
    readonly sessionKey: SessionKey.SessionKey
    readonly runId: string
    readonly kind: MarkerKind
    readonly callId: string
  },
  seq: number,
  numberedInBody: boolean
) =>
  Effect.suspend(() => {
    const afterEnd = world.ended.has(base.runId)
    return report(world, { ...base, type: "started", seq, name: "shell" }, (result) => {
      const { callId, kind, runId } = base
      world.starts.push({ runId, kind, callId, seq, numberedInBody, afterEnd, result })
      if (result._tag === "Opened") world.reportedSeq.set(result.markerId, seq)
    })
  })

const flush = (world: World) =>
  Effect.suspend(() => {
    const pending = world.late
    world.late = []
    return Effect.forEach(pending, (delivery) => delivery, { discard: true })
  })

// Children are forked into a scope of the body that forks them and are
// interrupted when it ends (structured concurrency).
const interpretAll = (world: World, key: SessionKey.SessionKey, steps: ReadonlyArray<Step>) =>
  Effect.acquireUseRelease(
    Scope.make(),
    (children) => Effect.forEach(steps, (step) => interpret(world, key, step, children), { discard: true }),
    (children, exit) => Scope.close(children, exit)
  )

const withMode = (
  effect: Effect.Effect<unknown, unknown, ActivityTracker.CurrentRun>,
  mode: Mode,
  children: Scope.Scope
): Effect.Effect<void, never, ActivityTracker.CurrentRun> => {
  switch (mode._tag) {
    case "inline":
      return Effect.asVoid(Effect.exit(effect))
    case "fork":
      return Effect.asVoid(Effect.forkIn(effect, children, { startImmediately: true }))
    case "cancel":
      return Effect.gen(function*() {
        const fiber = yield* Effect.forkIn(effect, children, { startImmediately: true })
        for (let i = 0; i < mode.after; i++) yield* Effect.yieldNow
        yield* Fiber.interrupt(fiber)
      })
  }
}

const interpretRun = (world: World, key: SessionKey.SessionKey, step: RunStep) => {
  // A run that hangs is only allowed where something will interrupt it.
  const hang = step.hang && step.mode._tag !== "inline"
  const body = Effect.gen(function*() {
    yield* interpretAll(world, key, step.body)
    yield* exitWith(step.ending, hang)
  })
  let runId = ""
  const tracked = step.scoped
    ? Effect.scoped(
      Effect.flatMap(world.tracker.owner(key), (current) => {
        runId = current.runId
        return Effect.provideService(body, ActivityTracker.CurrentRun, current)
      })
    )
    : world.tracker.run(
      key,
      Effect.flatMap(ActivityTracker.CurrentRun, (current) => {
        runId = current.runId
        return body
      })
    )
  return tracked.pipe(Effect.ensuring(Effect.sync(() => runId !== "" && world.ended.add(runId))))
}

const interpret = (
  world: World,
  key: SessionKey.SessionKey,
  step: Step,
  children: Scope.Scope
): Effect.Effect<void, never, ActivityTracker.CurrentRun> => {
  const { tracker, bus } = world
  switch (step._tag) {
    case "run":
      return withMode(interpretRun(world, key, step), step.mode, children)
    case "marker": {
      const hang = step.hang && step.mode._tag !== "inline"
      const body = Effect.andThen(interpretAll(world, key, step.body), exitWith(step.ending, hang))
      const marked = step.kind === "tool_call"
        ? tracker.tool({ name: "shell" }, body)
        : tracker.model({ provider: "openai", model: "gpt" }, body)
      return withMode(marked, step.mode, children)
    }
    case "start":
      return Effect.gen(function*() {
        const { runId } = yield* ActivityTracker.CurrentRun
        const base = { sessionKey: key, runId, kind: step.kind, callId: `call-${step.call}` }
        const seq = yield* tracker.nextSeq
        if (step.timing === "now" || step.timing === "dup" || step.timing === "nowAndLate") {
          yield* deliverStart(world, base, seq, true)
        }
        if (step.timing === "dup") yield* deliverStart(world, base, seq, true)
        if (step.timing === "late" || step.timing === "nowAndLate") {
          world.late.push(deliverStart(world, base, seq, true))
        }
        if (step.timing === "lateFresh") {
          // Numbered only when delivered (after the run ended, if delivered at the end).
          world.late.push(Effect.flatMap(tracker.nextSeq, (fresh) => deliverStart(world, base, fresh, false)))
        }
      })
    case "end":
      return Effect.gen(function*() {
        const { runId } = yield* ActivityTracker.CurrentRun
        const signal = {
          type: "completed",
          sessionKey: key,
          runId,
          kind: step.kind,
          callId: `call-${step.call}`,
          outcome: step.outcome
        }
        const deliver = Effect.flatMap(tracker.nextSeq, (seq) => Effect.asVoid(report(world, { ...signal, seq })))
        if (step.timing === "late") world.late.push(deliver)
        else yield* deliver
        if (step.timing === "dup") yield* deliver
      })
    case "progress":
      return step.reported
        ? Effect.gen(function*() {
          const { runId } = yield* ActivityTracker.CurrentRun
          yield* report(world, { type: "progress", sessionKey: key, runId, seq: yield* tracker.nextSeq })
        })
        : tracker.progress("stream_chunk")
    case "yield":
      return Effect.yieldNow
    case "flush":
      return flush(world)
    case "sweep":
      return Effect.asVoid(tracker.sweep)
    case "recover":
      return Effect.flatMap(bus.watermark, (cutoff) => Effect.asVoid(tracker.evictForRecovery(key, { cutoff })))
  }
}

// ---------------------------------------------------------------------------
// the books
// ---------------------------------------------------------------------------

interface OpenMarker {
  readonly sessionKey: string
  readonly kind: MarkerKind
  readonly runId: string
  readonly openedSeq: number
}

/**
 * Replays the events in order against a model of the tracker and returns the
 * first violation found, if any.
 */
const audit = (
  events: ReadonlyArray<DiagnosticEvent>,
  world: World,
  stats: ActivityTracker.Stats
): string | undefined => {
  const open = new Map<string, OpenMarker>()
  const finished = new Map<string, "closed" | "evicted">()
  const owners = new Map<string, Map<string, number>>() // session -> runId -> start seq
  const endedRuns = new Set<string>()
  let opened = 0
  let reportedOpened = 0
  let closed = 0
  let evicted = 0
  let fenced = 0
  let ignored = 0
  const ownersOf = (sessionKey: string) => {
    let map = owners.get(sessionKey)
    if (map === undefined) owners.set(sessionKey, map = new Map())
    return map
  }
  for (const event of events) {
    switch (event._tag) {
      case "diagnostic.events.dropped":
        return `the collector lost events: ${JSON.stringify(event)}`
      case "session.activity.run_started":
        ownersOf(event.sessionKey).set(event.runId, event.seq)
        break
      case "session.activity.run_ended":
        ownersOf(event.sessionKey).delete(event.runId)
        endedRuns.add(event.runId)
        break
      case "session.activity.marker_opened": {
        if (open.has(event.markerId) || finished.has(event.markerId)) return `marker ${event.markerId} opened twice`
        const openedSeq = event.source === "reported" ? world.reportedSeq.get(event.markerId) : event.seq
        if (openedSeq === undefined) return `reported marker ${event.markerId} opened without an Opened result`
        open.set(event.markerId, { sessionKey: event.sessionKey, kind: event.kind, runId: event.runId, openedSeq })
        opened++
        if (event.source === "reported") reportedOpened++
        break
      }
      case "session.activity.marker_closed": {
        const marker = open.get(event.markerId)
        if (marker === undefined) {
          const was = finished.get(event.markerId) ?? "never opened"
          return `marker ${event.markerId} closed at #${event.seq} but it was ${was}`
        }
        open.delete(event.markerId)
        finished.set(event.markerId, "closed")
        closed++
        break
      }
      case "session.activity.evicted": {
        const live = ownersOf(event.sessionKey)
        const select = (m: OpenMarker): boolean => {
          if (m.sessionKey !== event.sessionKey) return false
          switch (event.reason) {
            case "orphaned_no_owner":
              return true
            case "owner_exited":
              return !live.has(m.runId) && endedRuns.has(m.runId)
            case "recovery": {
              if (m.openedSeq > event.cutoffSeq) return false
              const startSeq = live.get(m.runId)
              return startSeq === undefined || startSeq <= event.cutoffSeq
            }
          }
        }
        let tools = 0
        let models = 0
        for (const [id, m] of Array.from(open)) {
          if (!select(m)) continue
          open.delete(id)
          finished.set(id, "evicted")
          if (m.kind === "tool_call") tools++
          else models++
        }
        if (tools !== event.evictedTools || models !== event.evictedModelCalls) {
          return `eviction #${event.seq} (${event.reason}) counted ${event.evictedTools}/${event.evictedModelCalls} ` +
            `but the open markers it selects are ${tools}/${models}`
        }
        if (event.reason === "orphaned_no_owner" && live.size > 0) {
          return `eviction #${event.seq} says no owner remains, but ${Array.from(live.keys())} are registered`
        }
        evicted += tools + models
        break
      }
      case "session.activity.fenced":
        fenced++
        break
      case "session.activity.signal_ignored":
        ignored++
        break
    }
  }
  if (open.size > 0) return `markers left open: ${JSON.stringify(Array.from(open))}`
  for (const [sessionKey, live] of owners) {
    if (live.size > 0) return `owners left on ${sessionKey}: ${Array.from(live.keys())}`
  }
  if (stats.markers !== 0 || stats.owners !== 0) return `stats after quiescence: ${JSON.stringify(stats)}`
  if (opened !== closed + evicted) return `opened ${opened} != closed ${closed} + evicted ${evicted}`
  if (stats.opened !== opened || stats.closed !== closed || stats.evicted !== evicted) {
    return `stats ${JSON.stringify(stats)} disagree with the events (${opened}/${closed}/${evicted})`
  }
  // Every reported signal is accounted for by exactly one event.
  const count = (tag: ActivityTracker.SignalResult["_tag"]) => world.results.filter((r) => r._tag === tag).length
  if (count("Opened") !== reportedOpened) return `${count("Opened")} Opened results, ${reportedOpened} reported opens`
  if (count("Fenced") !== fenced || stats.fenced !== fenced) {
    return `${count("Fenced")} Fenced results, ${fenced} fenced events, ${stats.fenced} counted`
  }
  if (count("Ignored") !== ignored || stats.ignored !== ignored) {
    return `${count("Ignored")} Ignored results, ${ignored} signal_ignored events, ${stats.ignored} counted`
  }
  // A start numbered while its run was alive and delivered after it ended is fenced; none re-arms anything.
  for (const start of world.starts) {
    if (!start.afterEnd) continue
    if (start.numberedInBody && start.result._tag !== "Fenced") {
      const result = JSON.stringify(start.result)
      return `start ${start.callId} of ended run ${start.runId} (#${start.seq}) was not fenced: ${result}`
    }
    if (start.result._tag === "Opened") return `start ${start.callId} of ended run ${start.runId} re-armed a marker`
  }
  // A call opens at most one marker, however often its start is delivered.
  const seen = new Set<string>()
  for (const start of world.starts) {
    if (start.result._tag !== "Opened") continue
    const id = `${start.runId}/${start.kind}/${start.callId}`
    if (seen.has(id)) return `call ${id} opened a second marker (start #${start.seq})`
    seen.add(id)
  }
  return undefined
}

// ---------------------------------------------------------------------------
// the property
// ---------------------------------------------------------------------------

const runScenario = (scenario: Scenario) =>
  Effect.gen(function*() {
    const tracker = yield* ActivityTracker.ActivityTracker
    const bus = yield* DiagnosticBus.DiagnosticBus
    const events = yield* collectEvents
    const world: World = { tracker, bus, late: [], ended: new Set(), starts: [], results: [], reportedSeq: new Map() }
    const fibers = yield* Effect.forEach(
      scenario.tops,
      (top) =>
        Effect.forkChild(Effect.exit(interpretRun(world, keys[top.session]!, { ...top.run, hang: false })), {
          startImmediately: true
        }).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, scenario.opsBeforeYield))
    )
    yield* Fiber.awaitAll(fibers)
    // Quiescence: every run has ended; now deliver whatever was held back.
    for (let i = 0; i < 10 && world.late.length > 0; i++) yield* flush(world)
    yield* events.settle
    return audit(events.all(), world, yield* tracker.stats)
  }).pipe(
    Effect.scoped,
    Effect.provide(ActivityTracker.layer().pipe(Layer.provideMerge(DiagnosticBus.layer({ capacity: 8192 }))))
  )

describe("ActivityTracker", () => {
  describe("random interleavings", () => {
    it("leave no marker and no owner, and every marker start is matched by one end, eviction or fence", async () => {
      await fc.assert(
        fc.asyncProperty(scenarioArb, async (scenario) => {
          const exit = await Effect.runPromiseExit(runScenario(scenario))
          assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? `scenario failed: ${String(exit.cause)}` : "")
          assert.isUndefined(Exit.isSuccess(exit) ? exit.value : undefined)
        }),
        { numRuns: 1000 }
      )
    })
  })
})
