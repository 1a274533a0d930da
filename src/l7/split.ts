// Weighted backend selection (a rule's backendRefs, a canary split): built once per snapshot
// from the weights, then each request costs one random draw and a binary search. A backend of
// weight 0 is never chosen; when every weight is 0 there is nothing to choose (Gateway API: the
// request gets a 500).
import type { Random } from './random.ts'

export interface Weighted<T> {
  readonly value: T
  readonly weight: number
}

export class WeightedSplit<T> {
  /** The backends that can be chosen (weight > 0), in the order given. */
  readonly choices: readonly T[]
  /** Sum of the weights. */
  readonly total: number
  // cumulative[i] is the sum of the weights of choices 0..i; a draw in [0, total) lands in the
  // first choice whose cumulative weight exceeds it.
  private readonly cumulative: readonly number[]

  constructor(items: readonly Weighted<T>[]) {
    const choices: T[] = []
    const cumulative: number[] = []
    let total = 0
    for (const item of items) {
      if (!Number.isFinite(item.weight) || item.weight < 0) throw new RangeError(`weighted split: expected a weight ≥ 0, got ${item.weight}`)
      if (item.weight === 0) continue
      total += item.weight
      choices.push(item.value)
      cumulative.push(total)
    }
    this.choices = choices
    this.cumulative = cumulative
    this.total = total
  }

  /** The chosen backend, or undefined when no weight is above 0. */
  pick(random: Random): T | undefined {
    const count = this.choices.length
    if (count <= 1) return this.choices[0]
    const draw = random() * this.total
    let low = 0
    let high = count - 1
    while (low < high) {
      const mid = (low + high) >>> 1
      if ((this.cumulative[mid] ?? 0) > draw) high = mid
      else low = mid + 1
    }
    return this.choices[low]
  }
}
