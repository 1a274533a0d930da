// Routing: HTTPRoute and GRPCRoute rules attached to a Service, compiled once, picking a rule
// per request by Gateway API's matching and precedence rules.
import t from 'tap'

import { buildSnapshot, validateResource, type Route } from '../src/config/resources/index.ts'
import { applyHeaderModifier, compileRouteTable, compileRouteTables, redirectLocation, rewritePath, type RequestHead, type ServiceRef } from '../src/l7/router.ts'

const reviews: ServiceRef = { namespace: 'default', name: 'reviews', port: 80, portName: 'http' }

function route(kind: 'HTTPRoute' | 'GRPCRoute', name: string, rules: unknown[], extra: { parentRefs?: unknown[]; creationTimestamp?: string; namespace?: string } = {}): Route {
  const result = validateResource({
    apiVersion: 'gateway.networking.k8s.io/v1', kind,
    metadata: { name, namespace: extra.namespace ?? 'default', ...(extra.creationTimestamp ? { creationTimestamp: extra.creationTimestamp } : {}) },
    spec: { parentRefs: extra.parentRefs ?? [{ kind: 'Service', name: 'reviews' }], rules },
  })
  if (!result.ok) throw new Error(result.errors.join('; '))
  return result.resource as Route
}
const backend = (name: string, weight?: number) => ({ name, port: 80, ...(weight === undefined ? {} : { weight }) })
const get = (path: string, headers: RequestHead['headers'] = {}, method = 'GET'): RequestHead => ({ method, path, headers })
/** The chosen rule as "<route name>#<rule index>", or "none". */
function pick(routes: Route[], head: RequestHead, service: ServiceRef = reviews): string {
  const rule = compileRouteTable(routes, service).match(head)
  return rule ? `${rule.route.split('/')[1]}#${rule.index}` : 'none'
}

t.test('path: Exact, PathPrefix by whole segments, RegularExpression over the whole path', async (t) => {
  const routes = [route('HTTPRoute', 'r', [
    { matches: [{ path: { type: 'Exact', value: '/login' } }], backendRefs: [backend('a')] },
    { matches: [{ path: { type: 'PathPrefix', value: '/api/' } }], backendRefs: [backend('b')] },
    { matches: [{ path: { type: 'RegularExpression', value: '/users/[0-9]+' } }], backendRefs: [backend('c')] },
  ])]
  t.equal(pick(routes, get('/login')), 'r#0')
  t.equal(pick(routes, get('/login/')), 'none', 'Exact is exact')
  t.equal(pick(routes, get('/api')), 'r#1', 'a trailing slash in the prefix is ignored')
  t.equal(pick(routes, get('/api/')), 'r#1')
  t.equal(pick(routes, get('/api/items?x=1')), 'r#1', 'the query is not part of the path')
  t.equal(pick(routes, get('/apis')), 'none', 'a prefix matches whole segments only')
  t.equal(pick(routes, get('/users/42')), 'r#2')
  t.equal(pick(routes, get('/users/42/friends')), 'none', 'a regex matches the whole path')
})

t.test('method, headers (exact and regex, case-insensitive names) and query params', async (t) => {
  const routes = [route('HTTPRoute', 'r', [{
    matches: [{
      method: 'POST',
      headers: [{ name: 'X-User', value: 'jason' }, { type: 'RegularExpression', name: 'x-version', value: 'v[12]' }],
      queryParams: [{ name: 'debug', value: '1' }, { type: 'RegularExpression', name: 'id', value: '[a-f]+' }],
    }],
    backendRefs: [backend('a')],
  }])]
  const headers = { 'x-user': 'jason', 'x-version': 'v2' }
  t.equal(pick(routes, get('/?debug=1&id=abc', headers, 'POST')), 'r#0')
  t.equal(pick(routes, get('/?debug=1&id=abc', headers, 'GET')), 'none', 'method')
  t.equal(pick(routes, get('/?debug=1&id=abc', { ...headers, 'x-version': 'v3' }, 'POST')), 'none', 'header regex')
  t.equal(pick(routes, get('/?debug=1&id=abc', { 'x-version': 'v1' }, 'POST')), 'none', 'a missing header')
  t.equal(pick(routes, get('/?debug=1&id=xyz', headers, 'POST')), 'none', 'query regex')
  t.equal(pick(routes, get('/?id=abc', headers, 'POST')), 'none', 'a missing query param')
  t.equal(pick(routes, get('/?debug=1&debug=2&id=abc', headers, 'POST')), 'r#0', 'a repeated param: the first value counts')
  t.equal(pick(routes, get('/?debug=2&debug=1&id=abc', headers, 'POST')), 'none')
})

t.test('precedence: exact path > longest prefix > method > most headers > most query params', async (t) => {
  const routes = [route('HTTPRoute', 'r', [
    { matches: [{ path: { value: '/' } }], backendRefs: [backend('a')] },
    { matches: [{ path: { value: '/api' } }], backendRefs: [backend('a')] },
    { matches: [{ path: { value: '/api/v1' } }], backendRefs: [backend('a')] },
    { matches: [{ path: { type: 'Exact', value: '/api/v1' } }], backendRefs: [backend('a')] },
    { matches: [{ path: { value: '/api' }, method: 'DELETE' }], backendRefs: [backend('a')] },
    { matches: [{ path: { value: '/api' }, headers: [{ name: 'a', value: '1' }] }], backendRefs: [backend('a')] },
    { matches: [{ path: { value: '/api' }, headers: [{ name: 'a', value: '1' }, { name: 'b', value: '1' }] }], backendRefs: [backend('a')] },
    { matches: [{ path: { value: '/api' }, headers: [{ name: 'a', value: '1' }], queryParams: [{ name: 'q', value: '1' }] }], backendRefs: [backend('a')] },
  ])]
  t.equal(pick(routes, get('/other')), 'r#0')
  t.equal(pick(routes, get('/api/x')), 'r#1')
  t.equal(pick(routes, get('/api/v1/x')), 'r#2', 'the longest prefix wins')
  t.equal(pick(routes, get('/api/v1')), 'r#3', 'exact beats every prefix')
  t.equal(pick(routes, get('/api/x', { a: '1', b: '1' }, 'DELETE')), 'r#4', 'a method beats headers')
  t.equal(pick(routes, get('/api/x', { a: '1', b: '1' })), 'r#6', 'more headers win')
  t.equal(pick(routes, get('/api/x?q=1', { a: '1' })), 'r#7', 'equal headers: more query params win')
  t.equal(pick(routes, get('/api/x', { a: '1' })), 'r#5')
})

t.test('precedence: a prefix with a trailing slash is the same prefix, ranked by its characters without it', async (t) => {
  const slash = { matches: [{ path: { value: '/api/' } }], backendRefs: [backend('a')] }
  const bare = { matches: [{ path: { value: '/api' } }], backendRefs: [backend('a')] }
  t.equal(pick([route('HTTPRoute', 'r', [bare, slash])], get('/api/x')), 'r#0', '/api and /api/ tie: the first rule')
  t.equal(pick([route('HTTPRoute', 'r', [slash, bare])], get('/api/x')), 'r#0', 'either order')
  t.equal(pick([route('HTTPRoute', 'r', [slash, { ...bare, matches: [{ path: { value: '/api' }, method: 'GET' }] }])], get('/api/x')), 'r#1',
    'a tie on the prefix goes to the method, not to the trailing slash')
  const longer = { matches: [{ path: { value: '/api/v' } }], backendRefs: [backend('a')] }
  t.equal(pick([route('HTTPRoute', 'r', [{ matches: [{ path: { value: '/api/////' } }], backendRefs: [backend('a')] }, longer])], get('/api/v/1')), 'r#1',
    'slashes do not lengthen a prefix')
  for (const path of ['/api', '/api/', '/api/x']) t.equal(pick([route('HTTPRoute', 'r', [slash])], get(path)), 'r#0', `/api/ matches ${path}`)
  t.equal(pick([route('HTTPRoute', 'r', [slash])], get('/apix')), 'none', '/api/ does not match /apix')
})

t.test('of header or query matches with one name only the first counts, for matching and for precedence', async (t) => {
  const twice = { matches: [{ path: { value: '/' }, headers: [{ name: 'x-user', value: 'a' }, { name: 'X-User', value: 'b' }] }], backendRefs: [backend('a')] }
  t.equal(pick([route('HTTPRoute', 'r', [twice])], get('/', { 'x-user': 'a' })), 'r#0', 'the second x-user is ignored')
  t.equal(pick([route('HTTPRoute', 'r', [twice])], get('/', { 'x-user': 'b' })), 'none')
  const two = { matches: [{ path: { value: '/' }, headers: [{ name: 'x-user', value: 'a' }, { name: 'x-tier', value: 'gold' }] }], backendRefs: [backend('a')] }
  t.equal(pick([route('HTTPRoute', 'r', [twice, two])], get('/', { 'x-user': 'a', 'x-tier': 'gold' })), 'r#1', 'two names beat one name given twice')
  const query = { matches: [{ path: { value: '/' }, queryParams: [{ name: 'q', value: '1' }, { name: 'q', value: '2' }] }], backendRefs: [backend('a')] }
  t.equal(pick([route('HTTPRoute', 'r', [query])], get('/?q=1')), 'r#0')
})

t.test('ties: the older route, then namespace/name, then rule order', async (t) => {
  const rule = { matches: [{ path: { value: '/api' } }], backendRefs: [backend('a')] }
  const older = route('HTTPRoute', 'zeta', [rule], { creationTimestamp: '2024-01-01T00:00:00Z' })
  const newer = route('HTTPRoute', 'alpha', [rule], { creationTimestamp: '2025-01-01T00:00:00Z' })
  t.equal(pick([newer, older], get('/api')), 'zeta#0', 'the oldest route')
  t.equal(pick([route('HTTPRoute', 'b', [rule]), route('HTTPRoute', 'a', [rule])], get('/api')), 'a#0', 'then by name')
  t.equal(pick([route('HTTPRoute', 'r', [rule, rule])], get('/api')), 'r#0', 'then the first rule')
  const parentRefs = [{ kind: 'Service', name: 'reviews', namespace: 'default' }]
  t.equal(pick([route('HTTPRoute', 'a', [rule], { namespace: 'shop', parentRefs }), route('HTTPRoute', 'z', [rule], { namespace: 'default' })], get('/api')), 'z#0',
    'namespace before name: default/z before shop/a')
})

t.test('routes attach by parentRef: name, namespace, port, sectionName', async (t) => {
  const rule = { backendRefs: [backend('a')] }
  t.equal(pick([route('HTTPRoute', 'r', [rule], { parentRefs: [{ kind: 'Service', name: 'ratings' }] })], get('/')), 'none')
  t.ok(compileRouteTable([route('HTTPRoute', 'r', [rule], { parentRefs: [{ kind: 'Service', name: 'ratings' }] })], reviews).empty, 'a table with no routes is empty')
  t.equal(pick([route('HTTPRoute', 'r', [rule], { parentRefs: [{ kind: 'Service', name: 'reviews', port: 8080 }] })], get('/')), 'none', 'another port')
  t.equal(pick([route('HTTPRoute', 'r', [rule], { parentRefs: [{ kind: 'Service', name: 'reviews', port: 80 }] })], get('/')), 'r#0')
  t.equal(pick([route('HTTPRoute', 'r', [rule], { parentRefs: [{ kind: 'Service', name: 'reviews', sectionName: 'grpc' }] })], get('/')), 'none', 'another port name')
  t.equal(pick([route('HTTPRoute', 'r', [rule], { namespace: 'shop' })], get('/')), 'none', 'the parent defaults to the route namespace')
  t.equal(pick([route('HTTPRoute', 'r', [rule], { namespace: 'shop', parentRefs: [{ kind: 'Service', name: 'reviews', namespace: 'default' }] })], get('/')), 'r#0')
})

t.test('the rule as a ready object: backends, header modifiers, timeouts, retry; the same object per request', async (t) => {
  const table = compileRouteTable([route('HTTPRoute', 'r', [{
    filters: [
      { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Mesh', value: 'weft' }], add: [{ name: 'x-tag', value: 'b' }], remove: ['X-Debug'] } },
      { type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v1' } } },
      { type: 'RequestMirror', requestMirror: { backendRef: { name: 'reviews-v3', port: 80 } } },
    ],
    backendRefs: [backend('reviews-v1', 90), { ...backend('reviews-v2', 10), namespace: 'canary' }, backend('reviews-v3')],
    timeouts: { request: '10s', backendRequest: '500ms' },
    retry: { codes: [503], attempts: 2, backoff: '100ms' },
  }, { matches: [{ path: { value: '/none' } }], timeouts: { request: '0s' } }])], reviews)
  const rule = table.match(get('/'))
  if (!rule) return t.fail('no rule')
  t.equal(rule.route, 'HTTPRoute default/r')
  t.same(rule.backends.map((b) => [b.service, b.port, b.weight]), [['default/reviews-v1', 80, 90], ['canary/reviews-v2', 80, 10], ['default/reviews-v3', 80, 1]])
  t.same(rule.timeouts, { requestMs: 10_000, backendRequestMs: 500 })
  t.same(rule.retry, { attempts: 2, codes: [503], backoffMs: 100 })
  t.same(rule.urlRewrite, { hostname: undefined, path: { type: 'ReplacePrefixMatch', value: '/v1' } })
  t.same(rule.otherFilters, ['RequestMirror'], 'filters not applied are named')
  t.equal(table.match(get('/x')), rule, 'the same object for every request')
  t.same(table.rules.length, 2)
  const none = table.match(get('/none'))
  t.same(none?.backends, [], 'a rule without backends has none (the pipeline answers 500)')
  t.same(none?.timeouts, { requestMs: undefined, backendRequestMs: undefined }, '"0s" means no timeout')
  t.equal(none?.retry, undefined)

  const headers: Record<string, string | string[] | undefined> = { 'x-mesh': 'old', 'x-tag': 'a', 'x-debug': '1', host: 'reviews' }
  if (!rule.requestHeaderModifier) return t.fail('no modifier')
  applyHeaderModifier(rule.requestHeaderModifier, headers)
  t.same(headers, { 'x-mesh': 'weft', 'x-tag': ['a', 'b'], host: 'reviews' }, 'set replaces, add appends, remove deletes')
})

t.test('GRPCRoute: service and method, exact and regex, headers; gRPC requests try GRPCRoutes first', async (t) => {
  const grpc = (path: string, headers: Record<string, string> = {}) => get(path, { 'content-type': 'application/grpc+proto', ...headers }, 'POST')
  const routes = [
    route('GRPCRoute', 'g', [
      { matches: [{ method: { service: 'shop.Reviews', method: 'Get' } }], backendRefs: [backend('a')] },
      { matches: [{ method: { service: 'shop.Reviews' } }], backendRefs: [backend('a')] },
      { matches: [{ method: { type: 'RegularExpression', service: 'shop\\..*', method: 'List.*' } }], backendRefs: [backend('a')] },
      { matches: [{ method: { method: 'Get' }, headers: [{ name: 'x-tenant', value: 'a' }] }], backendRefs: [backend('a')] },
    ]),
    route('HTTPRoute', 'h', [{ backendRefs: [backend('b')] }]),
  ]
  t.equal(pick(routes, grpc('/shop.Reviews/Get')), 'g#0', 'service and method beat service alone')
  t.equal(pick(routes, grpc('/shop.Reviews/Put')), 'g#1')
  t.equal(pick(routes, grpc('/shop.Ratings/ListAll')), 'g#2')
  t.equal(pick(routes, grpc('/other.Svc/Get', { 'x-tenant': 'a' })), 'g#3')
  t.equal(pick(routes, grpc('/other.Svc/Get')), 'h#0', 'no GRPCRoute matches: the HTTPRoutes')
  t.equal(pick(routes, grpc('/not/a/grpc/path')), 'h#0', 'a path that is not /service/method matches no method match')
  t.equal(pick(routes, get('/shop.Reviews/Get')), 'h#0', 'a non-gRPC request never matches a GRPCRoute')
  t.equal(pick([route('GRPCRoute', 'g', [{ backendRefs: [backend('a')] }])], grpc('/x.Y/Z')), 'g#0', 'a rule without matches matches every call')
})

t.test('compileRouteTables: one table per service address of the snapshot', async (t) => {
  const snapshot = buildSnapshot(new Map<string, unknown>([
    ['service.default.reviews', { apiVersion: 'v1', kind: 'Service', metadata: { name: 'reviews' }, spec: { clusterIP: '198.19.0.10', ports: [{ name: 'http', port: 80 }, { name: 'grpc', port: 9090 }] } }],
    ['httproute.default.reviews', { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'reviews' }, spec: { parentRefs: [{ kind: 'Service', name: 'reviews', port: 80 }], rules: [{ backendRefs: [{ name: 'reviews', port: 80 }] }] } }],
  ]))
  const tables = compileRouteTables(snapshot)
  t.same([...tables.keys()].sort(), ['198.19.0.10:80', '198.19.0.10:9090'])
  t.equal(tables.get('198.19.0.10:80')?.rules.length, 1)
  t.ok(tables.get('198.19.0.10:9090')?.empty)
})

t.test('rewritePath: ReplaceFullPath and ReplacePrefixMatch (element-wise, query kept)', async (t) => {
  const prefix = (value: string) => ({ type: 'ReplacePrefixMatch' as const, value })
  t.equal(rewritePath('/api/v1/items?x=1', prefix('/v2'), '/api'), '/v2/v1/items?x=1')
  t.equal(rewritePath('/api', prefix('/v2'), '/api'), '/v2')
  t.equal(rewritePath('/api/', prefix('/v2/'), '/api'), '/v2/')
  t.equal(rewritePath('/api/items', prefix('/'), '/api'), '/items', 'a prefix replaced by / drops it')
  t.equal(rewritePath('/api', prefix('/'), '/api'), '/')
  t.equal(rewritePath('/items', prefix('/v2'), '/'), '/v2/items', 'the / prefix: everything is the rest')
  t.equal(rewritePath('/exact', prefix('/v2'), undefined), '/exact', 'no matched prefix (Exact or regex match): unchanged')
  t.equal(rewritePath('/a/b?q', { type: 'ReplaceFullPath', value: '/index.html' }, '/a'), '/index.html?q')
})

t.test('redirectLocation: scheme, host and port as Gateway API says', async (t) => {
  const redirect = (spec: Partial<Parameters<typeof redirectLocation>[0]>) => ({ scheme: undefined, hostname: undefined, port: undefined, path: undefined, statusCode: 302, ...spec })
  const request = { scheme: 'http' as const, authority: 'shop.default:8080', port: 8080, target: '/cart?id=1' }
  t.equal(redirectLocation(redirect({}), request, undefined), 'http://shop.default:8080/cart?id=1', 'nothing set: the request\'s host and the port it came in on')
  t.equal(redirectLocation(redirect({}), { ...request, authority: 'shop.default' }, undefined), 'http://shop.default:8080/cart?id=1', 'the listener port, not the Host header\'s')
  t.equal(redirectLocation(redirect({ scheme: 'https' }), request, undefined), 'https://shop.default/cart?id=1', 'a scheme brings its well-known port, left out')
  t.equal(redirectLocation(redirect({ scheme: 'https', port: 8443 }), request, undefined), 'https://shop.default:8443/cart?id=1')
  t.equal(redirectLocation(redirect({ hostname: 'www.example.test', port: 80 }), request, undefined), 'http://www.example.test/cart?id=1')
  t.equal(redirectLocation(redirect({}), { ...request, authority: '[fd00::1]:8080' }, undefined), 'http://[fd00::1]:8080/cart?id=1', 'an IPv6 host keeps its brackets')
  t.equal(redirectLocation(redirect({ path: { type: 'ReplacePrefixMatch', value: '/basket' } }), request, '/cart'), 'http://shop.default:8080/basket?id=1')
})
