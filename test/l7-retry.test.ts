// Retries: which outcomes are retried, backoff with full jitter, the policy an HTTPRoute asks
// for, and the retry budget over a sliding window on a fake clock.
import t from 'tap'

import { RetryBudget, RetryPolicy, retryConfigFromRoute, type AttemptOutcome } from '../src/l7/retry.ts'

const status = (code: number, grpcStatus?: number): AttemptOutcome => ({ kind: 'response', status: code, grpcStatus })
const reset: AttemptOutcome = { kind: 'reset' }
const connectFailure: AttemptOutcome = { kind: 'connect-failure' }
const timeout: AttemptOutcome = { kind: 'timeout' }

t.test('retryOn: 5xx, gateway-error, reset, connect-failure, listed codes, gRPC codes', async (t) => {
  const on = (config: Partial<ConstructorParameters<typeof RetryPolicy>[0]>) => new RetryPolicy({ maxRetries: 2, retryOn: [], ...config })
  const outcomes = [status(200), status(404), status(500), status(502), status(503), status(504), reset, connectFailure, timeout]
  const table = (policy: RetryPolicy) => outcomes.map((o) => policy.retriable(o))
  t.same(table(on({ retryOn: ['5xx'] })), [false, false, true, true, true, true, true, true, true])
  t.same(table(on({ retryOn: ['gateway-error'] })), [false, false, false, true, true, true, true, true, true])
  t.same(table(on({ retryOn: ['reset'] })), [false, false, false, false, false, false, true, false, false])
  t.same(table(on({ retryOn: ['connect-failure'] })), [false, false, false, false, false, false, false, true, false])
  t.same(table(on({ statusCodes: [404, 503] })), [false, true, false, false, true, false, false, false, false])
  const grpc = on({ grpcStatusCodes: [14] })
  t.ok(grpc.retriable(status(200, 14)), 'UNAVAILABLE in grpc-status')
  t.notOk(grpc.retriable(status(200, 4)), 'DEADLINE_EXCEEDED is not listed')
  t.notOk(grpc.retriable(status(200)))
})

t.test('shouldRetry stops at maxRetries', async (t) => {
  const policy = new RetryPolicy({ maxRetries: 2, retryOn: ['5xx'] })
  t.same([0, 1, 2].map((n) => policy.shouldRetry(status(503), n)), [true, true, false])
  t.notOk(policy.shouldRetry(status(200), 0))
  t.notOk(new RetryPolicy({ maxRetries: 0, retryOn: ['5xx'] }).shouldRetry(status(503), 0))
})

t.test('backoff: exponential ceiling, capped, with full jitter from the random source', async (t) => {
  const policy = new RetryPolicy({ maxRetries: 5, retryOn: ['5xx'], backoff: { baseMs: 100, maxMs: 1000 } })
  t.same([0, 1, 2, 3, 4, 10].map((n) => policy.backoffMs(n, () => 0.999999)).map(Math.round), [100, 200, 400, 800, 1000, 1000], 'the ceiling doubles up to max')
  t.same([0, 3].map((n) => policy.backoffMs(n, () => 0.5)), [50, 400], 'the delay is a random share of the ceiling')
  t.equal(policy.backoffMs(4, () => 0), 0, 'full jitter reaches down to 0')
  t.throws(() => new RetryPolicy({ maxRetries: 1, retryOn: [], backoff: { baseMs: 10, maxMs: 5 } }), /expected 0 ≤ baseMs ≤ maxMs, got baseMs 10, maxMs 5/)
})

t.test('an HTTPRoute rule\'s retry: attempts, codes, backoff as the base, backendRequest as the per-try timeout', async (t) => {
  const config = retryConfigFromRoute({ attempts: 3, codes: [500, 503], backoffMs: 100 }, 2000)
  t.same(config, { maxRetries: 3, perTryTimeoutMs: 2000, retryOn: ['reset', 'connect-failure'], statusCodes: [500, 503], backoff: { baseMs: 100, maxMs: 1000 } })
  const policy = new RetryPolicy(config)
  t.ok(policy.retriable(status(500)))
  t.notOk(policy.retriable(status(502)), 'only the listed codes')
  t.ok(policy.retriable(connectFailure), 'a connect failure never reached the application')
  const defaults = new RetryPolicy(retryConfigFromRoute({ attempts: undefined, codes: undefined, backoffMs: undefined }, undefined))
  t.equal(defaults.maxRetries, 2)
  t.equal(defaults.perTryTimeoutMs, undefined)
  t.ok(defaults.retriable(status(503)) && defaults.retriable(timeout) && !defaults.retriable(status(500)), 'gateway errors by default')
})

t.test('budget: retries stay within ratio × recent requests + the per-second floor', async (t) => {
  let now = 0
  const budget = new RetryBudget({ ratio: 0.2, minRetriesPerSecond: 1, windowMs: 10_000 }, () => now)
  t.equal(budget.available(), 10, 'the floor: 1/s over a 10s window')
  for (let i = 0; i < 100; i++) budget.recordRequest()
  t.equal(budget.available(), 30, '+20% of 100 requests')
  let granted = 0
  while (budget.tryRetry()) granted++
  t.equal(granted, 30, 'then the budget is spent')
  t.notOk(budget.tryRetry())
  now = 5_000
  for (let i = 0; i < 10; i++) budget.recordRequest()
  t.equal(budget.available(), 2, 'new requests earn new retries')
})

t.test('budget: old traffic leaves the window slot by slot', async (t) => {
  let now = 0
  const budget = new RetryBudget({ ratio: 0.5, minRetriesPerSecond: 0, windowMs: 10_000 }, () => now)
  for (let i = 0; i < 20; i++) budget.recordRequest()
  for (let i = 0; i < 10; i++) t.ok(budget.tryRetry())
  t.notOk(budget.tryRetry(), 'spent at t=0')
  now = 5_000
  for (let i = 0; i < 20; i++) budget.recordRequest()
  t.equal(budget.available(), 10)
  now = 10_000
  t.equal(budget.available(), 10, 'the first slot has left: its 20 requests and 10 retries with it')
  now = 15_000
  t.equal(budget.available(), 0, 'all of it has left')
  now = 1_000_000
  t.equal(budget.available(), 0, 'a long idle gap clears everything')
  budget.recordRequest()
  budget.recordRequest()
  t.ok(budget.tryRetry())
})

t.test('budget: a backend failing every request gets at most ratio extra load', async (t) => {
  let now = 0
  const budget = new RetryBudget({ ratio: 0.2, minRetriesPerSecond: 10, windowMs: 10_000 }, () => now)
  const policy = new RetryPolicy({ maxRetries: 3, retryOn: ['5xx'] })
  let tries = 0
  for (let request = 0; request < 10_000; request++) {
    now = request // 1,000 requests per second for 10 seconds
    budget.recordRequest()
    tries++
    for (let retry = 0; policy.shouldRetry(status(503), retry) && budget.tryRetry(); retry++) tries++
  }
  const extra = tries / 10_000 - 1
  t.ok(extra <= 0.2 + 0.01 + 1e-9, `retries added ${(extra * 100).toFixed(1)}% load (budget: 20% + 10/s floor)`)
  t.ok(extra > 0.15, 'and the budget is used')
})
