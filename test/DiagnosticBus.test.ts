import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as DiagnosticBus from "../src/DiagnosticBus.ts"
import * as SessionKey from "../src/SessionKey.ts"

const key = SessionKey.makeUnsafe("agent:main:bus")
const opened = { _tag: "session.lane.opened", sessionKey: key } as const

describe("DiagnosticBus", () => {
  describe("publish", () => {
    it.effect("stamps strictly increasing seq and the Clock's time", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make()
        yield* TestClock.adjust("5 seconds")
        const a = yield* bus.publish(opened)
        const reserved = yield* bus.nextSeq
        yield* TestClock.adjust("1 second")
        const b = yield* bus.publish(opened)
        assert.deepStrictEqual([a.seq, reserved, b.seq], [1, 2, 3])
        assert.deepStrictEqual([a.ts, b.ts], [5_000, 6_000])
        assert.strictEqual(yield* bus.watermark, 3)
      }))

    it.effect("delivers to every subscriber in order", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make()
        const s1 = yield* bus.subscribe({ name: "one" })
        const s2 = yield* bus.subscribe({ name: "two" })
        const r1 = yield* s1.pipe(Stream.take(3), Stream.runCollect, Effect.forkChild)
        const r2 = yield* s2.pipe(Stream.take(3), Stream.runCollect, Effect.forkChild)
        for (let i = 0; i < 3; i++) yield* bus.publish(opened)
        assert.deepStrictEqual((yield* Fiber.join(r1)).map((e) => e.seq), [1, 2, 3])
        assert.deepStrictEqual((yield* Fiber.join(r2)).map((e) => e.seq), [1, 2, 3])
      }))
  })

  describe("delivery", () => {
    it.effect("a publish never runs subscriber code; the subscriber takes what arrived as one batch on its own turn", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make()
        const stream = yield* bus.subscribe({ name: "batcher" })
        const batches: Array<number> = []
        yield* stream.pipe(
          Stream.runForEachArray((batch) => Effect.sync(() => batches.push(batch.length))),
          Effect.forkScoped({ startImmediately: true })
        )
        yield* Effect.yieldNow
        for (let i = 0; i < 5; i++) bus.publishUnsafe(opened)
        assert.deepStrictEqual(batches, [], "nothing ran inside the publisher")
        for (let i = 0; i < 5; i++) yield* Effect.yieldNow
        assert.deepStrictEqual(batches, [5])
      }))

    it.effect("events published just before the bus shuts down still reach a subscriber, whose stream then ends", () =>
      Effect.gen(function*() {
        const seen: Array<number> = []
        const outer = yield* Scope.make()
        const reader = yield* Effect.scoped(Effect.gen(function*() {
          const bus = yield* DiagnosticBus.make()
          const stream = yield* bus.subscribe({ name: "late" }).pipe(Scope.provide(outer))
          const fiber = yield* stream.pipe(
            Stream.runForEach((e) => Effect.sync(() => seen.push(e.seq))),
            Effect.forkDetach({ startImmediately: true })
          )
          for (let i = 0; i < 3; i++) yield* bus.publish(opened)
          return fiber
        }))
        yield* Fiber.join(reader)
        assert.deepStrictEqual(seen, [1, 2, 3])
        yield* Scope.close(outer, Exit.void)
      }))
  })

  describe("back-pressure", () => {
    it.effect("a stuck subscriber never blocks publishers or a live subscriber, and its drops are counted", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make({ capacity: 8 })
        yield* bus.subscribe({ name: "stuck" }) // never read
        const live = yield* bus.subscribe({ name: "live" })
        const seen: Array<string> = []
        yield* live.pipe(
          Stream.runForEach((e) => Effect.sync(() => seen.push(e._tag))),
          Effect.forkScoped({ startImmediately: true })
        )
        for (let i = 0; i < 100; i++) {
          yield* bus.publish(opened)
          yield* Effect.yieldNow
        }
        const stats = yield* bus.stats
        const stuck = stats.subscribers.find((s) => s.name === "stuck")!
        assert.isAtMost(stuck.backlog, 8, "memory stays bounded")
        assert.isAtLeast(stuck.dropped, 92)
        assert.strictEqual(stats.dropped, stuck.dropped + stats.subscribers.find((s) => s.name === "live")!.dropped)
        assert.strictEqual(seen.filter((t) => t === "session.lane.opened").length, 100, "the live subscriber lost nothing")
        const reports = seen.filter((t) => t === "diagnostic.events.dropped")
        assert.strictEqual(reports.length, 1, "one report within the report interval")
      }))

    it.effect("reports drops again once the report interval has passed", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make({ capacity: 2, dropReportInterval: "1 second" })
        yield* bus.subscribe({ name: "stuck" })
        const live = yield* bus.subscribe({ name: "live" })
        const reports: Array<{ dropped: number; totalDropped: number }> = []
        yield* live.pipe(
          Stream.filter((e) => e._tag === "diagnostic.events.dropped"),
          Stream.runForEach((e) => Effect.sync(() => reports.push(e as any))),
          Effect.forkScoped({ startImmediately: true })
        )
        for (let round = 0; round < 3; round++) {
          for (let i = 0; i < 10; i++) {
            yield* bus.publish(opened)
            yield* Effect.yieldNow
          }
          yield* TestClock.adjust("1 second")
        }
        assert.strictEqual(reports.length, 3)
        assert.deepStrictEqual(reports.map((r) => r.totalDropped), [...reports.map((r) => r.totalDropped)].sort((a, b) => a - b))
      }))

    it.effect("a subscriber that leaves its scope stops counting", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make({ capacity: 2 })
        yield* Effect.scoped(bus.subscribe({ name: "brief" }))
        for (let i = 0; i < 10; i++) yield* bus.publish(opened)
        const stats = yield* bus.stats
        assert.deepStrictEqual([stats.subscribers.length, stats.dropped, stats.published], [0, 0, 10])
      }))
  })

  describe("observe", () => {
    it.effect("calls an observer with every event inside the publishing step, in seq order, past any capacity", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make({ capacity: 2 })
        yield* bus.subscribe({ name: "never-reads" })
        const seen: Array<number> = []
        yield* bus.observe((event) => seen.push(event.seq))
        for (let i = 0; i < 10; i++) {
          const event = bus.publishUnsafe(opened)
          // (A drop report may follow it in the same step.)
          assert.include(seen, event.seq, "seen before publishUnsafe returned")
        }
        const stats = yield* bus.stats
        assert.isAbove(stats.dropped, 0, "the subscriber lost events")
        assert.deepStrictEqual(seen, Array.from({ length: stats.watermark }, (_, i) => i + 1))
        assert.strictEqual(stats.observers, 1)
      }))

    it.effect("a throwing observer is counted and never fails the publisher; the others still see the event", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make()
        const seen: Array<number> = []
        yield* bus.observe(() => {
          throw new Error("bookkeeping bug")
        })
        yield* bus.observe((event) => seen.push(event.seq))
        const event = yield* bus.publish(opened)
        assert.deepStrictEqual(seen, [event.seq])
        assert.strictEqual((yield* bus.stats).observerFailures, 1)
      }))

    it.effect("stops when its scope closes; one function observing twice is called twice and removed once", () =>
      Effect.gen(function*() {
        const bus = yield* DiagnosticBus.make()
        const seen: Array<number> = []
        const observer = (event: { readonly seq: number }) => seen.push(event.seq)
        yield* bus.observe(observer)
        yield* Effect.scoped(Effect.gen(function*() {
          yield* bus.observe(observer)
          yield* bus.publish(opened)
        }))
        yield* bus.publish(opened)
        assert.deepStrictEqual(seen, [1, 1, 2])
        assert.strictEqual((yield* bus.stats).observers, 1)
      }))
  })
})
