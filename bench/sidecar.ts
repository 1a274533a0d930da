// The sidecar model built from weft's own proxy, so that only the architecture differs: one
// `weft node` instance per pod, running in that pod's network namespace (as a sidecar container
// would), with a cgroup root that is just that pod's cgroup, so its eBPF programs intercept that
// pod's outbound connections only.
//
// The daemon reads its configuration from the lab's NATS (the shared weft-config bucket), so the
// sidecar model is configuration too: for each sidecar pod <pod> the benchmark publishes
//   - a Node `sc-<pod>` (key node._.sc-<pod>) whose address and proxyIp are the pod's own address
//     and whose podCIDR is <pod ip>/32: the sidecar is that pod's "node";
//   - the pod again (key pod.<ns>.<pod>, overwriting what the lab registered) with
//     spec.nodeName sc-<pod> and weft.dev/enrolled "true", so the sidecar enrols the pod's cgroup
//     (podsByNode) and every other proxy sees the pod as living on its sidecar (workloadsByIp).
// So the client's sidecar sees the server pod on another "node" and opens the HTTP/2 CONNECT
// tunnel to that node's address:15008 — the server pod's own address, where the server's sidecar
// accepts it (the pod is local to it) and connects to the app over the pod's address.
// Client app -> client sidecar -> tunnel -> server sidecar -> server app.
//
// Because the bucket is shared, a pod has one node for every proxy: a pod with a sidecar is no
// longer on its lab node for the node daemons, so the sidecar model gets server pods of its own
// (the node daemons' paths keep theirs). The pods must be unenrolled in the topology, so the node
// daemon never enrols them, also not before the re-registration applies.
//
// Bench only: each sidecar connects to NATS as `operator`. The lab's NATS declares a user per lab
// node (node-<name>) and no user per sidecar, and a node user may only report on its own
// weft.status.<node>. A real deployment would give each sidecar its own user.
// The lab's underlay namespace (NATS, weft control) has routes only to the nodes, so the benchmark
// adds routes there to the node pod ranges (via the nodes), as a cluster's pod network reaches its
// control plane; the underlay does not forward, so no measured path changes.
//
// The sidecar process runs in a cgroup of its own under the lab's daemons/ tree (outside every
// workload root: its sockets are never intercepted, like the node daemon's); its pins live under
// /sys/fs/bpf/weft/lab-<run>-sc-<pod>, so the lab's down removes both if the benchmark dies.
// The kernel runs the pod-level programs before the node-level ones (the node daemon's, which
// leave unenrolled cgroups alone).
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, openSync, rmSync, rmdirSync } from 'node:fs'
import { join } from 'node:path'
import { CGROUP_ANNOTATION, ENROLLED_ANNOTATION, WEFT_API_VERSION, resourceKey } from '../src/config/resources/index.ts'
import { ADMIN_PORT, LAB_CIDR, type Lab, type LabPod } from '../src/lab/index.ts'
import { CLI_COMMAND, answers200 } from '../src/lab/daemons.ts'
import { PIN_ROOT, UNDERLAY_CIDR } from '../src/lab/plan.ts'
import { inNetns, ip } from '../src/lab/sys.ts'
import { getText, waitForStatuses } from './node-status.ts'

const READY_TIMEOUT_MS = 30_000
const STATUS_TIMEOUT_MS = 10_000

export interface Sidecar { pod: LabPod; name: string; child: ChildProcess; pid: number; cgroup: string; pinDir: string; keys: string[] }

export const sidecarName = (pod: LabPod): string => `sc-${pod.name}`

/** The Node and Pod that make `pod` the only pod of its sidecar's "node", with their bucket keys. */
export function sidecarResources(pod: LabPod): Array<{ key: string; resource: Record<string, unknown> }> {
  const name = sidecarName(pod)
  return [
    {
      key: resourceKey({ kind: 'Node', namespace: undefined, name }),
      resource: { apiVersion: WEFT_API_VERSION, kind: 'Node', metadata: { name }, spec: { address: pod.ip, proxyIp: pod.ip, podCIDR: `${pod.ip}/32` } },
    },
    {
      key: resourceKey({ kind: 'Pod', namespace: pod.namespace, name: pod.name }),
      resource: {
        apiVersion: 'v1', kind: 'Pod',
        metadata: { name: pod.name, namespace: pod.namespace, labels: { ...pod.labels }, annotations: { [CGROUP_ANNOTATION]: pod.cgroup, [ENROLLED_ANNOTATION]: 'true' } },
        spec: { nodeName: name, serviceAccountName: 'default' },
        status: { podIP: pod.ip, phase: 'Running' },
      },
    },
  ]
}

/** Lets processes in pods reach the lab's NATS: routes in the underlay namespace to each node's
 *  pod range via that node (the underlay has routes to the nodes only). Idempotent. */
export function routePodsToControlPlane(lab: Lab): void {
  for (const node of lab.nodes) ip(['-n', lab.plan.underlayNetns, 'route', 'replace', node.podCidr, 'via', node.address])
}

/** Publishes every sidecar pod's Node and Pod (as operator) before any sidecar starts, so that a
 *  sidecar's first snapshot already has them. Returns the keys written. */
export async function registerSidecarPods(lab: Lab, pods: LabPod[]): Promise<string[]> {
  for (const pod of pods) {
    if (pod.enrolled) throw new Error(`sidecar for ${pod.name}: the pod is enrolled in the node daemon; a sidecar pod must not be (both would intercept it)`)
  }
  routePodsToControlPlane(lab)
  const bus = await lab.connect('operator')
  try {
    const keys: string[] = []
    for (const pod of pods) {
      for (const { key, resource } of sidecarResources(pod)) {
        await bus.putResource(key, resource)
        keys.push(key)
      }
    }
    return keys
  } finally {
    await bus.close()
  }
}

export function startSidecar(lab: Lab, pod: LabPod, logDir: string, cpus: string | undefined): Sidecar {
  const name = sidecarName(pod)
  const cgroup = join(lab.plan.cgroupBase, 'daemons', name)
  const pinDir = join(PIN_ROOT, `lab-${lab.runId}-${name}`)
  mkdirSync(cgroup, { recursive: true })
  const argv = [
    ...CLI_COMMAND, 'node', '--name', name, '--node-ip', pod.ip, '--proxy-ip', pod.ip,
    '--cgroup-root', pod.cgroup, '--pin-dir', pinDir,
    // Bench only: operator creds (the lab declares NATS users for its nodes, none per sidecar).
    '--nats', lab.natsUrl, '--creds', lab.credsFile('operator'),
    '--intercept-cidr', LAB_CIDR, '--bypass-cidr', UNDERLAY_CIDR, '--drain-timeout', '500',
  ]
  const pinned = cpus ? ['taskset', '-c', cpus, ...argv] : argv
  const log = openSync(join(logDir, `${name}.log`), 'a')
  try {
    const child = spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...inNetns(pod.netns, pinned)], { stdio: ['ignore', log, log] })
    child.on('error', () => {})
    return { pod, name, child, pid: child.pid as number, cgroup, pinDir, keys: sidecarResources(pod).map((r) => r.key) }
  } finally {
    closeSync(log)
  }
}

export async function waitSidecarReady(sidecar: Sidecar, logDir: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  for (;;) {
    if (sidecar.child.exitCode !== null || sidecar.child.signalCode !== null) {
      throw new Error(`sidecar ${sidecar.name} exited (${sidecar.child.exitCode ?? sidecar.child.signalCode}) before it was ready; see ${join(logDir, `${sidecar.name}.log`)}`)
    }
    if (await answers200(sidecar.pod.ip, ADMIN_PORT, '/readyz')) return
    if (Date.now() > deadline) throw new Error(`sidecar ${sidecar.name} not ready after ${READY_TIMEOUT_MS / 1000} s; see ${join(logDir, `${sidecar.name}.log`)}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Starts sidecars a few at a time (each one loads and attaches its BPF programs). */
/** Registers the pods (see the top of this file), then starts their sidecars a few at a time (each
 *  one loads and attaches its BPF programs), waits until each serves (/readyz: it opens its
 *  listeners on its first configuration snapshot), and checks what each reports on
 *  weft.status.sc-<pod>: ready, and none of the sidecar resources rejected. */
export async function startSidecars(lab: Lab, pods: LabPod[], logDir: string, cpus: string | undefined, parallel = 4): Promise<Sidecar[]> {
  await registerSidecarPods(lab, pods)
  const started: Sidecar[] = []
  for (let i = 0; i < pods.length; i += parallel) {
    const batch = pods.slice(i, i + parallel).map((pod) => startSidecar(lab, pod, logDir, cpus))
    started.push(...batch)
    await Promise.all(batch.map((s) => waitSidecarReady(s, logDir)))
  }
  await checkSidecarStatuses(lab, started)
  return started
}

async function checkSidecarStatuses(lab: Lab, sidecars: Sidecar[]): Promise<void> {
  await waitForStatuses(lab, 'sidecars\' statuses', (statuses) => {
    const problems: string[] = []
    for (const s of sidecars) {
      const status = statuses.get(s.name)
      if (!status) { problems.push(`${s.name}: no status on weft.status.${s.name} yet`); continue }
      if (!status.ready) problems.push(`${s.name}: not ready: ${status.reason}`)
      const rejected = status.rejected.filter((r) => sidecars.some((o) => o.keys.includes(r.key)))
      if (rejected.length > 0) throw new Error(`sidecar ${s.name} rejected the sidecar model's resources: ${rejected.map((r) => `${r.key}: ${r.reason}`).join('; ')}`)
      if (status.revision === 0) problems.push(`${s.name}: no configuration applied yet`)
    }
    return problems
  }, STATUS_TIMEOUT_MS, 200)
}

/** Stops the sidecar, then removes its pins (detaching its programs) and its cgroup. */
export async function stopSidecar(sidecar: Sidecar): Promise<void> {
  const { child } = sidecar
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
  rmSync(sidecar.pinDir, { recursive: true, force: true })
  try { rmdirSync(sidecar.cgroup) } catch { /* the lab's down removes it */ }
}

/** What a sidecar's /metrics says it forwarded: connections opened outbound through the tunnel and
 *  outbound directly, and inbound from the tunnel. */
export async function sidecarConnections(sidecar: Sidecar): Promise<{ outboundTunnel: number; outboundDirect: number; inbound: number }> {
  const text = await getText(sidecar.pod.ip, ADMIN_PORT, '/metrics')
  const sum = (match: (labels: string) => boolean): number => text.split('\n')
    .filter((line) => line.startsWith('weft_connections_opened_total{'))
    .filter((line) => match(line.slice(0, line.lastIndexOf('}') + 1)))
    .reduce((total, line) => total + Number(line.slice(line.lastIndexOf(' ') + 1)), 0)
  return {
    outboundTunnel: sum((l) => l.includes('direction="outbound"') && l.includes('path="tunnel"')),
    outboundDirect: sum((l) => l.includes('direction="outbound"') && l.includes('path="direct"')),
    inbound: sum((l) => l.includes('direction="inbound"')),
  }
}

