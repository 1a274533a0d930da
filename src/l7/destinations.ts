// What the L7 proxy reads per request, built once per snapshot: the route table of each service
// port, per route rule its weighted split and retry policy, and per destination (a service port)
// its endpoints' balancing state, balancer and retry budget. Cached by snapshot object, so a
// request costs map lookups; endpoint states and budgets carry over from the previous snapshot
// by id, so in-flight counts, latency estimates and spent retries survive a config change.
import { serviceAddress, type DestinationPolicy, type Endpoint, type MeshSnapshot, type ServiceTarget } from '../config/resources/index.ts'
import { createBalancer, EndpointState, type Balancer, type HashOn } from './balancers.ts'
import { compileRouteTables, type RouteBackend, type RouteRule, type RouteTable } from './router.ts'
import type { Clock, Random } from './random.ts'
import { DEFAULT_RETRY_BUDGET, RetryBudget, RetryPolicy, retryConfigFromRoute, type RetryConfig } from './retry.ts'
import { WeightedSplit } from './split.ts'

/**
 * Retries when no route says otherwise: only tries that never reached the endpoint (the
 * connection could not be made), which are safe for any method. Two, as Envoy's default.
 */
export const DEFAULT_RETRY: RetryConfig = Object.freeze({ maxRetries: 2, retryOn: Object.freeze(['connect-failure'] as const) })

/** One service port as a destination of requests. */
export class Destination {
  /** `namespace/name`, for errors and metrics. */
  readonly name: string
  readonly target: ServiceTarget
  readonly endpoints: readonly EndpointState<Endpoint>[]
  readonly balancer: Balancer<Endpoint>
  readonly hashOn: HashOn | undefined
  readonly budget: RetryBudget

  constructor(target: ServiceTarget, endpoints: readonly EndpointState<Endpoint>[], balancer: Balancer<Endpoint>, hashOn: HashOn | undefined, budget: RetryBudget) {
    this.name = `${target.service.metadata.namespace}/${target.service.metadata.name}`
    this.target = target
    this.endpoints = endpoints
    this.balancer = balancer
    this.hashOn = hashOn
    this.budget = budget
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

  constructor(snapshot: MeshSnapshot, previous: L7Config | undefined, deps: { random: Random; now: Clock }) {
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
      const policy = policyFor(snapshot.destinationPolicies, target)
      const balancer = createBalancer(policy?.spec.loadBalancer?.type, states, deps)
      const budget = before?.budget ?? new RetryBudget(DEFAULT_RETRY_BUDGET, deps.now)
      const destination = new Destination(target, states, balancer, policy?.spec.loadBalancer?.hashOn, budget)
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
  private readonly deps: { random: Random; now: Clock }
  private readonly onNew: ((config: L7Config) => void) | undefined

  constructor(deps: { random: Random; now: Clock }, onNew?: (config: L7Config) => void) {
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

/** The DestinationPolicy for a service: by targetRef, or by host (`name[.namespace[.svc[.domain]]]`). */
function policyFor(policies: readonly DestinationPolicy[], target: ServiceTarget): DestinationPolicy | undefined {
  const { namespace, name } = target.service.metadata
  return policies.find((policy) => {
    const ns = policy.metadata.namespace
    if (policy.spec.targetRef) return ns === namespace && policy.spec.targetRef.name === name
    const [hostName = '', hostNs = ns, svc] = (policy.spec.host ?? '').split('.')
    return (svc === undefined || svc === 'svc') && hostName === name && hostNs === namespace
  })
}
