// weft's own kinds (weft.dev/v1alpha1), for what Kubernetes has no object for: the registry of
// mesh nodes, and the per-destination traffic policy (read by the L7 pipeline). Authorization is
// Istio's AuthorizationPolicy (security.ts).
import { z } from 'zod'

import { clusterMetadata, count, duration, expected, ipv4, ipv4Cidr, namespacedMetadata, percent, serviceTargetRef } from './common.ts'

export const WEFT_API_VERSION = 'weft.dev/v1alpha1'

// --- Node (cluster-scoped) -------------------------------------------------------------------

export const nodeSchema = z.strictObject({
  apiVersion: z.literal(WEFT_API_VERSION),
  kind: z.literal('Node'),
  metadata: clusterMetadata,
  spec: z.strictObject({
    /** The node's address on the underlay: where other nodes' tunnels connect (:15008). */
    address: ipv4,
    /** The address the node's proxy listens on for redirected connections (:15001). */
    proxyIp: ipv4,
    /** The node's pod range; every pod on the node has its address in it. */
    podCIDR: ipv4Cidr,
  }, expected('an object with address, proxyIp and podCIDR')),
})
export type MeshNode = z.infer<typeof nodeSchema>

// --- DestinationPolicy -----------------------------------------------------------------------

const loadBalancer = z.strictObject({
  type: z.enum(['RoundRobin', 'LeastRequest', 'EWMA', 'ConsistentHash'], expected('one of RoundRobin, LeastRequest, EWMA, ConsistentHash')),
  /** What ConsistentHash hashes: exactly one of a request header, a cookie, or the source IP. */
  hashOn: z.strictObject({
    header: z.string(expected('a header name')).min(1, expected('a header name')).optional(),
    cookie: z.string(expected('a cookie name')).min(1, expected('a cookie name')).optional(),
    sourceIP: z.literal(true, expected('true')).optional(),
  }, expected('an object with one of header, cookie, sourceIP')).optional(),
}, expected('an object {type, hashOn}')).superRefine((lb, ctx) => {
  const chosen = lb.hashOn ? Object.keys(lb.hashOn).length : 0
  if (lb.type === 'ConsistentHash' && chosen !== 1) {
    ctx.addIssue({ code: 'custom', path: ['hashOn'], message: 'ConsistentHash needs hashOn with exactly one of header, cookie, sourceIP' })
  }
  if (lb.type !== 'ConsistentHash' && lb.hashOn !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['hashOn'], message: `hashOn applies only to type ConsistentHash, not ${lb.type}` })
  }
})

// Fault injection (weft's own: Gateway API has none). Each fault has its own percentage and its
// own draw, so a request may be both delayed and aborted. faultConfigFromPolicy (src/l7/faults.ts)
// turns this into the injector's FaultConfig.
const faults = z.strictObject({
  /** Hold `percent` of the requests for `fixedDelay` before sending them on. */
  delay: z.strictObject({
    fixedDelay: duration,
    percent,
  }, expected('an object {fixedDelay, percent}')).optional(),
  /** Answer `percent` of the requests with `httpStatus` (gRPC requests: `grpcStatus`) instead of sending them. */
  abort: z.strictObject({
    httpStatus: z.int(expected('an HTTP status from 200 to 599'))
      .min(200, expected('an HTTP status from 200 to 599')).max(599, expected('an HTTP status from 200 to 599')),
    /** Default: gRPC's mapping of httpStatus (503 -> 14 UNAVAILABLE). */
    grpcStatus: z.int(expected('a gRPC status code from 0 to 16'))
      .min(0, expected('a gRPC status code from 0 to 16')).max(16, expected('a gRPC status code from 0 to 16')).optional(),
    percent,
  }, expected('an object {httpStatus, grpcStatus, percent}')).optional(),
}, expected('an object {delay, abort}'))

const destinationPolicySpec = z.strictObject({
  /** The destination by hostname (`reviews`, `reviews.shop`, `reviews.shop.svc.cluster.local`)... */
  host: z.string(expected('a service hostname')).min(1, expected('a service hostname')).optional(),
  /** ...or by reference; exactly one of the two. */
  targetRef: serviceTargetRef.optional(),
  loadBalancer: loadBalancer.optional(),
  circuitBreaker: z.strictObject({
    maxConnections: count.optional(),
    maxPendingRequests: count.optional(),
    maxRequests: count.optional(),
    maxRetries: count.optional(),
  }, expected('an object {maxConnections, maxPendingRequests, maxRequests, maxRetries}')).optional(),
  outlierDetection: z.strictObject({
    consecutive5xx: count.optional(),
    consecutiveGatewayErrors: count.optional(),
    interval: duration.optional(),
    baseEjectionTime: duration.optional(),
    maxEjectionPercent: percent.optional(),
  }, expected('an object {consecutive5xx, consecutiveGatewayErrors, interval, baseEjectionTime, maxEjectionPercent}')).optional(),
  connectionPool: z.strictObject({
    idleTimeout: duration.optional(),
  }, expected('an object {idleTimeout}')).optional(),
  faults: faults.optional(),
  failover: z.strictObject({
    localityFirst: z.boolean(expected('true or false')).optional(),
    spillOverBelowHealthyPercent: percent.optional(),
  }, expected('an object {localityFirst, spillOverBelowHealthyPercent}')).optional(),
}, expected('an object with host or targetRef, and loadBalancer, circuitBreaker, outlierDetection, connectionPool, faults, failover')).superRefine((spec, ctx) => {
  if ((spec.host === undefined) === (spec.targetRef === undefined)) {
    ctx.addIssue({ code: 'custom', path: [], message: 'name the destination with exactly one of host or targetRef' })
  }
})

export const destinationPolicySchema = z.strictObject({
  apiVersion: z.literal(WEFT_API_VERSION),
  kind: z.literal('DestinationPolicy'),
  metadata: namespacedMetadata,
  spec: destinationPolicySpec,
})
export type DestinationPolicy = z.infer<typeof destinationPolicySchema>
/** A DestinationPolicy's `spec.faults`. */
export type DestinationFaults = z.infer<typeof faults>
