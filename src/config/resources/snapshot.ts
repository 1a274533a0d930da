// buildSnapshot: the resources stored in the KV bucket -> one immutable MeshSnapshot, resolved so
// the connection path only does map lookups (services by VIP:port with their endpoints, workloads
// by IP and by cgroup). Each resource is validated on its own: a bad one is rejected alone with
// its reason and the rest apply. Problems between resources (a route to an unknown service) do
// not reject anything; they are warnings naming the resource.
import { endpointIsReady, podIsEnrolled, podIsReady, SERVICE_NAME_LABEL, CGROUP_ANNOTATION, type EndpointSlice, type Pod, type Service, type ServicePort } from './core.ts'
import type { GRPCRoute, HTTPRoute, Route } from './gateway.ts'
import { displayName, parseResourceKey, resourceKey } from './keys.ts'
import type { Resource } from './kinds.ts'
import { cidrContains, ipv4ToNumber, parseIpv4Cidr } from './net.ts'
import { compileAuthorizationPolicies, type AuthorizationIndex } from '../../policy/authorization.ts'
import { resolveMtlsModes } from '../../policy/peer-authentication.ts'
import { DEFAULT_VALIDATION_CONTEXT, validateResource, type ValidationContext } from './validate.ts'
import type { DestinationPolicy } from './weft.ts'

export interface NodeInfo {
  readonly name: string
  readonly address: string
  readonly proxyIp: string
  readonly podCIDR: string
  readonly labels: Readonly<Record<string, string>>
}

export interface Workload {
  readonly key: string
  readonly name: string
  readonly namespace: string
  readonly node: string
  readonly ip: string
  readonly labels: Readonly<Record<string, string>>
  readonly serviceAccount: string
  /** `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` */
  readonly identity: string
  readonly enrolled: boolean
  readonly ready: boolean
  /** cgroup v2 directory (annotation weft.dev/cgroup), when the pod has one. */
  readonly cgroup: string | undefined
  /** Kubernetes' pod UID and QoS class (mirrored pods): where the kubelet put the pod's cgroup (src/k8s/kubelet-cgroups.ts). */
  readonly uid: string | undefined
  readonly qosClass: 'Guaranteed' | 'Burstable' | 'BestEffort' | undefined
  /** Named container ports, for Services whose targetPort is a name. */
  readonly namedPorts: ReadonlyMap<string, number>
}

export interface Endpoint {
  readonly ip: string
  /** The resolved target port. */
  readonly port: number
  /** The node the endpoint runs on, when known (from the pod or the EndpointSlice). */
  readonly node: string | undefined
  /** The pod at this address, when it is a known workload. */
  readonly workload: Workload | undefined
}

export interface ServiceTarget {
  readonly key: string
  readonly service: Service
  readonly vip: string
  readonly port: ServicePort
  /** Ready endpoints, sorted by address then port, so round robin is the same on every node. */
  readonly endpoints: readonly Endpoint[]
}

export interface Rejection { readonly key: string; readonly reason: string }
export interface ResourceWarning { readonly key: string; readonly message: string }

export interface MeshSnapshot {
  readonly revision: number
  /** Every applied resource by key. */
  readonly resources: ReadonlyMap<string, Resource>
  readonly rejected: readonly Rejection[]
  readonly warnings: readonly ResourceWarning[]
  readonly nodes: ReadonlyMap<string, NodeInfo>
  readonly workloadsByIp: ReadonlyMap<string, Workload>
  readonly workloadsByCgroup: ReadonlyMap<string, Workload>
  /** Pods by node name (also for nodes with no Node resource yet). */
  readonly podsByNode: ReadonlyMap<string, readonly Workload[]>
  /** By `serviceAddress(vip, port)`, i.e. `198.19.0.10:80`. */
  readonly services: ReadonlyMap<string, ServiceTarget>
  /** By `namespace/name`. */
  readonly servicesByName: ReadonlyMap<string, Service>
  readonly endpointSlices: readonly EndpointSlice[]
  readonly routes: readonly Route[]
  readonly destinationPolicies: readonly DestinationPolicy[]
  /** AuthorizationPolicies compiled and resolved per workload: read it through authorize() and
   *  needsHttpAttributes() (src/policy/authorization.ts). */
  readonly authorization: AuthorizationIndex
  /** Workload.key (`pod.<ns>.<name>`) of every workload whose effective PeerAuthentication mode is
   *  STRICT (src/policy/peer-authentication.ts); the others are PERMISSIVE. */
  readonly strictWorkloads: ReadonlySet<string>
}

export interface SnapshotCounts {
  readonly resources: number
  readonly rejected: number
  readonly warnings: number
  readonly nodes: number
  readonly workloads: number
  /** VIP:port entries. */
  readonly services: number
  readonly endpoints: number
}

/** The numbers a node reports on weft.status.<node>. */
export function snapshotCounts(snapshot: MeshSnapshot): SnapshotCounts {
  let endpoints = 0
  for (const target of snapshot.services.values()) endpoints += target.endpoints.length
  return {
    resources: snapshot.resources.size,
    rejected: snapshot.rejected.length,
    warnings: snapshot.warnings.length,
    nodes: snapshot.nodes.size,
    workloads: snapshot.workloadsByIp.size,
    services: snapshot.services.size,
    endpoints,
  }
}

export function serviceAddress(vip: string, port: number): string {
  return `${vip}:${port}`
}

export function emptySnapshot(revision = 0): MeshSnapshot {
  return buildSnapshot(new Map(), DEFAULT_VALIDATION_CONTEXT, revision)
}

// Incremental rebuilds. A node rebuilds its snapshot after every change from all its stored
// values, and keeps the same parsed object per key until that key changes (stored values are never
// mutated: the agent replaces them). So what was derived from an unchanged value is reused rather
// than derived again: its validation (the resource, already frozen by the snapshot before), its
// workload, and — given the snapshot before — a service's resolved targets with their endpoints
// when neither the service, its slices, its pods nor the mesh's workloads changed. The work left
// per rebuild is a walk over the keys, with lookups, not validation and allocation.

type Outcome = { resource: Resource } | { reason: string }
/** Per stored value: the resource its key and value make, or why it is rejected. */
const storedOutcomes = new WeakMap<object, { ctx: ValidationContext; key: string; outcome: Outcome }>()

function outcomeOf(key: string, value: unknown, ctx: ValidationContext): Outcome {
  const cached = typeof value === 'object' && value !== null ? storedOutcomes.get(value) : undefined
  if (cached !== undefined && cached.ctx === ctx && cached.key === key) return cached.outcome
  const outcome = decide(key, value, ctx)
  if (typeof value === 'object' && value !== null) storedOutcomes.set(value, { ctx, key, outcome })
  return outcome
}

function decide(key: string, value: unknown, ctx: ValidationContext): Outcome {
  let parts
  try {
    parts = parseResourceKey(key)
  } catch (err) {
    return { reason: (err as Error).message }
  }
  const result = validateResource(value, ctx)
  if (!result.ok) return { reason: result.errors.map(String).join('; ') }
  const actualKey = resourceKey(result.resource)
  if (actualKey !== key) {
    return { reason: `the key names ${parts.kind} ${displayName(parts)} but the value is ${result.resource.kind} ${displayName(result.resource)} (its key would be ${actualKey})` }
  }
  return { resource: result.resource }
}

/** Workloads by the pod resource they came from (with its key and the trust domain). */
const workloadsOfPods = new WeakMap<Pod, { key: string; ctx: ValidationContext; workload: Workload }>()

function workloadOf(key: string, pod: Pod, ctx: ValidationContext): Workload {
  const cached = workloadsOfPods.get(pod)
  if (cached !== undefined && cached.key === key && cached.ctx === ctx) return cached.workload
  const workload = toWorkload(key, pod, ctx)
  workloadsOfPods.set(pod, { key, ctx, workload })
  return workload
}

/**
 * What a service resolved to in the last snapshot that had it, and from what: reused when the
 * service, its slices and its selected pods are the same objects and the mesh's workloads are
 * those of that snapshot.
 */
type ServiceResolution = {
  workloadsByIp: ReadonlyMap<string, Workload>
  slices: readonly EndpointSlice[]
  pods: readonly Workload[]
  targets: ReadonlyArray<readonly [string, ServiceTarget]>
  warnings: readonly ResourceWarning[]
}
const serviceResolutions = new WeakMap<Service, ServiceResolution>()

const sameItems = <T>(a: readonly T[], b: readonly T[]): boolean => a.length === b.length && a.every((item, i) => item === b[i])

function sameWorkloads(a: ReadonlyMap<string, Workload>, b: ReadonlyMap<string, Workload>): boolean {
  if (a.size !== b.size) return false
  for (const [ip, workload] of a) if (b.get(ip) !== workload) return false
  return true
}

/** The keys `${namespace}\0${label}=${value}` of a workload's labels, for selecting pods by index. */
function labelKey(namespace: string, label: string, value: string): string {
  return `${namespace}\0${label}=${value}`
}

/**
 * `resources` is the bucket's content as stored: key -> the parsed JSON value. Keys are visited
 * in sorted order, so when two resources conflict (the same pod IP, the same VIP) every node
 * rejects the same one: the later key.
 */
export function buildSnapshot(resources: ReadonlyMap<string, unknown>, ctx: ValidationContext = DEFAULT_VALIDATION_CONTEXT, revision: number = 0, previous?: MeshSnapshot): MeshSnapshot {
  const rejected: Rejection[] = []
  const warnings: ResourceWarning[] = []
  const applied = new Map<string, Resource>()
  const reject = (key: string, reason: string): void => { rejected.push({ key, reason }) }

  for (const key of [...resources.keys()].sort()) {
    const outcome = outcomeOf(key, resources.get(key), ctx)
    if ('reason' in outcome) reject(key, outcome.reason)
    else applied.set(key, outcome.resource)
  }

  const all = [...applied.entries()]
  const ofKind = <K extends Resource['kind']>(kind: K): [string, Extract<Resource, { kind: K }>][] =>
    all.filter((entry): entry is [string, Extract<Resource, { kind: K }>] => entry[1].kind === kind)
  const drop = (key: string, reason: string): void => { applied.delete(key); reject(key, reason) }

  // Nodes.
  const nodes = new Map<string, NodeInfo>()
  for (const [, node] of ofKind('Node')) {
    nodes.set(node.metadata.name, { name: node.metadata.name, address: node.spec.address, proxyIp: node.spec.proxyIp, podCIDR: node.spec.podCIDR, labels: node.metadata.labels ?? {} })
  }
  const knownNodes = [...nodes.keys()].join(', ') || 'none'

  // Workloads: one per pod, unique by IP and by cgroup.
  const workloadsByIp = new Map<string, Workload>()
  const workloadsByCgroup = new Map<string, Workload>()
  const podsByNode = new Map<string, Workload[]>()
  for (const [key, pod] of ofKind('Pod')) {
    const workload = workloadOf(key, pod, ctx)
    const sameIp = workloadsByIp.get(workload.ip)
    if (sameIp) { drop(key, `status.podIP ${workload.ip} is already the address of pod ${sameIp.namespace}/${sameIp.name}`); continue }
    const sameCgroup = workload.cgroup === undefined ? undefined : workloadsByCgroup.get(workload.cgroup)
    if (sameCgroup) { drop(key, `cgroup ${workload.cgroup} is already the cgroup of pod ${sameCgroup.namespace}/${sameCgroup.name}`); continue }
    workloadsByIp.set(workload.ip, workload)
    if (workload.cgroup !== undefined) workloadsByCgroup.set(workload.cgroup, workload)
    const onNode = podsByNode.get(workload.node) ?? []
    onNode.push(workload)
    podsByNode.set(workload.node, onNode)
    const node = nodes.get(workload.node)
    if (!node) {
      warnings.push({ key, message: `pod ${workload.namespace}/${workload.name}: node "${workload.node}" is not a known Node (known: ${knownNodes})` })
    } else {
      const podRange = parseIpv4Cidr(node.podCIDR)
      if (podRange && !cidrContains(podRange, workload.ip)) {
        warnings.push({ key, message: `pod ${workload.namespace}/${workload.name}: podIP ${workload.ip} is outside the pod range ${node.podCIDR} of node ${node.name}` })
      }
    }
  }

  // Services: unique by VIP.
  const servicesByName = new Map<string, Service>()
  const serviceByVip = new Map<string, string>()
  for (const [key, service] of ofKind('Service')) {
    const other = serviceByVip.get(service.spec.clusterIP)
    if (other !== undefined) { drop(key, `spec.clusterIP ${service.spec.clusterIP} is already the VIP of service ${other}`); continue }
    serviceByVip.set(service.spec.clusterIP, displayName(service))
    servicesByName.set(displayName(service), service)
  }
  const knownServices = new Map<string, string>()
  const knownServicesIn = (namespace: string): string => {
    let known = knownServices.get(namespace)
    if (known === undefined) {
      known = [...servicesByName.values()].filter((s) => s.metadata.namespace === namespace).map((s) => s.metadata.name).join(', ') || 'none'
      knownServices.set(namespace, known)
    }
    return known
  }

  const endpointSlices = ofKind('EndpointSlice').map(([, slice]) => slice)
  // Ready pods by namespace and label, and slices by the service they name: a service finds its
  // endpoints without scanning every pod and slice of the mesh.
  const readyPodsByLabel = new Map<string, Workload[]>()
  for (const workload of workloadsByIp.values()) {
    if (!workload.ready) continue
    for (const [label, value] of Object.entries(workload.labels)) {
      const key = labelKey(workload.namespace, label, value)
      const list = readyPodsByLabel.get(key)
      if (list) list.push(workload)
      else readyPodsByLabel.set(key, [workload])
    }
  }
  const slicesByService = new Map<string, EndpointSlice[]>()
  for (const slice of endpointSlices) {
    const name = `${slice.metadata.namespace}/${slice.metadata.labels?.[SERVICE_NAME_LABEL] ?? ''}`
    const list = slicesByService.get(name)
    if (list) list.push(slice)
    else slicesByService.set(name, [slice])
  }
  for (const [key, slice] of ofKind('EndpointSlice')) {
    const serviceName = slice.metadata.labels?.[SERVICE_NAME_LABEL] ?? ''
    if (!servicesByName.has(`${slice.metadata.namespace}/${serviceName}`)) {
      warnings.push({ key, message: `endpointslice ${displayName(slice)}: ${SERVICE_NAME_LABEL} "${serviceName}" names no known service (known: ${knownServicesIn(slice.metadata.namespace)})` })
    }
  }

  const services = new Map<string, ServiceTarget>()
  // Resolutions from the snapshot before are good only if the workloads they looked up are the same.
  const workloadsAsBefore = previous !== undefined && sameWorkloads(previous.workloadsByIp, workloadsByIp)
  for (const service of servicesByName.values()) {
    const pods = selectPods(service, readyPodsByLabel)
    const slices = slicesByService.get(displayName(service)) ?? []
    const before = serviceResolutions.get(service)
    if (workloadsAsBefore && before !== undefined && before.workloadsByIp === previous.workloadsByIp && sameItems(before.slices, slices) && sameItems(before.pods, pods)) {
      for (const [address, target] of before.targets) services.set(address, target)
      warnings.push(...before.warnings)
      serviceResolutions.set(service, { ...before, workloadsByIp })
      continue
    }
    const serviceKey = resourceKey(service)
    const targets: Array<readonly [string, ServiceTarget]> = []
    const warningsBefore = warnings.length
    for (const port of service.spec.ports) {
      const endpoints = new Map<string, Endpoint>()
      for (const workload of pods) {
        const target = typeof port.targetPort === 'number' ? port.targetPort : workload.namedPorts.get(port.targetPort)
        if (target === undefined) {
          warnings.push({ key: serviceKey, message: `service ${displayName(service)}: targetPort "${port.targetPort}" is not a named container port of pod ${workload.namespace}/${workload.name}; the pod is not an endpoint of port ${port.port}` })
          continue
        }
        endpoints.set(`${workload.ip}:${target}`, { ip: workload.ip, port: target, node: workload.node, workload })
      }
      for (const slice of slices) {
        // EndpointSlice ports are matched to Service ports by name, as kube-proxy does.
        const slicePort = slice.ports?.find((p) => (p.name ?? '') === (port.name ?? ''))
        if (slicePort?.port === undefined) continue
        for (const endpoint of slice.endpoints) {
          if (!endpointIsReady(endpoint)) continue
          for (const ip of endpoint.addresses) {
            const workload = workloadsByIp.get(ip)
            endpoints.set(`${ip}:${slicePort.port}`, { ip, port: slicePort.port, node: endpoint.nodeName ?? workload?.node, workload })
          }
        }
      }
      const sorted = [...endpoints.values()].sort((a, b) => ipv4ToNumber(a.ip) - ipv4ToNumber(b.ip) || a.port - b.port)
      const address = serviceAddress(service.spec.clusterIP, port.port)
      const target: ServiceTarget = { key: serviceKey, service, vip: service.spec.clusterIP, port, endpoints: sorted }
      services.set(address, target)
      targets.push([address, target])
    }
    serviceResolutions.set(service, { workloadsByIp, slices, pods, targets, warnings: warnings.slice(warningsBefore) })
  }

  // Routes and policies: stored as they are; references to unknown services are warnings.
  const routes: Route[] = []
  for (const [key, route] of [...ofKind('HTTPRoute'), ...ofKind('GRPCRoute')].sort(([a], [b]) => a.localeCompare(b))) {
    routes.push(route)
    warnings.push(...routeWarnings(key, route, servicesByName, knownServicesIn))
  }
  const destinationPolicies: DestinationPolicy[] = []
  const policyOfService = new Map<string, DestinationPolicy>()
  for (const [key, policy] of ofKind('DestinationPolicy')) {
    destinationPolicies.push(policy)
    const namespace = policy.metadata.namespace
    const target = policy.spec.targetRef?.name ?? policy.spec.host ?? ''
    const service = destinationPolicyService(policy)
    if (service === undefined || !servicesByName.has(service)) {
      warnings.push({ key, message: `destination policy ${displayName(policy)}: ${policy.spec.targetRef ? 'targetRef' : 'host'} "${target}" names no known service (known: ${knownServicesIn(namespace)})` })
      continue
    }
    // Same rule as destinationPolicyFor: the first policy (by key) that names a service applies.
    const first = policyOfService.get(service)
    if (first) warnings.push({ key, message: `destination policy ${displayName(policy)}: service ${service} already has destination policy ${displayName(first)}; this one does not apply` })
    else policyOfService.set(service, policy)
  }
  // Security policies: compiled once here, so authorization on the connection path is lookups.
  const workloads = [...workloadsByIp.values()]
  const authorization = compileAuthorizationPolicies(ofKind('AuthorizationPolicy').map(([, policy]) => policy), workloads)
  const mtls = resolveMtlsModes(ofKind('PeerAuthentication').map(([, policy]) => policy), workloads)
  warnings.push(...mtls.warnings)

  return deepFreeze({
    revision,
    resources: applied,
    rejected,
    warnings,
    nodes,
    workloadsByIp,
    workloadsByCgroup,
    podsByNode,
    services,
    servicesByName,
    endpointSlices,
    routes,
    destinationPolicies,
    authorization,
    strictWorkloads: mtls.strictWorkloads,
  })
}

function toWorkload(key: string, pod: Pod, ctx: ValidationContext): Workload {
  const namedPorts = new Map<string, number>()
  for (const container of pod.spec.containers ?? []) {
    for (const port of container.ports ?? []) if (port.name !== undefined) namedPorts.set(port.name, port.containerPort)
  }
  return {
    key,
    name: pod.metadata.name,
    namespace: pod.metadata.namespace,
    node: pod.spec.nodeName,
    ip: pod.status.podIP,
    labels: pod.metadata.labels ?? {},
    serviceAccount: pod.spec.serviceAccountName,
    identity: `spiffe://${ctx.trustDomain}/ns/${pod.metadata.namespace}/sa/${pod.spec.serviceAccountName}`,
    enrolled: podIsEnrolled(pod),
    ready: podIsReady(pod),
    cgroup: pod.metadata.annotations?.[CGROUP_ANNOTATION],
    uid: pod.metadata.uid,
    qosClass: pod.status.qosClass,
    namedPorts,
  }
}

/**
 * Ready pods in the service's namespace whose labels include the whole selector; none without a
 * selector. `readyPodsByLabel` lists them by labelKey, in workload order: the shortest list of the
 * selector's labels is filtered by the rest.
 */
function selectPods(service: Service, readyPodsByLabel: ReadonlyMap<string, readonly Workload[]>): Workload[] {
  const selector = Object.entries(service.spec.selector ?? {})
  if (selector.length === 0) return []
  let shortest: readonly Workload[] | undefined
  for (const [label, value] of selector) {
    const list = readyPodsByLabel.get(labelKey(service.metadata.namespace, label, value)) ?? []
    if (shortest === undefined || list.length < shortest.length) shortest = list
  }
  return (shortest ?? []).filter((w) => selector.every(([k, v]) => w.labels[k] === v))
}

/**
 * The service a DestinationPolicy is for, as `namespace/name`: its targetRef (a Service in the
 * policy's namespace), or its host: `reviews` (in the policy's namespace), `reviews.shop`,
 * `reviews.shop.svc` or `reviews.shop.svc.<domain>`. Undefined when the host cannot name a
 * service (a third label other than `svc`). Whether that service exists is not checked here.
 */
export function destinationPolicyService(policy: DestinationPolicy): string | undefined {
  const namespace = policy.metadata.namespace
  if (policy.spec.targetRef) return `${namespace}/${policy.spec.targetRef.name}`
  const [name = '', ns = namespace, svc] = (policy.spec.host ?? '').split('.')
  if (name === '' || ns === '' || (svc !== undefined && svc !== 'svc')) return undefined
  return `${ns}/${name}`
}

/**
 * The DestinationPolicy that applies to a service: the first of `policies` that names it (by
 * targetRef or host, see destinationPolicyService). With `snapshot.destinationPolicies`, which are
 * in key order, that is the first by namespace, then name; the snapshot warns about the others.
 */
export function destinationPolicyFor(policies: readonly DestinationPolicy[], service: { readonly namespace: string; readonly name: string }): DestinationPolicy | undefined {
  const wanted = `${service.namespace}/${service.name}`
  return policies.find((policy) => destinationPolicyService(policy) === wanted)
}

/** The route filters the L7 proxy carries out (src/l7/router.ts): on a rule, and on a backendRef. */
const RULE_FILTERS_APPLIED: ReadonlySet<string> = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite'])
const BACKEND_FILTERS_APPLIED: ReadonlySet<string> = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier'])

function routeWarnings(key: string, route: HTTPRoute | GRPCRoute, servicesByName: ReadonlyMap<string, Service>, knownServicesIn: (ns: string) => string): ResourceWarning[] {
  const warnings: ResourceWarning[] = []
  const label = `${route.kind === 'GRPCRoute' ? 'grpc route' : 'route'} ${displayName(route)}`
  for (const parent of route.spec.parentRefs) {
    const namespace = parent.namespace ?? route.metadata.namespace
    if (!servicesByName.has(`${namespace}/${parent.name}`)) {
      warnings.push({ key, message: `${label}: parent "${parent.name}" names no known service (known: ${knownServicesIn(namespace)})` })
    }
  }
  // Filters weft does not carry out yet: said, so a route that relies on one is not silently half applied.
  for (const [index, rule] of (route.spec.rules ?? []).entries()) {
    const unapplied = new Set<string>()
    for (const filter of rule.filters ?? []) if (!RULE_FILTERS_APPLIED.has(filter.type)) unapplied.add(filter.type)
    for (const backend of rule.backendRefs ?? []) for (const filter of backend.filters ?? []) if (!BACKEND_FILTERS_APPLIED.has(filter.type)) unapplied.add(`${filter.type} (on a backendRef)`)
    if (unapplied.size > 0) {
      const list = [...unapplied]
      warnings.push({ key, message: `${label}: rule ${index}: filter${list.length > 1 ? 's' : ''} ${list.join(', ')} ${list.length > 1 ? 'are' : 'is'} not applied by weft yet (applied: ${[...RULE_FILTERS_APPLIED].join(', ')}; on a backendRef ${[...BACKEND_FILTERS_APPLIED].join(', ')}); the rule routes without ${list.length > 1 ? 'them' : 'it'}` })
    }
  }
  const backends = (route.spec.rules ?? []).flatMap((rule) => rule.backendRefs ?? [])
  for (const backend of backends) {
    const namespace = backend.namespace ?? route.metadata.namespace
    const service = servicesByName.get(`${namespace}/${backend.name}`)
    if (!service) {
      warnings.push({ key, message: `${label}: backend "${backend.name}" names no known service (known: ${knownServicesIn(namespace)})` })
    } else if (!service.spec.ports.some((p) => p.port === backend.port)) {
      warnings.push({ key, message: `${label}: backend "${backend.name}" port ${backend.port} is not a port of the service (ports: ${service.spec.ports.map((p) => p.port).join(', ')})` })
    }
  }
  return warnings
}

function refuseChange(): never {
  throw new TypeError('a MeshSnapshot is immutable: build a new one with buildSnapshot')
}

// A snapshot's Maps and Sets take these prototypes when frozen: their writers throw. (Cheaper
// than defining the three methods on every instance, which a rebuild per change pays per Map.)
class FrozenMap<K, V> extends Map<K, V> {
  override set(): never { return refuseChange() }
  override delete(): never { return refuseChange() }
  override clear(): never { return refuseChange() }
}
class FrozenSet<T> extends Set<T> {
  override add(): never { return refuseChange() }
  override delete(): never { return refuseChange() }
  override clear(): never { return refuseChange() }
}

/** Freezes objects and arrays; a Map's set, delete and clear throw (a Set's add, delete and
 *  clear), so a snapshot cannot change under a reader. A frozen object is taken as done: it is
 *  (part of) a resource a snapshot before froze, reused because its stored value did not change. */
function deepFreeze<T>(value: T, seen = new Set<unknown>()): T {
  if (typeof value !== 'object' || value === null || seen.has(value) || Object.isFrozen(value)) return value
  seen.add(value)
  if (value instanceof Set) {
    for (const entry of value) deepFreeze(entry, seen)
    Object.setPrototypeOf(value, FrozenSet.prototype)
    return Object.freeze(value)
  }
  if (value instanceof Map) {
    for (const entry of value.values()) deepFreeze(entry, seen)
    Object.setPrototypeOf(value, FrozenMap.prototype)
    return Object.freeze(value)
  }
  for (const entry of Object.values(value)) deepFreeze(entry, seen)
  return Object.freeze(value)
}
