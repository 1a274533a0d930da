// Circuit breaking: each limit admits up to its maximum, refuses beyond it naming the limit, and
// admits again once something is released.
import t from 'tap'

import { CircuitBreaker, isOpen, type Release } from '../src/l7/breaker.ts'

t.test('a limit admits up to its maximum, then opens naming the limit; a release admits one more', async (t) => {
  const breaker = new CircuitBreaker('default/reviews', { maxRequests: 2 })
  const first = breaker.tryAcquire('requests')
  const second = breaker.tryAcquire('requests')
  t.notOk(isOpen(first) || isOpen(second))
  const third = breaker.tryAcquire('requests')
  t.same(third, { open: { destination: 'default/reviews', kind: 'requests', limit: 'maxRequests', max: 2 } })
  t.equal(breaker.current('requests'), 2)
  t.equal(breaker.tripped('requests'), 1)
  ;(first as Release)()
  t.equal(breaker.current('requests'), 1)
  t.notOk(isOpen(breaker.tryAcquire('requests')), 'room again after a release')
})

t.test('releasing twice gives back only once', async (t) => {
  const breaker = new CircuitBreaker('default/reviews', { maxConnections: 1 })
  const release = breaker.tryAcquire('connections') as Release
  release()
  release()
  t.equal(breaker.current('connections'), 0)
  t.notOk(isOpen(breaker.tryAcquire('connections')))
  t.ok(isOpen(breaker.tryAcquire('connections')), 'still a limit of one')
})

t.test('each kind counts on its own: connections, pending requests, requests, retries', async (t) => {
  const breaker = new CircuitBreaker('shop/ratings', { maxConnections: 1, maxPendingRequests: 1, maxRequests: 1, maxRetries: 1 })
  for (const kind of ['connections', 'pendingRequests', 'requests', 'retries'] as const) {
    t.notOk(isOpen(breaker.tryAcquire(kind)), `${kind}: the first`)
  }
  const limits = (['connections', 'pendingRequests', 'requests', 'retries'] as const).map((kind) => {
    const result = breaker.tryAcquire(kind)
    return isOpen(result) ? result.open.limit : 'admitted'
  })
  t.same(limits, ['maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRetries'])
})

t.test('unset limits take Envoy\'s defaults; 0 refuses everything', async (t) => {
  const breaker = new CircuitBreaker('default/reviews')
  for (let i = 0; i < 3; i++) t.notOk(isOpen(breaker.tryAcquire('retries')))
  const fourth = breaker.tryAcquire('retries')
  t.ok(isOpen(fourth) && fourth.open.max === 3, 'three concurrent retries by default')
  for (let i = 0; i < 1024; i++) breaker.tryAcquire('requests')
  t.ok(isOpen(breaker.tryAcquire('requests')), '1024 requests by default')
  t.ok(isOpen(new CircuitBreaker('a/b', { maxPendingRequests: 0 }).tryAcquire('pendingRequests')))
})
