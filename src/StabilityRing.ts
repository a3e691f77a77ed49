/**
 * A bounded, immutable ring of records: the pure core of the stability log.
 *
 * A ring keeps the newest `capacity` items in push order and counts the ones
 * it pushed out. It is a value: `push` returns a new ring and never changes
 * the one it was given, so a snapshot handed to a reader stays exactly what it
 * was. Items that carry a `seq` and a `type` (stability records) can be
 * queried (`query`: newest `limit`, optionally of one type, optionally only
 * after a sequence number) and summarised (`summary`: count by type, first and
 * last seq, how many were dropped).
 *
 * Data-first and data-last forms are both available:
 * `StabilityRing.push(ring, x)` and `ring.pipe(StabilityRing.push(x))`.
 *
 * @since 0.1.0
 */
import { dual } from "effect/Function"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"

const TypeId = "~effect-session-runtime/StabilityRing"

/**
 * A bounded ring of `A`, oldest first.
 *
 * Details: items live in a backing array shared between successive rings.
 * A push appends in place only when no other ring has appended past the end
 * of the one being pushed to, so every ring only ever sees its own window;
 * otherwise (or when the backing array reaches twice the capacity) the window
 * is copied. Pushes are O(1) amortised and memory stays below about twice the
 * capacity per live ring.
 *
 * @category models
 * @since 0.1.0
 */
export interface StabilityRing<out A> extends Pipeable, Iterable<A> {
  readonly [TypeId]: typeof TypeId
  /** The most items the ring keeps. */
  readonly capacity: number
  /** How many items it holds now (at most `capacity`). */
  readonly size: number
  /** How many items were pushed out to make room, since `make`. */
  readonly dropped: number
  /** @internal */
  readonly backing: ReadonlyArray<A>
  /** @internal */
  readonly start: number
  /** @internal */
  readonly end: number
}

/**
 * What `query` and `summary` need from an item.
 *
 * @category models
 * @since 0.1.0
 */
export interface Entry {
  readonly seq: number
  readonly type: string
}

const Proto = {
  [TypeId]: TypeId,
  pipe() {
    return pipeArguments(this, arguments)
  },
  *[Symbol.iterator](this: StabilityRing<unknown>) {
    for (let i = this.start; i < this.end; i++) yield this.backing[i]
  },
  toJSON(this: StabilityRing<unknown>) {
    return { _id: "StabilityRing", capacity: this.capacity, dropped: this.dropped, items: toArray(this) }
  }
}

const build = <A>(
  capacity: number,
  dropped: number,
  backing: Array<A>,
  start: number,
  end: number
): StabilityRing<A> => {
  const ring = Object.create(Proto)
  ring.capacity = capacity
  ring.size = end - start
  ring.dropped = dropped
  ring.backing = backing
  ring.start = start
  ring.end = end
  return ring
}

/**
 * Whether a value is a ring.
 *
 * @category guards
 * @since 0.1.0
 */
export const isStabilityRing = (u: unknown): u is StabilityRing<unknown> =>
  typeof u === "object" && u !== null && TypeId in u

/**
 * An empty ring that keeps at most `capacity` items.
 *
 * Gotchas: `capacity` must be a positive safe integer; anything else is a bug
 * in the caller and throws a `RangeError`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <A>(capacity: number): StabilityRing<A> => {
  if (!Number.isSafeInteger(capacity) || capacity < 1) {
    throw new RangeError(`StabilityRing capacity must be a positive integer, got ${String(capacity)}`)
  }
  return build<A>(capacity, 0, [], 0, 0)
}

/**
 * Adds `item` as the newest item, pushing the oldest one out when the ring is
 * full. Returns a new ring; `self` is unchanged.
 *
 * @category combinators
 * @since 0.1.0
 */
export const push: {
  <A>(item: A): (self: StabilityRing<A>) => StabilityRing<A>
  <A>(self: StabilityRing<A>, item: A): StabilityRing<A>
} = dual(2, <A>(self: StabilityRing<A>, item: A): StabilityRing<A> => {
  const backing = self.backing as Array<A>
  const full = self.size === self.capacity
  const first = full ? self.start + 1 : self.start
  if (self.end === backing.length && backing.length < 2 * self.capacity) {
    // Nothing was appended past this ring's window: extend the shared array in place.
    backing.push(item)
    return build(self.capacity, full ? self.dropped + 1 : self.dropped, backing, first, self.end + 1)
  }
  // Another ring owns the slot after our window, or the array is due for compaction.
  const items = backing.slice(first, self.end)
  items.push(item)
  return build(self.capacity, full ? self.dropped + 1 : self.dropped, items, 0, items.length)
})

/**
 * The items, oldest first, as a fresh array.
 *
 * @category getters
 * @since 0.1.0
 */
export const toArray = <A>(self: StabilityRing<A>): Array<A> => self.backing.slice(self.start, self.end)

/**
 * The newest item, if any.
 *
 * @category getters
 * @since 0.1.0
 */
export const last = <A>(self: StabilityRing<A>): A | undefined =>
  self.size === 0 ? undefined : self.backing[self.end - 1]

/**
 * The largest page a query may ask for.
 *
 * @category constants
 * @since 0.1.0
 */
export const maxQueryLimit = 1000

/**
 * The page size of a query that gives none.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultQueryLimit = 50

/**
 * A query of the ring.
 *
 * @category models
 * @since 0.1.0
 */
export interface Query {
  /**
   * How many records to return at most (the newest ones): an integer from 1 to 1000.
   * @default 50
   */
  readonly limit?: number | undefined
  /** Only records of this event type. */
  readonly type?: string | undefined
  /** Only records with a `seq` strictly greater than this (a non-negative integer): a cursor. */
  readonly sinceSeq?: number | undefined
}

/**
 * A query that asked for something the ring cannot answer; nothing was read.
 * `field` names the bad part, `rule` says what it must be.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidStabilityQuery extends Schema.TaggedError<InvalidStabilityQuery>()("InvalidStabilityQuery", {
  field: Schema.Literals(["limit", "type", "sinceSeq"]),
  value: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `Invalid stability log query: ${this.field} ${this.rule} (got ${this.value}).`
  }
}

const show = (u: unknown): string => {
  const text = typeof u === "string" ? JSON.stringify(u) : String(u)
  return text.length > 64 ? `${text.slice(0, 61)}...` : text
}

/**
 * A checked query with its defaults filled in.
 *
 * @category models
 * @since 0.1.0
 */
export interface ValidQuery {
  readonly limit: number
  readonly type: string | undefined
  readonly sinceSeq: number | undefined
}

/**
 * Checks a query and fills in its defaults.
 *
 * @category validation
 * @since 0.1.0
 */
export const validateQuery = (query: Query | undefined): Result.Result<ValidQuery, InvalidStabilityQuery> => {
  const limit = query?.limit ?? defaultQueryLimit
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > maxQueryLimit) {
    return Result.fail(
      new InvalidStabilityQuery({
        field: "limit",
        value: show(limit),
        rule: `must be an integer from 1 to ${maxQueryLimit} (default ${defaultQueryLimit})`
      })
    )
  }
  const sinceSeq = query?.sinceSeq
  if (sinceSeq !== undefined && (typeof sinceSeq !== "number" || !Number.isSafeInteger(sinceSeq) || sinceSeq < 0)) {
    return Result.fail(
      new InvalidStabilityQuery({
        field: "sinceSeq",
        value: show(sinceSeq),
        rule: "must be a non-negative integer (a seq from an earlier record), or left out"
      })
    )
  }
  const type = query?.type
  if (type !== undefined && (typeof type !== "string" || type.length === 0)) {
    return Result.fail(
      new InvalidStabilityQuery({
        field: "type",
        value: show(type),
        rule: "must be a non-empty event type, or left out"
      })
    )
  }
  return Result.succeed({ limit, type, sinceSeq })
}

/**
 * The newest `limit` items (default 50) matching the query, newest last.
 *
 * Gotchas: items are expected in increasing `seq` order (the order the bus
 * publishes them), which lets a `sinceSeq` query stop at the first older item.
 *
 * @category queries
 * @since 0.1.0
 */
export const query: {
  (query?: Query): <A extends Entry>(self: StabilityRing<A>) => Result.Result<Array<A>, InvalidStabilityQuery>
  <A extends Entry>(self: StabilityRing<A>, query?: Query): Result.Result<Array<A>, InvalidStabilityQuery>
} = dual(
  (args) => isStabilityRing(args[0]),
  <A extends Entry>(self: StabilityRing<A>, input?: Query): Result.Result<Array<A>, InvalidStabilityQuery> => {
    const valid = validateQuery(input)
    if (Result.isFailure(valid)) return Result.fail(valid.failure)
    const { limit, sinceSeq, type } = valid.success
    const out: Array<A> = []
    for (let i = self.end - 1; i >= self.start && out.length < limit; i--) {
      const item = self.backing[i]!
      if (sinceSeq !== undefined && item.seq <= sinceSeq) break
      if (type === undefined || item.type === type) out.push(item)
    }
    return Result.succeed(out.reverse())
  }
)

/**
 * What a ring holds, in figures.
 *
 * @category models
 * @since 0.1.0
 */
export interface Summary {
  readonly capacity: number
  /** Items held now. */
  readonly total: number
  /** Items held now, by `type`. */
  readonly byType: Readonly<Record<string, number>>
  /** Items pushed out to make room. */
  readonly dropped: number
  /** The `seq` of the oldest item held. */
  readonly firstSeq: number | undefined
  /** The `seq` of the newest item held. */
  readonly lastSeq: number | undefined
}

/**
 * Counts the items by type, with the first and last `seq` and the drop count.
 *
 * @category queries
 * @since 0.1.0
 */
export const summary = <A extends Entry>(self: StabilityRing<A>): Summary => {
  const byType: Record<string, number> = {}
  for (let i = self.start; i < self.end; i++) {
    const type = self.backing[i]!.type
    byType[type] = (byType[type] ?? 0) + 1
  }
  return {
    capacity: self.capacity,
    total: self.size,
    byType,
    dropped: self.dropped,
    firstSeq: self.size === 0 ? undefined : self.backing[self.start]!.seq,
    lastSeq: self.size === 0 ? undefined : self.backing[self.end - 1]!.seq
  }
}
