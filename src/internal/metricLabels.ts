/**
 * Bounded labels for metrics: normalisation of label values to their domain,
 * learning of open label values up to a cap, a series cap per metric, and the
 * counting of every update folded into `other` by a cap.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Metric from "effect/Metric"

/** The label value that stands for anything outside a label's domain. */
export const other = "other"

/**
 * The domain of a label: its allowed values, or `"open"` for a label that
 * learns identifier-like values up to a cap.
 */
export type LabelDomain = ReadonlyArray<string> | "open"

/**
 * A metric with labels. Calling it with label values returns the series for
 * their normalised values (creating it within the caps).
 */
export interface Labelled<L extends string, Input, State> {
  (labels: { readonly [K in L]: string }): Metric.Metric<Input, State>
  /** The metric's full name. */
  readonly id: string
  /** The label names and their domains. */
  readonly labels: { readonly [K in L]: LabelDomain }
  /** How many series exist now. */
  readonly size: () => number
}

/** Values an open label may learn: identifiers, never paths or sentences. */
export const identifierLike = /^[A-Za-z0-9_.:-]{1,64}$/

/** Builds a series of a metric with the given name and attributes. */
export type Create<Input, State> = (id: string, attributes: Metric.Metric.AttributeSet) => Metric.Metric<Input, State>

/**
 * The label factory of one set of metrics: `labelled` declares a labelled
 * metric under the caps; `overflow` is the counter of folded updates, by
 * metric noun; `seriesCount` totals the series of every labelled metric.
 */
export const makeLabeller = (options: {
  readonly maxSeries: number
  readonly maxLabelValues: number
  /** The full name of the overflow counter. */
  readonly overflowId: string
  readonly overflowDescription: string
  /** The nouns of the metrics that may overflow (the overflow counter's label domain). */
  readonly nouns: ReadonlyArray<string>
}) => {
  const { maxLabelValues, maxSeries } = options
  const families: Array<{ readonly size: () => number }> = []

  const make = <L extends string, Input, State>(
    id: string,
    noun: string,
    labels: { readonly [K in L]: LabelDomain },
    create: Create<Input, State>,
    onFold: ((noun: string, context: Context.Context<never>) => void) | undefined
  ): Labelled<L, Input, State> => {
    const keys = Object.keys(labels) as Array<L>
    const closed = new Map<string, ReadonlySet<string>>()
    const learned = new Map<string, Set<string>>()
    for (const key of keys) {
      const domain: LabelDomain = labels[key]
      if (domain === "open") learned.set(key, new Set())
      else closed.set(key, new Set(domain))
    }
    const series = new Map<string, Metric.Metric<Input, State>>()
    const countedSeries = new Map<string, Metric.Metric<Input, State>>()
    const allOther: Record<string, string> = {}
    for (const key of keys) allOther[key] = other
    const seriesKey = (values: { readonly [K in L]: string }): string => {
      // Label values never hold NUL: closed domains are literals, open ones identifier-like.
      let key = values[keys[0]!]
      for (let i = 1; i < keys.length; i++) key += "\u0000" + values[keys[i]!]
      return key
    }
    const allOtherKey = seriesKey(allOther as { readonly [K in L]: string })

    // The fast path: label values as given, one map level per label, leading
    // to the series they name. Only values kept as they are (neither folded
    // nor normalised) are cached, so the cache holds at most one entry per
    // series; a cached answer never changes, since learned values and series
    // are never forgotten.
    const cache = new Map<string, unknown>()
    const last = keys.length - 1
    const lookup = (values: { readonly [K in L]: string }): Metric.Metric<Input, State> | undefined => {
      let node = cache
      for (let i = 0; i < last; i++) {
        const next = node.get(values[keys[i]!]) as Map<string, unknown> | undefined
        if (next === undefined) return undefined
        node = next
      }
      return node.get(values[keys[last]!]) as Metric.Metric<Input, State> | undefined
    }
    const remember = (values: { readonly [K in L]: string }, found: Metric.Metric<Input, State>) => {
      let node = cache
      for (let i = 0; i < last; i++) {
        let next = node.get(values[keys[i]!]) as Map<string, unknown> | undefined
        if (next === undefined) node.set(values[keys[i]!], next = new Map())
        node = next
      }
      node.set(values[keys[last]!], found)
    }

    const seriesFor = (key: string, attributes: Metric.Metric.AttributeSet) => {
      let found = series.get(key)
      if (found === undefined) {
        found = create(id, attributes)
        series.set(key, found)
      }
      return found
    }
    // The same series, counting one overflow on every update.
    const folding = (key: string, attributes: Metric.Metric.AttributeSet) => {
      let found = countedSeries.get(key)
      if (found === undefined) {
        found = counting(seriesFor(key, attributes), (context) => onFold!(noun, context))
        countedSeries.set(key, found)
      }
      return found
    }

    const resolve = (values: { readonly [K in L]: string }): Metric.Metric<Input, State> => {
      const attributes: Record<string, string> = {}
      let folded = false
      let asGiven = true
      for (const key of keys) {
        const value = values[key]
        const allowed = closed.get(key)
        if (allowed !== undefined) {
          attributes[key] = allowed.has(value) ? value : other
        } else {
          const seen = learned.get(key)!
          if (seen.has(value)) {
            attributes[key] = value
          } else if (value === other || !identifierLike.test(value)) {
            attributes[key] = other
          } else if (seen.size < maxLabelValues) {
            seen.add(value)
            attributes[key] = value
          } else {
            attributes[key] = other
            folded = true
          }
        }
        if (attributes[key] !== value) asGiven = false
      }
      const key = seriesKey(attributes as { readonly [K in L]: string })
      if (onFold === undefined) {
        const found = seriesFor(key, attributes)
        if (asGiven) remember(values, found)
        return found
      }
      if (!series.has(key) && series.size >= maxSeries && key !== allOtherKey) {
        // The all-`other` series is always allowed, beyond the cap.
        return folding(allOtherKey, allOther)
      }
      if (folded) return folding(key, attributes)
      const found = seriesFor(key, attributes)
      if (asGiven) remember(values, found)
      return found
    }
    const get = (values: { readonly [K in L]: string }): Metric.Metric<Input, State> =>
      lookup(values) ?? resolve(values)
    families.push({ size: () => series.size })
    return Object.assign(get, { id, labels, size: () => series.size })
  }

  // Closed domain and no cap: the overflow counter never overflows itself.
  const overflow = make(
    options.overflowId,
    "",
    { metric: options.nouns },
    (id, attributes) => Metric.counter(id, { description: options.overflowDescription, incremental: true, attributes }),
    undefined
  )
  const onFold = (noun: string, context: Context.Context<never>) => overflow({ metric: noun }).updateUnsafe(1, context)

  return {
    overflow,
    labelled: <L extends string, Input, State>(
      id: string,
      noun: string,
      labels: { readonly [K in L]: LabelDomain },
      create: Create<Input, State>
    ): Labelled<L, Input, State> => make(id, noun, labels, create, onFold),
    seriesCount: () => families.reduce((n, family) => n + family.size(), 0)
  }
}

// A view of a series whose updates first call `before`.
const counting = <Input, State>(
  inner: Metric.Metric<Input, State>,
  before: (context: Context.Context<never>) => void
): Metric.Metric<Input, State> => {
  const overrides: Partial<Metric.Metric<Input, State>> = {
    updateUnsafe: (input, context) => {
      before(context)
      inner.updateUnsafe(input, context)
    },
    modifyUnsafe: (input, context) => {
      before(context)
      inner.modifyUnsafe(input, context)
    }
  }
  return new Proxy(inner, {
    get: (target, key) => {
      if (key in overrides) return overrides[key as keyof typeof overrides]
      const value = Reflect.get(target, key, target)
      return typeof value === "function" ? value.bind(target) : value
    }
  })
}
