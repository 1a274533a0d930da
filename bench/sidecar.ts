// The sidecar model built from weft's own proxy, so that only the architecture differs: one
// `weft node` instance per pod, running in that pod's network namespace (as a sidecar container
// would), with a cgroup root that is just that pod's cgroup, so its eBPF programs intercept that
// pod's outbound connections only. The client's sidecar sees a server that lives on the server's
// "node" — its sidecar, whose address is the server pod's own — and so opens the HTTP/2 CONNECT
// tunnel to the server pod's :15008, where the server's sidecar forwards to the app over the
// pod's own address. Client app -> client sidecar -> tunnel -> server sidecar -> server app.
//
// The sidecar process runs in a cgroup of its own under the lab's daemons/ tree (outside every
// workload root: its sockets are never intercepted, like the node daemon's); its pins live under
// /sys/fs/bpf/weft/lab-<run>-sc-<pod>, so the lab's down removes both if the benchmark dies.
// Pods with sidecars are not enrolled in the node daemon, whose programs (attached at the node's
// root) then leave them alone; the kernel runs the pod-level programs first.
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, openSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { ADMIN_PORT, LAB_CIDR, type Lab, type LabPod } from '../src/lab/index.ts'
import { CLI_MAIN } from '../src/lab/daemons.ts'
import { PIN_ROOT } from '../src/lab/plan.ts'
import { inNetns } from '../src/lab/sys.ts'

const READY_TIMEOUT_MS = 30_000

export interface Sidecar { pod: LabPod; name: string; child: ChildProcess; pid: number; cgroup: string; pinDir: string }

export const sidecarName = (pod: LabPod): string => `sc-${pod.name}`

/** The workload file the sidecars share: every sidecar pod is the only workload of its own "node"
 *  (the sidecar), whose address is the pod's. Pods without a sidecar are left out: a sidecar
 *  connects to them directly, as a sidecar mesh does to a workload outside the mesh. */
export function writeSidecarWorkloads(file: string, pods: LabPod[]): void {
  const document = {
    nodes: pods.map((p) => ({ name: sidecarName(p), address: p.ip, proxyIp: p.ip, podCidr: `${p.ip}/32` })),
    workloads: pods.map((p) => ({ name: p.name, namespace: p.namespace, node: sidecarName(p), ip: p.ip, labels: p.labels, enrolled: true, cgroup: p.cgroup })),
  }
  writeFileSync(file, JSON.stringify(document, null, 2))
}

export function startSidecar(lab: Lab, pod: LabPod, workloadsFile: string, logDir: string, cpus: string | undefined): Sidecar {
  if (pod.enrolled) throw new Error(`sidecar for ${pod.name}: the pod is enrolled in the node daemon; a sidecar pod must not be (both would intercept it)`)
  const name = sidecarName(pod)
  const cgroup = join(lab.plan.cgroupBase, 'daemons', name)
  const pinDir = join(PIN_ROOT, `lab-${lab.runId}-${name}`)
  mkdirSync(cgroup, { recursive: true })
  const argv = [
    process.execPath, CLI_MAIN, 'node', '--name', name, '--node-ip', pod.ip, '--proxy-ip', pod.ip,
    '--cgroup-root', pod.cgroup, '--pin-dir', pinDir, '--workloads', workloadsFile,
    '--intercept-cidr', LAB_CIDR, '--drain-timeout', '500',
  ]
  const pinned = cpus ? ['taskset', '-c', cpus, ...argv] : argv
  const log = openSync(join(logDir, `${name}.log`), 'a')
  try {
    const child = spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...inNetns(pod.netns, pinned)], { stdio: ['ignore', log, log] })
    child.on('error', () => {})
    return { pod, name, child, pid: child.pid as number, cgroup, pinDir }
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
export async function startSidecars(lab: Lab, pods: LabPod[], workloadsFile: string, logDir: string, cpus: string | undefined, parallel = 4): Promise<Sidecar[]> {
  const started: Sidecar[] = []
  for (let i = 0; i < pods.length; i += parallel) {
    const batch = pods.slice(i, i + parallel).map((pod) => startSidecar(lab, pod, workloadsFile, logDir, cpus))
    started.push(...batch)
    await Promise.all(batch.map((s) => waitSidecarReady(s, logDir)))
  }
  return started
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

function answers200(host: string, port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port, path, method: 'GET', timeout: 1000 }, (res) => {
      res.resume()
      resolve(res.statusCode === 200)
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(false))
    req.end()
  })
}
