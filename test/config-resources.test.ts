// The resource model as users and nodes see it: every kind accepted in its Kubernetes form and
// rejected with a message naming the field; files with several documents where one bad document
// hides nothing; keys; and the snapshot a node builds from the bucket.
import t from 'tap'

import {
  buildSnapshot, DEFAULT_VALIDATION_CONTEXT, destinationPolicyFor, destinationPolicyService, durationMs, emptySnapshot, parseResourceDocuments, parseResourceKey, resourceKey, ResourceKeyError,
  serviceAddress, snapshotCounts, validateResource, type Resource,
} from '../src/config/resources/index.ts'

const service = (name: string, clusterIP: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name },
  spec: { clusterIP, ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }], selector: { app: name }, ...extra },
})
const pod = (name: string, ip: string, labels: Record<string, string>, extra: { node?: string; ready?: boolean; cgroup?: string; ports?: { name: string; containerPort: number }[] } = {}): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name, labels, annotations: extra.cgroup ? { 'weft.dev/cgroup': extra.cgroup } : {} },
  spec: { nodeName: extra.node ?? 'node1', ...(extra.ports ? { containers: [{ name: 'app', image: 'x', ports: extra.ports }] } : {}) },
  status: { podIP: ip, ...(extra.ready === false ? { conditions: [{ type: 'Ready', status: 'False' }] } : {}) },
})
const node = (name: string, n: number): Record<string, unknown> => ({
  apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name },
  spec: { address: `198.18.0.${n + 1}`, proxyIp: `198.18.0.${n + 1}`, podCIDR: `198.18.${n}.0/24` },
})
const httpRoute = (name: string, backends: { name: string; port: number; weight?: number }[]): Record<string, unknown> => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name }],
    rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/api' }, method: 'GET', headers: [{ name: 'x-user', value: 'jason' }] }], backendRefs: backends, timeouts: { request: '10s', backendRequest: '2s' } }],
  },
})

function errorsOf(value: unknown): string[] {
  const result = validateResource(value)
  return result.ok ? [] : result.errors.map(String)
}

function accepted(value: unknown): Resource {
  const result = validateResource(value)
  if (!result.ok) throw new Error(`expected valid, got: ${result.errors.join('; ')}`)
  return result.resource
}

t.test('Service: Kubernetes form, defaults, and each rule', async (t) => {
  const svc = accepted(service('reviews', '198.19.0.10', { ports: [{ port: 80 }] }))
  t.equal(svc.kind, 'Service')
  if (svc.kind !== 'Service') return
  t.equal(svc.metadata.namespace, 'default', 'namespace defaults to "default"')
  t.same(svc.spec.ports[0], { port: 80, targetPort: 80, protocol: 'TCP' }, 'targetPort defaults to port, protocol to TCP')
  t.equal(svc.spec.type, 'ClusterIP')
  t.ok(validateResource(service('grpc', '198.19.0.11', { ports: [{ name: 'grpc', port: 9090, targetPort: 'grpc', appProtocol: 'kubernetes.io/h2c' }] })).ok, 'named targetPort, free appProtocol')

  t.same(errorsOf(service('reviews', '198.19.0.10', { ports: [{ port: 'eighty' }] })), ['spec.ports[0].port: expected a number from 1 to 65535, got "eighty"'], 'a port that is not a number')
  t.same(errorsOf(service('reviews', '198.19.0.10', { ports: [{ port: 70000 }] })), ['spec.ports[0].port: expected a number from 1 to 65535, got 70000'])
  t.same(errorsOf(service('reviews', '10.96.0.10')), ['spec.clusterIP: expected an address in the service VIP range 198.19.0.0/16, got "10.96.0.10"'], 'a clusterIP outside the VIP range')
  t.ok(validateResource(service('reviews', '10.96.0.10'), { ...DEFAULT_VALIDATION_CONTEXT, vipCidr: '10.96.0.0/12' }).ok, 'the VIP range comes from the context')
  t.same(errorsOf(service('reviews', 'None')), ['spec.clusterIP: headless services (clusterIP: None) are not supported yet: give the service a VIP'])
  t.same(errorsOf(service('reviews', 42)), ['spec.clusterIP: expected an IPv4 address in the service VIP range (weft does not allocate VIPs: choose one), got 42'], 'a field of the wrong type')
  t.same(errorsOf(service('reviews', '198.19.0.10', { selector: 'app=reviews' })), ['spec.selector: expected a map of labels, got "app=reviews"'])
  t.same(errorsOf(service('reviews', '198.19.0.10', { ports: [{ port: 80, protocol: 'UDP' }] })), ['spec.ports[0].protocol: expected "TCP" (the only protocol weft proxies), got "UDP"'])
  t.same(errorsOf(service('reviews', '198.19.0.10', { ports: [{ name: 'http', port: 80 }, { name: 'http', port: 81 }] })), ['spec.ports[1].name: duplicate port name "http" (also ports[0])'])
  t.same(errorsOf(service('reviews', '198.19.0.10', { ports: [{ name: 'a', port: 80 }, { port: 81 }] })), ['spec.ports[1].name: a name is required when a service has more than one port'])
  t.same(errorsOf(service('reviews', '198.19.0.10', { clusterIp: '198.19.0.10' })), ['spec.clusterIp: unknown field (did you mean "clusterIP"?)'], 'typos are caught')
  t.same(errorsOf(service('reviews', '198.19.0.10', { externalName: 'x' })), ['spec.externalName: unknown field (allowed: type, clusterIP, ports, selector)'])
  t.same(errorsOf({ ...service('Reviews', '198.19.0.10') }), ['metadata.name: expected a name (lowercase letters, digits, "-" and ".", at most 253), got "Reviews"'])
  t.same(errorsOf({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'x' } }), ['spec: missing: expected an object with clusterIP, ports and selector'])
})

t.test('Pod: the subset weft reads, with the lab annotations', async (t) => {
  const p = accepted(pod('client', '198.18.1.2', { app: 'client' }, { cgroup: '/sys/fs/cgroup/unified/weft/client' }))
  if (p.kind !== 'Pod') return t.fail('not a pod')
  t.equal(p.spec.serviceAccountName, 'default', 'service account defaults to "default"')
  t.same(errorsOf(pod('client', '198.18.1.300', {})), ['status.podIP: expected an IPv4 address, got "198.18.1.300"'])
  t.same(errorsOf({ ...pod('client', '198.18.1.2', {}), metadata: { name: 'client', annotations: { 'weft.dev/enrolled': 'yes', 'weft.dev/cgroup': 'weft/client' } } }), [
    'metadata.annotations["weft.dev/cgroup"]: expected an absolute cgroup v2 path like "/sys/fs/cgroup/weft/pod1", got "weft/client"',
    'metadata.annotations["weft.dev/enrolled"]: expected "true" or "false", got "yes"',
  ])
  t.same(errorsOf({ ...pod('client', '198.18.1.2', {}), metadata: { name: 'client', labels: { tier: 3 } } }), ['metadata.labels.tier: expected a label value (a string: quote numbers and booleans), got 3'])
  t.same(errorsOf({ ...pod('client', '198.18.1.2', {}), metadata: { name: 'client', labels: { 'bad key!': 'x' } } }), ['metadata.labels["bad key!"]: expected a label key like "app" or "example.com/tier", got "bad key!"'])
  t.same(errorsOf({ ...pod('client', '198.18.1.2', {}), spec: { nodeName: 'node1', hostNetwork: true } }), ['spec.hostNetwork: unknown field (allowed: nodeName, serviceAccountName, containers)'])
  t.same(errorsOf({ ...pod('client', '198.18.1.2', {}), status: {} }), ['status.podIP: missing: expected an IPv4 address'])
})

t.test('EndpointSlice: accepted, stored, validated', async (t) => {
  const slice = {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'external-1', labels: { 'kubernetes.io/service-name': 'external' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['198.18.2.9'], conditions: { ready: true }, nodeName: 'node2', targetRef: { kind: 'Pod', name: 'ext', namespace: 'default' } }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  }
  t.ok(validateResource(slice).ok)
  t.same(errorsOf({ ...slice, addressType: 'IPv6' }), ['addressType: expected "IPv4" (IPv6 and FQDN endpoints are not supported), got "IPv6"'])
  t.same(errorsOf({ ...slice, metadata: { name: 'x' } }), ['metadata.labels: expected the label "kubernetes.io/service-name" naming the slice\'s Service'])
  t.same(errorsOf({ ...slice, endpoints: [{ addresses: [] }] }), ['endpoints[0].addresses: expected at least one address, got an empty list'])
})

t.test('Node: cluster-scoped, the registry of nodes', async (t) => {
  t.ok(validateResource(node('node1', 1)).ok)
  t.same(errorsOf({ ...node('node1', 1), metadata: { name: 'node1', namespace: 'default' } }), ['metadata.namespace: Node is cluster-scoped: remove metadata.namespace'])
  t.same(errorsOf({ ...node('node1', 1), spec: { address: '198.18.0.2', proxyIp: '198.18.0.2', podCIDR: '198.18.1.0' } }), ['spec.podCIDR: expected an IPv4 CIDR like 198.18.1.0/24, got "198.18.1.0"'])
})

t.test('DestinationPolicy: validated and stored', async (t) => {
  const policy = {
    apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'reviews' },
    spec: {
      targetRef: { group: '', kind: 'Service', name: 'reviews' },
      loadBalancer: { type: 'ConsistentHash', hashOn: { header: 'x-user' } },
      circuitBreaker: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 1000, maxRetries: 3 },
      outlierDetection: { consecutive5xx: 5, consecutiveGatewayErrors: 3, baseEjectionTime: '30s', maxEjectionPercent: 50 },
      connectionPool: { idleTimeout: '1m30s' },
      failover: { localityFirst: true, spillOverBelowHealthyPercent: 70 },
    },
  }
  t.ok(validateResource(policy).ok)
  t.equal(durationMs('1m30s'), 90_000)
  const spec = policy.spec
  t.same(errorsOf({ ...policy, spec: { ...spec, loadBalancer: { type: 'Random' } } }), ['spec.loadBalancer.type: expected one of RoundRobin, LeastRequest, EWMA, ConsistentHash, got "Random"'])
  t.same(errorsOf({ ...policy, spec: { ...spec, loadBalancer: { type: 'ConsistentHash' } } }), ['spec.loadBalancer.hashOn: ConsistentHash needs hashOn with exactly one of header, cookie, sourceIP'])
  t.same(errorsOf({ ...policy, spec: { ...spec, outlierDetection: { baseEjectionTime: 30 } } }), ['spec.outlierDetection.baseEjectionTime: expected a duration like "30s", "1m30s" or "500ms", got 30'])
  t.same(errorsOf({ ...policy, spec: { ...spec, circuitBreaker: { maxConnections: -1 } } }), ['spec.circuitBreaker.maxConnections: expected a whole number ≥ 0, got -1'])
  t.same(errorsOf({ ...policy, spec: { ...spec, host: 'reviews' } }), ['spec: name the destination with exactly one of host or targetRef'])

  // Fault injection: weft's own field.
  const faults = { delay: { fixedDelay: '200ms', percent: 10 }, abort: { httpStatus: 503, grpcStatus: 14, percent: 5 } }
  const withFaults = accepted({ ...policy, spec: { ...spec, faults } })
  t.same(withFaults.kind === 'DestinationPolicy' && withFaults.spec.faults, faults)
  t.ok(validateResource({ ...policy, spec: { ...spec, faults: { abort: { httpStatus: 500, percent: 100 } } } }).ok, 'one fault, no grpcStatus')
  const faultErrors = (value: unknown): string[] => errorsOf({ ...policy, spec: { ...spec, faults: value } })
  t.same(faultErrors({ delay: { fixedDelay: '200ms', percent: 101 } }), ['spec.faults.delay.percent: expected a whole number from 0 to 100, got 101'])
  t.same(faultErrors({ delay: { fixedDelay: 200, percent: 10 } }), ['spec.faults.delay.fixedDelay: expected a duration like "30s", "1m30s" or "500ms", got 200'])
  t.same(faultErrors({ delay: { fixedDelay: '200ms' } }), ['spec.faults.delay.percent: missing: expected a whole number from 0 to 100'])
  t.same(faultErrors({ abort: { httpStatus: 700, percent: 10 } }), ['spec.faults.abort.httpStatus: expected an HTTP status from 200 to 599, got 700'])
  t.same(faultErrors({ abort: { httpStatus: '503', percent: 10 } }), ['spec.faults.abort.httpStatus: expected an HTTP status from 200 to 599, got "503"'])
  t.same(faultErrors({ abort: { httpStatus: 503, grpcStatus: 17, percent: 10 } }), ['spec.faults.abort.grpcStatus: expected a gRPC status code from 0 to 16, got 17'])
  t.match(faultErrors({ abort: { httpStatus: 503, percent: 10, status: 503 } }), [/^spec\.faults\.abort\.status: unknown field/])
  t.match(faultErrors({ dealy: { fixedDelay: '1s', percent: 1 } }), [/^spec\.faults\.dealy: unknown field \(did you mean "delay"\?\)/])
})

const authorizationPolicy = (spec: unknown): Record<string, unknown> => ({
  apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'reviews', namespace: 'shop' }, spec,
})
const peerAuthentication = (spec: unknown, metadata: Record<string, unknown> = { name: 'default', namespace: 'shop' }): Record<string, unknown> => ({
  apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata, spec,
})

t.test('AuthorizationPolicy: Istio\'s security.istio.io/v1 shape; what weft cannot honour is refused by name', async (t) => {
  const full = {
    selector: { matchLabels: { app: 'reviews' } },
    action: 'ALLOW',
    rules: [{
      from: [{ source: { principals: ['cluster.local/ns/shop/sa/web', 'spiffe://cluster.local/ns/ops/*'], notPrincipals: ['*/sa/legacy'], namespaces: ['shop'], notNamespaces: ['test-*'], ipBlocks: ['198.18.0.0/15', '10.1.2.3'], notIpBlocks: ['198.18.9.0/24'] } }],
      to: [{ operation: { ports: ['8080'], notPorts: ['9090'], methods: ['GET', 'HEAD'], notMethods: ['DELETE'], paths: ['/api/*', '*/info', '/exact'], notPaths: ['/admin*'], hosts: ['reviews.shop.svc.cluster.local', '*.example.com'], notHosts: ['internal.*'] } }],
    }],
  }
  const policy = accepted(authorizationPolicy(full))
  if (policy.kind !== 'AuthorizationPolicy') return t.fail('not an AuthorizationPolicy')
  t.same(policy.spec, full, 'every field kept as given')
  const empty = accepted(authorizationPolicy({}))
  t.equal(empty.kind === 'AuthorizationPolicy' && empty.spec.action, 'ALLOW', 'action defaults to ALLOW; spec {} is ALLOW with no rules (deny all)')
  t.ok(validateResource({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-all', namespace: 'weft-system' } }).ok, 'no spec at all')
  t.ok(validateResource(authorizationPolicy({ action: 'DENY', rules: [{}] })).ok, 'rules: [{}]')
  t.same(errorsOf({ ...authorizationPolicy({}), apiVersion: 'weft.dev/v1alpha1' }), ['apiVersion: expected "security.istio.io/v1" for kind AuthorizationPolicy, got "weft.dev/v1alpha1"'], 'the old weft.dev shape is gone')

  const source = (fields: Record<string, unknown>): unknown => ({ rules: [{ from: [{ source: fields }] }] })
  const operation = (fields: Record<string, unknown>): unknown => ({ rules: [{ to: [{ operation: fields }] }] })
  const rejected: [string, unknown, string][] = [
    ['action AUDIT', { action: 'AUDIT' }, 'spec.action: action AUDIT is not supported (weft has no audit sink and no external authorizer): use ALLOW or DENY'],
    ['action CUSTOM', { action: 'CUSTOM' }, 'spec.action: action CUSTOM is not supported (weft has no audit sink and no external authorizer): use ALLOW or DENY'],
    ['action in lowercase', { action: 'allow' }, 'spec.action: expected one of "ALLOW" (the default) or "DENY", got "allow"'],
    ['provider', { action: 'ALLOW', provider: { name: 'opa' } }, 'spec.provider: provider goes with action CUSTOM, which weft does not support: use ALLOW or DENY'],
    ['targetRef', { targetRef: { kind: 'Service', name: 'reviews' } }, 'spec.targetRef: targetRef is not supported yet: select the pods with selector.matchLabels'],
    ['targetRefs', { targetRefs: [{ kind: 'Service', name: 'reviews' }] }, 'spec.targetRefs: targetRefs is not supported yet: select the pods with selector.matchLabels'],
    ['selector labels', { selector: { matchLabels: { app: 3 } } }, 'spec.selector.matchLabels.app: expected a label value (a string: quote numbers and booleans), got 3'],
    ['selector matchExpressions', { selector: { matchExpressions: [] } }, 'spec.selector.matchExpressions: unknown field (allowed: matchLabels)'],
    ['when', { rules: [{ when: [{ key: 'request.headers[x]', values: ['a'] }] }] }, 'spec.rules[0].when: conditions (when) are not supported yet: express the rule with from (principals, namespaces, ipBlocks) and to (ports, methods, paths, hosts)'],
    ['from: []', { rules: [{ from: [] }] }, 'spec.rules[0].from: expected at least one of sources ({source: {...}}), got an empty list'],
    ['an empty source', source({}), 'spec.rules[0].from[0].source: expected at least one of principals, notPrincipals, namespaces, notNamespaces, ipBlocks, notIpBlocks (an empty source is an error, as in Istio: leave out "from" to match every source)'],
    ['an empty operation', operation({}), 'spec.rules[0].to[0].operation: expected at least one of ports, notPorts, methods, notMethods, paths, notPaths, hosts, notHosts (an empty operation is an error, as in Istio: leave out "to" to match every operation)'],
    ['principals: []', source({ principals: [] }), 'spec.rules[0].from[0].source.principals: expected at least one of principals, got an empty list'],
    ['principals: a * in the middle', source({ principals: ['cluster.local/*/sa/web'] }), 'spec.rules[0].from[0].source.principals[0]: expected a principal like "cluster.local/ns/shop/sa/web" (or with "spiffe://"), "*", "prefix*" or "*suffix": a "*" may only be the whole value, its first or its last character, got "cluster.local/*/sa/web"'],
    ['notPrincipals: empty string', source({ notPrincipals: [''] }), 'spec.rules[0].from[0].source.notPrincipals[0]: expected a principal like "cluster.local/ns/shop/sa/web" (or with "spiffe://"), "*", "prefix*" or "*suffix", got ""'],
    ['namespaces: not a list', source({ namespaces: 'shop' }), 'spec.rules[0].from[0].source.namespaces: expected a list of namespaces, got "shop"'],
    ['notNamespaces: a * in the middle', source({ notNamespaces: ['a*b'] }), 'spec.rules[0].from[0].source.notNamespaces[0]: expected a namespace like "shop", "*", "prefix*" or "*suffix": a "*" may only be the whole value, its first or its last character, got "a*b"'],
    ['ipBlocks: not an address', source({ ipBlocks: ['10.0.0.0/33'] }), 'spec.rules[0].from[0].source.ipBlocks[0]: expected an IPv4 address or CIDR like "198.18.1.0/24", got "10.0.0.0/33"'],
    ['notIpBlocks: IPv6', source({ notIpBlocks: ['::1'] }), 'spec.rules[0].from[0].source.notIpBlocks[0]: expected an IPv4 address or CIDR like "198.18.1.0/24", got "::1"'],
    ['requestPrincipals', source({ requestPrincipals: ['issuer/subject'] }), 'spec.rules[0].from[0].source.requestPrincipals: requestPrincipals needs JWT authentication (RequestAuthentication), which weft does not support: match the peer with principals or namespaces'],
    ['notRequestPrincipals', source({ notRequestPrincipals: ['*'] }), 'spec.rules[0].from[0].source.notRequestPrincipals: notRequestPrincipals needs JWT authentication (RequestAuthentication), which weft does not support: match the peer with notPrincipals or notNamespaces'],
    ['remoteIpBlocks', source({ remoteIpBlocks: ['1.2.3.4'] }), 'spec.rules[0].from[0].source.remoteIpBlocks: remoteIpBlocks (the client address from X-Forwarded-For) is not supported: weft has no gateway; use ipBlocks, the connection\'s source address'],
    ['an unknown source field', source({ principal: ['x'] }), 'spec.rules[0].from[0].source.principal: unknown field (did you mean "principals"?)'],
    ['ports: a number', operation({ ports: [8080] }), 'spec.rules[0].to[0].operation.ports[0]: expected a port number as a string, like "8080" (quote it), got 8080'],
    ['notPorts: out of range', operation({ notPorts: ['70000'] }), 'spec.rules[0].to[0].operation.notPorts[0]: expected a port number from 1 to 65535 as a string, like "8080", got "70000"'],
    ['methods: a space', operation({ methods: ['GET POST'] }), 'spec.rules[0].to[0].operation.methods[0]: expected an HTTP method like "GET", "*", "prefix*" or "*suffix" (no spaces), got "GET POST"'],
    ['notMethods: []', operation({ notMethods: [] }), 'spec.rules[0].to[0].operation.notMethods: expected at least one of methods, got an empty list'],
    ['paths: a * in the middle', operation({ paths: ['/api/*/users'] }), 'spec.rules[0].to[0].operation.paths[0]: expected a path like "/api/users", "/api/*", "*/info" or "*": a "*" may only be the whole value, its first or its last character, got "/api/*/users"'],
    ['notPaths: not a string', operation({ notPaths: [1] }), 'spec.rules[0].to[0].operation.notPaths[0]: expected a path like "/api/users", "/api/*", "*/info" or "*", got 1'],
    ['hosts: empty', operation({ hosts: [''] }), 'spec.rules[0].to[0].operation.hosts[0]: expected a host like "reviews.shop.svc.cluster.local", "*.example.com", "api.*" or "*", got ""'],
    ['notHosts: not a list', operation({ notHosts: 'x' }), 'spec.rules[0].to[0].operation.notHosts: expected a list of hosts, got "x"'],
    ['an unknown operation field', operation({ method: ['GET'] }), 'spec.rules[0].to[0].operation.method: unknown field (did you mean "methods"?)'],
  ]
  for (const [name, spec, message] of rejected) t.same(errorsOf(authorizationPolicy(spec)), [message], name)
})

t.test('PeerAuthentication: STRICT, PERMISSIVE, UNSET; DISABLE and portLevelMtls refused', async (t) => {
  const strict = accepted(peerAuthentication({ mtls: { mode: 'STRICT' } }))
  t.equal(strict.kind === 'PeerAuthentication' && strict.spec.mtls?.mode, 'STRICT')
  t.ok(validateResource(peerAuthentication({ selector: { matchLabels: { app: 'reviews' } }, mtls: { mode: 'PERMISSIVE' } })).ok)
  const unset = accepted(peerAuthentication({ mtls: {} }))
  t.equal(unset.kind === 'PeerAuthentication' && unset.spec.mtls?.mode, 'UNSET', 'mode defaults to UNSET (inherit)')
  t.ok(validateResource(peerAuthentication({})).ok, 'spec {}')
  t.same(errorsOf(peerAuthentication({ mtls: { mode: 'DISABLE' } })), ['spec.mtls.mode: mode DISABLE is not supported: weft always encrypts traffic between nodes; use PERMISSIVE to accept plaintext from outside the mesh'])
  t.same(errorsOf(peerAuthentication({ mtls: { mode: 'strict' } })), ['spec.mtls.mode: expected one of "STRICT", "PERMISSIVE", "UNSET", got "strict"'])
  t.same(errorsOf(peerAuthentication({ mtls: { mode: 'STRICT' }, portLevelMtls: { 8080: { mode: 'PERMISSIVE' } } })), ['spec.portLevelMtls: portLevelMtls is not supported yet: set one mode for the selected pods with mtls.mode'])
  t.same(errorsOf(peerAuthentication({ selector: { matchLabels: 'app=x' } })), ['spec.selector.matchLabels: expected a map of labels, got "app=x"'])
  t.same(errorsOf(peerAuthentication({ mtls: 'STRICT' })), ['spec.mtls: expected an object {mode}, got "STRICT"'])
})

t.test('security policies in the snapshot: an invalid one is rejected alone, the others apply; effective mTLS modes', async (t) => {
  const podIn = (namespace: string, name: string, ip: string, labels: Record<string, string>): Record<string, unknown> =>
    ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels }, spec: { nodeName: 'node1' }, status: { podIP: ip } })
  const resources = new Map<string, unknown>([
    ['node._.node1', node('node1', 1)],
    ['pod.shop.reviews', podIn('shop', 'reviews', '198.18.1.10', { app: 'reviews' })],
    ['pod.shop.web', podIn('shop', 'web', '198.18.1.11', { app: 'web' })],
    ['pod.shop.legacy', podIn('shop', 'legacy', '198.18.1.12', { app: 'legacy' })],
    ['pod.ops.probe', podIn('ops', 'probe', '198.18.1.13', { app: 'probe' })],
    ['pod.billing.ledger', podIn('billing', 'ledger', '198.18.1.14', { app: 'ledger' })],
    ['authorizationpolicy.shop.reviews', authorizationPolicy({ rules: [{ from: [{ source: { namespaces: ['shop'] } }] }] })],
    ['authorizationpolicy.shop.bad', { ...authorizationPolicy({ rules: [{ when: [] }] }), metadata: { name: 'bad', namespace: 'shop' } }],
    ['peerauthentication.weft-system.default', peerAuthentication({ mtls: { mode: 'STRICT' } }, { name: 'default', namespace: 'weft-system' })],
    ['peerauthentication.ops.default', peerAuthentication({ mtls: { mode: 'PERMISSIVE' } }, { name: 'default', namespace: 'ops' })],
    ['peerauthentication.shop.default', peerAuthentication({ mtls: { mode: 'UNSET' } }, { name: 'default', namespace: 'shop' })],
    ['peerauthentication.shop.legacy', peerAuthentication({ selector: { matchLabels: { app: 'legacy' } }, mtls: { mode: 'PERMISSIVE' } }, { name: 'legacy', namespace: 'shop' })],
    ['peerauthentication.shop.legacy-too', peerAuthentication({ selector: { matchLabels: { app: 'legacy' } }, mtls: { mode: 'STRICT' } }, { name: 'legacy-too', namespace: 'shop' })],
    ['peerauthentication.shop.disable', peerAuthentication({ mtls: { mode: 'DISABLE' } }, { name: 'disable', namespace: 'shop' })],
  ])
  const snapshot = buildSnapshot(resources)
  t.same(snapshot.rejected.map((r) => r.key), ['authorizationpolicy.shop.bad', 'peerauthentication.shop.disable'], 'only the invalid ones are rejected')
  t.match(snapshot.rejected[0]?.reason, /^spec\.rules\[0\]\.when: conditions \(when\) are not supported yet/)
  t.match(snapshot.rejected[1]?.reason, /^spec\.mtls\.mode: mode DISABLE is not supported/)
  t.ok(snapshot.resources.has('authorizationpolicy.shop.reviews'), 'the valid policy applies')
  t.ok(snapshot.authorization.byWorkload.get('pod.shop.reviews')?.allow.length === 1, 'and is compiled for the pods it selects')
  t.same([...snapshot.strictWorkloads].sort(), ['pod.billing.ledger', 'pod.shop.reviews', 'pod.shop.web'],
    'mesh STRICT; ops PERMISSIVE by namespace; shop UNSET inherits STRICT; shop/legacy PERMISSIVE by its own policy')
  t.same(snapshot.warnings.filter((w) => w.key.startsWith('peerauthentication.')).map((w) => w.message), [
    'peer authentication shop/legacy-too: does not apply to pod shop/legacy: shop/legacy also selects it and comes first by name',
  ])
})

t.test('HTTPRoute and GRPCRoute: Gateway API v1 shape, validated and stored', async (t) => {
  const route = accepted(httpRoute('reviews', [{ name: 'reviews-v1', port: 80, weight: 90 }, { name: 'reviews-v2', port: 80 }]))
  if (route.kind !== 'HTTPRoute') return t.fail('not a route')
  t.equal(route.spec.rules?.[0]?.backendRefs?.[1]?.weight, 1, 'weight defaults to 1')
  const withFilters = httpRoute('reviews', [{ name: 'reviews-v1', port: 80 }]) as { spec: { rules: Record<string, unknown>[] } }
  withFilters.spec.rules[0] = {
    ...withFilters.spec.rules[0],
    filters: [
      { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-mesh', value: 'weft' }], remove: ['x-debug'] } },
      { type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v1' } } },
    ],
    retry: { codes: [503], attempts: 2, backoff: '100ms' },
  }
  t.ok(validateResource(withFilters).ok, 'filters and retry')
  t.same(errorsOf(httpRoute('reviews', [{ name: 'reviews-v1', port: 80, weight: -1 }])), ['spec.rules[0].backendRefs[0].weight: expected a weight from 0 to 1000000, got -1'])
  t.same(errorsOf(httpRoute('reviews', [{ name: 'reviews-v1' } as { name: string; port: number }])), ['spec.rules[0].backendRefs[0].port: missing: expected a number from 1 to 65535'])
  t.same(errorsOf({ ...withFilters, spec: { ...withFilters.spec, rules: [{ filters: [{ type: 'Rewrite' }] }] } }), ['spec.rules[0].filters[0].type: expected one of "RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect", "URLRewrite", "ExtensionRef", got "Rewrite"'])
  t.same(errorsOf({ ...withFilters, spec: { ...withFilters.spec, rules: [{ matches: [{ path: { type: 'Prefix', value: '/' } }] }] } }), ['spec.rules[0].matches[0].path.type: expected "Exact", "PathPrefix" or "RegularExpression", got "Prefix"'])
  t.same(errorsOf({ ...withFilters, spec: { ...withFilters.spec, rules: [{ matches: [{ path: { value: 'api' } }] }] } }), ['spec.rules[0].matches[0].path.value: expected a path starting with "/", got "api"'])
  t.same(errorsOf({ ...withFilters, spec: { ...withFilters.spec, parentRefs: [{ name: 'gw' }] } }), ['spec.parentRefs[0].kind: missing: expected "Service" (weft is a mesh: routes attach to Services, not Gateways)'])
  t.same(errorsOf({ ...withFilters, spec: { ...withFilters.spec, rules: [{ timeout: { request: '1s' } }] } }), ['spec.rules[0].timeout: unknown field (did you mean "timeouts"?)'])

  const grpc = {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'ratings' },
    spec: { parentRefs: [{ kind: 'Service', name: 'ratings' }], rules: [{ matches: [{ method: { service: 'shop.Ratings', method: 'Get' } }], backendRefs: [{ name: 'ratings', port: 9090 }] }] },
  }
  t.ok(validateResource(grpc).ok)
  t.same(errorsOf({ ...grpc, spec: { ...grpc.spec, rules: [{ matches: [{ method: { type: 'Exact' } }] }] } }), ['spec.rules[0].matches[0].method: a method match needs service, method or both'])
  t.same(errorsOf({ ...grpc, spec: { ...grpc.spec, rules: [{ timeouts: { request: '1s' } }] } }), ['spec.rules[0].timeouts: unknown field (allowed: name, matches, filters, backendRefs)'], 'GRPCRoute has no timeouts in v1')
})

t.test('unknown kinds and versions are named, with the known kinds listed', async (t) => {
  t.same(errorsOf({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }), [
    'kind: unknown kind "ConfigMap" (apiVersion "v1"); known kinds: Service (v1), Pod (v1), EndpointSlice (discovery.k8s.io/v1), Node (weft.dev/v1alpha1), DestinationPolicy (weft.dev/v1alpha1), AuthorizationPolicy (security.istio.io/v1), PeerAuthentication (security.istio.io/v1), HTTPRoute (gateway.networking.k8s.io/v1), GRPCRoute (gateway.networking.k8s.io/v1)',
  ])
  t.same(errorsOf({ ...service('x', '198.19.0.1'), apiVersion: 'v2' }), ['apiVersion: expected "v1" for kind Service, got "v2"'])
  t.same(errorsOf({ ...httpRoute('x', []), apiVersion: 'gateway.networking.k8s.io/v1beta1' }), ['apiVersion: expected "gateway.networking.k8s.io/v1" for kind HTTPRoute, got "gateway.networking.k8s.io/v1beta1"'])
  t.same(errorsOf('hello'), ['expected a resource (an object with apiVersion, kind, metadata), got "hello"'])
})

t.test('keys: <kind>.<namespace>.<name>, "_" for cluster-scoped kinds, and back', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [service('reviews', '198.19.0.10'), 'service.default.reviews'],
    [{ ...httpRoute('reviews', []), metadata: { name: 'reviews', namespace: 'shop' } }, 'httproute.shop.reviews'],
    [pod('client', '198.18.1.2', {}), 'pod.default.client'],
    [node('node1', 1), 'node._.node1'],
    [{ ...service('x', '198.19.0.1'), metadata: { name: 'reviews.v1' } }, 'service.default.reviews.v1'],
  ]
  for (const [value, key] of cases) {
    const resource = accepted(value)
    t.equal(resourceKey(resource), key)
    t.match(key, /^[-/_=.a-zA-Z0-9]+$/, 'a valid NATS KV key')
    const parts = parseResourceKey(key)
    t.same(parts, { kind: resource.kind, namespace: resource.kind === 'Node' ? undefined : (resource.metadata as { namespace: string }).namespace, name: resource.metadata.name })
    t.equal(resourceKey(parts), key, 'round trip')
  }
  t.throws(() => parseResourceKey('service.reviews'), new ResourceKeyError('"service.reviews" is not a resource key: expected <kind>.<namespace>.<name>, like service.default.reviews or node._.node1'))
  t.throws(() => parseResourceKey('configmap.default.x'), /unknown kind "configmap" \(known: service, pod, endpointslice, node, destinationpolicy, authorizationpolicy, peerauthentication, httproute, grpcroute\)/)
  t.throws(() => parseResourceKey('node.default.node1'), /Node is cluster-scoped; its key is node\._\.node1/)
  t.throws(() => parseResourceKey('service._.x'), /Service is namespaced/)
})

const meshYaml = `# three services, one of them broken
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  clusterIP: 198.19.0.10
  ports:
    - name: http
      port: 80
      targetPort: 9080
  selector:
    app: reviews
---
apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: default
spec:
  clusterIP: 198.19.0.11
  ports:
    - name: http
      port: eighty
  selector: {app: ratings}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
    - backendRefs: [{name: reviews, port: 80}]
---
`

t.test('files: several documents; each error names file, line, document and field; good documents still come back', async (t) => {
  const { resources, errors } = parseResourceDocuments(meshYaml, 'mesh.yaml')
  t.same(resources.map(resourceKey), ['service.default.reviews', 'httproute.default.reviews'], 'the good documents, for --partial')
  t.same(errors.map(String), ['mesh.yaml:24: document 2 (Service default/ratings): spec.ports[0].port: expected a number from 1 to 65535, got "eighty"'])
  const [error] = errors
  t.match(error, { file: 'mesh.yaml', documentIndex: 2, line: 24, path: 'spec.ports[0].port', message: 'expected a number from 1 to 65535, got "eighty"', resource: 'Service default/ratings' })

  const outside = parseResourceDocuments(meshYaml.replace('198.19.0.10', '10.0.0.10'), 'mesh.yaml')
  t.same(outside.errors.map(String)[0], 'mesh.yaml:7: document 1 (Service default/reviews): spec.clusterIP: expected an address in the service VIP range 198.19.0.0/16, got "10.0.0.10"')

  const wrongType = parseResourceDocuments('apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: 198.19.0.1\n  ports: {port: 80}\n', 'a.yaml')
  t.same(wrongType.errors.map(String), ['a.yaml:6: document 1 (Service default/a): spec.ports: expected a list of ports, got an object'])
})

t.test('files: malformed YAML and JSON get line and column; the other documents still parse', async (t) => {
  const text = 'apiVersion: v1\nkind: Service\nmetadata: {name: a\n---\n' + meshYaml.split('---\n')[0]
  const { resources, errors } = parseResourceDocuments(text, 'bad.yaml')
  t.same(resources.map(resourceKey), ['service.default.reviews'])
  t.equal(errors.length, 1)
  t.match(String(errors[0]), /^bad\.yaml:4:1: document 1: malformed YAML: /)
  t.same(parseResourceDocuments('key: [1, 2\n', 'x.yaml').errors.map((e) => [e.line, e.column]), [[2, 1]])

  t.same(parseResourceDocuments('{\n  "apiVersion": "v1",\n}', 'mesh.json').errors.map(String), ['mesh.json:3:1: document 1: malformed JSON: Expected double-quoted property name'])
  t.same(parseResourceDocuments('{\n  "apiVersion": "v1",\n  "kind": \n}', 'mesh.json').errors.map((e) => [e.line, e.message.slice(0, 27)]), [[undefined, 'malformed JSON: Unexpected ']])
  t.same(parseResourceDocuments('apiVersion: v1\nkind:\nmetadata: {name: x}\n', 'k.yaml').errors.map(String), ['k.yaml:2: document 1 ((no kind) default/x): kind: missing: expected one of the known kinds: Service (v1), Pod (v1), EndpointSlice (discovery.k8s.io/v1), Node (weft.dev/v1alpha1), DestinationPolicy (weft.dev/v1alpha1), AuthorizationPolicy (security.istio.io/v1), PeerAuthentication (security.istio.io/v1), HTTPRoute (gateway.networking.k8s.io/v1), GRPCRoute (gateway.networking.k8s.io/v1)'])
  t.same(parseResourceDocuments('apiVersion: v1\napiVersion: v1\n', 'dup.yaml').errors.map((e) => e.message), ['malformed YAML: Map keys must be unique'])
})

t.test('files: unknown kinds, JSON arrays, Lists, duplicates, empty documents', async (t) => {
  const unknown = parseResourceDocuments('apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n', 'deploy.yaml')
  t.match(String(unknown.errors[0]), /^deploy\.yaml:2: document 1 \(Deployment default\/web\): kind: unknown kind "Deployment" \(apiVersion "apps\/v1"\); known kinds: Service \(v1\), Pod \(v1\)/)

  const array = parseResourceDocuments(JSON.stringify([service('a', '198.19.0.1'), service('b', '198.19.0.2', { ports: [{ port: 0 }] })], null, 2), 'mesh.json')
  t.same(array.resources.map(resourceKey), ['service.default.a'])
  t.same(array.errors.map(String), ['mesh.json:33: document 1, items[1] (Service default/b): spec.ports[0].port: expected a number from 1 to 65535, got 0'])

  const list = parseResourceDocuments(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [service('a', '198.19.0.1'), node('node1', 1)] }), 'list.json')
  t.same(list.resources.map(resourceKey), ['service.default.a', 'node._.node1'])
  t.same(list.errors, [])

  const twice = parseResourceDocuments(`${meshYaml.split('---\n')[0]}---\n${meshYaml.split('---\n')[0]}`, 'twice.yaml')
  t.same(twice.errors.map(String), ['twice.yaml:16: document 2 (Service default/reviews): defined twice: service.default.reviews is also document 1'])

  t.same(parseResourceDocuments('', 'empty.yaml'), { resources: [], errors: [] })
  t.same(parseResourceDocuments('---\n# nothing\n---\n', 'empty.yaml'), { resources: [], errors: [] })
})

function bucket(...values: Record<string, unknown>[]): Map<string, unknown> {
  return new Map(values.map((value) => [resourceKey(accepted(value)), value]))
}

t.test('snapshot: services by VIP:port with endpoints from ready pods matching the selector', async (t) => {
  const resources = bucket(
    node('node1', 1), node('node2', 2),
    service('reviews', '198.19.0.10'),
    service('ratings', '198.19.0.11', { ports: [{ name: 'grpc', port: 9090, targetPort: 'grpc' }] }),
    pod('reviews-a', '198.18.1.10', { app: 'reviews', version: 'v1' }, { cgroup: '/sys/fs/cgroup/unified/weft/reviews-a' }),
    pod('reviews-b', '198.18.2.10', { app: 'reviews' }, { node: 'node2' }),
    pod('reviews-c', '198.18.2.11', { app: 'reviews' }, { node: 'node2', ready: false }),
    pod('ratings-a', '198.18.1.20', { app: 'ratings' }, { ports: [{ name: 'grpc', containerPort: 50051 }] }),
    pod('client', '198.18.1.2', { app: 'client' }),
  )
  const snapshot = buildSnapshot(resources, DEFAULT_VALIDATION_CONTEXT, 7)
  t.equal(snapshot.revision, 7)
  t.same(snapshot.rejected, [])
  t.same(snapshot.warnings, [])
  const reviews = snapshot.services.get(serviceAddress('198.19.0.10', 80))
  t.same(reviews?.endpoints.map((e) => [e.ip, e.port, e.node, e.workload?.name]), [
    ['198.18.1.10', 8080, 'node1', 'reviews-a'],
    ['198.18.2.10', 8080, 'node2', 'reviews-b'],
  ], 'ready pods only, sorted, targetPort resolved')
  t.same(snapshot.services.get('198.19.0.11:9090')?.endpoints.map((e) => `${e.ip}:${e.port}`), ['198.18.1.20:50051'], 'a named targetPort resolves against the pod\'s container ports')
  t.equal(snapshot.services.get('198.19.0.10:81'), undefined)

  t.equal(snapshot.workloadsByIp.get('198.18.1.2')?.name, 'client')
  t.equal(snapshot.workloadsByIp.get('198.18.1.2')?.identity, 'spiffe://cluster.local/ns/default/sa/default')
  t.equal(snapshot.workloadsByCgroup.get('/sys/fs/cgroup/unified/weft/reviews-a')?.name, 'reviews-a')
  t.same(snapshot.podsByNode.get('node2')?.map((w) => w.name), ['reviews-b', 'reviews-c'])
  t.same([...snapshot.nodes.keys()], ['node1', 'node2'])
  t.equal(snapshot.nodes.get('node2')?.podCIDR, '198.18.2.0/24')

  t.same(snapshotCounts(snapshot), { resources: 9, rejected: 0, warnings: 0, nodes: 2, workloads: 5, services: 2, endpoints: 3 })
  t.same(snapshotCounts(emptySnapshot()), { resources: 0, rejected: 0, warnings: 0, nodes: 0, workloads: 0, services: 0, endpoints: 0 })
  t.ok(Object.isFrozen(snapshot) && Object.isFrozen(snapshot.rejected) && Object.isFrozen(reviews?.endpoints), 'immutable')
  t.throws(() => (snapshot.services as Map<string, unknown>).set('x', 1), /immutable/)
})

t.test('snapshot: endpoints from EndpointSlices, matched to service ports by name', async (t) => {
  const snapshot = buildSnapshot(bucket(
    service('external', '198.19.0.20', { selector: undefined }),
    {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'external-1', labels: { 'kubernetes.io/service-name': 'external' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['198.18.2.9'], nodeName: 'node2' }, { addresses: ['198.18.2.8'], conditions: { ready: false } }],
      ports: [{ name: 'http', port: 8080 }],
    },
  ))
  t.same(snapshot.services.get('198.19.0.20:80')?.endpoints, [{ ip: '198.18.2.9', port: 8080, node: 'node2', workload: undefined }])
})

t.test('snapshot: a bad resource is rejected alone with its reason; the rest apply', async (t) => {
  const resources = bucket(service('reviews', '198.19.0.10'), pod('reviews-a', '198.18.1.10', { app: 'reviews' }), node('node1', 1))
  resources.set('service.default.ratings', { ...service('ratings', '198.19.0.11'), spec: { clusterIP: '198.19.0.11', ports: [{ port: 'eighty' }] } })
  resources.set('service.default.outside', service('outside', '10.0.0.1'))
  resources.set('service.default.dup-vip', service('dup-vip', '198.19.0.10'))
  resources.set('pod.default.same-ip', pod('same-ip', '198.18.1.10', {}))
  resources.set('service.default.wrong-key', service('other', '198.19.0.12'))
  resources.set('widget.default.x', { kind: 'Widget' })
  resources.set('service.default.garbage', 'not json object')
  const snapshot = buildSnapshot(resources, DEFAULT_VALIDATION_CONTEXT, 3)
  t.same(snapshot.rejected.map((r) => r.key).sort(), ['pod.default.same-ip', 'service.default.garbage', 'service.default.outside', 'service.default.ratings', 'service.default.reviews', 'service.default.wrong-key', 'widget.default.x'])
  t.same(snapshot.rejected.find((r) => r.key === 'service.default.ratings')?.reason, 'spec.ports[0].port: expected a number from 1 to 65535, got "eighty"')
  t.same(snapshot.rejected.find((r) => r.key === 'service.default.outside')?.reason, 'spec.clusterIP: expected an address in the service VIP range 198.19.0.0/16, got "10.0.0.1"')
  t.same(snapshot.rejected.find((r) => r.key === 'pod.default.same-ip')?.reason, 'status.podIP 198.18.1.10 is already the address of pod default/reviews-a')
  t.same(snapshot.rejected.find((r) => r.key === 'service.default.wrong-key')?.reason, 'the key names Service default/wrong-key but the value is Service default/other (its key would be service.default.other)')
  t.same(snapshot.rejected.find((r) => r.key === 'service.default.reviews')?.reason, 'spec.clusterIP 198.19.0.10 is already the VIP of service default/dup-vip', 'of two services with one VIP, the later key is rejected')
  t.same([...snapshot.resources.keys()].sort(), ['node._.node1', 'pod.default.reviews-a', 'service.default.dup-vip'])
  t.same(snapshot.services.get('198.19.0.10:80')?.endpoints.map((e) => e.ip), [], 'dup-vip selects app=dup-vip: no pods')
})

t.test('snapshot: references to unknown services are warnings on that resource', async (t) => {
  const snapshot = buildSnapshot(bucket(
    service('reviews-v1', '198.19.0.10'), service('reviews-v2', '198.19.0.11'),
    { ...httpRoute('reviews', [{ name: 'reviews-v1', port: 80 }, { name: 'reviews-v3', port: 80 }, { name: 'reviews-v2', port: 9080 }]) },
    { apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'p' }, spec: { host: 'reviews-v1.default.svc.cluster.local' } },
    { apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'q' }, spec: { host: 'details' } },
    pod('client', '198.18.1.2', {}, { node: 'node9' }),
  ))
  t.same(snapshot.rejected, [])
  t.same(snapshot.warnings.map((w) => `${w.key} | ${w.message}`), [
    'destinationpolicy.default.q | destination policy default/q: host "details" names no known service (known: reviews-v1, reviews-v2)',
    'pod.default.client | pod default/client: node "node9" is not a known Node (known: none)',
    'httproute.default.reviews | route default/reviews: parent "reviews" names no known service (known: reviews-v1, reviews-v2)',
    'httproute.default.reviews | route default/reviews: backend "reviews-v3" names no known service (known: reviews-v1, reviews-v2)',
    'httproute.default.reviews | route default/reviews: backend "reviews-v2" port 9080 is not a port of the service (ports: 80)',
  ].sort((a, b) => order(a) - order(b)))
  t.equal(snapshot.routes.length, 1)
  t.equal(snapshot.destinationPolicies.length, 2)
})

// Warnings come pod first, then routes, then policies.
function order(line: string): number {
  return line.startsWith('pod') ? 0 : line.startsWith('httproute') ? 1 : 2
}

t.test('destination policies: the service each names, and the one that applies to a service', async (t) => {
  const policy = (name: string, namespace: string, spec: Record<string, unknown>) => accepted({ apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name, namespace }, spec })
  const asPolicy = (resource: Resource) => {
    if (resource.kind !== 'DestinationPolicy') throw new Error('not a policy')
    return resource
  }
  const named = (p: Resource) => destinationPolicyService(asPolicy(p))
  t.equal(named(policy('a', 'shop', { targetRef: { kind: 'Service', name: 'reviews' } })), 'shop/reviews', 'targetRef: in the policy\'s namespace')
  t.equal(named(policy('a', 'shop', { host: 'reviews' })), 'shop/reviews', 'a bare name: in the policy\'s namespace')
  t.equal(named(policy('a', 'shop', { host: 'ratings.default' })), 'default/ratings')
  t.equal(named(policy('a', 'shop', { host: 'ratings.default.svc' })), 'default/ratings')
  t.equal(named(policy('a', 'shop', { host: 'ratings.default.svc.cluster.local' })), 'default/ratings')
  t.equal(named(policy('a', 'shop', { host: 'example.com' })), 'com/example', 'two labels read as name.namespace, as Kubernetes DNS does')
  t.equal(named(policy('a', 'shop', { host: 'www.example.com' })), undefined, 'not a service hostname')

  const first = asPolicy(policy('a', 'default', { host: 'reviews.shop.svc.cluster.local' }))
  const second = asPolicy(policy('b', 'shop', { targetRef: { kind: 'Service', name: 'reviews' } }))
  const other = asPolicy(policy('c', 'shop', { host: 'ratings' }))
  t.equal(destinationPolicyFor([first, second, other], { namespace: 'shop', name: 'reviews' }), first, 'the first that names it')
  t.equal(destinationPolicyFor([second, other], { namespace: 'shop', name: 'reviews' }), second)
  t.equal(destinationPolicyFor([first, second, other], { namespace: 'shop', name: 'ratings' }), other)
  t.equal(destinationPolicyFor([first, second, other], { namespace: 'default', name: 'reviews' }), undefined)

  const snapshot = buildSnapshot(bucket(
    { ...service('reviews', '198.19.0.10'), metadata: { name: 'reviews', namespace: 'shop' } },
    { apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'a', namespace: 'default' }, spec: { host: 'reviews.shop' } },
    { apiVersion: 'weft.dev/v1alpha1', kind: 'DestinationPolicy', metadata: { name: 'b', namespace: 'shop' }, spec: { targetRef: { kind: 'Service', name: 'reviews' } } },
  ))
  t.same(snapshot.warnings.map((w) => `${w.key} | ${w.message}`), [
    'destinationpolicy.shop.b | destination policy shop/b: service shop/reviews already has destination policy default/a; this one does not apply',
  ])
  t.equal(destinationPolicyFor(snapshot.destinationPolicies, { namespace: 'shop', name: 'reviews' })?.metadata.name, 'a', 'the one the warning says applies')
})
