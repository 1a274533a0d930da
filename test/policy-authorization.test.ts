// Authorization as Istio users know it: DENY before ALLOW, no policy means allowed, an ALLOW
// policy with no rules denies, the root namespace applies everywhere, every source and operation
// field with its wildcard forms, and what HTTP-only fields mean without HTTP attributes (L4).
import { readFileSync } from 'node:fs'
import t from 'tap'

import { buildSnapshot, parseResourceDocuments, resourceKey, validateResource, type MeshSnapshot, type Workload } from '../src/config/resources/index.ts'
import { labResources, parseTopology, planLab } from '../src/lab/index.ts'
import { authorize, needsHttpAttributes, type AuthorizationInput, type AuthorizationPeer, type HttpAttributes } from '../src/policy/authorization.ts'

type Spec = Record<string, unknown>

const policy = (namespace: string, name: string, spec: Spec | undefined): Record<string, unknown> => ({
  apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, ...(spec === undefined ? {} : { spec }),
})

const PODS: { namespace: string; name: string; ip: string; labels: Record<string, string>; sa: string }[] = [
  { namespace: 'shop', name: 'reviews', ip: '198.18.1.10', labels: { app: 'reviews' }, sa: 'reviews' },
  { namespace: 'shop', name: 'web', ip: '198.18.1.11', labels: { app: 'web' }, sa: 'web' },
  { namespace: 'ops', name: 'probe', ip: '198.18.2.10', labels: { app: 'probe' }, sa: 'default' },
]

function snapshotWith(policies: Record<string, unknown>[]): MeshSnapshot {
  const resources = new Map<string, unknown>()
  for (const pod of PODS) {
    resources.set(`pod.${pod.namespace}.${pod.name}`, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: pod.name, namespace: pod.namespace, labels: pod.labels },
      spec: { nodeName: 'node1', serviceAccountName: pod.sa }, status: { podIP: pod.ip },
    })
  }
  for (const p of policies) {
    const metadata = p['metadata'] as { name: string; namespace: string }
    resources.set(`authorizationpolicy.${metadata.namespace}.${metadata.name}`, p)
  }
  const snapshot = buildSnapshot(resources)
  if (snapshot.rejected.length > 0) throw new Error(`test policies rejected: ${JSON.stringify(snapshot.rejected)}`)
  return snapshot
}

function workload(snapshot: MeshSnapshot, key: string): Workload {
  for (const w of snapshot.workloadsByIp.values()) if (w.key === key) return w
  throw new Error(`no workload ${key}`)
}

const fromWeb: AuthorizationPeer = { principal: 'spiffe://cluster.local/ns/shop/sa/web', namespace: 'shop', ip: '198.18.1.11' }
const fromProbe: AuthorizationPeer = { principal: 'spiffe://cluster.local/ns/ops/sa/default', namespace: 'ops', ip: '198.18.2.10' }
const anonymous: AuthorizationPeer = { principal: undefined, namespace: undefined, ip: '10.1.2.3' }
const get = (path: string, host = 'reviews.shop.svc.cluster.local'): HttpAttributes => ({ method: 'GET', path, host })
const post = (path: string, host = 'reviews.shop.svc.cluster.local'): HttpAttributes => ({ method: 'POST', path, host })

interface Case {
  name: string
  policies: Record<string, unknown>[]
  source: AuthorizationPeer
  port?: number
  http?: HttpAttributes
  destination?: string
  allowed: boolean
  action: 'ALLOW' | 'DENY' | 'NONE'
  policy?: string | undefined
  reason?: RegExp
}

const allowFrom = (source: Spec): Record<string, unknown> => policy('shop', 'allow', { rules: [{ from: [{ source }] }] })
const allowTo = (operation: Spec): Record<string, unknown> => policy('shop', 'allow', { rules: [{ to: [{ operation }] }] })
const denyTo = (operation: Spec): Record<string, unknown> => policy('shop', 'deny', { action: 'DENY', rules: [{ to: [{ operation }] }] })

const cases: Case[] = [
  // The three steps.
  { name: 'no policy: allowed', policies: [], source: anonymous, allowed: true, action: 'NONE', policy: undefined, reason: /^no AuthorizationPolicy applies to shop\/reviews$/ },
  { name: 'spec {} (ALLOW, no rules): denies everything', policies: [policy('shop', 'deny-all', {})], source: fromWeb, allowed: false, action: 'ALLOW', policy: 'shop/deny-all', reason: /^no ALLOW policy of shop matched \(policies: shop\/deny-all\)$/ },
  { name: 'no spec at all: the same', policies: [policy('shop', 'deny-all', undefined)], source: fromWeb, allowed: false, action: 'ALLOW' },
  { name: 'rules: [{}] allows everything', policies: [policy('shop', 'allow-all', { rules: [{}] })], source: anonymous, allowed: true, action: 'ALLOW', policy: 'shop/allow-all', reason: /^allowed by AuthorizationPolicy shop\/allow-all \(ALLOW\)$/ },
  { name: 'DENY with no rules denies nothing', policies: [policy('shop', 'deny', { action: 'DENY' })], source: fromWeb, allowed: true, action: 'NONE' },
  { name: 'DENY rules: [{}] denies everything', policies: [policy('shop', 'deny', { action: 'DENY', rules: [{}] })], source: fromWeb, allowed: false, action: 'DENY', policy: 'shop/deny', reason: /^denied by AuthorizationPolicy shop\/deny \(DENY\)$/ },
  {
    name: 'DENY before ALLOW: a matching DENY wins over a matching ALLOW',
    policies: [policy('shop', 'allow-all', { rules: [{}] }), policy('shop', 'deny-web', { action: 'DENY', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }] })],
    source: fromWeb, allowed: false, action: 'DENY', policy: 'shop/deny-web',
  },
  {
    name: 'a DENY that does not match leaves the ALLOW to decide',
    policies: [policy('shop', 'allow-all', { rules: [{}] }), policy('shop', 'deny-web', { action: 'DENY', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }] })],
    source: fromProbe, allowed: true, action: 'ALLOW', policy: 'shop/allow-all',
  },
  {
    name: 'several ALLOW policies: any may allow; none matching names them all',
    policies: [allowFrom({ namespaces: ['billing'] }), policy('shop', 'allow-2', { rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] })],
    source: fromWeb, allowed: false, action: 'ALLOW', policy: 'shop/allow,shop/allow-2', reason: /\(policies: shop\/allow, shop\/allow-2\)$/,
  },

  // Selectors and the root namespace.
  { name: 'a selector that does not pick the pod: the policy does not apply', policies: [policy('shop', 'deny-all', { selector: { matchLabels: { app: 'web' } } })], source: fromWeb, allowed: true, action: 'NONE' },
  { name: 'a selector that picks the pod applies', policies: [policy('shop', 'deny-all', { selector: { matchLabels: { app: 'reviews' } } })], source: fromWeb, allowed: false, action: 'ALLOW' },
  { name: 'a policy of another namespace does not apply', policies: [policy('ops', 'deny-all', {})], source: fromWeb, allowed: true, action: 'NONE' },
  { name: 'root namespace without selector: applies mesh-wide', policies: [policy('weft-system', 'deny-all', {})], source: fromWeb, allowed: false, action: 'ALLOW', policy: 'weft-system/deny-all' },
  { name: 'root namespace with a selector: picks pods in every namespace', policies: [policy('weft-system', 'no-probe', { selector: { matchLabels: { app: 'probe' } }, action: 'DENY', rules: [{}] })], destination: 'pod.ops.probe', source: fromWeb, allowed: false, action: 'DENY' },
  { name: 'root namespace with a selector: other pods untouched', policies: [policy('weft-system', 'no-probe', { selector: { matchLabels: { app: 'probe' } }, action: 'DENY', rules: [{}] })], source: fromWeb, allowed: true, action: 'NONE' },
  {
    name: 'root DENY and namespace ALLOW combine',
    policies: [policy('weft-system', 'deny-ops', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] }), policy('shop', 'allow-all', { rules: [{}] })],
    source: fromProbe, allowed: false, action: 'DENY', policy: 'weft-system/deny-ops',
  },

  // Sources.
  { name: 'principals: Istio form', policies: [allowFrom({ principals: ['cluster.local/ns/shop/sa/web'] })], source: fromWeb, allowed: true, action: 'ALLOW' },
  { name: 'principals: spiffe:// form', policies: [allowFrom({ principals: ['spiffe://cluster.local/ns/shop/sa/web'] })], source: fromWeb, allowed: true, action: 'ALLOW' },
  { name: 'principals: another principal', policies: [allowFrom({ principals: ['cluster.local/ns/shop/sa/admin'] })], source: fromWeb, allowed: false, action: 'ALLOW' },
  { name: 'principals: prefix *', policies: [allowFrom({ principals: ['cluster.local/ns/shop/*'] })], source: fromWeb, allowed: true, action: 'ALLOW' },
  { name: 'principals: suffix *', policies: [allowFrom({ principals: ['*/sa/web'] })], source: fromWeb, allowed: true, action: 'ALLOW' },
  { name: 'principals: suffix * not matching', policies: [allowFrom({ principals: ['*/sa/admin'] })], source: fromWeb, allowed: false, action: 'ALLOW' },
  { name: 'principals: "*" matches any identified peer', policies: [allowFrom({ principals: ['*'] })], source: fromProbe, allowed: true, action: 'ALLOW' },
  { name: 'principals: "*" does not match a peer without identity', policies: [allowFrom({ principals: ['*'] })], source: anonymous, allowed: false, action: 'ALLOW' },
  { name: 'notPrincipals: excludes', policies: [allowFrom({ notPrincipals: ['cluster.local/ns/shop/sa/web'] })], source: fromWeb, allowed: false, action: 'ALLOW' },
  { name: 'notPrincipals: others pass', policies: [allowFrom({ notPrincipals: ['cluster.local/ns/shop/sa/web'] })], source: fromProbe, allowed: true, action: 'ALLOW' },
  { name: 'notPrincipals: a peer without identity is not excluded', policies: [allowFrom({ notPrincipals: ['*'] })], source: anonymous, allowed: true, action: 'ALLOW' },
  { name: 'namespaces', policies: [allowFrom({ namespaces: ['ops'] })], source: fromProbe, allowed: true, action: 'ALLOW' },
  { name: 'namespaces: prefix *', policies: [allowFrom({ namespaces: ['op*'] })], source: fromProbe, allowed: true, action: 'ALLOW' },
  { name: 'namespaces: not matching', policies: [allowFrom({ namespaces: ['ops'] })], source: fromWeb, allowed: false, action: 'ALLOW' },
  { name: 'notNamespaces', policies: [allowFrom({ notNamespaces: ['ops'] })], source: fromProbe, allowed: false, action: 'ALLOW' },
  { name: 'ipBlocks: CIDR', policies: [allowFrom({ ipBlocks: ['10.0.0.0/8'] })], source: anonymous, allowed: true, action: 'ALLOW' },
  { name: 'ipBlocks: single address', policies: [allowFrom({ ipBlocks: ['10.1.2.3'] })], source: anonymous, allowed: true, action: 'ALLOW' },
  { name: 'ipBlocks: outside', policies: [allowFrom({ ipBlocks: ['198.18.0.0/15'] })], source: anonymous, allowed: false, action: 'ALLOW' },
  { name: 'notIpBlocks', policies: [allowFrom({ notIpBlocks: ['10.0.0.0/8'] })], source: anonymous, allowed: false, action: 'ALLOW' },
  { name: 'every field of a source must match', policies: [allowFrom({ namespaces: ['shop'], ipBlocks: ['10.0.0.0/8'] })], source: fromWeb, allowed: false, action: 'ALLOW' },
  {
    name: 'any entry of from may match',
    policies: [policy('shop', 'allow', { rules: [{ from: [{ source: { namespaces: ['billing'] } }, { source: { ipBlocks: ['198.18.1.0/24'] } }] }] })],
    source: fromWeb, allowed: true, action: 'ALLOW',
  },
  {
    name: 'from and to must both match',
    policies: [policy('shop', 'allow', { rules: [{ from: [{ source: { namespaces: ['shop'] } }], to: [{ operation: { ports: ['9090'] } }] }] })],
    source: fromWeb, port: 8080, allowed: false, action: 'ALLOW',
  },

  // Operations.
  { name: 'ports', policies: [allowTo({ ports: ['8080'] })], source: fromWeb, port: 8080, allowed: true, action: 'ALLOW' },
  { name: 'ports: another port', policies: [allowTo({ ports: ['8080'] })], source: fromWeb, port: 9090, allowed: false, action: 'ALLOW' },
  { name: 'notPorts', policies: [allowTo({ notPorts: ['8080'] })], source: fromWeb, port: 8080, allowed: false, action: 'ALLOW' },
  { name: 'methods', policies: [allowTo({ methods: ['GET', 'HEAD'] })], source: fromWeb, http: get('/'), allowed: true, action: 'ALLOW' },
  { name: 'methods: another method', policies: [allowTo({ methods: ['GET'] })], source: fromWeb, http: post('/'), allowed: false, action: 'ALLOW' },
  { name: 'notMethods', policies: [allowTo({ notMethods: ['POST'] })], source: fromWeb, http: post('/'), allowed: false, action: 'ALLOW' },
  { name: 'paths: exact', policies: [allowTo({ paths: ['/api/users'] })], source: fromWeb, http: get('/api/users'), allowed: true, action: 'ALLOW' },
  { name: 'paths: exact, not a prefix', policies: [allowTo({ paths: ['/api'] })], source: fromWeb, http: get('/api/users'), allowed: false, action: 'ALLOW' },
  { name: 'paths: prefix *', policies: [allowTo({ paths: ['/api/*'] })], source: fromWeb, http: get('/api/users'), allowed: true, action: 'ALLOW' },
  { name: 'paths: suffix *', policies: [allowTo({ paths: ['*/info'] })], source: fromWeb, http: get('/v1/info'), allowed: true, action: 'ALLOW' },
  { name: 'paths: the query string is not part of the path', policies: [allowTo({ paths: ['/api/users'] })], source: fromWeb, http: get('/api/users?id=1'), allowed: true, action: 'ALLOW' },
  { name: 'notPaths', policies: [allowTo({ notPaths: ['/admin*'] })], source: fromWeb, http: get('/admin/x'), allowed: false, action: 'ALLOW' },
  { name: 'hosts: case-insensitive', policies: [allowTo({ hosts: ['Reviews.shop.svc.cluster.local'] })], source: fromWeb, http: get('/', 'REVIEWS.shop.svc.cluster.local'), allowed: true, action: 'ALLOW' },
  { name: 'hosts: the Host port is optional', policies: [allowTo({ hosts: ['reviews'] })], source: fromWeb, http: get('/', 'reviews:8080'), allowed: true, action: 'ALLOW' },
  { name: 'hosts: suffix *', policies: [allowTo({ hosts: ['*.cluster.local'] })], source: fromWeb, http: get('/'), allowed: true, action: 'ALLOW' },
  { name: 'hosts: prefix *', policies: [allowTo({ hosts: ['reviews.*'] })], source: fromWeb, http: get('/'), allowed: true, action: 'ALLOW' },
  { name: 'hosts: not matching', policies: [allowTo({ hosts: ['ratings'] })], source: fromWeb, http: get('/'), allowed: false, action: 'ALLOW' },
  { name: 'notHosts', policies: [allowTo({ notHosts: ['reviews.shop.svc.cluster.local'] })], source: fromWeb, http: get('/'), allowed: false, action: 'ALLOW' },
  { name: 'every field of an operation must match', policies: [allowTo({ methods: ['GET'], paths: ['/api/*'] })], source: fromWeb, http: get('/other'), allowed: false, action: 'ALLOW' },
  { name: 'DENY by method and path', policies: [policy('shop', 'allow-all', { rules: [{}] }), denyTo({ methods: ['DELETE'], paths: ['/api/*'] })], source: fromWeb, http: { method: 'DELETE', path: '/api/x', host: 'r' }, allowed: false, action: 'DENY', policy: 'shop/deny' },
  { name: 'DENY by method and path: other requests pass', policies: [policy('shop', 'allow-all', { rules: [{}] }), denyTo({ methods: ['DELETE'], paths: ['/api/*'] })], source: fromWeb, http: get('/api/x'), allowed: true, action: 'ALLOW' },

  // HTTP-only fields without HTTP attributes (L4).
  { name: 'L4: an ALLOW rule with HTTP fields does not match', policies: [allowTo({ methods: ['GET'] })], source: fromWeb, allowed: false, action: 'ALLOW', reason: /rules with methods, paths or hosts cannot match without HTTP attributes$/ },
  { name: 'L4: an ALLOW rule with ports and HTTP fields does not match either', policies: [allowTo({ ports: ['8080'], paths: ['/x'] })], source: fromWeb, port: 8080, allowed: false, action: 'ALLOW' },
  {
    name: 'L4: another ALLOW rule without HTTP fields still matches',
    policies: [policy('shop', 'allow', { rules: [{ to: [{ operation: { methods: ['GET'] } }] }, { from: [{ source: { namespaces: ['shop'] } }] }] })],
    source: fromWeb, allowed: true, action: 'ALLOW',
  },
  { name: 'L4: a DENY rule is applied without its HTTP fields (matches more)', policies: [denyTo({ methods: ['DELETE'] })], source: fromWeb, allowed: false, action: 'DENY' },
  { name: 'L4: a DENY rule keeps its ports', policies: [denyTo({ ports: ['9090'], methods: ['DELETE'] })], source: fromWeb, port: 8080, allowed: true, action: 'NONE' },
  { name: 'L4: a DENY rule keeps its ports (matching port)', policies: [denyTo({ ports: ['8080'], methods: ['DELETE'] })], source: fromWeb, port: 8080, allowed: false, action: 'DENY' },
]

t.test('authorize: a table of cases', async (t) => {
  for (const c of cases) {
    const snapshot = snapshotWith(c.policies)
    const input: AuthorizationInput = { destination: workload(snapshot, c.destination ?? 'pod.shop.reviews'), port: c.port ?? 8080, source: c.source, ...(c.http ? { http: c.http } : {}) }
    const decision = authorize(snapshot, input)
    t.equal(decision.allowed, c.allowed, `${c.name}: allowed (${decision.reason})`)
    t.equal(decision.action, c.action, `${c.name}: action`)
    if ('policy' in c) t.equal(decision.policy, c.policy, `${c.name}: policy`)
    if (c.reason) t.match(decision.reason, c.reason, `${c.name}: reason`)
  }
})

t.test('needsHttpAttributes: only policies with HTTP fields that apply to this pod and port', async (t) => {
  const snapshot = snapshotWith([
    policy('shop', 'paths-on-9090', { selector: { matchLabels: { app: 'reviews' } }, rules: [{ to: [{ operation: { ports: ['9090'], paths: ['/x'] } }] }] }),
    policy('shop', 'deny-delete', { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] }),
    policy('ops', 'ports-only', { rules: [{ to: [{ operation: { ports: ['80'] } }] }] }),
  ])
  t.equal(needsHttpAttributes(snapshot, workload(snapshot, 'pod.shop.reviews'), 9090), true, 'ALLOW with paths on this port')
  t.equal(needsHttpAttributes(snapshot, workload(snapshot, 'pod.shop.reviews'), 8080), false, 'the HTTP rule is for another port')
  t.equal(needsHttpAttributes(snapshot, workload(snapshot, 'pod.shop.web'), 8080), true, 'DENY with methods, any port')
  t.equal(needsHttpAttributes(snapshot, workload(snapshot, 'pod.ops.probe'), 80), false, 'ports only')
  t.equal(needsHttpAttributes(snapshotWith([]), workload(snapshot, 'pod.ops.probe'), 80), false, 'no policy')
})

t.test('a workload the snapshot does not index is resolved from the namespace index', async (t) => {
  const snapshot = snapshotWith([policy('shop', 'deny-all', { selector: { matchLabels: { app: 'new' } } })])
  const stranger: Workload = { ...workload(snapshot, 'pod.shop.web'), key: 'pod.shop.new', name: 'new', labels: { app: 'new' } }
  t.equal(authorize(snapshot, { destination: stranger, port: 80, source: fromWeb }).allowed, false)
})

t.test('the compiled index is part of the frozen snapshot', async (t) => {
  const snapshot = snapshotWith([policy('shop', 'deny-all', {})])
  t.throws(() => (snapshot.authorization.byWorkload as Map<string, unknown>).set('x', {}), /immutable/)
  t.throws(() => (snapshot.strictWorkloads as Set<string>).add('x'), /immutable/)
})

t.test('examples/security.yaml on the example lab does what its comments say', async (t) => {
  const topology = parseTopology(readFileSync(new URL('../examples/lab.yaml', import.meta.url), 'utf8'), 'examples/lab.yaml')
  const parsed = parseResourceDocuments(readFileSync(new URL('../examples/security.yaml', import.meta.url), 'utf8'), 'examples/security.yaml')
  t.same(parsed.errors.map(String), [])
  const stored = new Map<string, unknown>()
  for (const resource of [...labResources(planLab(topology, 'example', '/sys/fs/cgroup')), ...parsed.resources]) {
    const result = validateResource(resource)
    if (result.ok) stored.set(resourceKey(result.resource), result.resource)
  }
  const snapshot = buildSnapshot(stored)
  t.same(snapshot.rejected, [])
  const pods = new Map([...snapshot.workloadsByIp.values()].map((w) => [w.name, w]))
  const echo = pods.get('echo-a')
  const client = pods.get('client')
  const outsider = pods.get('outsider')
  if (!echo || !client || !outsider) return t.fail('the example lab has echo-a, client and outsider')
  t.ok(snapshot.strictWorkloads.has(echo.key), 'namespace default is STRICT')
  const peer = (w: Workload): AuthorizationPeer => ({ principal: w.identity, namespace: w.namespace, ip: w.ip })
  t.equal(authorize(snapshot, { destination: echo, port: 8080, source: peer(client), http: get('/') }).allowed, true, 'client GET')
  t.match(authorize(snapshot, { destination: echo, port: 8080, source: peer(client), http: post('/') }), { allowed: false, policy: 'default/echo-from-client' }, 'client POST')
  t.equal(authorize(snapshot, { destination: echo, port: 8080, source: peer(pods.get('echo-b') ?? client), http: get('/') }).allowed, false, 'another service account')
  t.equal(needsHttpAttributes(snapshot, echo, 8080), true, 'the destination must see requests to decide')
  t.match(authorize(snapshot, { destination: client, port: 8080, source: { principal: 'spiffe://cluster.local/ns/quarantine/sa/x', namespace: 'quarantine', ip: '198.18.1.9' } }), { allowed: false, policy: 'weft-system/deny-quarantine', action: 'DENY' }, 'quarantine denied mesh-wide')
})
