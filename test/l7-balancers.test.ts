// Load balancing over shared endpoint state: round robin, P2C least-request, peak-EWMA P2C and
// consistent hashing, with an injected clock and a seeded random source.
import t from 'tap'

import {
  ConsistentHashBalancer, createBalancer, EndpointState, EwmaBalancer, hashKeyOf, LeastRequestBalancer, RoundRobinBalancer, type Balancer,
} from '../src/l7/balancers.ts'
import { seededRandom } from '../src/l7/random.ts'

const states = (ids: string[], now = 0) => ids.map((id) => new EndpointState(id, { address: id }, now))

t.test('RoundRobin: in turn, skipping ejected endpoints; none when all are ejected', async (t) => {
  const endpoints = states(['a', 'b', 'c'])
  const balancer = new RoundRobinBalancer(endpoints)
  t.same([1, 2, 3, 4].map(() => balancer.pick()?.id), ['a', 'b', 'c', 'a'])
  endpoints[1]!.ejected = true
  t.same([1, 2, 3, 4].map(() => balancer.pick()?.id), ['c', 'a', 'c', 'a'])
  for (const e of endpoints) e.ejected = true
  t.equal(balancer.pick(), undefined)
  t.equal(new RoundRobinBalancer([]).pick(), undefined)
})

t.test('LeastRequest (P2C): the less loaded of two draws; an idle endpoint takes the load off a busy one', async (t) => {
  const endpoints = states(['a', 'b', 'c'])
  const balancer = new LeastRequestBalancer(endpoints, seededRandom(1))
  endpoints[0]!.inFlight = 10
  endpoints[1]!.inFlight = 10
  const counts = new Map<string, number>()
  for (let i = 0; i < 3000; i++) {
    const id = balancer.pick()?.id ?? 'none'
    counts.set(id, (counts.get(id) ?? 0) + 1)
  }
  // c is in every pair that includes it (2 of 3 pairs) and always wins there.
  t.ok((counts.get('c') ?? 0) > 1800, `c (idle) got ${counts.get('c')} of 3000`)
  endpoints[2]!.ejected = true
  for (let i = 0; i < 100; i++) t.not(balancer.pick()?.id, 'c', 'never an ejected endpoint')
  t.equal(new LeastRequestBalancer(states(['only']), seededRandom(1)).pick()?.id, 'only')
})

// An open-loop simulation on a fake clock: a request every `gapMs`, each endpoint answering
// after its own latency; returns how many requests each endpoint served.
function simulate(balancer: Balancer<unknown>, endpoints: EndpointState[], latencyMs: Record<string, number>, clock: { now: number }, requests: number, gapMs: number): Record<string, number> {
  const served: Record<string, number> = {}
  const pending: { at: number; state: EndpointState; started: number }[] = []
  for (let i = 0; i < requests; i++) {
    const arrival = i * gapMs
    pending.sort((a, b) => a.at - b.at)
    while (pending.length > 0 && pending[0]!.at <= arrival) {
      const done = pending.shift()!
      clock.now = done.at
      done.state.finish(done.at, done.at - done.started)
    }
    clock.now = arrival
    const state = balancer.pick()
    if (!state) throw new Error('no endpoint')
    state.start()
    served[state.id] = (served[state.id] ?? 0) + 1
    pending.push({ at: arrival + (latencyMs[state.id] ?? 0), state, started: arrival })
  }
  void endpoints
  return served
}

t.test('EWMA (peak-EWMA P2C) sends measurably more requests to the faster endpoint', async (t) => {
  const clock = { now: 0 }
  const endpoints = states(['fast', 'slow'])
  const served = simulate(new EwmaBalancer(endpoints, seededRandom(3), () => clock.now), endpoints, { fast: 10, slow: 100 }, clock, 2000, 5)
  const fastShare = (served.fast ?? 0) / 2000
  t.ok(fastShare > 0.8, `fast served ${served.fast}, slow ${served.slow} (fast share ${fastShare.toFixed(3)})`)

  const rrClock = { now: 0 }
  const rrEndpoints = states(['fast', 'slow'])
  const rr = simulate(new RoundRobinBalancer(rrEndpoints), rrEndpoints, { fast: 10, slow: 100 }, rrClock, 2000, 5)
  t.equal(rr.fast, 1000, 'round robin, for comparison, splits evenly')
})

t.test('EWMA: a slower sample replaces the estimate at once; faster ones average in; idle estimates decay', async (t) => {
  const state = new EndpointState('a', null, 0, { decayMs: 10_000, defaultRttMs: 30 })
  t.equal(state.latencyMs(0), 30, 'starts at the default')
  state.start()
  state.finish(0, 200)
  t.equal(state.latencyMs(0), 200, 'peak: a slow response counts in full')
  state.start()
  state.finish(1000, 10)
  const afterFast = state.latencyMs(1000)
  t.ok(afterFast < 200 && afterFast > 10, `a fast response moves the estimate part way (${afterFast.toFixed(1)})`)
  t.ok(state.latencyMs(1000 + 100_000) < 1, 'with no response for 10 decay times the estimate is near 0, so the endpoint is tried again')
  state.inFlight = 3
  t.equal(state.cost(1000 + 100_000), state.latencyMs(1000 + 100_000) * 4, 'cost scales with requests in flight')
  state.finish(200_000, 5)
  t.equal(state.inFlight, 2)
})

t.test('EWMA: an endpoint that was slow is probed again after its estimate decays', async (t) => {
  const clock = { now: 0 }
  const endpoints = states(['fast', 'slow'])
  const balancer = new EwmaBalancer(endpoints, seededRandom(9), () => clock.now)
  endpoints[1]!.start()
  endpoints[1]!.finish(0, 1000)
  endpoints[0]!.start()
  endpoints[0]!.finish(0, 10)
  t.equal(balancer.pick()?.id, 'fast')
  // A minute of traffic later: fast keeps answering in 10ms; slow, unsampled, has decayed to ~2.5ms.
  clock.now = 60_000
  endpoints[0]!.start()
  endpoints[0]!.finish(60_000, 10)
  t.equal(balancer.pick()?.id, 'slow')
})

t.test('ConsistentHash: the same key gets the same endpoint; adding one endpoint keeps most keys', async (t) => {
  const keys = Array.from({ length: 10_000 }, (_, i) => `user-${i}`)
  const before = new ConsistentHashBalancer(states(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80', '10.0.0.4:80', '10.0.0.5:80']))
  const after = new ConsistentHashBalancer(states(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80', '10.0.0.4:80', '10.0.0.5:80', '10.0.0.6:80']))
  let kept = 0
  let movedElsewhere = 0
  let unstable = 0
  const share = new Map<string, number>()
  for (const key of keys) {
    const a = before.pick(key)?.id
    const b = after.pick(key)?.id
    if (before.pick(key)?.id !== a) unstable++
    if (a === b) kept++
    else if (b !== '10.0.0.6:80') movedElsewhere++
    share.set(a ?? '', (share.get(a ?? '') ?? 0) + 1)
  }
  t.ok(kept > 7500, `kept ${kept} of 10000 keys (ideal: 5/6 = 8333)`)
  t.equal(unstable, 0, 'the same key gets the same endpoint every time')
  t.equal(movedElsewhere, 0, 'a key that moves goes to the new endpoint')
  for (const [id, count] of share) t.ok(count > 1200 && count < 2800, `${id} holds ${count} of 10000 keys (ideal 2000)`)
})

t.test('ConsistentHash: an ejected endpoint\'s keys go to the next on the ring and come back; no key: round robin', async (t) => {
  const endpoints = states(['a', 'b', 'c'])
  const balancer = new ConsistentHashBalancer(endpoints)
  const owner = balancer.pick('session-1')!
  owner.ejected = true
  const stand = balancer.pick('session-1')
  t.ok(stand && stand !== owner, 'another endpoint while ejected')
  owner.ejected = false
  t.equal(balancer.pick('session-1'), owner, 'back when it returns')
  t.same([1, 2, 3].map(() => balancer.pick()?.id), ['a', 'b', 'c'])
  for (const e of endpoints) e.ejected = true
  t.equal(balancer.pick('session-1'), undefined)
})

t.test('hashKeyOf: header, cookie or source IP', async (t) => {
  const headers = { 'x-user': 'jason', cookie: 'theme=dark; session=abc123' }
  t.equal(hashKeyOf({ header: 'X-User' }, headers, '198.18.1.5'), 'jason')
  t.equal(hashKeyOf({ cookie: 'session' }, headers, '198.18.1.5'), 'abc123')
  t.equal(hashKeyOf({ cookie: 'missing' }, headers, '198.18.1.5'), undefined)
  t.equal(hashKeyOf({ sourceIP: true }, headers, '198.18.1.5'), '198.18.1.5')
})

t.test('createBalancer: the policy type, EWMA by default', async (t) => {
  const deps = { random: seededRandom(1), now: () => 0 }
  t.ok(createBalancer(undefined, states(['a']), deps) instanceof EwmaBalancer)
  t.ok(createBalancer('RoundRobin', states(['a']), deps) instanceof RoundRobinBalancer)
  t.ok(createBalancer('LeastRequest', states(['a']), deps) instanceof LeastRequestBalancer)
  t.ok(createBalancer('ConsistentHash', states(['a']), deps) instanceof ConsistentHashBalancer)
})

t.test('a faster sample is averaged in with a weight from the time since the last update', async (t) => {
  const state = new EndpointState('a', null, 0, { decayMs: 10_000, defaultRttMs: 30 })
  state.finish(0, 1000) // slower than the default: replaces the estimate
  state.finish(5000, 10)
  const weight = Math.exp(-5000 / 10_000)
  t.ok(Math.abs(state.latencyMs(5000) - (1000 * weight + 10 * (1 - weight))) < 1e-9, `estimate ${state.latencyMs(5000)}`)
  const before = state.latencyMs(5000)
  state.finish(6000, 10)
  t.ok(state.latencyMs(6000) < before, 'another fast sample pulls the estimate further down')
})
