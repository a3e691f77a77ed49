/** Small statistics helpers shared by the benchmark suites. */

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]! ) / 2
}

/** Runs `measure` for each variant in alternating rounds and returns each variant's median. */
export const alternate = async <K extends string>(
  rounds: number,
  variants: Record<K, () => Promise<number>>
): Promise<Record<K, number>> => {
  const samples = {} as Record<K, Array<number>>
  const names = Object.keys(variants) as Array<K>
  for (const name of names) samples[name] = []
  for (let round = 0; round < rounds; round++) {
    for (const name of round % 2 === 0 ? names : [...names].reverse()) {
      samples[name].push(await variants[name]())
    }
  }
  const result = {} as Record<K, number>
  for (const name of names) result[name] = median(samples[name])
  return result
}
