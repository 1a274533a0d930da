// The Kubernetes API as weft resources: a pure function from what the cluster holds (Namespaces,
// Pods, Services, EndpointSlices, Nodes, as the API returns them) to the resources weft control
// writes to the weft-config bucket. Every resource is validated with validateResource, the check
// every node makes, so what does not fit weft is skipped here, with the reason, instead of being
// rejected on every node. The informers that feed it are mirror.ts.
//
// Decisions:
// - Enrolment: a Pod is mirrored when its namespace has the label `weft.dev/mesh=enabled`; the
//   annotation `weft.dev/enrolled: "false"` on a Pod takes it out (it is still mirrored, so
//   weft knows its identity and it can be STRICT, but its connections are not intercepted).
// - Every Service with a cluster IP is mirrored, in every namespace: the node daemon intercepts
//   the whole Service range, so an enrolled pod's connection to any VIP (kube-dns's TCP port too)
//   needs its Service. Only TCP ports (weft proxies TCP); headless and ExternalName Services have
//   no VIP and are skipped. The Service is mirrored without its selector: its endpoints come from
//   Kubernetes' EndpointSlices, which have already resolved named target ports and readiness.
// - EndpointSlices: IPv4 ones, TCP ports, the fields weft reads.
// - Nodes: a weft Node per Kubernetes Node with an InternalIP and a spec.podCIDR (the daemon
//   listens on the node's host IP: --node-ip and --proxy-ip are status.hostIP).
// - Pods left out: not yet scheduled or without an IPv4 address, host-network pods (they share
//   the node's address and are no workload of their own), and finished ones (Succeeded/Failed:
//   their address may already belong to a new pod).
import type { V1EndpointSlice, V1Namespace, V1Node, V1Pod, V1Service } from '@kubernetes/client-node'

import {
  ENROLLED_ANNOTATION,
  SERVICE_NAME_LABEL,
  WEFT_API_VERSION,
  displayName,
  resourceKey,
  validateResource,
  type Resource,
  type ValidationContext,
} from '../config/resources/index.ts'
import { isIPv4 } from '../config/resources/net.ts'

/** The namespace label that puts a namespace's pods in the mesh. */
export const MESH_LABEL = 'weft.dev/mesh'
export const MESH_LABEL_ENABLED = 'enabled'
/** Marks what the mirror wrote, so it removes only its own resources from the bucket. */
export const SOURCE_ANNOTATION = 'weft.dev/source'
export const SOURCE_KUBERNETES = 'kubernetes'

/** What the API holds, as listed or watched. */
export interface ClusterObjects {
  namespaces: readonly V1Namespace[]
  pods: readonly V1Pod[]
  services: readonly V1Service[]
  endpointSlices: readonly V1EndpointSlice[]
  nodes: readonly V1Node[]
}

/** A Kubernetes object the mirror leaves out, and why (`Pod shop/web: no IPv4 podIP yet`). */
export interface Skipped { object: string; reason: string }

export interface Translation {
  /** key (`pod.shop.web`) → the resource as it goes into the bucket. */
  resources: Map<string, Resource>
  /** Objects that are not mirrored because they cannot be, with the reason. Not listed: pods of unenrolled namespaces. */
  skipped: Skipped[]
}

export function namespaceIsEnrolled(namespace: V1Namespace): boolean {
  return namespace.metadata?.labels?.[MESH_LABEL] === MESH_LABEL_ENABLED
}

/** The whole cluster as weft resources. Pure: the same objects give the same resources. */
export function translateCluster(cluster: ClusterObjects, ctx: ValidationContext): Translation {
  const resources = new Map<string, Resource>()
  const skipped: Skipped[] = []
  const add = (described: string, candidate: Candidate): void => {
    if ('skip' in candidate) {
      skipped.push({ object: described, reason: candidate.skip })
      return
    }
    const result = validateResource(candidate.resource, ctx)
    if (!result.ok) {
      skipped.push({ object: described, reason: `not valid for weft: ${result.errors.map(String).join('; ')}` })
      return
    }
    resources.set(resourceKey(result.resource), candidate.resource as Resource)
  }
  const enrolled = new Set(cluster.namespaces.filter(namespaceIsEnrolled).map((n) => n.metadata?.name))
  for (const node of cluster.nodes) add(`Node ${node.metadata?.name}`, translateNode(node))
  for (const pod of cluster.pods) {
    if (!enrolled.has(pod.metadata?.namespace)) continue
    add(`Pod ${described(pod)}`, translatePod(pod))
  }
  for (const service of cluster.services) add(`Service ${described(service)}`, translateService(service))
  for (const slice of cluster.endpointSlices) add(`EndpointSlice ${described(slice)}`, translateEndpointSlice(slice))
  return { resources, skipped }
}

type Candidate = { resource: unknown } | { skip: string }

function described(object: { metadata?: { name?: string; namespace?: string } }): string {
  return `${object.metadata?.namespace ?? 'default'}/${object.metadata?.name ?? '?'}`
}

/** Labels as weft stores them (Kubernetes' own are already valid label maps). */
function labelsOf(object: { metadata?: { labels?: Record<string, string> } }): { labels?: Record<string, string> } {
  const labels = object.metadata?.labels
  return labels && Object.keys(labels).length > 0 ? { labels: { ...labels } } : {}
}

const SOURCE = { [SOURCE_ANNOTATION]: SOURCE_KUBERNETES }

export function translateNode(node: V1Node): Candidate {
  const address = node.status?.addresses?.find((a) => a.type === 'InternalIP' && isIPv4(a.address))?.address
  if (!address) return { skip: 'no IPv4 InternalIP in status.addresses' }
  const podCIDR = node.spec?.podCIDRs?.find((cidr) => cidr.includes('.')) ?? node.spec?.podCIDR
  if (!podCIDR || !podCIDR.includes('.')) return { skip: 'no IPv4 spec.podCIDR (weft needs each node\'s pod range)' }
  return {
    resource: {
      apiVersion: WEFT_API_VERSION,
      kind: 'Node',
      metadata: { name: node.metadata?.name, ...labelsOf(node), annotations: { ...SOURCE } },
      spec: { address, proxyIp: address, podCIDR },
    },
  }
}

export function translatePod(pod: V1Pod): Candidate {
  const spec = pod.spec
  const status = pod.status
  if (!spec?.nodeName) return { skip: 'not scheduled yet (no spec.nodeName)' }
  if (spec.hostNetwork === true) return { skip: 'uses the host network (it shares the node\'s address; no workload of its own)' }
  if (status?.phase === 'Succeeded' || status?.phase === 'Failed') return { skip: `finished (phase ${status.phase}); its address may belong to a new pod` }
  const podIP = [status?.podIP, ...(status?.podIPs ?? []).map((p) => p.ip)].find((ip): ip is string => ip !== undefined && isIPv4(ip))
  if (!podIP) return { skip: 'no IPv4 podIP yet' }
  const optedOut = pod.metadata?.annotations?.[ENROLLED_ANNOTATION] === 'false'
  const containers = (spec.containers ?? []).map((c) => {
    const ports = (c.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP')
      .map((p) => ({ ...(p.name ? { name: p.name } : {}), containerPort: p.containerPort }))
    return { name: c.name, ...(ports.length > 0 ? { ports } : {}) }
  })
  const podIPs = (status?.podIPs ?? []).map((p) => p.ip).filter((ip) => isIPv4(ip))
  const conditions = (status?.conditions ?? []).map((c) => ({ type: c.type, status: c.status }))
  return {
    resource: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: pod.metadata?.name,
        namespace: pod.metadata?.namespace ?? 'default',
        ...(pod.metadata?.uid ? { uid: pod.metadata.uid } : {}),
        ...labelsOf(pod),
        annotations: { ...SOURCE, ...(optedOut ? { [ENROLLED_ANNOTATION]: 'false' } : {}) },
      },
      spec: {
        nodeName: spec.nodeName,
        serviceAccountName: spec.serviceAccountName ?? 'default',
        ...(containers.length > 0 ? { containers } : {}),
      },
      status: {
        podIP,
        ...(podIPs.length > 0 ? { podIPs: podIPs.map((ip) => ({ ip })) } : {}),
        ...(status?.phase ? { phase: status.phase } : {}),
        ...(conditions.length > 0 ? { conditions } : {}),
        ...(status?.qosClass ? { qosClass: status.qosClass } : {}),
      },
    },
  }
}

export function translateService(service: V1Service): Candidate {
  const spec = service.spec
  if (spec?.type === 'ExternalName') return { skip: 'type ExternalName (no cluster IP)' }
  const clusterIP = [spec?.clusterIP, ...(spec?.clusterIPs ?? [])].find((ip): ip is string => ip !== undefined && isIPv4(ip))
  if (spec?.clusterIP === 'None') return { skip: 'headless (clusterIP: None; weft does not serve headless Services yet)' }
  if (!clusterIP) return { skip: 'no IPv4 cluster IP' }
  const ports = (spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => ({
    ...(p.name ? { name: p.name } : {}),
    port: p.port,
    ...(p.targetPort !== undefined ? { targetPort: p.targetPort } : {}),
    protocol: 'TCP',
    ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
  }))
  if (ports.length === 0) return { skip: 'no TCP port (weft proxies TCP only)' }
  return {
    resource: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: service.metadata?.name, namespace: service.metadata?.namespace ?? 'default', ...labelsOf(service), annotations: { ...SOURCE } },
      // NodePort and LoadBalancer Services are ClusterIP Services too; weft serves that part.
      spec: { type: 'ClusterIP', clusterIP, ports },
    },
  }
}

export function translateEndpointSlice(slice: V1EndpointSlice): Candidate {
  if (slice.addressType !== 'IPv4') return { skip: `addressType ${slice.addressType} (weft reads IPv4 slices only)` }
  if (!slice.metadata?.labels?.[SERVICE_NAME_LABEL]) return { skip: `no ${SERVICE_NAME_LABEL} label (not a Service's slice)` }
  const ports = (slice.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => ({
    ...(p.name !== undefined ? { name: p.name } : {}),
    ...(p.port !== undefined ? { port: p.port } : {}),
    protocol: 'TCP',
    ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
  }))
  if (slice.ports && slice.ports.length > 0 && ports.length === 0) return { skip: 'no TCP port (weft proxies TCP only)' }
  const endpoints = (slice.endpoints ?? []).map((e) => {
    const conditions = Object.fromEntries(Object.entries({ ready: e.conditions?.ready, serving: e.conditions?.serving, terminating: e.conditions?.terminating }).filter(([, v]) => v !== undefined && v !== null))
    const ref = e.targetRef
    return {
      addresses: [...e.addresses],
      ...(Object.keys(conditions).length > 0 ? { conditions } : {}),
      ...(e.hostname ? { hostname: e.hostname } : {}),
      ...(e.nodeName ? { nodeName: e.nodeName } : {}),
      ...(e.zone ? { zone: e.zone } : {}),
      ...(ref ? { targetRef: Object.fromEntries(Object.entries({ kind: ref.kind, namespace: ref.namespace, name: ref.name, uid: ref.uid }).filter(([, v]) => v !== undefined)) } : {}),
    }
  })
  return {
    resource: {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: slice.metadata.name, namespace: slice.metadata.namespace ?? 'default', ...labelsOf(slice), annotations: { ...SOURCE } },
      addressType: 'IPv4',
      endpoints,
      ...(ports.length > 0 ? { ports } : {}),
    },
  }
}

/** Is this stored resource one the mirror wrote (and so may replace or delete)? */
export function isMirrored(value: unknown): boolean {
  const annotations = (value as { metadata?: { annotations?: Record<string, unknown> } } | null)?.metadata?.annotations
  return annotations?.[SOURCE_ANNOTATION] === SOURCE_KUBERNETES
}

/** `Pod shop/web` for messages. */
export function describeResource(resource: Resource): string {
  return `${resource.kind} ${displayName(resource)}`
}
