// What the L7 proxy reads per request, built once per snapshot: the route table of each service
// port, per route rule its weighted split and retry policy, and per destination (a service port)
// its endpoints' balancing state, balancer and retry budget. Cached by snapshot object, so a
// request costs map lookups; endpoint states and budgets carry over from the previous snapshot
// by id, so in-flight counts, latency estimates and spent retries survive a config change.
//
// A DestinationPolicy adds, per destination: the balancer type, circuit breaker limits (Envoy's
// defaults otherwise), outlier detection (off unless the policy asks, as in Envoy and Istio),
// fault injection, and locality failover (endpoints on this node first while enough of them are
// healthy).
import { destinationPolicyFor, durationMs, serviceAddress, type DestinationPolicy, type Endpoint, type MeshSnapshot, type ServiceTarget } from '../config/resources/index.ts'
import { createBalancer, EndpointState, type Balancer, type HashOn } from './balancers.ts'
import { CircuitBreaker, type BreakerKind } from './breaker.ts'
import { declaredProtocol } from './detect.ts'
import { FaultInjector } from './faults.ts'
import { OutlierDetector, outlierConfigFromPolicy, type Ejection, type OutlierOutcome } from './outlier.ts'
import { compileRouteTables, type RouteBackend, type RouteRule, type RouteTable } from './router.ts'
import type { Clock, Random } from './random.ts'
import { DEFAULT_RETRY_BUDGET, RetryBudget, RetryPolicy, retryConfigFromRoute, type RetryConfig } from './retry.ts'
import { WeightedSplit } from './split.ts'
import { faultConfigFromPolicy } from './faults.ts'

/**
 * Retries when no route says otherwise: tries that never reached the endpoint (the connection
 * could not be made), safe for any method, and gRPC calls answered UNAVAILABLE (14) with a
 * trailers-only response — the status gRPC uses for "not processed, try again", retried by
 * default in Istio too. Two, as Envoy's default.
 */
export const DEFAULT_RETRY: RetryConfig = Object.freeze({ maxRetries: 2, retryOn: Object.freeze(['connect-failure'] as const), grpcStatusCodes: Object.freeze([14]) })

/** What compiling a snapshot needs besides the snapshot: randomness and time (injected in tests), and this node's name (locality). */
export interface L7Deps {
  readonly random: Random
  readonly now: Clock
  readonly node: string
}

/** A destination as /debug/destinations shows it (JSON). */
export interface DestinationView {
  readonly service: string
  readonly address: string
  readonly loadBalancer: string
  readonly localityFirst: boolean
  readonly outlierDetection: boolean
  readonly faults: boolean
  readonly retryBudgetAvailable: number
  readonly breaker: Readonly<Record<BreakerKind, { inUse: number; max: number; trips: number }>>
  readonly endpoints: readonly { endpoint: string; node: string | null; workload: string | null; inFlight: number; latencyMs: number; ejected: boolean }[]
}

/** The default share of healthy local endpoints under which locality failover spills over to all. */
export const DEFAULT_SPILL_OVER_BELOW_PERCENT = 50

/** Locality failover: a balancer over this node's endpoints, used while enough of them are healthy. */
export interface LocalFirst {
  readonly endpoints: readonly EndpointState<Endpoint>[]
  readonly balancer: Balancer<Endpoint>
  /** 0-100: below this share of healthy local endpoints, requests go to all endpoints. */
  readonly spillOverBelowPercent: number
}

/** Everything a Destination is built from (destinations.ts builds it per snapshot). */
export interface DestinationParts {
  readonly endpoints: readonly EndpointState<Endpoint>[]
  readonly balancer: Balancer<Endpoint>
  readonly hashOn: HashOn | undefined
  readonly budget: RetryBudget
  readonly breaker: CircuitBreaker
  readonly outlier: OutlierDetector | undefined
  readonly faults: FaultInjector | undefined
  readonly localFirst: LocalFirst | undefined
  /** The DestinationPolicy spec these parts come from, if any (to tell a changed policy from the same). */
  readonly policy: DestinationPolicy['spec'] | undefined
  /** The snapshot the destination was compiled from (where its endpoints' nodes are). */
  readonly snapshot: MeshSnapshot
  /** connectionPool.idleTimeout: idle upstream connections close after this long; undefined: the pools' default. */
  readonly idleTimeoutMs: number | undefined
  /**
   * What the port's appProtocol says its endpoints speak: `http1` (http), `http2` (h2c, grpc);
   * undefined when it declares neither, and tries speak what the client spoke.
   */
  readonly upstreamProtocol: UpstreamProtocol | undefined
}

export type UpstreamProtocol = 'http1' | 'http2'

/** The protocol tries to a port speak, from its appProtocol (detect.ts reads the same declaration for clients). */
export function upstreamProtocolOf(appProtocol: string | undefined): UpstreamProtocol | undefined {
  const declared = declaredProtocol(appProtocol)
  if (declared === 'http1') return 'http1'
  if (declared === 'http2' || declared === 'grpc') return 'http2'
  return undefined
}

/** One service port as a destination of requests: its name and target, and the parts above. */
// Declaration merging: the class has every field of DestinationParts, assigned in the constructor.
export interface Destination extends DestinationParts {}
export class Destination {
  /** `namespace/name`, for errors and metrics. */
  readonly name: string
  readonly target: ServiceTarget

  constructor(target: ServiceTarget, parts: DestinationParts) {
    this.name = `${target.service.metadata.namespace}/${target.service.metadata.name}`
    this.target = target
    Object.assign(this, parts)
  }

  /**
   * The endpoint for the next try: endpoints whose ejection is over come back first; with
   * locality failover, this node's endpoints while enough of them are healthy.
   */
  pick(hashKey: string | undefined): EndpointState<Endpoint> | undefined {
    if (this.outlier) for (const id of this.outlier.expire()) { const state = this.stateOf(id); if (state) state.ejected = false }
    const local = this.localFirst
    if (local) {
      let healthy = 0
      for (const state of local.endpoints) if (!state.ejected) healthy++
      if (healthy > 0 && healthy * 100 >= local.spillOverBelowPercent * local.endpoints.length) {
        const picked = local.balancer.pick(hashKey)
        if (picked) return picked
      }
    }
    return this.balancer.pick(hashKey)
  }

  /** Feeds a try's outcome to outlier detection; returns the ejection it caused, if any. */
  recordOutcome(state: EndpointState<Endpoint>, outcome: OutlierOutcome): Ejection | undefined {
    if (!this.outlier) return undefined
    const ejection = this.outlier.record(state.id, outcome)
    if (ejection) state.ejected = true
    return ejection
  }

  /** What the admin endpoint shows of this destination: its policy's effect and each endpoint's state now. */
  describe(now: number): DestinationView {
    const held = (kind: BreakerKind): { inUse: number; max: number; trips: number } => ({ inUse: this.breaker.current(kind), max: this.breaker.limit(kind), trips: this.breaker.tripped(kind) })
    return {
      service: this.name,
      address: serviceAddress(this.target.vip, this.target.port.port),
      loadBalancer: this.policy?.loadBalancer?.type ?? 'EWMA',
      localityFirst: this.localFirst !== undefined,
      outlierDetection: this.outlier !== undefined,
      faults: this.faults !== undefined,
      retryBudgetAvailable: this.budget.available(),
      breaker: { connections: held('connections'), pendingRequests: held('pendingRequests'), requests: held('requests'), retries: held('retries') },
      endpoints: this.endpoints.map((state) => ({
        endpoint: state.id,
        node: state.endpoint.node ?? null,
        workload: state.endpoint.workload ? `${state.endpoint.workload.namespace}/${state.endpoint.workload.name}` : null,
        inFlight: state.inFlight,
        latencyMs: Math.round(state.latencyMs(now) * 1000) / 1000,
        ejected: state.ejected,
      })),
    }
  }

  private stateOf(id: string): EndpointState<Endpoint> | undefined {
    return this.endpoints.find((state) => state.id === id)
  }
}

/** Per rule: how its backends are split and how its requests are retried. */
export interface RuleState {
  readonly split: WeightedSplit<RouteBackend>
  readonly retry: RetryPolicy
}

export class L7Config {
  readonly snapshot: MeshSnapshot
  /** Route tables by `VIP:port`. */
  readonly tables: ReadonlyMap<string, RouteTable>
  /** Destinations by `namespace/name:port` (a backendRef) and by `VIP:port` (the dialled address). */
  private readonly byName: ReadonlyMap<string, Destination>
  private readonly byAddress: ReadonlyMap<string, Destination>
  private readonly rules: ReadonlyMap<RouteRule, RuleState>
  /** The policy for requests that no rule governs (no route attached to the service). */
  readonly defaultRetry: RetryPolicy

  constructor(snapshot: MeshSnapshot, previous: L7Config | undefined, deps: L7Deps) {
    this.snapshot = snapshot
    this.tables = compileRouteTables(snapshot)
    this.defaultRetry = new RetryPolicy(DEFAULT_RETRY)
    const byName = new Map<string, Destination>()
    const byAddress = new Map<string, Destination>()
    for (const [address, target] of snapshot.services) {
      const key = `${target.service.metadata.namespace}/${target.service.metadata.name}:${target.port.port}`
      const before = previous?.byName.get(key)
      const oldStates = new Map(before?.endpoints.map((state) => [state.id, state]) ?? [])
      const states = target.endpoints.map((endpoint) => {
        const id = `${endpoint.ip}:${endpoint.port}`
        const old = oldStates.get(id)
        // Keep the state (load, latency) but point it at the endpoint as this snapshot has it.
        return old && old.endpoint.node === endpoint.node ? old : new EndpointState(id, endpoint, deps.now())
      })
      const policy = destinationPolicyFor(snapshot.destinationPolicies, target.service.metadata)
      const name = `${target.service.metadata.namespace}/${target.service.metadata.name}`
      const spec = policy?.spec
      const balancerType = spec?.loadBalancer?.type
      const balancer = createBalancer(balancerType, states, deps)
      const budget = before?.budget ?? new RetryBudget(DEFAULT_RETRY_BUDGET, deps.now)
      // Breaker counts carry over while the limits stay, so requests in flight are not forgotten.
      const breaker = before && sameJson(before.policy?.circuitBreaker, spec?.circuitBreaker) ? before.breaker : new CircuitBreaker(name, spec?.circuitBreaker)
      let outlier: OutlierDetector | undefined
      if (spec?.outlierDetection) {
        outlier = before?.outlier && sameJson(before.policy?.outlierDetection, spec.outlierDetection) ? before.outlier : new OutlierDetector(outlierConfigFromPolicy(spec.outlierDetection), deps.now)
        outlier.setEndpoints(states.map((state) => state.id))
      }
      // Endpoints kept from the previous snapshot keep their ejection only while detection stays on.
      if (!outlier) for (const state of states) state.ejected = false
      const faultConfig = spec?.faults ? faultConfigFromPolicy(spec.faults) : undefined
      const faults = faultConfig ? new FaultInjector(faultConfig) : undefined
      let localFirst: LocalFirst | undefined
      if (spec?.failover?.localityFirst) {
        const local = states.filter((state) => state.endpoint.node === deps.node)
        if (local.length > 0 && local.length < states.length) {
          localFirst = { endpoints: local, balancer: createBalancer(balancerType, local, deps), spillOverBelowPercent: spec.failover.spillOverBelowHealthyPercent ?? DEFAULT_SPILL_OVER_BELOW_PERCENT }
        }
      }
      const destination = new Destination(target, { endpoints: states, balancer, hashOn: spec?.loadBalancer?.hashOn, budget, breaker, outlier, faults: faults?.inert ? undefined : faults, localFirst, policy: spec, snapshot, idleTimeoutMs: spec?.connectionPool?.idleTimeout === undefined ? undefined : durationMs(spec.connectionPool.idleTimeout), upstreamProtocol: upstreamProtocolOf(target.port.appProtocol) })
      byName.set(key, destination)
      byAddress.set(address, destination)
    }
    this.byName = byName
    this.byAddress = byAddress
    const rules = new Map<RouteRule, RuleState>()
    for (const table of this.tables.values()) {
      for (const rule of table.rules) {
        if (rules.has(rule)) continue
        const retry = rule.retry
          ? new RetryPolicy(retryConfigFromRoute(rule.retry, rule.timeouts.backendRequestMs))
          : new RetryPolicy({ ...DEFAULT_RETRY, perTryTimeoutMs: rule.timeouts.backendRequestMs })
        rules.set(rule, { split: new WeightedSplit(rule.backends.map((backend) => ({ value: backend, weight: backend.weight }))), retry })
      }
    }
    this.rules = rules
  }

  /** The destination a pod dialled (a service VIP:port). */
  destinationAt(vip: string, port: number): Destination | undefined {
    return this.byAddress.get(serviceAddress(vip, port))
  }

  /** The destination a route backend names, or undefined when the service or port is unknown. */
  destinationOf(backend: RouteBackend): Destination | undefined {
    return this.byName.get(`${backend.service}:${backend.port}`)
  }

  /** Every destination (service port) of this snapshot, for the admin endpoint. */
  describe(now: number): DestinationView[] {
    return [...this.byAddress.values()].map((destination) => destination.describe(now))
  }

  ruleState(rule: RouteRule): RuleState {
    const state = this.rules.get(rule)
    if (!state) throw new Error(`no state for rule ${rule.index} of ${rule.route}: it does not come from this snapshot's route tables`)
    return state
  }
}

/**
 * Compiles each snapshot once, on first use, and keeps it with the snapshot object: every
 * request under one snapshot gets the same `L7Config`.
 */
export class L7Configs {
  private readonly bySnapshot = new WeakMap<MeshSnapshot, L7Config>()
  private latest: L7Config | undefined
  private readonly deps: L7Deps
  private readonly onNew: ((config: L7Config) => void) | undefined

  constructor(deps: L7Deps, onNew?: (config: L7Config) => void) {
    this.deps = deps
    this.onNew = onNew
  }

  get(snapshot: MeshSnapshot): L7Config {
    const cached = this.bySnapshot.get(snapshot)
    if (cached) return cached
    const config = new L7Config(snapshot, this.latest, this.deps)
    this.bySnapshot.set(snapshot, config)
    this.latest = config
    this.onNew?.(config)
    return config
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}
