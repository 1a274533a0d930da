// What a snapshot compiles into per destination (destinations.ts): locality failover, outlier
// ejection mirrored into picks, breaker and budget state surviving a snapshot change, and the
// connection pool idle timeout of a DestinationPolicy.
import t from 'tap'
import { buildSnapshot, type MeshSnapshot } from '../src/config/resources/index.ts'
import { L7Configs } from '../src/l7/destinations.ts'
import { seededRandom } from '../src/l7/random.ts'

const VIP = '198.19.0.40'

/** Three endpoints of default/api: two on node1 (the local node), one on node2. */
function snapshotWith(policySpec?: Record<string, unknown>): MeshSnapshot {
  const resources = new Map<string, unknown>([
    ['node._.node1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '198.18.0.2', proxyIp: '198.18.1.1', podCIDR: '198.18.1.0/24' } }],
    ['node._.node2', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node2' }, spec: { address: '198.18.0.3', proxyIp: '198.18.2.1', podCIDR: '198.18.2.0/24' } }],
    ['service.default.api', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'api', namespace: 'default' }, spec: { clusterIP: VIP, selector: { app: 'api' }, ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }] } }],
    ...[['a', 'node1', '198.18.1.10'], ['b', 'node1', '198.18.1.11'], ['c', 'node2', '198.18.2.10']].map(([name, nodeName, ip]): [string, unknown] => [`pod.default.${name}`, { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: { app: 'api' } }, spec: { nodeName }, status: { podIP: ip } }]),
  ])
  if (policySpec) resources.set('destinationpolicy.default.api', { apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'api', namespace: 'default' }, spec: { targetRef: { kind: 'Service', name: 'api' }, ...policySpec } })
  return buildSnapshot(resources)
}

function configs(now: () => number): L7Configs {
  return new L7Configs({ random: seededRandom(7), now, node: 'node1' })
}

function pickCounts(pick: () => string | undefined, n: number): Record<string, number> {
  const counts: Record<string, number> = {}
  for (let i = 0; i < n; i++) { const id = pick() ?? 'none'; counts[id] = (counts[id] ?? 0) + 1 }
  return counts
}

t.test('without failover every endpoint takes requests', async (t) => {
  const destination = configs(() => 0).get(snapshotWith({ loadBalancer: { type: 'RoundRobin' } })).destinationAt(VIP, 80)!
  const counts = pickCounts(() => destination.pick(undefined)?.endpoint.ip, 30)
  t.same(counts, { '198.18.1.10': 10, '198.18.1.11': 10, '198.18.2.10': 10 })
})

t.test('localityFirst keeps requests on this node while enough local endpoints are healthy, then spills over', async (t) => {
  let clock = 0
  const destination = configs(() => clock).get(snapshotWith({
    loadBalancer: { type: 'RoundRobin' },
    failover: { localityFirst: true, spillOverBelowHealthyPercent: 60 },
    outlierDetection: { consecutive5xx: 1, baseEjectionTime: '10s', maxEjectionPercent: 100 },
  })).destinationAt(VIP, 80)!
  t.same(pickCounts(() => destination.pick(undefined)?.endpoint.ip, 20), { '198.18.1.10': 10, '198.18.1.11': 10 }, 'only node1\'s endpoints')
  // One of the two local endpoints fails once and is ejected: 50% healthy < 60%: spill over to all.
  const a = destination.endpoints.find((state) => state.endpoint.ip === '198.18.1.10')!
  t.ok(destination.recordOutcome(a, { kind: 'response', status: 500 }), 'ejected')
  const spilled = pickCounts(() => destination.pick(undefined)?.endpoint.ip, 20)
  t.equal(spilled['198.18.1.10'], undefined, 'the ejected endpoint gets nothing')
  t.ok((spilled['198.18.2.10'] ?? 0) > 0, `the other node takes requests now (${JSON.stringify(spilled)})`)
  // After the ejection time the local endpoint is back, and so is locality.
  clock = 10_001
  t.same(pickCounts(() => destination.pick(undefined)?.endpoint.ip, 20), { '198.18.1.10': 10, '198.18.1.11': 10 }, 'back to node1 only')
})

t.test('breaker, budget and endpoint states carry over to the next snapshot while the policy stays', async (t) => {
  const compiled = configs(() => 0)
  const first = compiled.get(snapshotWith({ circuitBreaker: { maxRequests: 1 } })).destinationAt(VIP, 80)!
  const held = first.breaker.tryAcquire('requests')
  t.equal(typeof held, 'function')
  const second = compiled.get(snapshotWith({ circuitBreaker: { maxRequests: 1 } })).destinationAt(VIP, 80)!
  t.equal(second.breaker, first.breaker, 'the same breaker: the request in flight still counts')
  t.equal(second.budget, first.budget)
  t.equal(second.endpoints[0], first.endpoints[0], 'endpoint states (in flight, latency) are kept')
  const changed = compiled.get(snapshotWith({ circuitBreaker: { maxRequests: 5 } })).destinationAt(VIP, 80)!
  t.not(changed.breaker, first.breaker, 'new limits: a new breaker')
})

t.test('connectionPool.idleTimeout and faults come from the policy', async (t) => {
  const destination = configs(() => 0).get(snapshotWith({ connectionPool: { idleTimeout: '5s' }, faults: { abort: { httpStatus: 503, percent: 100 } } })).destinationAt(VIP, 80)!
  t.equal(destination.idleTimeoutMs, 5000)
  t.equal(destination.faults?.decide(() => 0.5).abortStatus, 503)
  const plain = configs(() => 0).get(snapshotWith()).destinationAt(VIP, 80)!
  t.equal(plain.idleTimeoutMs, undefined)
  t.equal(plain.faults, undefined)
  t.equal(plain.outlier, undefined, 'no outlier detection unless the policy asks')
})
