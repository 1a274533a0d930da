// Incremental snapshot rebuilds (src/config/resources/snapshot.ts): a node rebuilds from its stored
// values after each change, reusing what the change did not touch (validations, workloads, a
// service's resolved endpoints) given the snapshot before. Whatever it reuses, the snapshot must be
// the one a build from scratch makes; and what it reuses is really reused.
import t from 'tap'

import { buildSnapshot, DEFAULT_VALIDATION_CONTEXT, type MeshSnapshot } from '../src/config/resources/index.ts'

const service = (name: string, vip: string, port = 80, selector: Record<string, string> = { app: name }): unknown => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' },
  spec: { clusterIP: vip, ports: [{ name: 'http', port, targetPort: 8080 }, { name: 'named', port: port + 1, targetPort: 'web' }], selector },
})
const pod = (name: string, ip: string, app: string, ready = true): unknown => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels: { app } },
  spec: { nodeName: 'node1', containers: [{ name: 'app', image: 'x', ports: app === 'reviews' ? [{ name: 'web', containerPort: 9080 }] : [] }] },
  status: { podIP: ip, ...(ready ? {} : { conditions: [{ type: 'Ready', status: 'False' }] }) },
})
const slice = (name: string, serviceName: string, ips: string[]): unknown => ({
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': serviceName } },
  addressType: 'IPv4', endpoints: ips.map((ip) => ({ addresses: [ip] })), ports: [{ name: 'http', port: 7000 }],
})
const route = (name: string, backend: string): unknown => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: 'shop' },
  spec: { parentRefs: [{ kind: 'Service', name }], rules: [{ backendRefs: [{ name: backend, port: 80 }] }] },
})

/** Everything a reader of the snapshot sees, in plain data (Maps as entry lists, in their order). */
function view(snapshot: MeshSnapshot): unknown {
  return JSON.parse(JSON.stringify(snapshot, (_key, value: unknown) =>
    value instanceof Map ? { map: [...value.entries()] } : value instanceof Set ? { set: [...value] } : value))
}

/** The stored values as the agent keeps them: one parsed object per key, replaced on change. */
const parsed = (value: unknown): unknown => JSON.parse(JSON.stringify(value))

t.test('a rebuild given the snapshot before is the snapshot a build from scratch makes, change after change', async (t) => {
  const stored = new Map<string, unknown>()
  const changes: Array<[string, string, unknown]> = [
    ['a service', 'service.shop.reviews', service('reviews', '198.19.0.10')],
    ['its pod', 'pod.shop.reviews-a', pod('reviews-a', '198.18.1.10', 'reviews')],
    ['another service', 'service.shop.ratings', service('ratings', '198.19.0.11')],
    ['a slice of it', 'endpointslice.shop.ratings-1', slice('ratings-1', 'ratings', ['198.18.1.20', '198.18.1.10'])],
    ['a route to a service not there yet', 'httproute.shop.reviews', route('reviews', 'details')],
    ['that service', 'service.shop.details', service('details', '198.19.0.12')],
    ['a second pod of the first service', 'pod.shop.reviews-b', pod('reviews-b', '198.18.1.11', 'reviews')],
    ['a pod turning not ready', 'pod.shop.reviews-a', pod('reviews-a', '198.18.1.10', 'reviews', false)],
    ['a service taking a VIP already used', 'service.shop.clash', service('clash', '198.19.0.10')],
    ['a service changing port', 'service.shop.ratings', service('ratings', '198.19.0.11', 90)],
    ['a pod taking the address a slice names', 'pod.shop.other', pod('other', '198.18.1.20', 'other')],
    ['the first service deleted (the clash now applies)', 'service.shop.reviews', null],
    ['a bad value', 'service.shop.broken', { kind: 'Service' }],
    ['a service re-created', 'service.shop.reviews', service('reviews', '198.19.0.13')],
  ]
  let snapshot: MeshSnapshot | undefined
  let revision = 0
  for (const [what, key, value] of changes) {
    revision++
    if (value === null) stored.delete(key)
    else stored.set(key, parsed(value))
    snapshot = buildSnapshot(new Map(stored), DEFAULT_VALIDATION_CONTEXT, revision, snapshot)
    // From scratch: fresh objects, so nothing derived before can be reused.
    const scratch = buildSnapshot(new Map([...stored].map(([k, v]) => [k, parsed(v)])), DEFAULT_VALIDATION_CONTEXT, revision)
    t.same(view(snapshot), view(scratch), `after ${what}`)
  }
  t.ok(snapshot!.rejected.some((r) => r.key === 'service.shop.broken'), 'the bad value is rejected')
  t.ok(snapshot!.services.has('198.19.0.10:80'), 'the clash took the VIP once the first service was gone')
})

t.test('what a change does not touch is reused: the other services\' targets are the same objects', async (t) => {
  const stored = new Map<string, unknown>()
  for (let i = 1; i <= 20; i++) {
    stored.set(`service.shop.s${i}`, parsed(service(`s${i}`, `198.19.1.${i}`)))
    stored.set(`endpointslice.shop.s${i}-1`, parsed(slice(`s${i}-1`, `s${i}`, [`198.18.2.${i}`])))
  }
  const before = buildSnapshot(new Map(stored), DEFAULT_VALIDATION_CONTEXT, 1)
  stored.set('service.shop.s1', parsed(service('s1', '198.19.1.1', 8000)))
  const after = buildSnapshot(new Map(stored), DEFAULT_VALIDATION_CONTEXT, 2, before)
  t.equal(after.services.get('198.19.1.2:80'), before.services.get('198.19.1.2:80'), 'an untouched service keeps its target (and endpoints)')
  t.equal(after.resources.get('service.shop.s2'), before.resources.get('service.shop.s2'), 'an untouched resource is not validated again')
  t.notOk(after.services.has('198.19.1.1:80'), 'the changed service left its old port')
  t.same(after.services.get('198.19.1.1:8000')?.endpoints.map((e) => `${e.ip}:${e.port}`), ['198.18.2.1:7000'], 'and has its endpoints on the new one')
  t.ok(Object.isFrozen(after.services.get('198.19.1.1:8000')), 'the new target is frozen too')
  t.throws(() => (after.services as Map<string, unknown>).set('x', 1), /immutable/, 'the snapshot is immutable')
  t.ok(before.services.has('198.19.1.1:80'), 'and the snapshot before is unchanged')
})
