// Fault injection: delay and abort each at their configured percentage, decided by the injected
// random source.
import t from 'tap'

import { FaultInjector } from '../src/l7/faults.ts'
import { seededRandom } from '../src/l7/random.ts'

t.test('delay and abort happen at their percentages', async (t) => {
  const faults = new FaultInjector({ delay: { fixedDelayMs: 200, percent: 30 }, abort: { status: 503, percent: 10 } })
  const random = seededRandom(7)
  let delayed = 0
  let aborted = 0
  const values = new Set<string>()
  for (let i = 0; i < 10_000; i++) {
    const decision = faults.decide(random)
    if (decision.delayMs > 0) { delayed++; values.add(`delay ${decision.delayMs}`) }
    if (decision.abortStatus !== undefined) { aborted++; values.add(`abort ${decision.abortStatus}`) }
  }
  t.same([...values].sort(), ['abort 503', 'delay 200'], 'the configured delay and status')
  // sd: 46 for 30%, 30 for 10%; bounds are five of them.
  t.ok(Math.abs(delayed - 3000) < 230, `delayed ${delayed} of 10000 (expected 3000)`)
  t.ok(Math.abs(aborted - 1000) < 150, `aborted ${aborted} of 10000 (expected 1000)`)
})

t.test('each draw decides its own fault: delay first, then abort', async (t) => {
  const faults = new FaultInjector({ delay: { fixedDelayMs: 50, percent: 50 }, abort: { status: 500, percent: 50 } })
  const draws = (...values: number[]) => { let i = 0; return () => values[i++] ?? 0 }
  t.same(faults.decide(draws(0.1, 0.9)), { delayMs: 50, abortStatus: undefined })
  t.same(faults.decide(draws(0.9, 0.1)), { delayMs: 0, abortStatus: 500 })
  t.same(faults.decide(draws(0.1, 0.1)), { delayMs: 50, abortStatus: 500 })
  t.same(faults.decide(draws(0.5, 0.5)), { delayMs: 0, abortStatus: undefined }, 'a draw equal to the fraction is outside it')
})

t.test('0% never, 100% always; no configuration is inert and draws nothing', async (t) => {
  const always = new FaultInjector({ abort: { status: 429, percent: 100 } })
  t.same(always.decide(() => 0.99999), { delayMs: 0, abortStatus: 429 })
  const never = new FaultInjector({ delay: { fixedDelayMs: 100, percent: 0 } })
  t.ok(never.inert)
  const none = new FaultInjector({})
  t.ok(none.inert)
  t.same(none.decide(() => { throw new Error('drew') }), { delayMs: 0, abortStatus: undefined })
})

t.test('bad configuration is refused when built, naming the field', async (t) => {
  t.throws(() => new FaultInjector({ abort: { status: 42, percent: 10 } }), /abort.status: expected an HTTP status from 200 to 599, got 42/)
  t.throws(() => new FaultInjector({ delay: { fixedDelayMs: 10, percent: 120 } }), /delay.percent: expected a percentage from 0 to 100, got 120/)
})
