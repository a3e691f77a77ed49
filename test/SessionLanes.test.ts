import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Ref, Scope, Tracer } from "effect"
import { TestClock } from "effect/testing"
import * as fc from "fast-check"
import { ActivityTracker, CurrentRun } from "../src/ActivityTracker.ts"
import * as SessionKey from "../src/SessionKey.ts"
import { SessionLanes } from "../src/SessionLanes.ts"
import { collectEvents } from "./utils/events.ts"
import { coreLayer } from "./utils/runtime.ts"

class Greeting extends Context.Service<Greeting, { readonly text: string }>()("test/Greeting") {}

const a = SessionKey.makeUnsafe("agent:main:a")
const b = SessionKey.makeUnsafe("agent:main:b")

const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

describe("SessionLanes", () => {
  describe("submit", () => {
    it.effect("runs one session's turns one at a time, in order, and returns each result", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const log: Array<string> = []
        const turn = (n: number) =>
          Effect.gen(function*() {
            log.push(`start ${n}`)
            yield* Effect.sleep("1 second")
            log.push(`end ${n}`)
            return n * 10
          })
        const subs = yield* Effect.forEach([1, 2, 3], (n) => lanes.submit(a, turn(n)))
        assert.deepStrictEqual(subs.map((s) => s.admission), [
          { _tag: "Started" },
          { _tag: "Enqueued", position: 1 },
          { _tag: "Enqueued", position: 2 }
        ])
        const results = yield* Effect.forEach(subs, (s) => s.result).pipe(Effect.forkChild)
        yield* TestClock.adjust("3 seconds")
        assert.deepStrictEqual(yield* Fiber.join(results), [10, 20, 30])
        assert.deepStrictEqual(log, ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"])
      }).pipe(Effect.provide(coreLayer())))

    it.effect("runs different sessions in parallel", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const sa = yield* lanes.submit(a, Effect.sleep("10 seconds").pipe(Effect.as("a")))
        const sb = yield* lanes.submit(b, Effect.sleep("10 seconds").pipe(Effect.as("b")))
        const both = yield* Effect.all([sa.result, sb.result]).pipe(Effect.forkChild)
        yield* TestClock.adjust("10 seconds")
        assert.deepStrictEqual(yield* Fiber.join(both), ["a", "b"])
      }).pipe(Effect.provide(coreLayer())))

    it.effect("caps sessions processing at once", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const active = yield* Ref.make(0)
        const peak = yield* Ref.make(0)
        const turn = Effect.gen(function*() {
          const n = yield* Ref.updateAndGet(active, (x) => x + 1)
          yield* Ref.update(peak, (p) => Math.max(p, n))
          yield* Effect.sleep("1 second")
          yield* Ref.update(active, (x) => x - 1)
        })
        const keys = Array.from({ length: 6 }, (_, i) => SessionKey.makeUnsafe(`cap:${i}`))
        const subs = yield* Effect.forEach(keys, (key) => lanes.submit(key, turn))
        const all = yield* Effect.forEach(subs, (s) => s.result).pipe(Effect.forkChild)
        yield* TestClock.adjust("3 seconds")
        yield* Fiber.join(all)
        assert.strictEqual(yield* Ref.get(peak), 2)
      }).pipe(Effect.provide(coreLayer({ maxConcurrentSessions: 2 }))))

    it.effect("a failing or dying turn never stops its lane", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const s1 = yield* lanes.submit(a, Effect.fail("boom"))
        const s2 = yield* lanes.submit(a, Effect.die("bug"))
        const s3 = yield* lanes.submit(a, Effect.succeed("ok"))
        assert.strictEqual(yield* Effect.flip(s1.result), "boom")
        assert.isTrue(Exit.hasDies(yield* Effect.exit(s2.result)))
        assert.strictEqual(yield* s3.result, "ok")
      }).pipe(Effect.provide(coreLayer())))

    it.effect("a turn runs with the submitter's services", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const sub = yield* lanes.submit(a, Effect.map(Greeting, (g) => `${g.text}, world`)).pipe(
          Effect.provideService(Greeting, { text: "hello" })
        )
        assert.strictEqual(yield* sub.result, "hello, world")
      }).pipe(Effect.provide(coreLayer())))

    it.effect("a turn submitted from inside another turn is its session's own run, not a nested one", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const events = yield* collectEvents
        const outer = yield* lanes.submit(
          a,
          Effect.flatMap(lanes.submit(b, Effect.void, { turnId: "inner" }), (s) => s.result)
        )
        yield* outer.result
        yield* events.settle
        const started = events.ofType("session.activity.run_started").find((e) => e.runId === "inner")
        assert.isDefined(started)
        assert.isUndefined(started?.parentRunId)
      }).pipe(Effect.provide(coreLayer())))

    it.effect("each turn runs as an activity owner", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const seen = yield* lanes.submit(
          a,
          Effect.gen(function*() {
            const run = yield* CurrentRun
            const snapshot = yield* tracker.snapshot(a)
            return [run.sessionKey, snapshot.hasOwner, snapshot.activeWorkKind] as const
          })
        )
        assert.deepStrictEqual(yield* seen.result, [a, true, "embedded_run"])
        assert.isFalse((yield* tracker.snapshot(a)).hasOwner)
      }).pipe(Effect.provide(coreLayer())))
  })

  describe("admission", () => {
    it.effect("reject refuses a busy session with a reason and runs nothing", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const gate = yield* Deferred.make<void>()
        yield* lanes.submit(a, Deferred.await(gate))
        const ran = yield* Ref.make(false)
        const rejected = yield* lanes.submit(a, Ref.set(ran, true), { admission: "reject" })
        assert.deepStrictEqual(rejected.admission, { _tag: "Rejected", reason: "busy" })
        const error = yield* Effect.flip(rejected.result)
        assert.strictEqual(error._tag === "TurnInterrupted" && error.reason, "rejected_busy")
        yield* Deferred.succeed(gate, undefined)
        yield* settle
        assert.isFalse(yield* Ref.get(ran))
      }).pipe(Effect.provide(coreLayer())))

    it.effect("interrupt aborts the running turn, runs its finalizers, then starts the new one", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const finalized = yield* Ref.make(false)
        const first = yield* lanes.submit(a, Effect.never.pipe(Effect.ensuring(Ref.set(finalized, true))))
        yield* settle
        const second = yield* lanes.submit(a, Effect.succeed("new"), { admission: "interrupt" })
        assert.deepStrictEqual(second.admission, { _tag: "InterruptedPrevious", previousTurnId: first.turnId })
        assert.strictEqual(yield* second.result, "new")
        const error = yield* Effect.flip(first.result)
        assert.strictEqual(error._tag === "TurnInterrupted" && error.reason, "admission_interrupt")
        assert.isTrue(yield* Ref.get(finalized))
      }).pipe(Effect.provide(coreLayer())))

    it.effect("fails with LaneFull at the maximum queue depth and keeps what was queued", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const gate = yield* Deferred.make<void>()
        yield* lanes.submit(a, Deferred.await(gate))
        const queued = yield* Effect.forEach([1, 2], (n) => lanes.submit(a, Effect.succeed(n)))
        const error = yield* Effect.flip(lanes.submit(a, Effect.succeed(3)))
        assert.strictEqual(error._tag, "LaneFull")
        assert.include(error.message, "maxQueueDepth")
        assert.strictEqual((yield* lanes.view(a))?.queueDepth, 2)
        yield* Deferred.succeed(gate, undefined)
        assert.deepStrictEqual(yield* Effect.forEach(queued, (s) => s.result), [1, 2])
      }).pipe(Effect.provide(coreLayer({ maxQueueDepth: 2 }))))
  })

  describe("state", () => {
    it.effect("bumps the generation on every change and publishes state transitions", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const events = yield* collectEvents
        const gate = yield* Deferred.make<void>()
        const s1 = yield* lanes.submit(a, Deferred.await(gate))
        yield* settle
        const v1 = (yield* lanes.view(a))!
        yield* lanes.submit(a, Effect.void)
        const v2 = (yield* lanes.view(a))!
        assert.deepStrictEqual([v1.state, v1.queueDepth, v2.queueDepth], ["processing", 0, 1])
        assert.isAbove(v2.generation, v1.generation)
        yield* Deferred.succeed(gate, undefined)
        yield* s1.result
        yield* settle
        const v3 = (yield* lanes.view(a))!
        assert.deepStrictEqual([v3.state, v3.queueDepth], ["idle", 0])
        assert.isAbove(v3.generation, v2.generation)
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.state").map((e) => [e.state, e.reason]), [
          ["processing", "turn_started"],
          ["idle", "turn_finished"]
        ])
      }).pipe(Effect.provide(coreLayer())))

    it.effect("closes an idle session after its TTL, running its finalizers", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const events = yield* collectEvents
        const closed = yield* Ref.make(false)
        const scope = yield* lanes.sessionScope(a)
        yield* Scope.addFinalizer(scope, Ref.set(closed, true))
        yield* (yield* lanes.submit(a, Effect.void)).result
        yield* TestClock.adjust("9 minutes")
        assert.isDefined(yield* lanes.view(a))
        yield* TestClock.adjust("1 minute")
        yield* settle
        assert.isUndefined(yield* lanes.view(a))
        assert.isTrue(yield* Ref.get(closed))
        yield* events.settle
        assert.deepStrictEqual(events.ofType("session.lane.closed").map((e) => e.reason), ["idle_ttl"])
        const again = yield* lanes.submit(a, Effect.succeed("reopened"))
        assert.strictEqual(yield* again.result, "reopened")
      }).pipe(Effect.provide(coreLayer())))

    it.effect("shutdown interrupts running turns and fails queued ones with lane_closed", () =>
      Effect.gen(function*() {
        const finalized = yield* Ref.make(false)
        const [running, queued] = yield* Effect.scoped(Effect.gen(function*() {
          const lanes = yield* SessionLanes
          const r = yield* lanes.submit(a, Effect.never.pipe(Effect.ensuring(Ref.set(finalized, true))))
          const q = yield* lanes.submit(a, Effect.void)
          yield* settle
          return [r, q] as const
        }).pipe(Effect.provide(coreLayer())))
        assert.isTrue(yield* Ref.get(finalized))
        const e1 = yield* Effect.flip(running.result)
        const e2 = yield* Effect.flip(queued.result)
        assert.deepStrictEqual([e1._tag === "TurnInterrupted" && e1.reason, e2._tag === "TurnInterrupted" && e2.reason], [
          "lane_closed",
          "lane_closed"
        ])
      }))
  })

  describe("tracing", () => {
    it.effect("a turn, its model call and its tool call are nested GenAI spans without the session key", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const spans: Array<{ name: string; parent: string | undefined; id: string; attributes: Map<string, unknown> }> = []
        const tracer = Tracer.make({
          span(options) {
            const span = new Tracer.NativeSpan(options)
            spans.push({
              name: options.name,
              parent: options.parent._tag === "Some" ? options.parent.value.spanId : undefined,
              id: span.spanId,
              attributes: span.attributes
            })
            return span
          }
        })
        const turn = tracker.model(
          { provider: "openai", model: "gpt-5" },
          tracker.tool({ name: "search", callId: "call-secret-9" }, Effect.void)
        )
        yield* (yield* lanes.submit(a, turn).pipe(Effect.withTracer(tracer))).result
        const byName = new Map(spans.map((span) => [span.name, span]))
        const turnSpan = byName.get("invoke_agent")!
        const chat = byName.get("chat gpt-5")!
        const tool = byName.get("execute_tool search")!
        assert.isDefined(turnSpan)
        assert.strictEqual(chat.parent, turnSpan.id)
        assert.strictEqual(tool.parent, chat.id)
        assert.strictEqual(chat.attributes.get("gen_ai.provider.name"), "openai")
        const everything = JSON.stringify(spans.map((span) => [...span.attributes.entries()]))
        assert.notInclude(everything, "agent:main:a")
        assert.notInclude(everything, "call-secret-9")
      }).pipe(Effect.provide(coreLayer())))
  })

  describe("leftover reported work", () => {
    it.effect("gates the next turn until the external work completes", () =>
      Effect.gen(function*() {
        const lanes = yield* SessionLanes
        const tracker = yield* ActivityTracker
        const signal = { kind: "tool_call", sessionKey: a, runId: "external", callId: "x" } as const
        yield* tracker.report({ ...signal, type: "started", seq: yield* tracker.nextSeq })
        const sub = yield* lanes.submit(a, Effect.succeed("ran"))
        yield* settle
        assert.isTrue((yield* lanes.view(a))?.gated)
        const early = yield* Effect.forkChild(sub.result)
        yield* settle
        assert.isUndefined(early.pollUnsafe(), "the turn waits while the external tool runs")
        yield* tracker.report({ ...signal, type: "completed", seq: yield* tracker.nextSeq })
        assert.strictEqual(yield* sub.result, "ran")
      }).pipe(Effect.provide(coreLayer())))
  })

  describe("ordering", () => {
    it.effect("keeps per-session order and never overlaps turns of one session (property)", () =>
      Effect.gen(function*() {
        const samples = fc.sample(
          fc.array(fc.record({ session: fc.integer({ min: 0, max: 4 }), delay: fc.integer({ min: 0, max: 3 }) }), {
            minLength: 1,
            maxLength: 40
          }),
          { numRuns: 100, seed: 42 }
        )
        for (const plan of samples) {
          yield* Effect.scoped(Effect.gen(function*() {
            const lanes = yield* SessionLanes
            const running = new Set<string>()
            const order = new Map<string, Array<number>>()
            let overlaps = 0
            const subs = yield* Effect.forEach(plan, (step, i) => {
              const key = SessionKey.makeUnsafe(`order:${step.session}`)
              return lanes.submit(
                key,
                Effect.gen(function*() {
                  if (running.has(key)) overlaps++
                  running.add(key)
                  yield* Effect.sleep(`${step.delay} millis`)
                  yield* Effect.yieldNow
                  order.set(key, [...(order.get(key) ?? []), i])
                  running.delete(key)
                })
              )
            })
            const done = yield* Effect.forEach(subs, (s) => s.result, { concurrency: "unbounded" }).pipe(Effect.forkChild)
            yield* TestClock.adjust(`${plan.length * 4} millis`)
            yield* Fiber.join(done)
            assert.strictEqual(overlaps, 0)
            for (const indices of order.values()) {
              assert.deepStrictEqual(indices, [...indices].sort((x, y) => x - y))
            }
            assert.strictEqual([...order.values()].flat().length, plan.length)
          }).pipe(Effect.provide(coreLayer())))
        }
      }))
  })
})
