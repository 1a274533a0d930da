// What one node applied, as GET /debug/config shows it and `weft proxy-config` prints it (what
// `istioctl proxy-config` and `ztunnel-config` show): the snapshot's revision, the nodes, this
// node's workloads, services with their ports, VIPs and ready endpoints, routes, and the
// AuthorizationPolicies and PeerAuthentication modes in force for this node's pods. The L7 proxy's
// live state of each endpoint (in flight, latency, ejected) comes from the view /debug/destinations
// serves, joined in rather than computed again.
import type { DestinationView } from '../l7/destinations.ts'
import { appliedAuthorization, type CompiledAuthorizationPolicy } from '../policy/authorization.ts'
import { resolveMtlsModes } from '../policy/peer-authentication.ts'
import { destinationPolicyFor, displayName, type MeshSnapshot, type Route, type Workload } from './resources/index.ts'
import type { PeerAuthentication } from './resources/security.ts'

export interface AppliedEndpointView {
  readonly endpoint: string
  readonly node: string | null
  readonly workload: string | null
  /** `ready` (the snapshot holds ready endpoints only), or `ejected` by the L7 proxy's outlier detection. */
  readonly health: 'ready' | 'ejected'
  /** The L7 proxy's live view of it (undefined: no L7 state, e.g. an opaque TCP port). */
  readonly inFlight?: number
  readonly latencyMs?: number
}

export interface AppliedServiceView {
  /** `namespace/name` */
  readonly service: string
  readonly vip: string
  readonly ports: readonly {
    readonly name: string | null
    readonly port: number
    readonly targetPort: number | string
    readonly appProtocol: string | null
    readonly address: string
    readonly endpoints: readonly AppliedEndpointView[]
  }[]
  readonly destinationPolicy: string | null
}

export interface AppliedRouteView {
  readonly route: string
  readonly kind: Route['kind']
  /** `namespace/name[:port]` of each parent Service. */
  readonly parents: readonly string[]
  /** Per rule: its backends as `namespace/name:port weight`. */
  readonly rules: readonly { readonly backends: readonly string[] }[]
}

export interface AppliedWorkloadView {
  readonly workload: string
  readonly ip: string
  readonly identity: string
  readonly enrolled: boolean
  readonly ready: boolean
  /** The effective PeerAuthentication mode and the policy it comes from (null: the PERMISSIVE default). */
  readonly mtls: { readonly mode: string; readonly policy: string | null }
  /** The AuthorizationPolicies that apply to this pod, as the node decides with them. */
  readonly authorization: { readonly deny: readonly string[]; readonly allow: readonly string[] }
}

export interface AppliedConfigView {
  readonly node: string
  readonly revision: number
  /** The `?service=` filter, when given. */
  readonly service: string | null
  readonly nodes: readonly { readonly name: string; readonly address: string; readonly proxyIp: string; readonly podCIDR: string }[]
  readonly workloads: readonly AppliedWorkloadView[]
  readonly services: readonly AppliedServiceView[]
  readonly routes: readonly AppliedRouteView[]
  readonly rejected: readonly { readonly key: string; readonly reason: string }[]
}

/** A `?service=` that names no service: the message says which exist. */
export class UnknownServiceError extends Error {
  override name = 'UnknownServiceError'
}

const policyNames = (policies: readonly CompiledAuthorizationPolicy[]): string[] => policies.map((policy) => policy.name)

function routeView(route: Route): AppliedRouteView {
  const namespace = route.metadata.namespace
  return {
    route: displayName(route),
    kind: route.kind,
    parents: route.spec.parentRefs.map((ref) => `${ref.namespace ?? namespace}/${ref.name}${ref.port !== undefined ? `:${ref.port}` : ''}`),
    rules: (route.spec.rules ?? []).map((rule) => ({
      backends: (rule.backendRefs ?? []).map((ref) => `${ref.namespace ?? namespace}/${ref.name}:${ref.port} ${ref.weight ?? 1}`),
    })),
  }
}

/** Whether `route` attaches to, or sends to, the service `namespace/name`. */
function routeConcerns(route: AppliedRouteView, service: string): boolean {
  const named = (ref: string): boolean => ref === service || ref.startsWith(`${service}:`)
  return route.parents.some(named) || route.rules.some((rule) => rule.backends.some(named))
}

/**
 * The node's applied configuration. `service` (`namespace/name`) narrows it to that service: its
 * ports and endpoints, the routes attached to it or sending to it, and of this node's pods those
 * that back it. `destinations` is the L7 proxy's live view (/debug/destinations).
 */
export function describeAppliedConfig(snapshot: MeshSnapshot, node: string, destinations: readonly DestinationView[], service?: string): AppliedConfigView {
  if (service !== undefined && !snapshot.servicesByName.has(service)) {
    const known = [...snapshot.servicesByName.keys()].sort()
    throw new UnknownServiceError(`no service ${service} in revision ${snapshot.revision} (known: ${known.join(', ') || 'none'})`)
  }
  const live = new Map<string, DestinationView>(destinations.map((view) => [view.address, view]))

  const services: AppliedServiceView[] = []
  for (const [name, resource] of [...snapshot.servicesByName].sort(([a], [b]) => a.localeCompare(b))) {
    if (service !== undefined && name !== service) continue
    const vip = resource.spec.clusterIP
    const ports = resource.spec.ports.map((port) => {
      const address = `${vip}:${port.port}`
      const target = snapshot.services.get(address)
      const states = new Map((live.get(address)?.endpoints ?? []).map((state) => [state.endpoint, state]))
      return {
        name: port.name ?? null,
        port: port.port,
        targetPort: port.targetPort,
        appProtocol: port.appProtocol ?? null,
        address,
        endpoints: (target?.endpoints ?? []).map((endpoint): AppliedEndpointView => {
          const id = `${endpoint.ip}:${endpoint.port}`
          const state = states.get(id)
          return {
            endpoint: id,
            node: endpoint.node ?? null,
            workload: endpoint.workload ? `${endpoint.workload.namespace}/${endpoint.workload.name}` : null,
            health: state?.ejected === true ? 'ejected' : 'ready',
            ...(state ? { inFlight: state.inFlight, latencyMs: state.latencyMs } : {}),
          }
        }),
      }
    })
    const policy = destinationPolicyFor(snapshot.destinationPolicies, resource.metadata)
    services.push({ service: name, vip, ports, destinationPolicy: policy ? displayName(policy) : null })
  }

  let pods: readonly Workload[] = snapshot.podsByNode.get(node) ?? []
  if (service !== undefined) {
    const backing = new Set(services.flatMap((view) => view.ports.flatMap((port) => port.endpoints.map((endpoint) => endpoint.workload))))
    pods = pods.filter((pod) => backing.has(`${pod.namespace}/${pod.name}`))
  }
  const peerAuthentications = [...snapshot.resources.values()].filter((resource): resource is PeerAuthentication => resource.kind === 'PeerAuthentication')
  const mtls = resolveMtlsModes(peerAuthentications, pods).modes
  const workloads = pods.map((pod): AppliedWorkloadView => {
    const applied = appliedAuthorization(snapshot, pod)
    const mode = mtls.get(pod.key)
    return {
      workload: `${pod.namespace}/${pod.name}`,
      ip: pod.ip,
      identity: pod.identity,
      enrolled: pod.enrolled,
      ready: pod.ready,
      mtls: { mode: mode?.mode ?? 'PERMISSIVE', policy: mode?.policy ?? null },
      authorization: { deny: policyNames(applied.deny), allow: policyNames(applied.allow) },
    }
  })

  const routes = snapshot.routes.map(routeView).filter((route) => service === undefined || routeConcerns(route, service))
  return {
    node,
    revision: snapshot.revision,
    service: service ?? null,
    nodes: [...snapshot.nodes.values()].map((info) => ({ name: info.name, address: info.address, proxyIp: info.proxyIp, podCIDR: info.podCIDR })),
    workloads,
    services,
    routes,
    rejected: snapshot.rejected.map((rejection) => ({ key: rejection.key, reason: rejection.reason })),
  }
}
