// What /debug/config shows of a snapshot (describeAppliedConfig): services with their endpoints
// and the L7 proxy's live state of each, routes, and per pod of the node its PeerAuthentication
// mode and AuthorizationPolicies; a service filter keeps what concerns that service.
import t from 'tap'

import { UnknownServiceError, describeAppliedConfig } from '../src/config/applied-config.ts'
import { buildSnapshot } from '../src/config/resources/index.ts'
import type { DestinationView } from '../src/l7/destinations.ts'

const pod = (name: string, node: string, ip: string, labels: Record<string, string>): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels }, spec: { nodeName: node, serviceAccountName: name }, status: { podIP: ip },
})
const service = (name: string, vip: string, app: string): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' },
  spec: { clusterIP: vip, selector: { app }, ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }] },
})

const resources = new Map<string, unknown>([
  ['node._.node1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '198.18.0.2', proxyIp: '198.18.1.1', podCIDR: '198.18.1.0/24' } }],
  ['pod.shop.reviews-v1', pod('reviews-v1', 'node1', '198.18.1.10', { app: 'reviews' })],
  ['pod.shop.reviews-v2', pod('reviews-v2', 'node2', '198.18.2.10', { app: 'reviews' })],
  ['pod.shop.web', pod('web', 'node1', '198.18.1.11', { app: 'web' })],
  ['service.shop.reviews', service('reviews', '198.19.0.10', 'reviews')],
  ['service.shop.web', service('web', '198.19.0.11', 'web')],
  ['httproute.shop.web', {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'shop' },
    spec: { parentRefs: [{ kind: 'Service', name: 'web', port: 80 }], rules: [{ backendRefs: [{ name: 'web', port: 80, weight: 3 }, { name: 'reviews', port: 80, weight: 1 }] }] },
  }],
  ['destinationpolicy.shop.reviews', { apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'reviews', namespace: 'shop' }, spec: { targetRef: { kind: 'Service', name: 'reviews' }, loadBalancer: { type: 'RoundRobin' } } }],
  ['peerauthentication.shop.reviews-strict', {
    apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'reviews-strict', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'reviews' } }, mtls: { mode: 'STRICT' } },
  }],
  ['authorizationpolicy.shop.reviews-from-web', {
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'reviews-from-web', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'reviews' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }] },
  }],
  ['authorizationpolicy.shop.no-delete', {
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'no-delete', namespace: 'shop' },
    spec: { action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] },
  }],
])

// What the L7 proxy's /debug/destinations says of reviews now: v1 ejected by outlier detection.
const live: DestinationView[] = [{
  service: 'shop/reviews', address: '198.19.0.10:80', loadBalancer: 'RoundRobin', localityFirst: false, outlierDetection: true, faults: false, retryBudgetAvailable: 10,
  breaker: { connections: { inUse: 0, max: 1024, trips: 0 }, pendingRequests: { inUse: 0, max: 1024, trips: 0 }, requests: { inUse: 0, max: 1024, trips: 0 }, retries: { inUse: 0, max: 3, trips: 0 } },
  endpoints: [
    { endpoint: '198.18.1.10:8080', node: 'node1', workload: 'shop/reviews-v1', inFlight: 0, latencyMs: 12, ejected: true },
    { endpoint: '198.18.2.10:8080', node: 'node2', workload: 'shop/reviews-v2', inFlight: 2, latencyMs: 3, ejected: false },
  ],
}]

t.test('the whole node: services, endpoints with live state, routes, and its own pods\' policies', async (t) => {
  const snapshot = buildSnapshot(resources)
  t.same(snapshot.rejected, [], 'every test resource applies')
  const view = describeAppliedConfig(snapshot, 'node1', live)
  t.match(view, { node: 'node1', revision: snapshot.revision, service: null, nodes: [{ name: 'node1', address: '198.18.0.2', proxyIp: '198.18.1.1', podCIDR: '198.18.1.0/24' }], rejected: [] })
  t.same(view.services.map((s) => s.service), ['shop/reviews', 'shop/web'])
  t.same(view.services[0], {
    service: 'shop/reviews', vip: '198.19.0.10', destinationPolicy: 'shop/reviews',
    ports: [{
      name: 'http', port: 80, targetPort: 8080, appProtocol: 'http', address: '198.19.0.10:80',
      endpoints: [
        { endpoint: '198.18.1.10:8080', node: 'node1', workload: 'shop/reviews-v1', health: 'ejected', inFlight: 0, latencyMs: 12 },
        { endpoint: '198.18.2.10:8080', node: 'node2', workload: 'shop/reviews-v2', health: 'ready', inFlight: 2, latencyMs: 3 },
      ],
    }],
  }, 'every ready endpoint, wherever it runs, with what the L7 proxy knows of it')
  t.same(view.services[1]!.ports[0]!.endpoints, [{ endpoint: '198.18.1.11:8080', node: 'node1', workload: 'shop/web', health: 'ready' }], 'no live state: none shown')
  t.same(view.routes, [{ route: 'shop/web', kind: 'HTTPRoute', parents: ['shop/web:80'], rules: [{ backends: ['shop/web:80 3', 'shop/reviews:80 1'] }] }])
  t.same(view.workloads.map((w) => [w.workload, w.mtls, w.authorization]), [
    ['shop/reviews-v1', { mode: 'STRICT', policy: 'shop/reviews-strict' }, { deny: ['shop/no-delete'], allow: ['shop/reviews-from-web'] }],
    ['shop/web', { mode: 'PERMISSIVE', policy: null }, { deny: ['shop/no-delete'], allow: [] }],
  ], 'only node1\'s pods, with the mode and the policies node1 decides with')
})

t.test('a service filter keeps that service, the routes that concern it and the node\'s pods behind it', async (t) => {
  const snapshot = buildSnapshot(resources)
  const reviews = describeAppliedConfig(snapshot, 'node1', live, 'shop/reviews')
  t.same(reviews.services.map((s) => s.service), ['shop/reviews'])
  t.same(reviews.routes.map((r) => r.route), ['shop/web'], 'a route that sends to it')
  t.same(reviews.workloads.map((w) => w.workload), ['shop/reviews-v1'], 'reviews-v2 runs on node2')
  t.same(describeAppliedConfig(snapshot, 'node2', live, 'shop/reviews').workloads.map((w) => w.workload), ['shop/reviews-v2'])
  t.throws(() => describeAppliedConfig(snapshot, 'node1', live, 'shop/nope'), new UnknownServiceError(`no service shop/nope in revision ${snapshot.revision} (known: shop/reviews, shop/web)`))
})
