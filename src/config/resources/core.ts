// Kubernetes core kinds as weft reads them: v1 Service, a subset of v1 Pod, and
// discovery.k8s.io/v1 EndpointSlice. Field names are Kubernetes' own so the same YAML works
// against a cluster; what weft does not model is an error rather than silently ignored.
import { z } from 'zod'

import { dnsLabel, expected, ipv4, labelMap, namespacedMetadata, objectName, portNumber, show } from './common.ts'

const IANA_SVC_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$/
/** A port name: IANA service name rules (at most 15 lowercase letters/digits/"-", one letter at least). */
export const portName = z.string(expected('a port name (at most 15 lowercase letters, digits and "-")'))
  .max(15, expected('a port name (at most 15 lowercase letters, digits and "-")'))
  .regex(IANA_SVC_NAME, expected('a port name (at most 15 lowercase letters, digits and "-")'))

const servicePort = z.strictObject({
  name: portName.optional(),
  port: portNumber,
  /** The pod's port: a number, or the name of a container port. Defaults to `port`. */
  targetPort: z.union([portNumber, portName], expected('a port number from 1 to 65535 or a port name')).optional(),
  protocol: z.literal('TCP', expected('"TCP" (the only protocol weft proxies)')).default('TCP'),
  /** What the port speaks (http, h2c, grpc, tcp, kubernetes.io/h2c, ...): free text, as in Kubernetes. */
  appProtocol: z.string(expected('a string such as "http", "h2c", "grpc" or "tcp"')).optional(),
}, expected('a port {name, port, targetPort, protocol, appProtocol}'))
  .transform((port) => ({ ...port, targetPort: port.targetPort ?? port.port }))

const serviceSpec = z.strictObject({
  type: z.literal('ClusterIP', expected('"ClusterIP" (the only Service type weft serves)')).default('ClusterIP'),
  // Required: weft does not allocate VIPs. Whether it lies in the VIP range depends on the
  // ValidationContext and is checked by validateResource.
  clusterIP: z.string(expected('an IPv4 address in the service VIP range (weft does not allocate VIPs: choose one)'))
    .refine((value) => value !== 'None', { error: 'headless services (clusterIP: None) are not supported yet: give the service a VIP' })
    .pipe(ipv4),
  ports: z.array(servicePort, expected('a list of ports')).min(1, expected('at least one port')),
  selector: labelMap.optional(),
}, expected('an object with clusterIP, ports and selector'))
  .superRefine((spec, ctx) => {
    const names = new Map<string, number>()
    const numbers = new Map<number, number>()
    spec.ports.forEach((port, i) => {
      if (spec.ports.length > 1 && port.name === undefined) {
        ctx.addIssue({ code: 'custom', path: ['ports', i, 'name'], message: 'a name is required when a service has more than one port' })
      }
      if (port.name !== undefined) {
        const first = names.get(port.name)
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['ports', i, 'name'], message: `duplicate port name "${port.name}" (also ports[${first}])` })
        else names.set(port.name, i)
      }
      const firstNumber = numbers.get(port.port)
      if (firstNumber !== undefined) ctx.addIssue({ code: 'custom', path: ['ports', i, 'port'], message: `duplicate port ${port.port} (also ports[${firstNumber}])` })
      else numbers.set(port.port, i)
    })
  })

export const serviceSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Service'),
  metadata: namespacedMetadata,
  spec: serviceSpec,
  // What the API server reports (status.loadBalancer): accepted so `kubectl get -o yaml` applies, ignored.
  status: z.unknown().optional(),
})
export type Service = z.infer<typeof serviceSchema>
export type ServicePort = Service['spec']['ports'][number]

// --- Pod -------------------------------------------------------------------------------------

/** Annotation naming the pod's cgroup v2 directory (the lab's addition; on Kubernetes it is found from the pod UID). */
export const CGROUP_ANNOTATION = 'weft.dev/cgroup'
/** Annotation taking a pod out of the mesh: "false"; absent or "true" means enrolled. */
export const ENROLLED_ANNOTATION = 'weft.dev/enrolled'

const containerPort = z.strictObject({
  name: portName.optional(),
  containerPort: portNumber,
  protocol: z.literal('TCP', expected('"TCP"')).default('TCP'),
}, expected('a container port {name, containerPort, protocol}'))

// weft runs no containers: a container's ports are read (named targetPorts resolve against them),
// every other container field is accepted and ignored so real pod manifests apply.
const container = z.looseObject({
  name: dnsLabel,
  ports: z.array(containerPort, expected('a list of container ports')).optional(),
}, expected('a container {name, ports, ...}'))

const podSpec = z.strictObject({
  nodeName: objectName,
  serviceAccountName: dnsLabel.default('default'),
  containers: z.array(container, expected('a list of containers')).optional(),
}, expected('an object with nodeName, serviceAccountName, containers'))

const podCondition = z.strictObject({
  type: z.string(expected('a condition type such as "Ready"')),
  status: z.enum(['True', 'False', 'Unknown'], expected('"True", "False" or "Unknown"')),
}, expected('a condition {type, status}'))

const podStatus = z.strictObject({
  podIP: ipv4,
  podIPs: z.array(z.strictObject({ ip: ipv4 }), expected('a list of {ip}')).optional(),
  phase: z.enum(['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'], expected('a pod phase (Pending, Running, Succeeded, Failed, Unknown)')).optional(),
  conditions: z.array(podCondition, expected('a list of conditions')).optional(),
  /** Kubernetes' QoS class: with metadata.uid it says where the kubelet put the pod's cgroup. */
  qosClass: z.enum(['Guaranteed', 'Burstable', 'BestEffort'], expected('a QoS class (Guaranteed, Burstable, BestEffort)')).optional(),
}, expected('an object with podIP (and optionally podIPs, phase, conditions, qosClass)'))

export const podSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Pod'),
  metadata: namespacedMetadata,
  spec: podSpec,
  status: podStatus,
}).superRefine((pod, ctx) => {
  const annotations = pod.metadata.annotations ?? {}
  const cgroup = annotations[CGROUP_ANNOTATION]
  if (cgroup !== undefined && !/^\/[^\0]*$/.test(cgroup)) {
    ctx.addIssue({ code: 'custom', path: ['metadata', 'annotations', CGROUP_ANNOTATION], message: `expected an absolute cgroup v2 path like "/sys/fs/cgroup/weft/pod1", got ${show(cgroup)}` })
  }
  if (cgroup !== undefined && cgroup.split('/').includes('..')) {
    ctx.addIssue({ code: 'custom', path: ['metadata', 'annotations', CGROUP_ANNOTATION], message: `expected a cgroup path without "..", got ${show(cgroup)}` })
  }
  const enrolled = annotations[ENROLLED_ANNOTATION]
  if (enrolled !== undefined && enrolled !== 'true' && enrolled !== 'false') {
    ctx.addIssue({ code: 'custom', path: ['metadata', 'annotations', ENROLLED_ANNOTATION], message: `expected "true" or "false", got ${show(enrolled)}` })
  }
})
export type Pod = z.infer<typeof podSchema>

/** Ready as a Service endpoint: running (or phase unknown) and no Ready condition saying otherwise. */
export function podIsReady(pod: Pod): boolean {
  if (pod.status.phase === 'Succeeded' || pod.status.phase === 'Failed') return false
  const ready = pod.status.conditions?.find((c) => c.type === 'Ready')
  return ready === undefined || ready.status === 'True'
}

export function podIsEnrolled(pod: Pod): boolean {
  return pod.metadata.annotations?.[ENROLLED_ANNOTATION] !== 'false'
}

// --- EndpointSlice ---------------------------------------------------------------------------

/** The label tying an EndpointSlice to its Service (discovery.k8s.io). */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name'

const endpoint = z.strictObject({
  addresses: z.array(ipv4, expected('a list of IPv4 addresses')).min(1, expected('at least one address')),
  conditions: z.strictObject({
    ready: z.boolean(expected('true or false')).optional(),
    serving: z.boolean(expected('true or false')).optional(),
    terminating: z.boolean(expected('true or false')).optional(),
  }, expected('an object {ready, serving, terminating}')).optional(),
  hostname: dnsLabel.optional(),
  nodeName: objectName.optional(),
  zone: z.string(expected('a zone name')).optional(),
  targetRef: z.strictObject({
    apiVersion: z.string().optional(),
    kind: z.string(expected('a kind such as "Pod"')).optional(),
    namespace: dnsLabel.optional(),
    name: objectName.optional(),
    uid: z.string().optional(),
    resourceVersion: z.string().optional(),
  }, expected('an object reference {kind, namespace, name}')).optional(),
}, expected('an endpoint {addresses, conditions, nodeName, targetRef}'))

const endpointPort = z.strictObject({
  name: z.union([portName, z.literal('')], expected('a port name')).optional(),
  port: portNumber.optional(),
  protocol: z.literal('TCP', expected('"TCP"')).default('TCP'),
  appProtocol: z.string(expected('a string such as "http"')).optional(),
}, expected('a port {name, port, protocol, appProtocol}'))

export const endpointSliceSchema = z.strictObject({
  apiVersion: z.literal('discovery.k8s.io/v1'),
  kind: z.literal('EndpointSlice'),
  metadata: namespacedMetadata,
  addressType: z.literal('IPv4', expected('"IPv4" (IPv6 and FQDN endpoints are not supported)')),
  endpoints: z.array(endpoint, expected('a list of endpoints')),
  ports: z.array(endpointPort, expected('a list of ports')).optional(),
}).superRefine((slice, ctx) => {
  if (!slice.metadata.labels?.[SERVICE_NAME_LABEL]) {
    ctx.addIssue({ code: 'custom', path: ['metadata', 'labels'], message: `expected the label "${SERVICE_NAME_LABEL}" naming the slice's Service` })
  }
})
export type EndpointSlice = z.infer<typeof endpointSliceSchema>

/** Ready unless the slice says otherwise (Kubernetes: absent `ready` means ready). */
export function endpointIsReady(e: EndpointSlice['endpoints'][number]): boolean {
  return e.conditions?.ready !== false
}
