// The registry of kinds weft understands: for each, its apiVersion, its schema and whether it
// lives in a namespace. Adding a kind is one entry here plus its schema.
import type { z } from 'zod'

import { endpointSliceSchema, podSchema, serviceSchema, type EndpointSlice, type Pod, type Service } from './core.ts'
import { GATEWAY_API_VERSION, grpcRouteSchema, httpRouteSchema, type GRPCRoute, type HTTPRoute } from './gateway.ts'
import { authorizationPolicySchema, ISTIO_SECURITY_API_VERSION, peerAuthenticationSchema, type AuthorizationPolicy, type PeerAuthentication } from './security.ts'
import { destinationPolicySchema, nodeSchema, WEFT_API_VERSION, type DestinationPolicy, type MeshNode } from './weft.ts'

export interface KindInfo {
  readonly kind: string
  readonly apiVersion: string
  readonly namespaced: boolean
  readonly schema: z.ZodType
}

export const KINDS = {
  Service: { kind: 'Service', apiVersion: 'v1', namespaced: true, schema: serviceSchema },
  Pod: { kind: 'Pod', apiVersion: 'v1', namespaced: true, schema: podSchema },
  EndpointSlice: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', namespaced: true, schema: endpointSliceSchema },
  Node: { kind: 'Node', apiVersion: WEFT_API_VERSION, namespaced: false, schema: nodeSchema },
  DestinationPolicy: { kind: 'DestinationPolicy', apiVersion: WEFT_API_VERSION, namespaced: true, schema: destinationPolicySchema },
  AuthorizationPolicy: { kind: 'AuthorizationPolicy', apiVersion: ISTIO_SECURITY_API_VERSION, namespaced: true, schema: authorizationPolicySchema },
  PeerAuthentication: { kind: 'PeerAuthentication', apiVersion: ISTIO_SECURITY_API_VERSION, namespaced: true, schema: peerAuthenticationSchema },
  HTTPRoute: { kind: 'HTTPRoute', apiVersion: GATEWAY_API_VERSION, namespaced: true, schema: httpRouteSchema },
  GRPCRoute: { kind: 'GRPCRoute', apiVersion: GATEWAY_API_VERSION, namespaced: true, schema: grpcRouteSchema },
} as const satisfies Record<string, KindInfo>

export type Kind = keyof typeof KINDS
export type Resource = Service | Pod | EndpointSlice | MeshNode | DestinationPolicy | AuthorizationPolicy | PeerAuthentication | HTTPRoute | GRPCRoute
export type ResourceOfKind<K extends Kind> = Extract<Resource, { kind: K }>

const byLowerKind = new Map<string, KindInfo>(Object.values(KINDS).map((info) => [info.kind.toLowerCase(), info]))

export function isKind(kind: unknown): kind is Kind {
  return typeof kind === 'string' && Object.hasOwn(KINDS, kind)
}

/** The kind for a key's lowercase segment or a CLI argument (`service`, `HTTPRoute`, `httproute`). */
export function kindInfo(kind: string): KindInfo | undefined {
  return byLowerKind.get(kind.toLowerCase())
}

/** `Service (v1), Pod (v1), ...` for error messages. */
export function knownKindsList(): string {
  return Object.values(KINDS).map((info) => `${info.kind} (${info.apiVersion})`).join(', ')
}
