// The lab's fixed address and naming plan. Everything here is a pure function of the topology and
// the run id, so `down` can find what `up` made even without state.json.
//
//   host ── wh-<run> 198.18.0.1 ─┐
//                         underlay netns weft-<run>-ul, bridge br0, 198.18.0.0/24
//   node i: netns weft-<run>-<node>, `underlay` 198.18.0.(i+1), bridge `pods` 198.18.i.1 (proxy ip)
//   pod j on node i: netns weft-<run>-<pod>, `eth0` 198.18.i.(j+1), route 198.18.0.0/15 via 198.18.i.1
//   NATS (and weft control) in the underlay netns on br0's 198.18.0.254
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { CGROUP_ANNOTATION, ENROLLED_ANNOTATION, WEFT_API_VERSION } from '../config/resources/index.ts'
import type { Topology } from './topology.ts'
import { podCgroupPath, type CgroupDriver, type QosClass } from '../k8s/kubelet-cgroups.ts'

/** Everything the lab addresses lives in here; lab namespaces route nothing else. */
export const LAB_CIDR = '198.18.0.0/15'
export const UNDERLAY_CIDR = '198.18.0.0/24'
export const HOST_UNDERLAY_IP = '198.18.0.1'
/** The node daemon's admin port (/readyz, /metrics). */
export const ADMIN_PORT = 15020
export const RUN_ID_PATTERN = /^[a-z0-9]{1,8}$/
export const STATE_ROOT = '/run/weft/labs'
export const PIN_ROOT = '/sys/fs/bpf/weft'
export const NETNS_PREFIX = 'weft-'
export const UNDERLAY_SUFFIX = 'ul'
export const HOST_LINK_PREFIX = 'wh-'
/** nats-server listens here, on the underlay bridge: nodes and the host (through wh-<run>) reach it. */
export const NATS_ADDRESS = '198.18.0.254'
export const NATS_PORT = 4222
export const NATS_URL = `nats://${NATS_ADDRESS}:${NATS_PORT}`
/** The NATS users the lab writes creds files for besides one `node-<name>` per node. */
export type LabNatsUser = 'operator' | 'control' | `node-${string}`

export interface LabNode {
  name: string
  /** 1-based position in the topology: fixes the addresses. */
  index: number
  /** Underlay address, where other nodes and the host reach this node. */
  address: string
  /** The node bridge's address: pods reach the node proxy here. */
  proxyIp: string
  podCidr: string
  netns: string
  /** The node's workload cgroup root, where the BPF programs are attached. */
  cgroupRoot: string
  /** Where the node daemon runs: outside every workload root, so the proxy is never redirected. */
  daemonCgroup: string
  pinDir: string
  logFile: string
  /** The veth end on the underlay bridge, in the underlay netns. */
  underlayPort: string
}

export interface LabPod {
  name: string
  node: string
  namespace: string
  ip: string
  labels: Record<string, string>
  enrolled: boolean
  /** The pod's Kubernetes service account (`spec.serviceAccountName`), hence its SPIFFE identity. */
  serviceAccount: string
  netns: string
  /** Where the pod's processes run: `<node root>/<pod>`, or with kubeletCgroups a container cgroup below the kubelet-style pod cgroup. */
  cgroup: string
  /** Kubernetes' pod UID (made from the run id and the pod's name) and QoS class. */
  uid: string
  qosClass: QosClass
  /** With kubeletCgroups: the pod's cgroup is found by the daemon from uid and qosClass, not announced. */
  kubeletCgroups: boolean
  /** The veth end on the node bridge, in the node's netns (the pod's end is `eth0`). */
  nodePort: string
}

export interface LabNats {
  url: string
  address: string
  port: number
  /** Config file, log and JetStream store (`<state>/nats`). */
  dir: string
  storeDir: string
  /** `--creds` files, one per user (`<state>/creds/<user>.json`, 0600). */
  credsDir: string
  /** nats-server's cgroup (`<cg2>/weft-<run>/control/nats`): down kills what is in it. */
  cgroup: string
  /** The context the lab records for `weft apply|get|delete|status`. */
  contextName: string
}

export interface LabControl {
  /** weft control's cgroup (`<cg2>/weft-<run>/control/plane`). */
  cgroup: string
  logFile: string
}

export interface LabPlan {
  runId: string
  cgroupMount: string
  /** `<cg2>/weft-<run>`: the run's whole cgroup tree. */
  cgroupBase: string
  stateDir: string
  stateFile: string
  nats: LabNats
  control: LabControl
  underlayNetns: string
  hostLink: string
  nodes: LabNode[]
  pods: LabPod[]
}

export const labNames = {
  netns: (runId: string, name: string): string => `${NETNS_PREFIX}${runId}-${name}`,
  netnsPrefix: (runId: string): string => `${NETNS_PREFIX}${runId}-`,
  underlayNetns: (runId: string): string => `${NETNS_PREFIX}${runId}-${UNDERLAY_SUFFIX}`,
  hostLink: (runId: string): string => `${HOST_LINK_PREFIX}${runId}`,
  cgroupBase: (cgroupMount: string, runId: string): string => join(cgroupMount, `${NETNS_PREFIX}${runId}`),
  pinDirPrefix: (runId: string): string => `lab-${runId}-`,
  pinDir: (runId: string, node: string): string => join(PIN_ROOT, `lab-${runId}-${node}`),
  stateDir: (runId: string): string => join(STATE_ROOT, runId),
  contextName: (runId: string): string => `lab-${runId}`,
}

/** The kubelet's pod root per cgroup driver. */
const KUBEPODS: Record<CgroupDriver, string> = { systemd: 'kubepods.slice', cgroupfs: 'kubepods' }

/** A pod UID (UUID v4 shape) made from the run id and the pod's name, so a re-read plan agrees. */
export function podUid(runId: string, pod: string): string {
  const hex = createHash('sha256').update(`${runId}/${pod}`).digest('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`
}

/** The one container's cgroup below a kubelet-style pod cgroup, named as containerd (systemd) or the kubelet (cgroupfs) names it. */
function containerCgroup(driver: CgroupDriver, uid: string): string {
  const id = createHash('sha256').update(uid).digest('hex')
  return driver === 'systemd' ? `cri-containerd-${id}.scope` : id
}

export function planLab(topology: Topology, runId: string, cgroupMount: string): LabPlan {
  const cgroupBase = labNames.cgroupBase(cgroupMount, runId)
  const stateDir = labNames.stateDir(runId)
  const nodes = topology.nodes.map((name, i): LabNode => {
    const index = i + 1
    return {
      name,
      index,
      address: `198.18.0.${index + 1}`,
      proxyIp: `198.18.${index}.1`,
      podCidr: `198.18.${index}.0/24`,
      netns: labNames.netns(runId, name),
      // With kubeletCgroups, the kubelet's pod root below the node's cgroup (the daemon then finds pods the kubelet way).
      cgroupRoot: topology.kubeletCgroups === undefined ? join(cgroupBase, 'nodes', name) : join(cgroupBase, 'nodes', name, KUBEPODS[topology.kubeletCgroups]),
      daemonCgroup: join(cgroupBase, 'daemons', name),
      pinDir: labNames.pinDir(runId, name),
      logFile: join(stateDir, `${name}.log`),
      underlayPort: `node${index}`,
    }
  })
  const podsOnNode = new Map<string, number>()
  const pods = topology.pods.map((pod): LabPod => {
    const node = nodes.find((n) => n.name === pod.node)
    if (!node) throw new Error(`planLab: pod ${pod.name} names unknown node ${pod.node} (validate the topology first)`)
    const j = (podsOnNode.get(node.name) ?? 0) + 1
    podsOnNode.set(node.name, j)
    const uid = podUid(runId, pod.name)
    const driver = topology.kubeletCgroups
    return {
      name: pod.name,
      node: node.name,
      namespace: pod.namespace,
      ip: `198.18.${node.index}.${j + 1}`,
      labels: { ...pod.labels },
      enrolled: pod.enrolled,
      serviceAccount: pod.serviceAccount,
      netns: labNames.netns(runId, pod.name),
      cgroup: driver === undefined ? join(node.cgroupRoot, pod.name) : join(node.cgroupRoot, podCgroupPath(driver, uid, pod.qosClass), containerCgroup(driver, uid)),
      uid,
      qosClass: pod.qosClass,
      kubeletCgroups: driver !== undefined,
      nodePort: `pod${j}`,
    }
  })
  return {
    runId,
    cgroupMount,
    cgroupBase,
    stateDir,
    stateFile: join(stateDir, 'state.json'),
    nats: {
      url: NATS_URL,
      address: NATS_ADDRESS,
      port: NATS_PORT,
      dir: join(stateDir, 'nats'),
      storeDir: join(stateDir, 'nats', 'jetstream'),
      credsDir: join(stateDir, 'creds'),
      cgroup: join(cgroupBase, 'control', 'nats'),
      contextName: labNames.contextName(runId),
    },
    control: { cgroup: join(cgroupBase, 'control', 'plane'), logFile: join(stateDir, 'control.log') },
    underlayNetns: labNames.underlayNetns(runId),
    hostLink: labNames.hostLink(runId),
    nodes,
    pods,
  }
}

/** The `--creds` file of one NATS user of the lab. */
export function credsFile(plan: LabPlan, user: LabNatsUser): string {
  return join(plan.nats.credsDir, `${user}.json`)
}

/**
 * What the lab registers through weft control: one `weft.dev/v1alpha1` Node per node and one
 * `v1` Pod per pod (labels and service account from the topology, the pod's cgroup and
 * enrollment as annotations; with kubeletCgroups the UID and QoS class instead of the cgroup).
 */
export function labResources(plan: LabPlan): unknown[] {
  const nodes = plan.nodes.map((node) => ({
    apiVersion: WEFT_API_VERSION,
    kind: 'Node',
    metadata: { name: node.name },
    spec: { address: node.address, proxyIp: node.proxyIp, podCIDR: node.podCidr },
  }))
  const pods = plan.pods.map((pod) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: pod.name,
      namespace: pod.namespace,
      ...(pod.kubeletCgroups ? { uid: pod.uid } : {}),
      labels: { ...pod.labels },
      // A kubelet-style pod is found by its node from uid and qosClass, as on Kubernetes.
      annotations: pod.kubeletCgroups ? { [ENROLLED_ANNOTATION]: String(pod.enrolled) } : { [CGROUP_ANNOTATION]: pod.cgroup, [ENROLLED_ANNOTATION]: String(pod.enrolled) },
    },
    spec: { nodeName: pod.node, serviceAccountName: pod.serviceAccount },
    status: { podIP: pod.ip, phase: 'Running', ...(pod.kubeletCgroups ? { qosClass: pod.qosClass } : {}) },
  }))
  return [...nodes, ...pods]
}
