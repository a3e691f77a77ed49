import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as NodeEventLoopMonitor from "../src/NodeEventLoopMonitor.ts"

const { EventLoopMonitor, TestEventLoopMonitor } = NodeEventLoopMonitor

/** Blocks the event loop on purpose: the behaviour under test is the detection of exactly this. */
const blockFor = (ms: number) =>
  Effect.sync(() => {
    const until = performance.now() + ms
    while (performance.now() < until) {
      // busy on purpose
    }
  })

describe("NodeEventLoopMonitor", () => {
  describe("layer", () => {
    it.live("sees a deliberate 200 ms synchronous block as a max delay of at least 150 ms", () =>
      Effect.gen(function*() {
        const monitor = yield* EventLoopMonitor
        yield* Effect.sleep("30 millis")
        yield* monitor.sample
        yield* Effect.sleep("30 millis")
        yield* blockFor(200)
        // Let the delay timer fire once after the block so the histogram records it.
        yield* Effect.sleep("40 millis")
        const reading = yield* monitor.sample
        assert.isAtLeast(reading.maxMs, 150)
        assert.isAtLeast(reading.p99Ms, 150)
        assert.isAbove(reading.utilization, 0.5)
        assert.isAtMost(reading.utilization, 1)
        assert.isAtLeast(reading.intervalMs, 200)
      }).pipe(Effect.provide(NodeEventLoopMonitor.layer())))

    it.live("sees a block that begins right after a sample", () =>
      Effect.gen(function*() {
        const monitor = yield* EventLoopMonitor
        yield* Effect.sleep("30 millis")
        yield* monitor.sample
        // No timer has run since the sample: Node's histogram alone would not record this gap.
        yield* blockFor(200)
        yield* Effect.sleep("40 millis")
        const reading = yield* monitor.sample
        assert.isAtLeast(reading.maxMs, 150)
      }).pipe(Effect.provide(NodeEventLoopMonitor.layer())))

    it.live("sees a block that ends right before a sample, and does not count it again in the next one", () =>
      Effect.gen(function*() {
        const monitor = yield* EventLoopMonitor
        yield* Effect.sleep("30 millis")
        yield* monitor.sample
        yield* Effect.sleep("50 millis")
        yield* blockFor(200)
        const reading = yield* monitor.sample
        assert.isAtLeast(reading.maxMs, 150)
        yield* Effect.sleep("100 millis")
        const next = yield* monitor.sample
        assert.isBelow(next.maxMs, 100)
      }).pipe(Effect.provide(NodeEventLoopMonitor.layer())))

    it.live("reads a quiet interval as small, and each sample starts a new interval", () =>
      Effect.gen(function*() {
        const monitor = yield* EventLoopMonitor
        yield* blockFor(200)
        yield* Effect.sleep("20 millis")
        yield* monitor.sample
        yield* Effect.sleep("150 millis")
        const reading = yield* monitor.sample
        assert.isBelow(reading.maxMs, 100)
        assert.isBelow(reading.p99Ms, 100)
        assert.isAtLeast(reading.utilization, 0)
        assert.isBelow(reading.utilization, 0.5)
        assert.isAtLeast(reading.intervalMs, 140)
      }).pipe(Effect.provide(NodeEventLoopMonitor.layer({ resolutionMs: 5 }))))

    it.live("falls back to the default resolution when given an invalid one", () =>
      Effect.gen(function*() {
        const monitor = yield* EventLoopMonitor
        yield* Effect.sleep("30 millis")
        const reading = yield* monitor.sample
        assert.isTrue(Number.isFinite(reading.maxMs) && reading.maxMs >= 0)
      }).pipe(Effect.provide(NodeEventLoopMonitor.layer({ resolutionMs: Number.NaN }))))
  })

  describe("layerTest", () => {
    const starved: NodeEventLoopMonitor.LivenessSample = {
      p99Ms: 2_500,
      maxMs: 12_600,
      utilization: 0.99,
      intervalMs: 30_000
    }
    const busy: NodeEventLoopMonitor.LivenessSample = { p99Ms: 40, maxMs: 80, utilization: 0.6, intervalMs: 30_000 }

    it.effect("returns a quiet reading until one is set, then what was set", () =>
      Effect.gen(function*() {
        const monitor = yield* EventLoopMonitor
        assert.deepStrictEqual(yield* monitor.sample, NodeEventLoopMonitor.quietSample)
        yield* TestEventLoopMonitor.set(starved)
        assert.deepStrictEqual(yield* monitor.sample, starved)
        assert.deepStrictEqual(yield* monitor.sample, starved)
      }).pipe(Effect.provide(NodeEventLoopMonitor.layerTest)))

    it.effect("a reading set for the next sample alone applies once", () =>
      Effect.gen(function*() {
        const monitor = yield* EventLoopMonitor
        yield* TestEventLoopMonitor.set(busy)
        yield* TestEventLoopMonitor.setNext(starved)
        assert.deepStrictEqual(yield* monitor.sample, starved)
        assert.deepStrictEqual(yield* monitor.sample, busy)
      }).pipe(Effect.provide(NodeEventLoopMonitor.layerTest)))
  })
})
