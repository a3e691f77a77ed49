/**
 * A strict parser of the Prometheus text exposition format (0.0.4), for
 * asserting on `/metrics` output in tests. It throws on anything a Prometheus
 * server would reject: malformed lines, invalid names, bad escapes, unparsable
 * values, samples of an undeclared family, duplicate series, histogram buckets
 * that are not cumulative.
 */

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Family {
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram" | "summary" | "untyped"
  readonly help: string | undefined
  readonly samples: Array<Sample>
}

export interface Exposition {
  readonly families: ReadonlyMap<string, Family>
  readonly samples: ReadonlyArray<Sample>
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const types = new Set(["counter", "gauge", "histogram", "summary", "untyped"])

const parseValue = (text: string, line: string): number => {
  if (text === "+Inf") return Number.POSITIVE_INFINITY
  if (text === "-Inf") return Number.NEGATIVE_INFINITY
  if (text === "NaN") return Number.NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value ${text} in: ${line}`)
  return Number(text)
}

// Parses `{a="x",b="y"}` starting at `from` (the `{`); returns labels and the index after `}`.
const parseLabels = (line: string, from: number): [Record<string, string>, number] => {
  const labels: Record<string, string> = {}
  let i = from + 1
  while (true) {
    if (line[i] === "}") return [labels, i + 1]
    const eq = line.indexOf("=", i)
    if (eq < 0) throw new Error(`bad labels in: ${line}`)
    const name = line.slice(i, eq)
    if (!labelName.test(name)) throw new Error(`bad label name ${name} in: ${line}`)
    if (name in labels) throw new Error(`duplicate label ${name} in: ${line}`)
    if (line[eq + 1] !== "\"") throw new Error(`unquoted label value in: ${line}`)
    let value = ""
    let j = eq + 2
    for (;; j++) {
      const c = line[j]
      if (c === undefined) throw new Error(`unterminated label value in: ${line}`)
      if (c === "\"") break
      if (c === "\\") {
        const next = line[++j]
        if (next === "\\") value += "\\"
        else if (next === "\"") value += "\""
        else if (next === "n") value += "\n"
        else throw new Error(`bad escape in: ${line}`)
      } else {
        value += c
      }
    }
    labels[name] = value
    i = j + 1
    if (line[i] === ",") i++
    else if (line[i] !== "}") throw new Error(`expected , or } in: ${line}`)
  }
}

const familyOf = (sampleName: string, families: Map<string, Family>): Family | undefined => {
  const direct = families.get(sampleName)
  if (direct !== undefined) return direct
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sampleName.endsWith(suffix)) continue
    const family = families.get(sampleName.slice(0, -suffix.length))
    if (family !== undefined && (family.type === "histogram" || family.type === "summary")) return family
  }
  return undefined
}

export const parse = (text: string): Exposition => {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("exposition must end with a newline")
  const families = new Map<string, Family>()
  const samples: Array<Sample> = []
  const seen = new Set<string>()
  for (const line of text.split("\n")) {
    if (line === "") continue
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (match === null) continue // a plain comment
      const [, kind, name, rest] = match as unknown as [string, string, string, string]
      if (!metricName.test(name)) throw new Error(`bad metric name in: ${line}`)
      const existing = families.get(name)
      if (kind === "TYPE") {
        if (!types.has(rest)) throw new Error(`bad type in: ${line}`)
        if (existing !== undefined && existing.samples.length > 0) throw new Error(`TYPE after samples: ${line}`)
        families.set(name, { name, type: rest as Family["type"], help: existing?.help, samples: existing?.samples ?? [] })
      } else {
        families.set(name, { name, type: existing?.type ?? "untyped", help: rest, samples: existing?.samples ?? [] })
      }
      continue
    }
    const nameEnd = line.search(/[{ ]/)
    if (nameEnd <= 0) throw new Error(`bad sample line: ${line}`)
    const name = line.slice(0, nameEnd)
    if (!metricName.test(name)) throw new Error(`bad metric name in: ${line}`)
    let labels: Record<string, string> = {}
    let rest = nameEnd
    if (line[nameEnd] === "{") [labels, rest] = parseLabels(line, nameEnd)
    const fields = line.slice(rest).trim().split(/\s+/)
    if (fields.length < 1 || fields.length > 2) throw new Error(`bad sample line: ${line}`)
    const value = parseValue(fields[0]!, line)
    const family = familyOf(name, families)
    if (family === undefined) throw new Error(`sample of an undeclared family: ${line}`)
    const id = JSON.stringify([name, Object.entries(labels).sort()])
    if (seen.has(id)) throw new Error(`duplicate series: ${line}`)
    seen.add(id)
    const sample: Sample = { name, labels, value }
    family.samples.push(sample)
    samples.push(sample)
  }
  for (const family of families.values()) {
    if (family.type !== "histogram") continue
    const bySeries = new Map<string, Array<Sample>>()
    for (const s of family.samples) {
      if (s.name !== `${family.name}_bucket`) continue
      const { le: _le, ...rest } = s.labels
      const key = JSON.stringify(Object.entries(rest).sort())
      bySeries.set(key, [...(bySeries.get(key) ?? []), s])
    }
    for (const buckets of bySeries.values()) {
      let previous = 0
      for (const b of buckets) {
        if (b.labels["le"] === undefined) throw new Error(`bucket without le in ${family.name}`)
        if (b.value < previous) throw new Error(`buckets of ${family.name} are not cumulative`)
        previous = b.value
      }
      if (buckets.at(-1)?.labels["le"] !== "+Inf") throw new Error(`${family.name} lacks a +Inf bucket`)
    }
  }
  return { families, samples }
}

/** The value of the one sample with this name and exactly these labels (undefined when absent). */
export const value = (
  exposition: Exposition,
  name: string,
  labels: Readonly<Record<string, string>> = {}
): number | undefined => {
  const wanted = JSON.stringify(Object.entries(labels).sort())
  return exposition.samples.find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === wanted)
    ?.value
}

/** The sum of every sample with this name whose labels include the given ones. */
export const sum = (exposition: Exposition, name: string, labels: Readonly<Record<string, string>> = {}): number =>
  exposition.samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0)
