import { assert, describe, it } from "@effect/vitest"
import { pipe, Result } from "effect"
import fc from "fast-check"
import * as StabilityRing from "../src/StabilityRing.ts"

interface Item {
  readonly seq: number
  readonly type: string
}

const item = (seq: number, type = "a"): Item => ({ seq, type })

const parity = (seq: number) => (seq % 2 === 0 ? "even" : "odd")

const fill = (capacity: number, seqs: ReadonlyArray<number>, type = parity) =>
  seqs.reduce((ring, seq) => StabilityRing.push(ring, item(seq, type(seq))), StabilityRing.make<Item>(capacity))

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

const queried = (ring: StabilityRing.StabilityRing<Item>, query?: StabilityRing.Query) => {
  const result = StabilityRing.query(ring, query)
  if (Result.isFailure(result)) throw new Error(`unexpected failure: ${result.failure.message}`)
  return result.success.map((i) => i.seq)
}

describe("StabilityRing", () => {
  describe("push", () => {
    it("keeps the newest items in order and counts the ones pushed out", () => {
      const ring = fill(3, range(1, 5))
      assert.deepStrictEqual(StabilityRing.toArray(ring).map((i) => i.seq), [3, 4, 5])
      assert.deepStrictEqual([ring.size, ring.capacity, ring.dropped], [3, 3, 2])
      assert.strictEqual(StabilityRing.last(ring)?.seq, 5)
    })

    it("works data-first and data-last", () => {
      const empty = StabilityRing.make<Item>(2)
      const a = StabilityRing.push(empty, item(1))
      const b = empty.pipe(StabilityRing.push(item(1)))
      const c = pipe(empty, StabilityRing.push(item(1)), StabilityRing.push(item(2)))
      assert.deepStrictEqual(StabilityRing.toArray(a), StabilityRing.toArray(b))
      assert.deepStrictEqual(StabilityRing.toArray(c).map((i) => i.seq), [1, 2])
    })

    it("never changes the ring it was given, even when two rings grow from one", () => {
      const base = fill(4, [1, 2])
      const left = StabilityRing.push(base, item(10))
      const right = StabilityRing.push(base, item(20))
      const leftMore = StabilityRing.push(StabilityRing.push(left, item(11)), item(12))
      assert.deepStrictEqual(StabilityRing.toArray(base).map((i) => i.seq), [1, 2])
      assert.deepStrictEqual(StabilityRing.toArray(left).map((i) => i.seq), [1, 2, 10])
      assert.deepStrictEqual(StabilityRing.toArray(right).map((i) => i.seq), [1, 2, 20])
      assert.deepStrictEqual(StabilityRing.toArray(leftMore).map((i) => i.seq), [2, 10, 11, 12])
      assert.deepStrictEqual([base.dropped, leftMore.dropped], [0, 1])
    })

    it("is iterable, oldest first", () => {
      assert.deepStrictEqual(Array.from(fill(2, [1, 2, 3]), (i) => i.seq), [2, 3])
    })

    it("a capacity of one keeps only the newest item", () => {
      const ring = fill(1, range(1, 10))
      assert.deepStrictEqual(StabilityRing.toArray(ring).map((i) => i.seq), [10])
      assert.strictEqual(ring.dropped, 9)
    })
  })

  describe("make", () => {
    it("rejects a capacity that is not a positive integer", () => {
      for (const capacity of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        assert.throws(() => StabilityRing.make(capacity), /capacity must be a positive integer/)
      }
    })
  })

  describe("query", () => {
    const ring = fill(10, range(1, 25))

    it("returns the newest 50 by default, newest last", () => {
      assert.deepStrictEqual(queried(ring), range(16, 25))
      assert.deepStrictEqual(queried(fill(100, range(1, 80))), range(31, 80))
    })

    it("limits to the newest `limit` items", () => {
      assert.deepStrictEqual(queried(ring, { limit: 3 }), [23, 24, 25])
      assert.deepStrictEqual(queried(ring, { limit: 1000 }), range(16, 25))
    })

    it("filters by type", () => {
      assert.deepStrictEqual(queried(ring, { type: "even" }), [16, 18, 20, 22, 24])
      assert.deepStrictEqual(queried(ring, { type: "odd", limit: 2 }), [23, 25])
      assert.deepStrictEqual(queried(ring, { type: "none" }), [])
    })

    it("returns only items after `sinceSeq`", () => {
      assert.deepStrictEqual(queried(ring, { sinceSeq: 22 }), [23, 24, 25])
      assert.deepStrictEqual(queried(ring, { sinceSeq: 0 }), range(16, 25))
      assert.deepStrictEqual(queried(ring, { sinceSeq: 25 }), [])
      assert.deepStrictEqual(queried(ring, { sinceSeq: 18, type: "odd", limit: 2 }), [23, 25])
    })

    it("works data-last", () => {
      const result = ring.pipe(StabilityRing.query({ limit: 2 }))
      assert.isTrue(Result.isSuccess(result))
      assert.deepStrictEqual(Result.getOrThrow(result).map((i) => i.seq), [24, 25])
    })

    it("rejects an out-of-range limit or sinceSeq with a typed error that says the valid range", () => {
      const cases: Array<[StabilityRing.Query, "limit" | "sinceSeq" | "type"]> = [
        [{ limit: 0 }, "limit"],
        [{ limit: 1001 }, "limit"],
        [{ limit: 1.5 }, "limit"],
        [{ limit: Number.NaN }, "limit"],
        [{ limit: -3 }, "limit"],
        [{ limit: "5" as unknown as number }, "limit"],
        [{ sinceSeq: -1 }, "sinceSeq"],
        [{ sinceSeq: 2.5 }, "sinceSeq"],
        [{ sinceSeq: Number.NaN }, "sinceSeq"],
        [{ type: "" }, "type"]
      ]
      for (const [query, field] of cases) {
        const result = StabilityRing.query(ring, query)
        assert.isTrue(Result.isFailure(result), JSON.stringify(query))
        const error = (result as Result.Failure<never, StabilityRing.InvalidStabilityQuery>).failure
        assert.strictEqual(error._tag, "InvalidStabilityQuery")
        assert.strictEqual(error.field, field)
      }
      const limit = StabilityRing.query(ring, { limit: 0 })
      assert.isTrue(Result.isFailure(limit))
      assert.strictEqual(
        (limit as Result.Failure<never, StabilityRing.InvalidStabilityQuery>).failure.message,
        "Invalid stability log query: limit must be an integer from 1 to 1000 (default 50) (got 0)."
      )
    })
  })

  describe("summary", () => {
    it("counts by type with first and last seq and the drop count", () => {
      assert.deepStrictEqual(StabilityRing.summary(fill(4, range(1, 7))), {
        capacity: 4,
        total: 4,
        byType: { even: 2, odd: 2 },
        dropped: 3,
        firstSeq: 4,
        lastSeq: 7
      })
    })

    it("an empty ring has no first or last seq", () => {
      assert.deepStrictEqual(StabilityRing.summary(StabilityRing.make<Item>(5)), {
        capacity: 5,
        total: 0,
        byType: {},
        dropped: 0,
        firstSeq: undefined,
        lastSeq: undefined
      })
    })
  })

  describe("properties", () => {
    it("never exceeds its capacity and keeps exactly the newest items in order", () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 40 }), fc.array(fc.integer(), { maxLength: 300 }), (capacity, values) => {
          let ring = StabilityRing.make<number>(capacity)
          const seen: Array<number> = []
          for (const value of values) {
            ring = StabilityRing.push(ring, value)
            seen.push(value)
            if (ring.size > capacity) return false
            const expected = seen.slice(-capacity)
            const actual = StabilityRing.toArray(ring)
            if (actual.length !== expected.length || actual.some((v, i) => v !== expected[i])) return false
            if (ring.dropped !== seen.length - expected.length) return false
          }
          return true
        }),
        { numRuns: 300 }
      )
    })

    it("rings grown from a common ancestor never see each other's items", () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 8 }),
          fc.array(fc.tuple(fc.nat(), fc.integer()), { maxLength: 120 }),
          (capacity, steps) => {
            // Each step pushes onto an earlier version (chosen by index) and keeps a model of it.
            const versions: Array<[StabilityRing.StabilityRing<number>, ReadonlyArray<number>]> = [
              [StabilityRing.make<number>(capacity), []]
            ]
            for (const [pick, value] of steps) {
              const [ring, model] = versions[pick % versions.length]!
              versions.push([StabilityRing.push(ring, value), [...model, value].slice(-capacity)])
            }
            return versions.every(([ring, model]) => {
              const actual = StabilityRing.toArray(ring)
              return actual.length === model.length && actual.every((v, i) => v === model[i])
            })
          }
        ),
        { numRuns: 300 }
      )
    })

    it("a query returns the newest matching items after sinceSeq, newest last", () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 30 }),
          fc.array(fc.constantFrom("a", "b", "c"), { maxLength: 80 }),
          fc.integer({ min: 1, max: 1000 }),
          fc.option(fc.constantFrom("a", "b", "c"), { nil: undefined }),
          fc.option(fc.nat({ max: 90 }), { nil: undefined }),
          (capacity, types, limit, type, sinceSeq) => {
            const ring = types.reduce(
              (r, t, i) => StabilityRing.push(r, item(i + 1, t)),
              StabilityRing.make<Item>(capacity)
            )
            const expected = StabilityRing.toArray(ring)
              .filter((i) => (type === undefined || i.type === type) && (sinceSeq === undefined || i.seq > sinceSeq))
              .slice(-limit)
              .map((i) => i.seq)
            return JSON.stringify(queried(ring, { limit, type, sinceSeq })) === JSON.stringify(expected)
          }
        ),
        { numRuns: 300 }
      )
    })
  })
})
