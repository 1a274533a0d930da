// Weighted backend selection: shares follow the weights, weight 0 is never chosen, all-zero
// chooses nothing.
import t from 'tap'

import { seededRandom } from '../src/l7/random.ts'
import { WeightedSplit } from '../src/l7/split.ts'

t.test('a 90/10 split over 10,000 draws stays within statistical bounds', async (t) => {
  const split = new WeightedSplit([{ value: 'reviews-v1', weight: 90 }, { value: 'reviews-v2', weight: 10 }])
  const random = seededRandom(42)
  const counts = new Map<string, number>()
  for (let i = 0; i < 10_000; i++) {
    const backend = split.pick(random) ?? 'none'
    counts.set(backend, (counts.get(backend) ?? 0) + 1)
  }
  // Binomial(10000, 0.1): sd = 30, so ±150 is five standard deviations.
  const canary = counts.get('reviews-v2') ?? 0
  t.ok(canary > 850 && canary < 1150, `reviews-v2 got ${canary} of 10000 (expected 1000 ± 150)`)
  t.equal((counts.get('reviews-v1') ?? 0) + canary, 10_000, 'every draw chose a backend')
})

t.test('draws map to backends by cumulative weight', async (t) => {
  const split = new WeightedSplit([{ value: 'a', weight: 1 }, { value: 'b', weight: 2 }, { value: 'c', weight: 1 }])
  t.equal(split.total, 4)
  t.same([0, 0.24, 0.25, 0.74, 0.75, 0.999].map((r) => split.pick(() => r)), ['a', 'a', 'b', 'b', 'c', 'c'])
})

t.test('weight 0 is never chosen; all zero chooses nothing', async (t) => {
  const split = new WeightedSplit([{ value: 'off', weight: 0 }, { value: 'on', weight: 5 }, { value: 'off2', weight: 0 }])
  t.same(split.choices, ['on'])
  for (const r of [0, 0.5, 0.9999]) t.equal(split.pick(() => r), 'on')
  t.equal(new WeightedSplit([{ value: 'a', weight: 0 }, { value: 'b', weight: 0 }]).pick(Math.random), undefined)
  t.equal(new WeightedSplit<string>([]).pick(Math.random), undefined)
})

t.test('a negative weight is refused when the split is built', async (t) => {
  t.throws(() => new WeightedSplit([{ value: 'a', weight: -1 }]), /expected a weight ≥ 0, got -1/)
})
