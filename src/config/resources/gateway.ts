// Gateway API v1 routes (gateway.networking.k8s.io/v1 HTTPRoute, GRPCRoute) in their mesh form
// (GAMMA): the parent is a Service. Field names follow the Gateway API v1 types; the L7 issue
// acts on them, this one validates and stores them.
import { z } from 'zod'

import { dnsLabel, duration, expected, namespacedMetadata, objectName, portNumber } from './common.ts'

export const GATEWAY_API_VERSION = 'gateway.networking.k8s.io/v1'

/** The parent of a mesh route is a Service (group "", kind Service); weft has no Gateways. */
const parentRef = z.strictObject({
  group: z.literal('', expected('"" (the core group: in a mesh the parent is a Service)')).optional(),
  kind: z.literal('Service', expected('"Service" (weft is a mesh: routes attach to Services, not Gateways)')),
  namespace: dnsLabel.optional(),
  name: objectName,
  sectionName: z.string(expected('a port name of the Service')).optional(),
  port: portNumber.optional(),
}, expected('a parentRef {group: "", kind: Service, name, port}'))

// Hostname per Gateway API: a DNS name, optionally with a leading "*." wildcard label.
const hostname = z.string(expected('a hostname like "reviews.shop.svc.cluster.local" or "*.example.com"'))
  .regex(/^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, expected('a hostname like "reviews.shop.svc.cluster.local" or "*.example.com"'))

const HTTP_HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/
const headerName = z.string(expected('an HTTP header name')).min(1, expected('an HTTP header name')).regex(HTTP_HEADER_NAME, expected('an HTTP header name'))
const header = z.strictObject({ name: headerName, value: z.string(expected('a header value')) }, expected('a header {name, value}'))

const headerMatch = z.strictObject({
  type: z.enum(['Exact', 'RegularExpression'], expected('"Exact" or "RegularExpression"')).default('Exact'),
  name: headerName,
  value: z.string(expected('a header value')),
}, expected('a header match {type, name, value}'))

const headerModifier = z.strictObject({
  set: z.array(header, expected('a list of {name, value}')).optional(),
  add: z.array(header, expected('a list of {name, value}')).optional(),
  remove: z.array(headerName, expected('a list of header names')).optional(),
}, expected('an object {set, add, remove}'))

/** A backend: a Service in the route's namespace (or another, when namespace is set) and its port. */
const backendObjectRef = {
  group: z.literal('', expected('"" (backends are Services)')).optional(),
  kind: z.literal('Service', expected('"Service"')).optional(),
  name: objectName,
  namespace: dnsLabel.optional(),
  port: portNumber,
}

const requestMirror = z.strictObject({
  backendRef: z.strictObject(backendObjectRef, expected('a backendRef {name, port}')),
  percent: z.int(expected('a whole number from 0 to 100')).min(0, expected('a whole number from 0 to 100')).max(100, expected('a whole number from 0 to 100')).optional(),
  fraction: z.strictObject({ numerator: z.int().min(0), denominator: z.int().min(1).default(100) }, expected('a fraction {numerator, denominator}')).optional(),
}, expected('an object {backendRef, percent, fraction}'))

const extensionRef = z.strictObject({ group: z.string(), kind: z.string(), name: objectName }, expected('an object {group, kind, name}'))

const httpPathModifier = z.strictObject({
  type: z.enum(['ReplaceFullPath', 'ReplacePrefixMatch'], expected('"ReplaceFullPath" or "ReplacePrefixMatch"')),
  replaceFullPath: z.string().optional(),
  replacePrefixMatch: z.string().optional(),
}, expected('a path modifier {type, replaceFullPath | replacePrefixMatch}'))

const httpFilter = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('RequestHeaderModifier'), requestHeaderModifier: headerModifier }),
  z.strictObject({ type: z.literal('ResponseHeaderModifier'), responseHeaderModifier: headerModifier }),
  z.strictObject({ type: z.literal('RequestMirror'), requestMirror }),
  z.strictObject({
    type: z.literal('RequestRedirect'),
    requestRedirect: z.strictObject({
      scheme: z.enum(['http', 'https'], expected('"http" or "https"')).optional(),
      hostname: hostname.optional(),
      path: httpPathModifier.optional(),
      port: portNumber.optional(),
      statusCode: z.union([z.literal(301), z.literal(302)], expected('301 or 302')).default(302),
    }, expected('an object {scheme, hostname, path, port, statusCode}')),
  }),
  z.strictObject({
    type: z.literal('URLRewrite'),
    urlRewrite: z.strictObject({ hostname: hostname.optional(), path: httpPathModifier.optional() }, expected('an object {hostname, path}')),
  }),
  z.strictObject({ type: z.literal('ExtensionRef'), extensionRef }),
])

const backendWeight = z.int(expected('a weight from 0 to 1000000')).min(0, expected('a weight from 0 to 1000000')).max(1_000_000, expected('a weight from 0 to 1000000'))

const httpBackendRef = z.strictObject({
  ...backendObjectRef,
  weight: backendWeight.default(1),
  filters: z.array(httpFilter, expected('a list of filters')).optional(),
}, expected('a backendRef {name, port, weight}'))

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const

const httpRouteMatch = z.strictObject({
  path: z.strictObject({
    type: z.enum(['Exact', 'PathPrefix', 'RegularExpression'], expected('"Exact", "PathPrefix" or "RegularExpression"')).default('PathPrefix'),
    value: z.string(expected('a path')).default('/'),
  }, expected('a path match {type, value}')).superRefine((path, ctx) => {
    if (path.type !== 'RegularExpression' && !path.value.startsWith('/')) {
      ctx.addIssue({ code: 'custom', path: ['value'], message: `expected a path starting with "/", got ${JSON.stringify(path.value)}` })
    }
    if (path.type === 'RegularExpression') {
      try { new RegExp(path.value) } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['value'], message: `not a valid regular expression: ${(err as Error).message}` })
      }
    }
  }).optional(),
  headers: z.array(headerMatch, expected('a list of header matches')).optional(),
  queryParams: z.array(z.strictObject({
    type: z.enum(['Exact', 'RegularExpression'], expected('"Exact" or "RegularExpression"')).default('Exact'),
    name: z.string(expected('a query parameter name')).min(1, expected('a query parameter name')),
    value: z.string(expected('a value')),
  }, expected('a query match {type, name, value}')), expected('a list of query matches')).optional(),
  method: z.enum(HTTP_METHODS, expected(`an HTTP method (${HTTP_METHODS.join(', ')})`)).optional(),
}, expected('a match {path, headers, queryParams, method}'))

const httpRouteRule = z.strictObject({
  name: dnsLabel.optional(),
  matches: z.array(httpRouteMatch, expected('a list of matches')).optional(),
  filters: z.array(httpFilter, expected('a list of filters')).optional(),
  backendRefs: z.array(httpBackendRef, expected('a list of backendRefs')).optional(),
  timeouts: z.strictObject({
    request: duration.optional(),
    backendRequest: duration.optional(),
  }, expected('an object {request, backendRequest}')).optional(),
  // HTTPRouteRetry (Gateway API v1.2, experimental channel).
  retry: z.strictObject({
    codes: z.array(z.int().min(400).max(599), expected('a list of HTTP status codes from 400 to 599')).optional(),
    attempts: z.int(expected('a whole number ≥ 0')).min(0, expected('a whole number ≥ 0')).optional(),
    backoff: duration.optional(),
  }, expected('an object {codes, attempts, backoff}')).optional(),
}, expected('a rule {matches, filters, backendRefs, timeouts, retry}'))

const routeCommonSpec = {
  parentRefs: z.array(parentRef, expected('a list of parentRefs')).min(1, expected('at least one parentRef (the Service this route applies to)')),
  hostnames: z.array(hostname, expected('a list of hostnames')).optional(),
}

export const httpRouteSchema = z.strictObject({
  apiVersion: z.literal(GATEWAY_API_VERSION),
  kind: z.literal('HTTPRoute'),
  metadata: namespacedMetadata,
  spec: z.strictObject({
    ...routeCommonSpec,
    rules: z.array(httpRouteRule, expected('a list of rules')).optional(),
  }, expected('an object with parentRefs, hostnames and rules')),
  status: z.unknown().optional(),
})
export type HTTPRoute = z.infer<typeof httpRouteSchema>

const grpcFilter = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('RequestHeaderModifier'), requestHeaderModifier: headerModifier }),
  z.strictObject({ type: z.literal('ResponseHeaderModifier'), responseHeaderModifier: headerModifier }),
  z.strictObject({ type: z.literal('RequestMirror'), requestMirror }),
  z.strictObject({ type: z.literal('ExtensionRef'), extensionRef }),
])

const grpcRouteRule = z.strictObject({
  name: dnsLabel.optional(),
  matches: z.array(z.strictObject({
    method: z.strictObject({
      type: z.enum(['Exact', 'RegularExpression'], expected('"Exact" or "RegularExpression"')).default('Exact'),
      service: z.string(expected('a gRPC service like "shop.Reviews"')).optional(),
      method: z.string(expected('a gRPC method like "List"')).optional(),
    }, expected('a method match {type, service, method}')).superRefine((m, ctx) => {
      if (m.service === undefined && m.method === undefined) ctx.addIssue({ code: 'custom', path: [], message: 'a method match needs service, method or both' })
    }).optional(),
    headers: z.array(headerMatch, expected('a list of header matches')).optional(),
  }, expected('a match {method, headers}')), expected('a list of matches')).optional(),
  filters: z.array(grpcFilter, expected('a list of filters')).optional(),
  backendRefs: z.array(z.strictObject({
    ...backendObjectRef,
    weight: backendWeight.default(1),
    filters: z.array(grpcFilter, expected('a list of filters')).optional(),
  }, expected('a backendRef {name, port, weight}')), expected('a list of backendRefs')).optional(),
}, expected('a rule {matches, filters, backendRefs}'))

export const grpcRouteSchema = z.strictObject({
  apiVersion: z.literal(GATEWAY_API_VERSION),
  kind: z.literal('GRPCRoute'),
  metadata: namespacedMetadata,
  spec: z.strictObject({
    ...routeCommonSpec,
    rules: z.array(grpcRouteRule, expected('a list of rules')).optional(),
  }, expected('an object with parentRefs, hostnames and rules')),
  status: z.unknown().optional(),
})
export type GRPCRoute = z.infer<typeof grpcRouteSchema>
export type Route = HTTPRoute | GRPCRoute
