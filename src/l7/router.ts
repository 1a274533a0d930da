// Routing: which rule of which HTTPRoute or GRPCRoute a request to a service follows. The routes
// attached to a service (parentRef the Service: Gateway API's mesh profile, GAMMA) are compiled
// once per snapshot into a `RouteTable`: every match of every rule becomes one candidate with
// its regular expressions built, sorted by Gateway API precedence, so a request is a walk down
// the list to the first candidate that matches. The answer is the rule as a ready object
// (backends, header modifier, timeouts, retry); the same object for every request under one
// snapshot, so later layers can key their own per-rule state on it.
//
// Decisions Gateway API leaves to the implementation:
// - `hostnames` is not consulted: in the mesh the parent Service already names the destination.
// - A RegularExpression path (JavaScript syntax, matched against the whole path) ranks after
//   Exact and before PathPrefix; among regexes the longer pattern goes first.
// - A gRPC request (content-type application/grpc...) is matched against the GRPCRoutes first,
//   then the HTTPRoutes; any other request against the HTTPRoutes only.
// - Paths are matched as they arrive (no percent-decoding or dot-segment removal).
import { durationMs, type GRPCRoute, type HTTPRoute, type MeshSnapshot, type Route } from '../config/resources/index.ts'

/** The service a table is for: one port of one Service. */
export interface ServiceRef {
  readonly namespace: string
  readonly name: string
  readonly port: number
  /** The port's name, for parentRefs that name it with sectionName. */
  readonly portName?: string | undefined
}

/** What the router reads of a request. Header names lowercase, as Node gives them. */
export interface RequestHead {
  readonly method: string
  /** The request target: path and query (`/api/items?debug=1`). */
  readonly path: string
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>
}

/** Gateway API's RequestHeaderModifier with names lowercased. */
export interface HeaderModifier {
  readonly set: readonly (readonly [name: string, value: string])[]
  readonly add: readonly (readonly [name: string, value: string])[]
  readonly remove: readonly string[]
}

/** Gateway API's HTTPPathModifier. */
export type PathModifier = { readonly type: 'ReplaceFullPath'; readonly value: string } | { readonly type: 'ReplacePrefixMatch'; readonly value: string }

export interface RequestRedirect {
  readonly scheme: 'http' | 'https' | undefined
  readonly hostname: string | undefined
  readonly port: number | undefined
  readonly path: PathModifier | undefined
  readonly statusCode: number
}

export interface UrlRewrite {
  readonly hostname: string | undefined
  readonly path: PathModifier | undefined
}

export interface RouteBackend {
  /** `namespace/name` of the backend Service. */
  readonly service: string
  readonly namespace: string
  readonly name: string
  readonly port: number
  readonly weight: number
  /** The backendRef's own RequestHeaderModifier, applied after the rule's. */
  readonly requestHeaderModifier: HeaderModifier | undefined
  /** The backendRef's own ResponseHeaderModifier, applied after the rule's. */
  readonly responseHeaderModifier: HeaderModifier | undefined
}

export interface RouteRetry {
  /** Retries after the first try (Gateway API `attempts`). */
  readonly attempts: number | undefined
  readonly codes: readonly number[] | undefined
  readonly backoffMs: number | undefined
}

export interface RouteRule {
  /** `HTTPRoute default/reviews`, for errors, logs and metrics. */
  readonly route: string
  readonly kind: 'HTTPRoute' | 'GRPCRoute'
  /** Position of the rule in the route's `rules`, and its name when it has one. */
  readonly index: number
  readonly name: string | undefined
  /** Empty when the rule has none: the request gets a 500 (Gateway API). */
  readonly backends: readonly RouteBackend[]
  readonly requestHeaderModifier: HeaderModifier | undefined
  /** Applied to the response the client gets (Gateway API ResponseHeaderModifier). */
  readonly responseHeaderModifier: HeaderModifier | undefined
  /** RequestRedirect: the client is answered with a redirect instead of the request going on. */
  readonly requestRedirect: RequestRedirect | undefined
  /** URLRewrite: the request goes on with another host and/or path. */
  readonly urlRewrite: UrlRewrite | undefined
  readonly timeouts: {
    /** The whole request, retries included; undefined: none (Gateway API "0s" also means none). */
    readonly requestMs: number | undefined
    /** Each try to a backend. */
    readonly backendRequestMs: number | undefined
  }
  readonly retry: RouteRetry | undefined
  /** Filter types present on the rule that this layer does not apply (URLRewrite, RequestMirror, ...). */
  readonly otherFilters: readonly string[]
}

interface HeaderCondition { readonly name: string; readonly exact: string | undefined; readonly pattern: RegExp | undefined }

// One match of one rule, with everything precedence needs to sort it.
interface Candidate {
  readonly rule: RouteRule
  /** The PathPrefix this match matched on, without trailing slashes (for ReplacePrefixMatch). */
  readonly prefix: string | undefined
  readonly grpc: boolean
  readonly matches: (request: ParsedRequest) => boolean
  readonly rank: readonly number[]
  readonly createdAt: number
  readonly routeName: string
}

// The request split once: path without query, query params parsed only if a candidate asks.
interface ParsedRequest {
  readonly head: RequestHead
  readonly pathOnly: string
  readonly query: string
  params: URLSearchParams | undefined
  grpcService: string | undefined
  grpcMethod: string | undefined
}

export class RouteTable {
  readonly service: ServiceRef
  /** Every rule of the attached routes (once each), for layers that build per-rule state at snapshot time. */
  readonly rules: readonly RouteRule[]
  private readonly grpcCandidates: readonly Candidate[]
  private readonly httpCandidates: readonly Candidate[]

  constructor(service: ServiceRef, rules: readonly RouteRule[], candidates: readonly Candidate[]) {
    this.service = service
    this.rules = rules
    const sorted = [...candidates].sort(byPrecedence)
    this.grpcCandidates = sorted.filter((c) => c.grpc)
    this.httpCandidates = sorted.filter((c) => !c.grpc)
  }

  /** No route attaches to the service: the pipeline sends requests to the service itself. */
  get empty(): boolean {
    return this.rules.length === 0
  }

  /** The rule the request follows, or undefined when routes attach but none matches (a 404). */
  match(head: RequestHead): RouteRule | undefined {
    return this.route(head)?.rule
  }

  /** The rule the request follows and the PathPrefix it matched on (what ReplacePrefixMatch replaces). */
  route(head: RequestHead): { readonly rule: RouteRule; readonly prefix: string | undefined } | undefined {
    const queryAt = head.path.indexOf('?')
    const request: ParsedRequest = {
      head,
      pathOnly: queryAt === -1 ? head.path : head.path.slice(0, queryAt),
      query: queryAt === -1 ? '' : head.path.slice(queryAt + 1),
      params: undefined,
      grpcService: undefined,
      grpcMethod: undefined,
    }
    if (this.grpcCandidates.length > 0 && isGrpc(head)) {
      const slash = request.pathOnly.indexOf('/', 1)
      if (request.pathOnly.startsWith('/') && slash > 1 && slash < request.pathOnly.length - 1 && request.pathOnly.indexOf('/', slash + 1) === -1) {
        request.grpcService = request.pathOnly.slice(1, slash)
        request.grpcMethod = request.pathOnly.slice(slash + 1)
      }
      for (const candidate of this.grpcCandidates) if (candidate.matches(request)) return candidate
    }
    for (const candidate of this.httpCandidates) if (candidate.matches(request)) return candidate
    return undefined
  }
}

/** The route table of one service port from the routes of a snapshot. */
export function compileRouteTable(routes: readonly Route[], service: ServiceRef): RouteTable {
  const rules: RouteRule[] = []
  const candidates: Candidate[] = []
  for (const route of routes) {
    if (!attachesTo(route, service)) continue
    if (route.kind === 'HTTPRoute') compileHttpRoute(route, rules, candidates)
    else compileGrpcRoute(route, rules, candidates)
  }
  return new RouteTable(service, rules, candidates)
}

/** Every service port's route table, by `VIP:port` like `snapshot.services`: built when a snapshot applies. */
export function compileRouteTables(snapshot: MeshSnapshot): ReadonlyMap<string, RouteTable> {
  const tables = new Map<string, RouteTable>()
  for (const [address, target] of snapshot.services) {
    tables.set(address, compileRouteTable(snapshot.routes, {
      namespace: target.service.metadata.namespace,
      name: target.service.metadata.name,
      port: target.port.port,
      portName: target.port.name,
    }))
  }
  return tables
}

function attachesTo(route: Route, service: ServiceRef): boolean {
  return route.spec.parentRefs.some((parent) =>
    (parent.namespace ?? route.metadata.namespace) === service.namespace &&
    parent.name === service.name &&
    (parent.port === undefined || parent.port === service.port) &&
    (parent.sectionName === undefined || parent.sectionName === service.portName))
}

// --- HTTPRoute -------------------------------------------------------------------------------

type HttpRule = NonNullable<HTTPRoute['spec']['rules']>[number]
type HttpMatch = NonNullable<HttpRule['matches']>[number]

// Rank positions: lower sorts first.
const PATH_EXACT = 0
const PATH_REGEX = 1
const PATH_PREFIX = 2

function compileHttpRoute(route: HTTPRoute, rules: RouteRule[], candidates: Candidate[]): void {
  const routeName = `${route.metadata.namespace}/${route.metadata.name}`
  const createdAt = creationTime(route)
  for (const [index, spec] of (route.spec.rules ?? []).entries()) {
    const rule = compileRule('HTTPRoute', route, index, spec.name, spec.filters ?? [], spec.backendRefs ?? [], {
      requestMs: timeoutMs(spec.timeouts?.request),
      backendRequestMs: timeoutMs(spec.timeouts?.backendRequest),
    }, spec.retry ? { attempts: spec.retry.attempts, codes: spec.retry.codes, backoffMs: spec.retry.backoff === undefined ? undefined : durationMs(spec.retry.backoff) } : undefined)
    rules.push(rule)
    // A rule without matches matches every request: one PathPrefix "/" match (Gateway API default).
    const matches: readonly HttpMatch[] = spec.matches && spec.matches.length > 0 ? spec.matches : [{}]
    for (const match of matches) candidates.push(compileHttpMatch(rule, match, createdAt, routeName))
  }
}

function compileHttpMatch(rule: RouteRule, match: HttpMatch, createdAt: number, routeName: string): Candidate {
  const pathType = match.path?.type ?? 'PathPrefix'
  const pathValue = match.path?.value ?? '/'
  let pathMatches: (path: string) => boolean
  let pathRank: number
  if (pathType === 'Exact') {
    pathRank = PATH_EXACT
    pathMatches = (path) => path === pathValue
  } else if (pathType === 'RegularExpression') {
    pathRank = PATH_REGEX
    const pattern = anchored(pathValue)
    pathMatches = (path) => pattern.test(path)
  } else {
    pathRank = PATH_PREFIX
    pathMatches = prefixMatcher(pathValue)
  }
  // A prefix ranks by its characters without the trailing slash it is matched without: `/api/`
  // and `/api` are one prefix and tie (then method, headers, ... decide).
  const pathLength = pathType === 'PathPrefix' ? normalizedPrefix(pathValue).length : pathValue.length
  const method = match.method
  const headers = firstOfEachName(match.headers ?? [], (h) => h.name.toLowerCase()).map(headerCondition)
  const queryParams = firstOfEachName(match.queryParams ?? [], (q) => q.name).map((q) => ({
    name: q.name,
    exact: q.type === 'Exact' ? q.value : undefined,
    pattern: q.type === 'RegularExpression' ? anchored(q.value) : undefined,
  }))
  return {
    rule,
    prefix: pathType === 'PathPrefix' ? normalizedPrefix(pathValue) : undefined,
    grpc: false,
    createdAt,
    routeName,
    // Gateway API precedence: exact path, longest prefix (regex between them here), method,
    // most header matches, most query matches; then route age and name, then rule order.
    rank: [pathRank, -pathLength, method === undefined ? 1 : 0, -headers.length, -queryParams.length],
    matches: (request) => {
      if (!pathMatches(request.pathOnly)) return false
      if (method !== undefined && request.head.method !== method) return false
      for (const header of headers) if (!headerMatches(header, request.head)) return false
      if (queryParams.length > 0) {
        request.params ??= new URLSearchParams(request.query)
        for (const param of queryParams) {
          // Gateway API: with a repeated parameter, the first value counts.
          const value = request.params.get(param.name)
          if (value === null) return false
          if (param.exact !== undefined ? value !== param.exact : !param.pattern?.test(value)) return false
        }
      }
      return true
    },
  }
}

/**
 * PathPrefix matches whole segments: `/api` matches `/api`, `/api/` and `/api/items`, not
 * `/apis`. A trailing slash in the prefix is ignored (`/api/` is `/api`).
 */
function prefixMatcher(value: string): (path: string) => boolean {
  const prefix = normalizedPrefix(value)
  if (prefix === '/') return (path) => path.startsWith('/')
  return (path) => path.startsWith(prefix) && (path.length === prefix.length || path.charCodeAt(prefix.length) === 0x2f /* / */)
}

/** A PathPrefix value without its trailing slashes (`/api/` -> `/api`); `/` stays `/`. */
function normalizedPrefix(value: string): string {
  return value.replace(/\/+$/, '') || '/'
}

/**
 * Gateway API: of header (or query param) matches with equivalent names only the first counts;
 * the rest are ignored, for matching and for precedence alike.
 */
function firstOfEachName<T>(entries: readonly T[], nameOf: (entry: T) => string): T[] {
  const seen = new Set<string>()
  return entries.filter((entry) => {
    const name = nameOf(entry)
    if (seen.has(name)) return false
    seen.add(name)
    return true
  })
}

// --- GRPCRoute -------------------------------------------------------------------------------

type GrpcRule = NonNullable<GRPCRoute['spec']['rules']>[number]
type GrpcMatch = NonNullable<GrpcRule['matches']>[number]

function compileGrpcRoute(route: GRPCRoute, rules: RouteRule[], candidates: Candidate[]): void {
  const routeName = `${route.metadata.namespace}/${route.metadata.name}`
  const createdAt = creationTime(route)
  for (const [index, spec] of (route.spec.rules ?? []).entries()) {
    // GRPCRoute v1 rules have no timeouts or retry fields.
    const rule = compileRule('GRPCRoute', route, index, spec.name, spec.filters ?? [], spec.backendRefs ?? [], { requestMs: undefined, backendRequestMs: undefined }, undefined)
    rules.push(rule)
    const matches: readonly GrpcMatch[] = spec.matches && spec.matches.length > 0 ? spec.matches : [{}]
    for (const match of matches) candidates.push(compileGrpcMatch(rule, match, createdAt, routeName))
  }
}

function compileGrpcMatch(rule: RouteRule, match: GrpcMatch, createdAt: number, routeName: string): Candidate {
  const method = match.method
  const regex = method?.type === 'RegularExpression'
  const servicePattern = regex && method.service !== undefined ? anchored(method.service) : undefined
  const methodPattern = regex && method.method !== undefined ? anchored(method.method) : undefined
  const headers = firstOfEachName(match.headers ?? [], (h) => h.name.toLowerCase()).map(headerCondition)
  return {
    rule,
    prefix: undefined,
    grpc: true,
    createdAt,
    routeName,
    // GRPCRoute precedence: most characters in the matching service, then method, then most headers.
    rank: [-(method?.service?.length ?? 0), -(method?.method?.length ?? 0), -headers.length],
    matches: (request) => {
      if (method !== undefined) {
        const service = request.grpcService
        const name = request.grpcMethod
        if (service === undefined || name === undefined) return false
        if (regex) {
          if (servicePattern && !servicePattern.test(service)) return false
          if (methodPattern && !methodPattern.test(name)) return false
        } else {
          if (method.service !== undefined && method.service !== service) return false
          if (method.method !== undefined && method.method !== name) return false
        }
      }
      for (const header of headers) if (!headerMatches(header, request.head)) return false
      return true
    },
  }
}

// --- shared ----------------------------------------------------------------------------------

type ModifierSpec = { set?: { name: string; value: string }[] | undefined; add?: { name: string; value: string }[] | undefined; remove?: string[] | undefined }
type PathModifierSpec = { type: 'ReplaceFullPath' | 'ReplacePrefixMatch'; replaceFullPath?: string | undefined; replacePrefixMatch?: string | undefined }
type Filter = {
  type: string
  requestHeaderModifier?: ModifierSpec
  responseHeaderModifier?: ModifierSpec
  requestRedirect?: { scheme?: 'http' | 'https' | undefined; hostname?: string | undefined; path?: PathModifierSpec | undefined; port?: number | undefined; statusCode?: number | undefined }
  urlRewrite?: { hostname?: string | undefined; path?: PathModifierSpec | undefined }
}
type BackendRef = { name: string; namespace?: string | undefined; port: number; weight: number; filters?: readonly Filter[] | undefined }

function compileRule(kind: RouteRule['kind'], route: Route, index: number, name: string | undefined, filters: readonly Filter[], backendRefs: readonly BackendRef[], timeouts: RouteRule['timeouts'], retry: RouteRetry | undefined): RouteRule {
  const namespace = route.metadata.namespace
  return Object.freeze({
    route: `${kind} ${namespace}/${route.metadata.name}`,
    kind,
    index,
    name,
    backends: Object.freeze(backendRefs.map((ref) => Object.freeze({
      service: `${ref.namespace ?? namespace}/${ref.name}`,
      namespace: ref.namespace ?? namespace,
      name: ref.name,
      port: ref.port,
      weight: ref.weight,
      requestHeaderModifier: headerModifierOf(ref.filters ?? [], 'request'),
      responseHeaderModifier: headerModifierOf(ref.filters ?? [], 'response'),
    }))),
    requestHeaderModifier: headerModifierOf(filters, 'request'),
    responseHeaderModifier: headerModifierOf(filters, 'response'),
    requestRedirect: redirectOf(filters),
    urlRewrite: rewriteOf(filters),
    timeouts: Object.freeze(timeouts),
    retry: retry ? Object.freeze(retry) : undefined,
    otherFilters: Object.freeze(filters.filter((f) => !RULE_FILTERS_APPLIED.has(f.type)).map((f) => f.type)),
  })
}

/** The filters a rule's own `filters` may use to effect (a backendRef's: only the header modifiers). */
const RULE_FILTERS_APPLIED: ReadonlySet<string> = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite'])

function pathModifierOf(spec: PathModifierSpec | undefined): PathModifier | undefined {
  if (!spec) return undefined
  return spec.type === 'ReplaceFullPath'
    ? Object.freeze({ type: 'ReplaceFullPath' as const, value: spec.replaceFullPath ?? '/' })
    : Object.freeze({ type: 'ReplacePrefixMatch' as const, value: spec.replacePrefixMatch ?? '/' })
}

function redirectOf(filters: readonly Filter[]): RequestRedirect | undefined {
  const spec = filters.find((f) => f.type === 'RequestRedirect')?.requestRedirect
  if (!spec) return undefined
  return Object.freeze({ scheme: spec.scheme, hostname: spec.hostname, port: spec.port, path: pathModifierOf(spec.path), statusCode: spec.statusCode ?? 302 })
}

function rewriteOf(filters: readonly Filter[]): UrlRewrite | undefined {
  const spec = filters.find((f) => f.type === 'URLRewrite')?.urlRewrite
  if (!spec) return undefined
  return Object.freeze({ hostname: spec.hostname, path: pathModifierOf(spec.path) })
}

/**
 * A request target (path and query) with its path modified: ReplaceFullPath replaces the path,
 * ReplacePrefixMatch replaces the PathPrefix the request matched (`prefix`, no trailing slash)
 * and keeps the rest (`/api/v1/items` with prefix `/api` and `/v2` → `/v2/v1/items`). The query
 * stays. ReplacePrefixMatch without a matched prefix (an Exact or regex match) leaves the path.
 */
export function rewritePath(target: string, modifier: PathModifier, prefix: string | undefined): string {
  const queryAt = target.indexOf('?')
  const path = queryAt === -1 ? target : target.slice(0, queryAt)
  const query = queryAt === -1 ? '' : target.slice(queryAt)
  if (modifier.type === 'ReplaceFullPath') return `${modifier.value}${query}`
  if (prefix === undefined) return target
  const rest = prefix === '/' ? path : path.slice(prefix.length)
  const replacement = modifier.value.replace(/\/+$/, '')
  const joined = `${replacement}${rest.startsWith('/') || rest === '' ? rest : `/${rest}`}`
  return `${joined === '' ? '/' : joined}${query}`
}

/**
 * The Location of a RequestRedirect (Gateway API): scheme, hostname and path from the filter or
 * the request; the port from the filter, else the scheme's well-known port when the filter sets
 * a scheme, else the port the request came in on (the listener's: in the mesh, the Service
 * port); a well-known port is left out.
 */
export function redirectLocation(redirect: RequestRedirect, request: { readonly scheme: 'http' | 'https'; readonly authority: string; readonly port: number; readonly target: string }, prefix: string | undefined): string {
  const requestHost = hostOf(request.authority)
  const scheme = redirect.scheme ?? request.scheme
  const host = redirect.hostname ?? requestHost
  const wellKnown = scheme === 'https' ? 443 : 80
  const port = redirect.port ?? (redirect.scheme !== undefined ? wellKnown : request.port)
  const target = redirect.path ? rewritePath(request.target, redirect.path, prefix) : request.target
  return `${scheme}://${host}${port === wellKnown ? '' : `:${port}`}${target}`
}

/** The host of an authority (`name:port`, `[v6]:port`), without the port. */
function hostOf(authority: string): string {
  const bracket = authority.lastIndexOf(']')
  const colon = authority.lastIndexOf(':')
  return colon > bracket && colon !== -1 ? authority.slice(0, colon) : authority
}

function headerModifierOf(filters: readonly Filter[], side: 'request' | 'response'): HeaderModifier | undefined {
  const modifiers = side === 'request'
    ? filters.filter((f) => f.type === 'RequestHeaderModifier' && f.requestHeaderModifier).map((f) => f.requestHeaderModifier!)
    : filters.filter((f) => f.type === 'ResponseHeaderModifier' && f.responseHeaderModifier).map((f) => f.responseHeaderModifier!)
  if (modifiers.length === 0) return undefined
  const pairs = (list: { name: string; value: string }[] | undefined) => (list ?? []).map((h) => [h.name.toLowerCase(), h.value] as const)
  return Object.freeze({
    set: modifiers.flatMap((m) => pairs(m.set)),
    add: modifiers.flatMap((m) => pairs(m.add)),
    remove: modifiers.flatMap((m) => (m.remove ?? []).map((n) => n.toLowerCase())),
  })
}

/**
 * Applies a Request- or ResponseHeaderModifier to headers in Node's form (lowercase names): `set` replaces,
 * `add` appends a value (keeping those already there), `remove` deletes.
 */
export function applyHeaderModifier(modifier: HeaderModifier, headers: Record<string, string | string[] | undefined>): void {
  for (const [name, value] of modifier.set) headers[name] = value
  for (const [name, value] of modifier.add) {
    const existing = headers[name]
    headers[name] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value]
  }
  for (const name of modifier.remove) delete headers[name]
}

function headerCondition(h: { type: 'Exact' | 'RegularExpression'; name: string; value: string }): HeaderCondition {
  return { name: h.name.toLowerCase(), exact: h.type === 'Exact' ? h.value : undefined, pattern: h.type === 'RegularExpression' ? anchored(h.value) : undefined }
}

function headerMatches(condition: HeaderCondition, head: RequestHead): boolean {
  const raw = head.headers[condition.name]
  if (raw === undefined) return false
  // Repeated headers are matched as one comma-joined value (RFC 9110 field combination).
  const value = typeof raw === 'string' ? raw : raw.join(',')
  return condition.exact !== undefined ? value === condition.exact : condition.pattern!.test(value)
}

function isGrpc(head: RequestHead): boolean {
  const contentType = head.headers['content-type']
  return typeof contentType === 'string' && contentType.startsWith('application/grpc')
}

/** Gateway API regexes match the whole value. */
function anchored(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`)
}

function timeoutMs(duration: string | undefined): number | undefined {
  if (duration === undefined) return undefined
  const ms = durationMs(duration)
  return ms === 0 ? undefined : ms
}

function creationTime(route: Route): number {
  const stamp = route.metadata.creationTimestamp
  const time = typeof stamp === 'string' ? Date.parse(stamp) : Number.NaN
  // Routes without a timestamp rank after those with one, then by name.
  return Number.isNaN(time) ? Number.POSITIVE_INFINITY : time
}

function byPrecedence(a: Candidate, b: Candidate): number {
  for (let i = 0; i < a.rank.length; i++) {
    const diff = (a.rank[i] ?? 0) - (b.rank[i] ?? 0)
    if (diff !== 0) return diff
  }
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? -1 : 1
  if (a.routeName !== b.routeName) return a.routeName < b.routeName ? -1 : 1
  // Same route: rule order, then match order (the sort is stable and candidates were pushed in order).
  return 0
}
