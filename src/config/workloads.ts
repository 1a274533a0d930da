// The workload registry as a node sees it: which nodes exist, which pods run where, which are
// enrolled. Until configuration travels over NATS this comes from a local JSON file that the lab
// writes (see docs/architecture.md); a change to the file builds a new immutable snapshot.
import { readFileSync } from 'node:fs'
import { isIPv4 } from 'node:net'

export interface NodeEntry { name: string; address: string; proxyIp: string; podCidr: string }
export interface Workload {
  name: string
  namespace: string
  node: string
  ip: string
  labels: Record<string, string>
  enrolled: boolean
  /** cgroup v2 directory of the pod; its inode number is the cgroup id the BPF programs match. */
  cgroup: string
}

/** An immutable view, resolved once per change so the connection path only does map lookups. */
export class WorkloadSnapshot {
  readonly nodes: ReadonlyMap<string, NodeEntry>
  readonly workloadsByIp: ReadonlyMap<string, Workload>
  readonly workloads: readonly Workload[]

  constructor(nodes: NodeEntry[], workloads: Workload[]) {
    this.nodes = new Map(nodes.map((n) => [n.name, n]))
    this.workloadsByIp = new Map(workloads.map((w) => [w.ip, w]))
    this.workloads = workloads
  }

  static empty(): WorkloadSnapshot { return new WorkloadSnapshot([], []) }

  workloadsOn(node: string): Workload[] { return this.workloads.filter((w) => w.node === node) }
}

/** `namespace/name` of the workload at this address, or the address itself when unknown. */
export function workloadLabel(snapshot: WorkloadSnapshot, ip: string): string {
  const w = snapshot.workloadsByIp.get(ip)
  return w ? `${w.namespace}/${w.name}` : 'unknown'
}

export class WorkloadFileError extends Error {}

function fail(file: string, where: string, what: string): never {
  throw new WorkloadFileError(`${file}: ${where}: ${what}`)
}

function str(file: string, where: string, obj: Record<string, unknown>, key: string): string {
  const v = obj[key]
  if (typeof v !== 'string' || v === '') fail(file, `${where}.${key}`, `expected a non-empty string, got ${JSON.stringify(v)}`)
  return v
}

/** Reads and checks the workload file; one bad entry fails the whole read with its path named. */
export function readWorkloadFile(file: string): WorkloadSnapshot {
  let doc: unknown
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    fail(file, 'file', (err as Error).message)
  }
  if (typeof doc !== 'object' || doc === null) fail(file, 'file', 'expected a JSON object with "nodes" and "workloads"')
  const { nodes, workloads } = doc as { nodes?: unknown; workloads?: unknown }
  if (!Array.isArray(nodes)) fail(file, 'nodes', 'expected an array')
  if (!Array.isArray(workloads)) fail(file, 'workloads', 'expected an array')
  const nodeEntries = nodes.map((n: unknown, i): NodeEntry => {
    const where = `nodes[${i}]`
    if (typeof n !== 'object' || n === null) fail(file, where, 'expected an object')
    const o = n as Record<string, unknown>
    const entry = { name: str(file, where, o, 'name'), address: str(file, where, o, 'address'), proxyIp: str(file, where, o, 'proxyIp'), podCidr: str(file, where, o, 'podCidr') }
    if (!isIPv4(entry.address)) fail(file, `${where}.address`, `"${entry.address}" is not an IPv4 address`)
    return entry
  })
  const known = new Set(nodeEntries.map((n) => n.name))
  const entries = workloads.map((w: unknown, i): Workload => {
    const where = `workloads[${i}]`
    if (typeof w !== 'object' || w === null) fail(file, where, 'expected an object')
    const o = w as Record<string, unknown>
    const entry: Workload = {
      name: str(file, where, o, 'name'),
      namespace: typeof o.namespace === 'string' ? o.namespace : 'default',
      node: str(file, where, o, 'node'),
      ip: str(file, where, o, 'ip'),
      labels: (typeof o.labels === 'object' && o.labels !== null ? o.labels : {}) as Record<string, string>,
      enrolled: o.enrolled !== false,
      cgroup: typeof o.cgroup === 'string' ? o.cgroup : '',
    }
    if (!isIPv4(entry.ip)) fail(file, `${where}.ip`, `"${entry.ip}" is not an IPv4 address`)
    if (!known.has(entry.node)) fail(file, `${where}.node`, `"${entry.node}" is not in nodes (known: ${[...known].join(', ')})`)
    return entry
  })
  return new WorkloadSnapshot(nodeEntries, entries)
}
