// The lab's topology: which nodes exist and which pods run on them. Read from a YAML or JSON file
// (JSON is YAML) or built from the `--nodes N --pods M` shorthand; either way it is validated
// here, once, and every problem is reported as one line naming the file, the line and the entry.
import { LineCounter, parseDocument, type Document } from 'yaml'
import { LabError } from './errors.ts'
import { QOS_CLASSES, type CgroupDriver, type QosClass } from '../k8s/kubelet-cgroups.ts'

export interface TopologyPod {
  name: string
  node: string
  /** Kubernetes namespace of the workload (not a network namespace). */
  namespace: string
  labels: Record<string, string>
  /** Whether the mesh intercepts the pod's traffic; `enrolled: false` pods are plain neighbours. */
  enrolled: boolean
  /** Kubernetes service account: the pod's identity is spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>. */
  serviceAccount: string
  /** Kubernetes QoS class; with `kubeletCgroups` it decides where the pod's cgroup is. Default BestEffort. */
  qosClass: QosClass
}

export interface Topology {
  nodes: string[]
  pods: TopologyPod[]
  /**
   * Lay the pod cgroups out as a kubelet with this cgroup driver would (kubepods.slice/... or
   * kubepods/..., a container cgroup below each pod) instead of `<node>/<pod>`: the daemons then
   * find them from the pods' UID and QoS class (src/k8s/kubelet-cgroups.ts). Default: the lab's own.
   */
  kubeletCgroups?: CgroupDriver
}

/** What code may pass to labUp: like a topology file, with defaults (namespace "default", no
 *  labels, enrolled, service account "default") left out. */
export interface TopologyInput {
  nodes: string[]
  pods?: { name: string; node: string; namespace?: string; labels?: Record<string, string>; enrolled?: boolean; serviceAccount?: string; qosClass?: QosClass }[]
  kubeletCgroups?: CgroupDriver
}

/** Node and pod names: they end up in network namespace and cgroup names. */
export const NAME_PATTERN = /^[a-z][a-z0-9-]{0,14}$/
/** `ul` is the underlay namespace (`weft-<run>-ul`), so no node or pod may take it. */
const RESERVED_NAMES = new Set(['ul'])
/** Node i owns 198.18.i.0/24 and 198.18.0.(i+1); pod j on a node gets 198.18.i.(j+1). */
export const MAX_NODES = 253
export const MAX_PODS_PER_NODE = 253

const TOP_KEYS = ['nodes', 'pods', 'kubeletCgroups']
const POD_KEYS = ['name', 'node', 'namespace', 'labels', 'enrolled', 'serviceAccount', 'qosClass']
/** Namespaces and service accounts: DNS-1123 labels, as Kubernetes names them. */
const NAMESPACE_PATTERN = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
const LABEL_KEY_PATTERN = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/
const LABEL_VALUE_PATTERN = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/

type Path = (string | number)[]

/** Where an entry is, as `file:line` when the document knows its position. */
type Locate = (path: Path) => string

export function parseTopology(text: string, fileName: string): Topology {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false })
  const error = doc.errors[0]
  if (error) {
    const position = lineCounter.linePos(error.pos[0])
    const where = `${fileName}:${position.line}:${position.col}`
    const reason = (error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '')
    throw new LabError(`${where}: malformed topology (not valid YAML or JSON): ${reason}`)
  }
  const locate = (path: Path): string => {
    const line = lineOf(doc, lineCounter, path)
    return line === undefined ? fileName : `${fileName}:${line}`
  }
  return validateTopology(doc.toJS({ maxAliasCount: 100 }) as unknown, locate)
}

function lineOf(doc: Document, lineCounter: LineCounter, path: Path): number | undefined {
  for (let length = path.length; length >= 0; length--) {
    const node = length === 0 ? doc.contents : doc.getIn(path.slice(0, length), true)
    if (node && typeof node === 'object' && 'range' in node && Array.isArray(node.range)) {
      const offset = node.range[0]
      if (typeof offset === 'number') return lineCounter.linePos(offset).line
    }
  }
  return undefined
}

/** `--nodes N --pods M`: nodes node1..nodeN, each with M enrolled pods `<node>-pod<j>`. */
export function topologyFromShorthand(nodes: number, podsPerNode: number): Topology {
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) {
    throw new LabError(`--nodes must be a whole number from 1 to ${MAX_NODES} (got ${nodes})`)
  }
  if (!Number.isInteger(podsPerNode) || podsPerNode < 0 || podsPerNode > MAX_PODS_PER_NODE) {
    throw new LabError(`--pods must be a whole number from 0 to ${MAX_PODS_PER_NODE} (got ${podsPerNode})`)
  }
  const topology: Topology = { nodes: [], pods: [] }
  for (let i = 1; i <= nodes; i++) {
    const node = `node${i}`
    topology.nodes.push(node)
    for (let j = 1; j <= podsPerNode; j++) {
      topology.pods.push({ name: `${node}-pod${j}`, node, namespace: 'default', labels: {}, enrolled: true, serviceAccount: 'default', qosClass: 'BestEffort' })
    }
  }
  return topology
}

/** Validates an already-parsed value (for topologies built in code, e.g. by tests). */
export function validateTopology(value: unknown, locate: Locate | string = 'topology'): Topology {
  const where: Locate = typeof locate === 'string' ? () => locate : locate
  const fail = (path: Path, message: string): never => {
    throw new LabError(`${where(path)}: ${message}`)
  }
  if (value === null || value === undefined) fail([], 'topology is empty (expected `nodes:` and `pods:`)')
  if (!isPlainObject(value)) fail([], `topology must be a mapping with \`nodes\` and \`pods\`, not ${describe(value)}`)
  const top = value as Record<string, unknown>
  for (const key of Object.keys(top)) {
    if (!TOP_KEYS.includes(key)) fail([key], `unknown key "${key}" (allowed: ${TOP_KEYS.join(', ')})`)
  }

  const nodesValue = top['nodes']
  if (!Array.isArray(nodesValue) || nodesValue.length === 0) {
    fail(['nodes'], '`nodes` must be a non-empty list of node names, e.g. `nodes: [node1, node2]`')
  }
  const nodes: string[] = []
  ;(nodesValue as unknown[]).forEach((node, i) => {
    const path = ['nodes', i]
    if (typeof node !== 'string') return fail(path, `nodes[${i}]: a node is a name, not ${describe(node)}`)
    checkName(node, `nodes[${i}]`, path, fail)
    if (nodes.includes(node)) fail(path, `nodes[${i}]: duplicate node "${node}"`)
    nodes.push(node)
  })
  if (nodes.length > MAX_NODES) fail(['nodes'], `at most ${MAX_NODES} nodes fit the address plan (got ${nodes.length})`)

  const podsValue = top['pods'] ?? []
  if (!Array.isArray(podsValue)) fail(['pods'], '`pods` must be a list of pods, e.g. `- {name: client, node: node1}`')
  const pods: TopologyPod[] = []
  const podsPerNode = new Map<string, number>()
  ;(podsValue as unknown[]).forEach((entry, i) => {
    const path: Path = ['pods', i]
    let label = `pods[${i}]`
    if (!isPlainObject(entry)) return fail(path, `${label}: a pod is a mapping like \`{name: client, node: node1}\`, not ${describe(entry)}`)
    const pod = entry as Record<string, unknown>
    if (typeof pod['name'] === 'string') label = `pods[${i}] (${pod['name']})`
    for (const key of Object.keys(pod)) {
      if (!POD_KEYS.includes(key)) fail([...path, key], `${label}: unknown key "${key}" (allowed: ${POD_KEYS.join(', ')})`)
    }
    const name = pod['name']
    if (typeof name !== 'string') return fail(path, `${label}: \`name\` is required and must be a string`)
    checkName(name, `${label}: name`, [...path, 'name'], fail)
    if (pods.some((other) => other.name === name)) fail([...path, 'name'], `${label}: duplicate pod "${name}" (pod names are unique in the lab)`)
    if (nodes.includes(name)) fail([...path, 'name'], `${label}: "${name}" is already a node name (pods and nodes share the namespace names)`)

    const node = pod['node']
    if (typeof node !== 'string') return fail(path, `${label}: \`node\` is required and must be a node name`)
    if (!nodes.includes(node)) fail([...path, 'node'], `${label}: unknown node "${node}" (nodes: ${nodes.join(', ')})`)
    const count = (podsPerNode.get(node) ?? 0) + 1
    if (count > MAX_PODS_PER_NODE) fail(path, `${label}: node ${node} has more than ${MAX_PODS_PER_NODE} pods`)
    podsPerNode.set(node, count)

    const namespace = pod['namespace'] ?? 'default'
    if (typeof namespace !== 'string' || !NAMESPACE_PATTERN.test(namespace)) {
      fail([...path, 'namespace'], `${label}: namespace must be a Kubernetes namespace name like "default" (got ${describe(namespace)})`)
    }

    const serviceAccount = pod['serviceAccount'] ?? 'default'
    if (typeof serviceAccount !== 'string' || !NAMESPACE_PATTERN.test(serviceAccount)) {
      fail([...path, 'serviceAccount'], `${label}: serviceAccount must be a Kubernetes service account name like "web" (lowercase letters, digits and "-", at most 63; got ${describe(serviceAccount)})`)
    }

    const qosClass = pod['qosClass'] ?? 'BestEffort'
    if (typeof qosClass !== 'string' || !(QOS_CLASSES as readonly string[]).includes(qosClass)) {
      fail([...path, 'qosClass'], `${label}: qosClass must be one of ${QOS_CLASSES.join(', ')} (got ${describe(qosClass)})`)
    }

    const enrolled = pod['enrolled'] ?? true
    if (typeof enrolled !== 'boolean') fail([...path, 'enrolled'], `${label}: enrolled must be true or false (got ${describe(enrolled)})`)

    const labelsValue = pod['labels'] ?? {}
    if (!isPlainObject(labelsValue)) return fail([...path, 'labels'], `${label}: labels must be a mapping like \`{app: echo}\``)
    const labels: Record<string, string> = {}
    for (const [key, labelValue] of Object.entries(labelsValue as Record<string, unknown>)) {
      const labelPath = [...path, 'labels', key]
      if (!LABEL_KEY_PATTERN.test(key)) fail(labelPath, `${label}: label key "${key}" is not a valid Kubernetes label key`)
      if (typeof labelValue !== 'string') {
        return fail(labelPath, `${label}: label ${key} must be a string (quote it: "${String(labelValue)}")`)
      }
      if (!LABEL_VALUE_PATTERN.test(labelValue)) fail(labelPath, `${label}: label ${key}: "${labelValue}" is not a valid Kubernetes label value`)
      labels[key] = labelValue
    }
    pods.push({ name, node, namespace: namespace as string, labels, enrolled: enrolled as boolean, serviceAccount: serviceAccount as string, qosClass: qosClass as QosClass })
  })
  const kubeletCgroups = top['kubeletCgroups']
  if (kubeletCgroups !== undefined && kubeletCgroups !== 'systemd' && kubeletCgroups !== 'cgroupfs') {
    fail(['kubeletCgroups'], `kubeletCgroups must be systemd or cgroupfs (the kubelet's cgroup driver; got ${describe(kubeletCgroups)})`)
  }
  return { nodes, pods, ...(kubeletCgroups !== undefined ? { kubeletCgroups: kubeletCgroups as CgroupDriver } : {}) }
}

function checkName(name: string, what: string, path: Path, fail: (path: Path, message: string) => never): void {
  if (!NAME_PATTERN.test(name)) {
    fail(path, `${what}: bad name "${name}" (a lowercase letter, then up to 14 of a-z, 0-9, -)`)
  }
  if (RESERVED_NAMES.has(name)) fail(path, `${what}: "${name}" is reserved for the underlay`)
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return 'nothing'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  return `${typeof value} ${JSON.stringify(value)}`
}

