// Fault injection: delay and abort each at their configured percentage, decided by the injected
// random source.
import t from 'tap'

import { GRPC_STATUS } from '../src/l7/errors.ts'
import { faultConfigFromPolicy, FaultInjector } from '../src/l7/faults.ts'
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
  t.same(faults.decide(draws(0.1, 0.9)), { delayMs: 50, abortStatus: undefined, abortGrpcStatus: undefined })
  t.same(faults.decide(draws(0.9, 0.1)), { delayMs: 0, abortStatus: 500, abortGrpcStatus: GRPC_STATUS.UNKNOWN })
  t.same(faults.decide(draws(0.1, 0.1)), { delayMs: 50, abortStatus: 500, abortGrpcStatus: GRPC_STATUS.UNKNOWN })
  t.same(faults.decide(draws(0.5, 0.5)), { delayMs: 0, abortStatus: undefined, abortGrpcStatus: undefined }, 'a draw equal to the fraction is outside it')
})

t.test('0% never, 100% always; no configuration is inert and draws nothing', async (t) => {
  const always = new FaultInjector({ abort: { status: 429, percent: 100 } })
  t.same(always.decide(() => 0.99999), { delayMs: 0, abortStatus: 429, abortGrpcStatus: GRPC_STATUS.UNAVAILABLE })
  const never = new FaultInjector({ delay: { fixedDelayMs: 100, percent: 0 } })
  t.ok(never.inert)
  const none = new FaultInjector({})
  t.ok(none.inert)
  t.same(none.decide(() => { throw new Error('drew') }), { delayMs: 0, abortStatus: undefined, abortGrpcStatus: undefined })
})

t.test('bad configuration is refused when built, naming the field', async (t) => {
  t.throws(() => new FaultInjector({ abort: { status: 42, percent: 10 } }), /abort.status: expected an HTTP status from 200 to 599, got 42/)
  t.throws(() => new FaultInjector({ delay: { fixedDelayMs: 10, percent: 120 } }), /delay.percent: expected a percentage from 0 to 100, got 120/)
  t.throws(() => new FaultInjector({ abort: { status: 503, grpcStatus: 17, percent: 10 } }), /abort.grpcStatus: expected a gRPC status code from 0 to 16, got 17/)
})

t.test('an abort answers gRPC requests with its grpcStatus, by default gRPC\'s mapping of the HTTP status', async (t) => {
  const mapped = new FaultInjector({ abort: { status: 504, percent: 100 } })
  t.same(mapped.decide(() => 0), { delayMs: 0, abortStatus: 504, abortGrpcStatus: GRPC_STATUS.UNAVAILABLE })
  const own = new FaultInjector({ abort: { status: 503, grpcStatus: GRPC_STATUS.RESOURCE_EXHAUSTED, percent: 100 } })
  t.same(own.decide(() => 0), { delayMs: 0, abortStatus: 503, abortGrpcStatus: GRPC_STATUS.RESOURCE_EXHAUSTED })
  const ok = new FaultInjector({ abort: { status: 500, grpcStatus: GRPC_STATUS.OK, percent: 100 } })
  t.equal(ok.decide(() => 0).abortGrpcStatus, 0, 'grpcStatus 0 is kept, not taken for absent')
})

t.test('from a DestinationPolicy: durations in ms, field names of the injector', async (t) => {
  t.same(faultConfigFromPolicy({ delay: { fixedDelay: '1s200ms', percent: 25 }, abort: { httpStatus: 503, grpcStatus: 8, percent: 5 } }),
    { delay: { fixedDelayMs: 1200, percent: 25 }, abort: { status: 503, grpcStatus: 8, percent: 5 } })
  const abortOnly = faultConfigFromPolicy({ abort: { httpStatus: 429, percent: 100 } })
  t.equal(abortOnly.delay, undefined)
  t.same(new FaultInjector(abortOnly).decide(() => 0), { delayMs: 0, abortStatus: 429, abortGrpcStatus: GRPC_STATUS.UNAVAILABLE })
  t.ok(new FaultInjector(faultConfigFromPolicy({})).inert, 'empty faults: inert')
  t.equal(faultConfigFromPolicy(undefined), undefined, 'no faults field: no config')
})
