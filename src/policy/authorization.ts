// Authorization: may this peer reach this pod, on this port, with this request? Istio's
// AuthorizationPolicy semantics (istio.io, "Authorization Policy"):
//
//   1. a DENY policy applying to the pod with a matching rule denies;
//   2. else, when ALLOW policies apply to the pod, one of their rules must match, or it is denied;
//   3. else (no policy applies) it is allowed.
//
// A policy applies to the pods of its namespace whose labels include its selector (all of them
// without one); a policy in the root namespace (ROOT_NAMESPACE) applies so in every namespace.
// Within a rule from, to (and when, refused by the schema) must all match; within from or to any
// entry; within an entry every field. Without HTTP attributes (opaque TCP, or the decision made
// when a connection is accepted) an ALLOW rule using methods, paths or hosts does not match and a
// DENY rule is applied without those fields, as Istio does for TCP.
//
// compileAuthorizationPolicies runs once per snapshot (buildSnapshot); authorize and
// needsHttpAttributes, on the connection and request path, do map lookups and small loops.
import type { MeshSnapshot, Workload } from '../config/resources/snapshot.ts'
import { HTTP_OPERATION_FIELDS, ROOT_NAMESPACE, type AuthorizationOperation, type AuthorizationPolicy, type AuthorizationRule, type AuthorizationSource } from '../config/resources/security.ts'
import { compileIpBlocks, compilePatterns, ipInBlocks, matchesPatterns, principalWithoutScheme, type IpBlocks, type PatternSet } from './patterns.ts'

export interface AuthorizationPeer {
  /** `spiffe://<trust domain>/ns/<ns>/sa/<sa>`, from the peer's certificate or the same-node source
   *  workload; undefined for a peer without an identity (then principals never match). */
  principal: string | undefined
  namespace: string | undefined
  ip: string
}

export interface HttpAttributes { method: string; path: string; host: string }

export interface AuthorizationInput {
  destination: Workload
  /** The destination pod's port. */
  port: number
  source: AuthorizationPeer
  /** Absent at L4: opaque TCP, or the decision made when a connection is accepted. */
  http?: HttpAttributes
}

export interface AuthorizationDecision {
  allowed: boolean
  /** `ns/name` of the policy that decided; for "no ALLOW policy matched", the ALLOW policies that
   *  applied, comma-separated; undefined when no policy applied. */
  policy: string | undefined
  action: 'ALLOW' | 'DENY' | 'NONE'
  /** One line for logs and the weft-error header. */
  reason: string
}

// --- compiled form --------------------------------------------------------------------------

interface CompiledSource {
  readonly principals: PatternSet | undefined
  readonly notPrincipals: PatternSet | undefined
  readonly namespaces: PatternSet | undefined
  readonly notNamespaces: PatternSet | undefined
  readonly ipBlocks: IpBlocks | undefined
  readonly notIpBlocks: IpBlocks | undefined
}

interface CompiledOperation {
  readonly ports: ReadonlySet<number> | undefined
  readonly notPorts: ReadonlySet<number> | undefined
  readonly methods: PatternSet | undefined
  readonly notMethods: PatternSet | undefined
  readonly paths: PatternSet | undefined
  readonly notPaths: PatternSet | undefined
  /** Lowercase patterns; matched against the lowercased Host, with and without its port. */
  readonly hosts: PatternSet | undefined
  readonly notHosts: PatternSet | undefined
  readonly usesHttp: boolean
}

interface CompiledRule {
  /** Undefined: every source. */
  readonly from: readonly CompiledSource[] | undefined
  /** Undefined: every operation. */
  readonly to: readonly CompiledOperation[] | undefined
  /** Some operation uses methods, paths or hosts (or their not* forms). */
  readonly usesHttp: boolean
}

export interface CompiledAuthorizationPolicy {
  /** `ns/name`, as decisions name it. */
  readonly name: string
  readonly namespace: string
  readonly action: 'ALLOW' | 'DENY'
  /** Label pairs a pod must all have; empty: every pod. */
  readonly selector: readonly (readonly [string, string])[]
  readonly rules: readonly CompiledRule[]
}

/** The policies that apply to one pod, DENY and ALLOW apart, root namespace first, then by name. */
export interface AppliedAuthorization {
  readonly deny: readonly CompiledAuthorizationPolicy[]
  readonly allow: readonly CompiledAuthorizationPolicy[]
  /** Precomputed for the "no ALLOW policy matched" decision: `ns/a,ns/b` and `ns/a, ns/b`. */
  readonly allowNames: string
  readonly allowNamesText: string
  /** Some ALLOW rule uses HTTP fields (so at L4 it cannot match: said in the reason). */
  readonly allowUsesHttp: boolean
}

/** What a snapshot keeps (MeshSnapshot.authorization). */
export interface AuthorizationIndex {
  /** By Workload.key (`pod.<ns>.<name>`): every pod of the snapshot. */
  readonly byWorkload: ReadonlyMap<string, AppliedAuthorization>
  /** Every policy by namespace, for a workload that is not in the snapshot's index. */
  readonly byNamespace: ReadonlyMap<string, readonly CompiledAuthorizationPolicy[]>
}

const NO_POLICIES: AppliedAuthorization = Object.freeze({ deny: Object.freeze([]), allow: Object.freeze([]), allowNames: '', allowNamesText: '', allowUsesHttp: false })

/**
 * Compiles `policies` (in key order, as the snapshot holds them) and resolves which apply to
 * each of `workloads`. Pure; the snapshot freezes the result.
 */
export function compileAuthorizationPolicies(policies: readonly AuthorizationPolicy[], workloads: Iterable<Workload>): AuthorizationIndex {
  const byNamespace = new Map<string, CompiledAuthorizationPolicy[]>()
  for (const policy of policies) {
    const compiled = compilePolicy(policy)
    const list = byNamespace.get(compiled.namespace) ?? []
    list.push(compiled)
    byNamespace.set(compiled.namespace, list)
  }
  const byWorkload = new Map<string, AppliedAuthorization>()
  for (const workload of workloads) byWorkload.set(workload.key, selectPolicies(byNamespace, workload))
  return { byWorkload, byNamespace }
}

function selectPolicies(byNamespace: ReadonlyMap<string, readonly CompiledAuthorizationPolicy[]>, workload: Workload): AppliedAuthorization {
  const candidates = [
    ...(byNamespace.get(ROOT_NAMESPACE) ?? []),
    ...(workload.namespace === ROOT_NAMESPACE ? [] : byNamespace.get(workload.namespace) ?? []),
  ]
  const deny: CompiledAuthorizationPolicy[] = []
  const allow: CompiledAuthorizationPolicy[] = []
  for (const policy of candidates) {
    if (!policy.selector.every(([key, value]) => workload.labels[key] === value)) continue
    ;(policy.action === 'DENY' ? deny : allow).push(policy)
  }
  if (deny.length === 0 && allow.length === 0) return NO_POLICIES
  return {
    deny,
    allow,
    allowNames: allow.map((policy) => policy.name).join(','),
    allowNamesText: allow.map((policy) => policy.name).join(', '),
    allowUsesHttp: allow.some((policy) => policy.rules.some((rule) => rule.usesHttp)),
  }
}

function compilePolicy(policy: AuthorizationPolicy): CompiledAuthorizationPolicy {
  return {
    name: `${policy.metadata.namespace}/${policy.metadata.name}`,
    namespace: policy.metadata.namespace,
    action: policy.spec.action,
    selector: Object.entries(policy.spec.selector?.matchLabels ?? {}),
    rules: (policy.spec.rules ?? []).map(compileRule),
  }
}

function compileRule(rule: AuthorizationRule): CompiledRule {
  const to = rule.to?.map((entry) => compileOperation(entry.operation))
  return {
    from: rule.from?.map((entry) => compileSource(entry.source)),
    to,
    usesHttp: to?.some((operation) => operation.usesHttp) ?? false,
  }
}

const patterns = (list: readonly string[] | undefined, normalize?: (pattern: string) => string): PatternSet | undefined =>
  list === undefined ? undefined : compilePatterns(list, normalize)
const ports = (list: readonly string[] | undefined): ReadonlySet<number> | undefined =>
  list === undefined ? undefined : new Set(list.map(Number))
const blocks = (list: readonly string[] | undefined): IpBlocks | undefined =>
  list === undefined ? undefined : compileIpBlocks(list)
const lowercase = (text: string): string => text.toLowerCase()

function compileSource(source: AuthorizationSource): CompiledSource {
  return {
    principals: patterns(source.principals, principalWithoutScheme),
    notPrincipals: patterns(source.notPrincipals, principalWithoutScheme),
    namespaces: patterns(source.namespaces),
    notNamespaces: patterns(source.notNamespaces),
    ipBlocks: blocks(source.ipBlocks),
    notIpBlocks: blocks(source.notIpBlocks),
  }
}

function compileOperation(operation: AuthorizationOperation): CompiledOperation {
  return {
    ports: ports(operation.ports),
    notPorts: ports(operation.notPorts),
    methods: patterns(operation.methods),
    notMethods: patterns(operation.notMethods),
    paths: patterns(operation.paths),
    notPaths: patterns(operation.notPaths),
    hosts: patterns(operation.hosts, lowercase),
    notHosts: patterns(operation.notHosts, lowercase),
    usesHttp: HTTP_OPERATION_FIELDS.some((field) => operation[field] !== undefined),
  }
}

// --- decisions ------------------------------------------------------------------------------

/** The policies that apply to `destination`, from the snapshot's index (computed for a workload the snapshot does not hold). */
export function appliedAuthorization(snapshot: MeshSnapshot, destination: Workload): AppliedAuthorization {
  return snapshot.authorization.byWorkload.get(destination.key) ?? selectPolicies(snapshot.authorization.byNamespace, destination)
}

export function authorize(snapshot: MeshSnapshot, input: AuthorizationInput): AuthorizationDecision {
  const applied = appliedAuthorization(snapshot, input.destination)
  // A principal is matched without its scheme, as Istio writes principals.
  const principal = input.source.principal === undefined ? undefined : principalWithoutScheme(input.source.principal)
  const denying = firstMatching(applied.deny, 'DENY', input, principal)
  if (denying) return { allowed: false, policy: denying.name, action: 'DENY', reason: `denied by AuthorizationPolicy ${denying.name} (DENY)` }
  if (applied.allow.length === 0) {
    return { allowed: true, policy: undefined, action: 'NONE', reason: `no AuthorizationPolicy applies to ${input.destination.namespace}/${input.destination.name}` }
  }
  const allowing = firstMatching(applied.allow, 'ALLOW', input, principal)
  if (allowing) return { allowed: true, policy: allowing.name, action: 'ALLOW', reason: `allowed by AuthorizationPolicy ${allowing.name} (ALLOW)` }
  const skippedAtL4 = input.http === undefined && applied.allowUsesHttp
  return {
    allowed: false,
    policy: applied.allowNames,
    action: 'ALLOW',
    reason: `no ALLOW policy of ${input.destination.namespace} matched (policies: ${applied.allowNamesText})${skippedAtL4 ? '; rules with methods, paths or hosts cannot match without HTTP attributes' : ''}`,
  }
}

// Plain loops on the request path: no closure per policy or rule.
function firstMatching(policies: readonly CompiledAuthorizationPolicy[], action: 'ALLOW' | 'DENY', input: AuthorizationInput, principal: string | undefined): CompiledAuthorizationPolicy | undefined {
  for (let p = 0; p < policies.length; p++) {
    const policy = policies[p]
    if (policy === undefined) continue
    for (let r = 0; r < policy.rules.length; r++) {
      const rule = policy.rules[r]
      if (rule !== undefined && ruleMatches(rule, action, input, principal)) return policy
    }
  }
  return undefined
}

/**
 * True when some policy applying to this workload and port has a rule with HTTP attributes (the
 * destination side must then see requests to decide). A rule counts when one of its operations
 * admits the port; ALLOW and DENY alike (at L4 a DENY rule would match more than it says).
 */
export function needsHttpAttributes(snapshot: MeshSnapshot, destination: Workload, port: number): boolean {
  const applied = appliedAuthorization(snapshot, destination)
  return [applied.deny, applied.allow].some((policies) => policies.some((policy) => policy.rules.some((rule) =>
    rule.usesHttp && (rule.to ?? []).some((operation) => portMatches(operation, port)))))
}

function ruleMatches(rule: CompiledRule, action: 'ALLOW' | 'DENY', input: AuthorizationInput, principal: string | undefined): boolean {
  // Istio for TCP: an ALLOW rule with HTTP-only fields is dropped (matches nothing); a DENY rule keeps its other fields.
  if (input.http === undefined && rule.usesHttp && action === 'ALLOW') return false
  if (rule.from !== undefined) {
    let matched = false
    for (let i = 0; i < rule.from.length && !matched; i++) {
      const source = rule.from[i]
      matched = source !== undefined && sourceMatches(source, input.source, principal)
    }
    if (!matched) return false
  }
  if (rule.to !== undefined) {
    let matched = false
    for (let i = 0; i < rule.to.length && !matched; i++) {
      const operation = rule.to[i]
      matched = operation !== undefined && operationMatches(operation, input.port, input.http)
    }
    if (!matched) return false
  }
  return true
}

function sourceMatches(source: CompiledSource, peer: AuthorizationPeer, principal: string | undefined): boolean {
  if (source.principals && !matchesPatterns(source.principals, principal)) return false
  if (source.notPrincipals && matchesPatterns(source.notPrincipals, principal)) return false
  if (source.namespaces && !matchesPatterns(source.namespaces, peer.namespace)) return false
  if (source.notNamespaces && matchesPatterns(source.notNamespaces, peer.namespace)) return false
  if (source.ipBlocks && !ipInBlocks(source.ipBlocks, peer.ip)) return false
  if (source.notIpBlocks && ipInBlocks(source.notIpBlocks, peer.ip)) return false
  return true
}

function portMatches(operation: CompiledOperation, port: number): boolean {
  if (operation.ports && !operation.ports.has(port)) return false
  if (operation.notPorts && operation.notPorts.has(port)) return false
  return true
}

/** Without `http` the HTTP fields are skipped (only a DENY rule gets here with them). */
function operationMatches(operation: CompiledOperation, port: number, http: HttpAttributes | undefined): boolean {
  if (!portMatches(operation, port)) return false
  if (http === undefined || !operation.usesHttp) return true
  if (operation.methods && !matchesPatterns(operation.methods, http.method)) return false
  if (operation.notMethods && matchesPatterns(operation.notMethods, http.method)) return false
  if (operation.paths || operation.notPaths) {
    const path = pathOnly(http.path)
    if (operation.paths && !matchesPatterns(operation.paths, path)) return false
    if (operation.notPaths && matchesPatterns(operation.notPaths, path)) return false
  }
  if (operation.hosts || operation.notHosts) {
    const host = http.host.toLowerCase()
    const hostname = withoutPort(host)
    if (operation.hosts && !matchesPatterns(operation.hosts, host) && !matchesPatterns(operation.hosts, hostname)) return false
    if (operation.notHosts && (matchesPatterns(operation.notHosts, host) || matchesPatterns(operation.notHosts, hostname))) return false
  }
  return true
}

/** Istio matches paths without the query string (and a request target has no fragment, but be safe). */
function pathOnly(target: string): string {
  const end = target.search(/[?#]/)
  return end === -1 ? target : target.slice(0, end)
}

/** `reviews:8080` -> `reviews`; `[::1]:80` -> `[::1]`; a host without a port is returned as is. */
function withoutPort(host: string): string {
  const colon = host.lastIndexOf(':')
  if (colon === -1 || host.endsWith(']')) return host
  return /^[0-9]+$/.test(host.slice(colon + 1)) ? host.slice(0, colon) : host
}
