// Istio's security kinds (security.istio.io/v1), the policy language most mesh users know:
// AuthorizationPolicy (who may call which pods, on which ports and HTTP operations) and
// PeerAuthentication (whether a pod accepts only mutual-TLS peers). The shapes are Istio's; what
// weft cannot honour yet is refused with a message saying so, never accepted and ignored.
// src/policy compiles these into the decisions the data path asks for.
import { z } from 'zod'

import { expected, labelMap, namespacedMetadata } from './common.ts'
import { isIPv4, parseIpv4Cidr } from './net.ts'

export const ISTIO_SECURITY_API_VERSION = 'security.istio.io/v1'

/**
 * Istio's root namespace: an AuthorizationPolicy here applies to every namespace (to the pods its
 * selector picks, or to every pod without one); a PeerAuthentication here without a selector is
 * the mesh-wide default.
 */
export const ROOT_NAMESPACE = 'weft-system'

/** A field weft refuses: any value is an error with this message. */
function refused(message: string): z.ZodOptional<z.ZodNever> {
  return z.never({ error: message }).optional()
}

/** Istio's wildcard forms: `*` alone, `prefix*`, `*suffix`, or an exact value. */
function wildcardValue(what: string): z.ZodString {
  return z.string(expected(what))
    .min(1, expected(what))
    .refine((value) => !/\s/.test(value), expected(`${what} (no spaces)`))
    .refine((value) => value === '*' || !value.slice(1, -1).includes('*'), {
      error: (issue) => `expected ${what}: a "*" may only be the whole value, its first or its last character, got ${JSON.stringify(issue.input)}`,
    })
}

function nonEmptyList<T extends z.ZodType>(item: T, what: string): z.ZodArray<T> {
  return z.array(item, expected(`a list of ${what}`)).min(1, expected(`at least one of ${what}`))
}

const principal = wildcardValue('a principal like "cluster.local/ns/shop/sa/web" (or with "spiffe://"), "*", "prefix*" or "*suffix"')
const namespacePattern = wildcardValue('a namespace like "shop", "*", "prefix*" or "*suffix"')
const ipBlock = z.string(expected('an IPv4 address or CIDR like "198.18.1.0/24"'))
  .refine((text) => isIPv4(text) || parseIpv4Cidr(text) !== undefined, expected('an IPv4 address or CIDR like "198.18.1.0/24"'))
const port = z.string(expected('a port number as a string, like "8080" (quote it)'))
  .refine((text) => /^[0-9]{1,5}$/.test(text) && Number(text) >= 1 && Number(text) <= 65535, expected('a port number from 1 to 65535 as a string, like "8080"'))
const method = wildcardValue('an HTTP method like "GET", "*", "prefix*" or "*suffix"')
const path = wildcardValue('a path like "/api/users", "/api/*", "*/info" or "*"')
const host = wildcardValue('a host like "reviews.shop.svc.cluster.local", "*.example.com", "api.*" or "*"')

/** A refinement about the whole object runs only when its fields are fine (an unknown field is
 *  reported alone, not also as "empty"). */
const onlyWhenValid = (payload: { issues: readonly unknown[] }): boolean => payload.issues.length === 0

const SOURCE_FIELDS = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks'] as const
const OPERATION_FIELDS = ['ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths', 'hosts', 'notHosts'] as const
/** Operation fields only an HTTP request has: at L4 (opaque TCP, or the decision made when a
 *  connection is accepted) an ALLOW rule using them does not match, a DENY rule ignores them. */
export const HTTP_OPERATION_FIELDS = ['methods', 'notMethods', 'paths', 'notPaths', 'hosts', 'notHosts'] as const

const source = z.strictObject({
  principals: nonEmptyList(principal, 'principals').optional(),
  notPrincipals: nonEmptyList(principal, 'principals').optional(),
  namespaces: nonEmptyList(namespacePattern, 'namespaces').optional(),
  notNamespaces: nonEmptyList(namespacePattern, 'namespaces').optional(),
  ipBlocks: nonEmptyList(ipBlock, 'IPv4 addresses or CIDRs').optional(),
  notIpBlocks: nonEmptyList(ipBlock, 'IPv4 addresses or CIDRs').optional(),
  requestPrincipals: refused('requestPrincipals needs JWT authentication (RequestAuthentication), which weft does not support: match the peer with principals or namespaces'),
  notRequestPrincipals: refused('notRequestPrincipals needs JWT authentication (RequestAuthentication), which weft does not support: match the peer with notPrincipals or notNamespaces'),
  remoteIpBlocks: refused('remoteIpBlocks (the client address from X-Forwarded-For) is not supported: weft has no gateway; use ipBlocks, the connection\'s source address'),
  notRemoteIpBlocks: refused('notRemoteIpBlocks (the client address from X-Forwarded-For) is not supported: weft has no gateway; use notIpBlocks, the connection\'s source address'),
}, expected(`an object with any of ${SOURCE_FIELDS.join(', ')}`)).refine(
  (value) => SOURCE_FIELDS.some((field) => value[field] !== undefined),
  { error: `expected at least one of ${SOURCE_FIELDS.join(', ')} (an empty source is an error, as in Istio: leave out "from" to match every source)`, when: onlyWhenValid },
)

const operation = z.strictObject({
  ports: nonEmptyList(port, 'ports').optional(),
  notPorts: nonEmptyList(port, 'ports').optional(),
  methods: nonEmptyList(method, 'methods').optional(),
  notMethods: nonEmptyList(method, 'methods').optional(),
  paths: nonEmptyList(path, 'paths').optional(),
  notPaths: nonEmptyList(path, 'paths').optional(),
  hosts: nonEmptyList(host, 'hosts').optional(),
  notHosts: nonEmptyList(host, 'hosts').optional(),
}, expected(`an object with any of ${OPERATION_FIELDS.join(', ')}`)).refine(
  (value) => OPERATION_FIELDS.some((field) => value[field] !== undefined),
  { error: `expected at least one of ${OPERATION_FIELDS.join(', ')} (an empty operation is an error, as in Istio: leave out "to" to match every operation)`, when: onlyWhenValid },
)

const rule = z.strictObject({
  /** Any entry may match (OR); absent: every source. */
  from: nonEmptyList(z.strictObject({ source }, expected('an object {source}')), 'sources ({source: {...}})').optional(),
  /** Any entry may match (OR); absent: every operation. */
  to: nonEmptyList(z.strictObject({ operation }, expected('an object {operation}')), 'operations ({operation: {...}})').optional(),
  when: refused('conditions (when) are not supported yet: express the rule with from (principals, namespaces, ipBlocks) and to (ports, methods, paths, hosts)'),
}, expected('a rule {from, to}'))

const ACTION_MESSAGE = 'one of "ALLOW" (the default) or "DENY"'

const authorizationPolicySpec = z.strictObject({
  /** Pods in the policy's namespace (every namespace for the root namespace) whose labels include
   *  all of these; absent: every pod. */
  selector: z.strictObject({ matchLabels: labelMap.optional() }, expected('an object {matchLabels}')).optional(),
  targetRef: refused('targetRef is not supported yet: select the pods with selector.matchLabels'),
  targetRefs: refused('targetRefs is not supported yet: select the pods with selector.matchLabels'),
  action: z.enum(['ALLOW', 'DENY'], {
    error: (issue) => issue.input === 'AUDIT' || issue.input === 'CUSTOM'
      ? `action ${issue.input} is not supported (weft has no audit sink and no external authorizer): use ALLOW or DENY`
      : issue.input === undefined ? `missing: expected ${ACTION_MESSAGE}` : `expected ${ACTION_MESSAGE}, got ${JSON.stringify(issue.input)}`,
  }).default('ALLOW'),
  provider: refused('provider goes with action CUSTOM, which weft does not support: use ALLOW or DENY'),
  /** ALLOW with no rules allows nothing (it denies every request to the selected pods); DENY
   *  with no rules denies nothing; `rules: [{}]` matches every request. */
  rules: z.array(rule, expected('a list of rules')).optional(),
}, expected('an object with selector, action and rules'))

export const authorizationPolicySchema = z.strictObject({
  apiVersion: z.literal(ISTIO_SECURITY_API_VERSION),
  kind: z.literal('AuthorizationPolicy'),
  metadata: namespacedMetadata,
  /** `spec: {}` (or no spec) is ALLOW with no rules: deny every request to the selected pods. */
  spec: authorizationPolicySpec.default({ action: 'ALLOW' }),
})
export type AuthorizationPolicy = z.infer<typeof authorizationPolicySchema>
export type AuthorizationRule = z.infer<typeof rule>
export type AuthorizationSource = z.infer<typeof source>
export type AuthorizationOperation = z.infer<typeof operation>

// --- PeerAuthentication ----------------------------------------------------------------------

export const MTLS_MODES = ['STRICT', 'PERMISSIVE', 'UNSET'] as const
export type MtlsMode = (typeof MTLS_MODES)[number]

const peerAuthenticationSpec = z.strictObject({
  /** Pods in the policy's namespace whose labels include all of these; absent: the whole namespace
   *  (the whole mesh in the root namespace). */
  selector: z.strictObject({ matchLabels: labelMap.optional() }, expected('an object {matchLabels}')).optional(),
  mtls: z.strictObject({
    mode: z.enum(MTLS_MODES, {
      error: (issue) => issue.input === 'DISABLE'
        ? 'mode DISABLE is not supported: weft always encrypts traffic between nodes; use PERMISSIVE to accept plaintext from outside the mesh'
        : issue.input === undefined ? 'missing: expected one of "STRICT", "PERMISSIVE", "UNSET"' : `expected one of "STRICT", "PERMISSIVE", "UNSET", got ${JSON.stringify(issue.input)}`,
    }).default('UNSET'),
  }, expected('an object {mode}')).optional(),
  portLevelMtls: refused('portLevelMtls is not supported yet: set one mode for the selected pods with mtls.mode'),
}, expected('an object with selector and mtls'))

export const peerAuthenticationSchema = z.strictObject({
  apiVersion: z.literal(ISTIO_SECURITY_API_VERSION),
  kind: z.literal('PeerAuthentication'),
  metadata: namespacedMetadata,
  spec: peerAuthenticationSpec.default({}),
})
export type PeerAuthentication = z.infer<typeof peerAuthenticationSchema>
