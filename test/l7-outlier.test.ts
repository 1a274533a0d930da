// Outlier detection on a fake clock: consecutive failures eject an endpoint for base time × its
// ejection count, it returns when the time is up, and the max ejection percentage holds.
import t from 'tap'

import { DEFAULT_OUTLIER, OutlierDetector, outlierConfigFromPolicy, type OutlierConfig } from '../src/l7/outlier.ts'

const ok = { kind: 'response', status: 200 } as const
const s500 = { kind: 'response', status: 500 } as const
const s503 = { kind: 'response', status: 503 } as const
const config = (overrides: Partial<OutlierConfig> = {}): OutlierConfig => ({ ...DEFAULT_OUTLIER, maxEjectionPercent: 50, ...overrides })

t.test('consecutive 5xx eject for the base time; the endpoint returns when it is up', async (t) => {
  let now = 0
  const detector = new OutlierDetector(config({ consecutive5xx: 3, baseEjectionTimeMs: 30_000 }), () => now, ['a', 'b'])
  t.equal(detector.record('a', s500), undefined)
  t.equal(detector.record('a', s500), undefined)
  t.same(detector.record('a', s500), { id: 'a', untilMs: 30_000, times: 1, reason: 'consecutive5xx' })
  t.ok(detector.isEjected('a'))
  t.same(detector.ejected(), ['a'])
  now = 29_999
  t.same(detector.expire(), [])
  now = 30_000
  t.same(detector.expire(), ['a'], 'back after the ejection time')
  t.notOk(detector.isEjected('a'))
})

t.test('a success in between resets the count; responses while ejected are ignored', async (t) => {
  let now = 0
  const detector = new OutlierDetector(config({ consecutive5xx: 2 }), () => now, ['a', 'b'])
  detector.record('a', s500)
  detector.record('a', ok)
  t.equal(detector.record('a', s500), undefined, 'not consecutive')
  t.ok(detector.record('a', s500))
  t.equal(detector.record('a', s500), undefined, 'already out')
  now = 1
  t.ok(detector.isEjected('a'))
})

t.test('gateway errors: 502/503/504 and tries with no response; a 500 breaks the run', async (t) => {
  const detector = new OutlierDetector(config({ consecutive5xx: 0, consecutiveGatewayErrors: 3 }), () => 0, ['a', 'b'])
  detector.record('a', s503)
  detector.record('a', { kind: 'reset' })
  t.same(detector.record('a', { kind: 'connect-failure' })?.reason, 'consecutiveGatewayErrors')
  detector.record('b', s503)
  detector.record('b', s500)
  detector.record('b', s503)
  t.equal(detector.record('b', { kind: 'timeout' }), undefined, 'the 500 broke the run of gateway errors')
  t.notOk(detector.isEjected('b'))
})

t.test('repeat ejections last base time × count, capped; the count decays while the endpoint behaves', async (t) => {
  let now = 0
  const detector = new OutlierDetector(config({ consecutive5xx: 1, baseEjectionTimeMs: 10_000, intervalMs: 10_000, maxEjectionTimeMs: 25_000 }), () => now, ['a', 'b'])
  t.equal(detector.record('a', s500)?.untilMs, 10_000)
  now = 10_000
  t.same(detector.record('a', s500), { id: 'a', untilMs: 30_000, times: 2, reason: 'consecutive5xx' }, 'second time: twice as long')
  now = 30_000
  t.equal(detector.record('a', s500)?.untilMs, 30_000 + 25_000, 'third time: capped by the max ejection time')
  now = 55_000 + 20_000 // back for two intervals: the count of 3 decays to 1
  t.same(detector.record('a', s500)?.times, 2)
})

t.test('max ejection percent: no more than that share out at once, but one of two may go', async (t) => {
  let now = 0
  const detector = new OutlierDetector(config({ consecutive5xx: 1, maxEjectionPercent: 50 }), () => now, ['a', 'b', 'c', 'd'])
  t.ok(detector.record('a', s500))
  t.ok(detector.record('b', s500))
  t.equal(detector.record('c', s500), undefined, '50% of 4 are out already')
  t.same(detector.ejected().sort(), ['a', 'b'])
  now = 30_000
  t.ok(detector.record('c', s500), 'room again once they return')

  const pair = new OutlierDetector(config({ consecutive5xx: 1, maxEjectionPercent: 10 }), () => 0, ['a', 'b'])
  t.ok(pair.record('a', s500), 'with two endpoints one may always go')
  t.equal(pair.record('b', s500), undefined)
  const single = new OutlierDetector(config({ consecutive5xx: 1, maxEjectionPercent: 100 }), () => 0, ['only'])
  t.ok(single.record('only', s500), '100% allows the last one')
  const none = new OutlierDetector(config({ consecutive5xx: 1, maxEjectionPercent: 0 }), () => 0, ['a', 'b'])
  t.equal(none.record('a', s500), undefined, '0% ejects nothing')
})

t.test('every return is reported by expire() exactly once, whichever call noticed it', async (t) => {
  let now = 0
  const detector = new OutlierDetector(config({ consecutive5xx: 1, baseEjectionTimeMs: 10_000, maxEjectionPercent: 100 }), () => now, ['a', 'b', 'c', 'd'])
  for (const id of ['a', 'b', 'c']) t.ok(detector.record(id, s500), `${id} ejected`)
  now = 10_000
  t.notOk(detector.isEjected('a'), 'isEjected brings a back')
  t.equal(detector.record('b', ok), undefined, 'record brings b back (and counts a success)')
  t.same(detector.ejected(), [], 'ejected() brings c back')
  t.same(detector.expire(), ['a', 'b', 'c'], 'all three returns, in the order they came back')
  t.same(detector.expire(), [], 'each once')

  // A mirror kept the way the pipeline keeps it ends up agreeing with the detector.
  const mirror = new Map([['a', false], ['b', false], ['c', false], ['d', false]])
  const eject = (id: string): void => { if (detector.record(id, s500)) mirror.set(id, true) }
  eject('a')
  eject('d')
  now = 40_000
  t.notOk(detector.isEjected('a'))
  eject('a') // back, then out again before expire() reported the return
  for (const id of detector.expire()) mirror.set(id, false)
  t.same([...mirror].filter(([, out]) => out).map(([id]) => id), ['a'], 'a is out again, d came back')
  t.same(detector.ejected(), ['a'])
})

t.test('an endpoint that leaves the set is forgotten, with its unreported return', async (t) => {
  let now = 0
  const detector = new OutlierDetector(config({ consecutive5xx: 1, baseEjectionTimeMs: 10_000 }), () => now, ['a', 'b'])
  t.ok(detector.record('a', s500))
  now = 10_000
  t.notOk(detector.isEjected('a'))
  detector.setEndpoints(['b', 'c'])
  t.same(detector.expire(), [])
})

t.test('a new endpoint set keeps the history of endpoints that stay', async (t) => {
  const detector = new OutlierDetector(config({ consecutive5xx: 1 }), () => 0, ['a', 'b'])
  detector.record('a', s500)
  detector.setEndpoints(['a', 'c'])
  t.ok(detector.isEjected('a'))
  t.equal(detector.record('gone', s500), undefined, 'an unknown endpoint is ignored')
})

t.test('from a DestinationPolicy: durations in ms, defaults for unset fields', async (t) => {
  t.same(outlierConfigFromPolicy({ consecutive5xx: 5, consecutiveGatewayErrors: 3, interval: '10s', baseEjectionTime: '30s', maxEjectionPercent: 50 }),
    { consecutive5xx: 5, consecutiveGatewayErrors: 3, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 50 })
  t.same(outlierConfigFromPolicy({}), DEFAULT_OUTLIER)
})
