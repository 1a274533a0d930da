// The node daemon: installs (or adopts) the eBPF interception for this node's workload cgroup,
// then serves the outbound, inbound and admin listeners until SIGTERM, when it drains.
import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NodeInterception, cgroupIdOf } from '../bpf/index.ts'
import type { NodeConfig } from '../config/node-config.ts'
import { readWorkloadFile, WorkloadSnapshot } from '../config/workloads.ts'
import { InboundListener } from '../datapath/inbound.ts'
import { OutboundListener } from '../datapath/outbound.ts'
import { TunnelPool } from '../datapath/tunnel.ts'
import { AdminServer, type Readiness } from '../telemetry/admin.ts'
import { createLogger, type Logger } from '../telemetry/log.ts'
import { NodeMetrics } from '../telemetry/metrics.ts'
import { checkBpfFs, checkBpfObject, checkCgroup, checkKernel, checkRoot } from './preflight.ts'

export const defaultBpfObject = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'bpf', 'weft.bpf.o')

export function uninstallNode(config: NodeConfig): void {
  checkRoot()
  checkBpfFs(config.pinDir)
  NodeInterception.uninstall(config.pinDir)
}

export async function runNode(config: NodeConfig): Promise<void> {
  const log = createLogger({ node: config.name })
  checkRoot()
  checkKernel()
  checkBpfFs(config.pinDir)
  checkCgroup(config.cgroupRoot)
  const objectPath = config.bpfObject ?? defaultBpfObject
  checkBpfObject(objectPath)

  let snapshot = readWorkloadFile(config.workloadsFile)
  const settings = {
    proxyIp: config.proxyIp, proxyPort: config.outboundPort,
    interceptCidrs: config.interceptCidrs, bypassCidrs: config.bypassCidrs, excludedPorts: config.excludedPorts,
  }
  const interception = NodeInterception.open({ pinDir: config.pinDir, cgroupRoot: config.cgroupRoot, objectPath, ...settings })
  log.info(interception.adopted ? 'adopted pinned BPF programs and maps' : 'loaded and attached BPF programs',
    { pinDir: config.pinDir, cgroupRoot: config.cgroupRoot, programIds: interception.programIds() })
  enroll(interception, snapshot, config.name, log)

  const metrics = new NodeMetrics(config.name, () => interception)
  const tunnels = new TunnelPool(log, config.connectTimeoutMs)
  const common = { node: config.name, idleTimeoutMs: config.idleTimeoutMs, connectTimeoutMs: config.connectTimeoutMs, snapshot: () => snapshot, metrics, log }
  const outbound = new OutboundListener({ ...common, listenIp: config.proxyIp, port: config.outboundPort, inboundPort: config.inboundPort, originalDestinations: interception, tunnels })
  const inbound = new InboundListener({ ...common, listenIp: config.nodeIp, port: config.inboundPort })
  let readiness: Readiness = { ready: false, reason: 'starting' }
  const admin = new AdminServer({ listenIp: '0.0.0.0', port: config.adminPort, registry: metrics.registry, readiness: () => readiness })
  await admin.listen()
  await outbound.listen()
  await inbound.listen()
  readiness = { ready: true, reason: 'ready' }
  log.info('serving', { outbound: `${config.proxyIp}:${config.outboundPort}`, inbound: `${config.nodeIp}:${config.inboundPort}`, admin: `0.0.0.0:${config.adminPort}` })

  const watcher = watchWorkloads(config.workloadsFile, log, (next) => {
    snapshot = next
    enroll(interception, snapshot, config.name, log)
  })

  await new Promise<void>((resolve) => {
    let stopping = false
    const stop = (signal: string): void => {
      if (stopping) return
      stopping = true
      readiness = { ready: false, reason: 'draining' }
      log.info('draining', { signal, outbound: outbound.connections.size, inbound: inbound.connections.size, deadlineMs: config.drainTimeoutMs })
      watcher.close()
      void Promise.all([outbound.stop(), inbound.stop()])
      void Promise.all([outbound.connections.drain(config.drainTimeoutMs), inbound.connections.drain(config.drainTimeoutMs)]).then(([o, i]) => {
        log.info('stopped', { abortedAtDeadline: o.abortedAtDeadline + i.abortedAtDeadline })
        tunnels.close()
        admin.close()
        interception.close() // pins stay: interception (failing closed) outlives the process
        resolve()
      })
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
  })
}

/** Makes the enrolled-cgroups map equal to this node's enrolled workloads. */
function enroll(interception: NodeInterception, snapshot: WorkloadSnapshot, node: string, log: Logger): void {
  const ids: bigint[] = []
  for (const w of snapshot.workloadsOn(node)) {
    if (!w.enrolled) continue
    if (!w.cgroup) { log.warn('enrolled workload has no cgroup; its traffic is not intercepted', { workload: `${w.namespace}/${w.name}` }); continue }
    try {
      ids.push(cgroupIdOf(w.cgroup))
    } catch (err) {
      log.warn('cannot find the cgroup of an enrolled workload; its traffic is not intercepted', { workload: `${w.namespace}/${w.name}`, cgroup: w.cgroup, error: err })
    }
  }
  interception.setEnrolledCgroups(ids)
  log.info('workloads applied', { workloads: snapshot.workloads.length, enrolledHere: ids.length })
}

function watchWorkloads(file: string, log: Logger, apply: (s: WorkloadSnapshot) => void): FSWatcher {
  let timer: NodeJS.Timeout | undefined
  // Watch the directory: writers replace the file by rename, which a file watch would lose.
  return watch(dirname(file), (_event, name) => {
    if (name !== basename(file)) return
    clearTimeout(timer)
    timer = setTimeout(() => {
      try {
        apply(readWorkloadFile(file))
      } catch (err) {
        log.error('workload file rejected; keeping the previous workloads', { error: err })
      }
    }, 50)
  })
}
