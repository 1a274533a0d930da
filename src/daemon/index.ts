// The node daemon: installs (or adopts) the eBPF interception for this node's workload cgroup,
// follows the mesh configuration on NATS, and serves the outbound, inbound and admin listeners
// until SIGTERM (or SIGINT, SIGHUP), when it drains. Without configuration (NATS down at start) it serves nothing
// new: enrolled pods' connections are refused (fail closed) until the first snapshot applies.
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { resolveBusOptions } from '../bus/index.ts'
import { NodeInterception, cgroupIdOf } from '../bpf/index.ts'
import { ConfigAgent } from '../config/agent.ts'
import { UnknownServiceError, describeAppliedConfig } from '../config/applied-config.ts'
import { listenForStop } from '../cli/signals.ts'
import { ConfigError, type NodeConfig } from '../config/node-config.ts'
import { DEFAULT_VALIDATION_CONTEXT, type MeshSnapshot } from '../config/resources/index.ts'
import { InboundListener } from '../datapath/inbound.ts'
import { OutboundListener } from '../datapath/outbound.ts'
import { TunnelPool } from '../datapath/tunnel.ts'
import { NodeIdentities } from '../identity/node-identities.ts'
import { AccessLogError, openAccessLog, type AccessLogWriter } from '../telemetry/access-log.ts'
import type { DestinationView } from '../l7/destinations.ts'
import { AdminServer, type AdminAnswer, type Readiness } from '../telemetry/admin.ts'
import { createLogger, type Logger } from '../telemetry/log.ts'
import { NodeMetrics } from '../telemetry/metrics.ts'
import { checkBpfFs, checkBpfObject, checkCgroup, checkKernel, checkRoot } from './preflight.ts'
import { PodCgroups, kubeletDriverOf } from '../k8s/kubelet-cgroups.ts'

export const defaultBpfObject = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'bpf', 'weft.bpf.o')

export function uninstallNode(config: NodeConfig): void {
  checkRoot()
  checkBpfFs(config.pinDir)
  NodeInterception.uninstall(config.pinDir)
}

function busOptions(config: NodeConfig): ReturnType<typeof resolveBusOptions> {
  return resolveBusOptions({
    ...(config.nats.url !== undefined ? { nats: config.nats.url } : {}),
    ...(config.nats.creds !== undefined ? { creds: config.nats.creds } : {}),
    ...(config.nats.context !== undefined ? { context: config.nats.context } : {}),
  }, process.env)
}

/** Resolves with the first SIGTERM, SIGINT or SIGHUP; later ones are logged and do not cut the drain short. */
function untilSignal(log: Logger): Promise<string> {
  return listenForStop((signal) => log.info('already stopping; the drain goes on until it is done or its deadline', { signal })).first
}

export async function runNode(config: NodeConfig): Promise<void> {
  const log = createLogger({ node: config.name })
  const validation = { ...DEFAULT_VALIDATION_CONTEXT, vipCidr: config.vipCidr, trustDomain: config.trustDomain }
  if (config.configOnly) {
    const bus = busOptions(config)
    const agent = new ConfigAgent({ node: config.name, bus, validation, statusIntervalMs: config.statusIntervalMs, log, onSnapshot: () => {}, readiness: () => ({ ready: true, reason: 'config-only' }) })
    void agent.start().catch((err: unknown) => { log.error('cannot follow configuration', { error: err }); process.exit(1) })
    await untilSignal(log)
    await agent.stop()
    return
  }

  checkRoot()
  checkKernel()
  checkBpfFs(config.pinDir)
  checkCgroup(config.cgroupRoot)
  const objectPath = config.bpfObject ?? defaultBpfObject
  checkBpfObject(objectPath)
  const bus = busOptions(config)
  const accessLog = openNodeAccessLog(config, log)

  // Service VIPs are always intercepted: a VIP routes nowhere without the proxy.
  const settings = {
    proxyIp: config.proxyIp, proxyPort: config.outboundPort,
    interceptCidrs: [...new Set([...config.interceptCidrs, config.vipCidr])], bypassCidrs: config.bypassCidrs, excludedPorts: config.excludedPorts,
  }
  const interception = NodeInterception.open({ pinDir: config.pinDir, cgroupRoot: config.cgroupRoot, objectPath, ...settings })
  log.info(interception.adopted ? 'adopted pinned BPF programs and maps' : 'loaded and attached BPF programs',
    { pinDir: config.pinDir, cgroupRoot: config.cgroupRoot, programIds: interception.programIds(), updatedPrograms: interception.updatedPrograms })

  // On a Kubernetes node the cgroup root is the kubelet's (kubepods.slice: systemd driver,
  // kubepods: cgroupfs) and pods carry no weft.dev/cgroup: each one's cgroup is found from its UID
  // and QoS class, also when the kubelet makes it after the Pod reached NATS.
  const kubeletDriver = kubeletDriverOf(config.cgroupRoot)
  const podCgroups: PodCgroups | undefined = kubeletDriver === undefined ? undefined : new PodCgroups({
    podRoot: config.cgroupRoot, driver: kubeletDriver,
    onFound: (key, dir) => {
      log.info('found a pod\'s cgroup', { workload: key, cgroup: dir })
      if (snapshot) enroll(interception, snapshot, config.name, log, podCgroups)
    },
  })
  if (kubeletDriver) log.info('finding pods\' cgroups the kubelet way', { driver: kubeletDriver, podRoot: config.cgroupRoot })

  // Connections from these node-local addresses are the mesh's own (and the kubelet's probes): a
  // STRICT pod accepts them; anything else must come through the proxy.
  interception.setMeshSources([config.proxyIp, config.nodeIp])

  const metrics = new NodeMetrics(config.name, () => interception)
  // Event-loop delay and GC pauses (weft_event_loop_delay_seconds, weft_gc_duration_seconds).
  const stopRuntimeSampling = metrics.sampleRuntime()
  // The certificates of this node's workloads: keys made here, never leaving this process; signed
  // by weft control's CA over NATS; renewed at half-life.
  const identities = new NodeIdentities({ node: config.name, bus, trustDomain: config.trustDomain, log })
  const tunnels = new TunnelPool(log, config.connectTimeoutMs, identities)
  let snapshot: MeshSnapshot | undefined
  const current = (): MeshSnapshot => snapshot!
  const common = { node: config.name, idleTimeoutMs: config.idleTimeoutMs, connectTimeoutMs: config.connectTimeoutMs, snapshot: current, metrics, log }
  const outbound = new OutboundListener({ ...common, listenIp: config.proxyIp, port: config.outboundPort, inboundPort: config.inboundPort, originalDestinations: interception, tunnels, accessLog, fastPath: config.l4FastPath ? interception : undefined })
  const inbound = new InboundListener({ ...common, listenIp: config.nodeIp, port: config.inboundPort, credentials: identities, trustDomain: config.trustDomain })
  let readiness: Readiness = { ready: false, reason: 'starting' }
  let serving = false
  let listening: Promise<void> | undefined

  const agent = new ConfigAgent({
    node: config.name, bus, validation, statusIntervalMs: config.statusIntervalMs, log,
    readiness: () => readiness,
    onSnapshot: (next) => {
      snapshot = next
      // Open connections the new policies no longer allow are closed (admission.ts, stillAllowed).
      const revoked = outbound.connections.revoke(next) + inbound.connections.revoke(next)
      if (revoked > 0) log.info('closed connections the new configuration no longer allows', { revision: next.revision, connections: revoked })
      enroll(interception, next, config.name, log, podCgroups)
      identities.setWanted((next.podsByNode.get(config.name) ?? []).map((w) => w.identity))
      // The first configuration opens the listeners; until then connections are refused.
      listening ??= Promise.all([outbound.listen(), inbound.listen()]).then(() => {
        serving = true
        log.info('serving', { outbound: `${config.proxyIp}:${config.outboundPort}`, inbound: `${config.nodeIp}:${config.inboundPort}`, admin: `0.0.0.0:${config.adminPort}` })
      }, (err: unknown) => {
        log.error('cannot open the listeners', { error: err })
        process.exit(1)
      })
    },
  })
  const admin = new AdminServer({
    listenIp: '0.0.0.0', port: config.adminPort, registry: metrics.registry,
    destinations: () => (snapshot ? outbound.pipeline.describe() : []),
    certs: () => identities.describe(),
    config: (query) => appliedConfigAnswer(snapshot, config.name, () => outbound.pipeline.describe(), query.get('service') ?? undefined),
    readiness: () => {
      if (readiness.reason === 'draining') return readiness
      if (!serving) return { ready: false, reason: agent.waitingReason() }
      return agent.nats === 'connected'
        ? { ready: true, reason: `ready: configuration revision ${snapshot?.revision ?? 0}` }
        : { ready: true, reason: `ready: serving configuration revision ${snapshot?.revision ?? 0}; NATS unreachable, keeping it` }
    },
  })
  await admin.listen()
  await identities.start()
  readiness = { ready: true, reason: 'ready' }
  agent.start().catch((err: unknown) => {
    // Bad credentials or a refused permission: nothing will change by waiting.
    log.error('cannot follow configuration', { error: (err as Error).message })
    process.exit(1)
  })

  const signal = await untilSignal(log)
  readiness = { ready: false, reason: 'draining' }
  log.info('draining', { signal, outbound: outbound.connections.size, inbound: inbound.connections.size, deadlineMs: config.drainTimeoutMs })
  await agent.publishStatus()
  if (serving) { void outbound.stop(); void inbound.stop() }
  const [o, i] = await Promise.all([outbound.connections.drain(config.drainTimeoutMs), inbound.connections.drain(config.drainTimeoutMs)])
  log.info('stopped', { abortedAtDeadline: o.abortedAtDeadline + i.abortedAtDeadline })
  tunnels.close()
  await identities.stop()
  await accessLog.close()
  admin.close()
  stopRuntimeSampling()
  await agent.stop()
  podCgroups?.stop()
  interception.close() // pins stay: interception (failing closed) outlives the process
}

/** GET /debug/config[?service=ns/name]: 503 before the first snapshot, 400/404 for a bad filter. */
function appliedConfigAnswer(snapshot: MeshSnapshot | undefined, node: string, destinations: () => DestinationView[], service: string | undefined): AdminAnswer {
  if (!snapshot) return { status: 503, body: { error: 'no configuration applied yet (see /readyz)' } }
  if (service !== undefined && !/^[^/]+\/[^/]+$/.test(service)) return { status: 400, body: { error: `service ${JSON.stringify(service)}: expected namespace/name` } }
  try {
    return { status: 200, body: describeAppliedConfig(snapshot, node, destinations(), service) }
  } catch (err) {
    if (err instanceof UnknownServiceError) return { status: 404, body: { error: err.message } }
    throw err
  }
}

/** `--access-log` and `--access-log-sample`; a file that cannot be opened stops the start. */
function openNodeAccessLog(config: NodeConfig, log: Logger): AccessLogWriter {
  try {
    const accessLog = openAccessLog({
      destination: config.accessLog, sampleRate: config.accessLogSample, node: config.name,
      onError: (err) => log.error('access log: a write failed; access logging stopped', { destination: config.accessLog, error: err }),
    })
    log.info('access log', { destination: accessLog.destination, sampleRate: accessLog.sampleRate })
    return accessLog
  } catch (err) {
    if (err instanceof AccessLogError) throw new ConfigError(`--access-log ${err.message}`)
    throw err
  }
}

/**
 * Makes the enrolled-cgroups map equal to this node's enrolled pods, and the strict-cgroups map
 * equal to its pods whose PeerAuthentication mode is STRICT (the kernel then drops connections to
 * them that did not come through the mesh). With `podCgroups` (a Kubernetes node), a pod without
 * weft.dev/cgroup is found from its UID and QoS class; one whose cgroup is not there yet is
 * enrolled when it appears (PodCgroups calls back).
 */
function enroll(interception: NodeInterception, snapshot: MeshSnapshot, node: string, log: Logger, podCgroups?: PodCgroups): void {
  const enrolled: bigint[] = []
  const strict: bigint[] = []
  const pods = (snapshot.podsByNode.get(node) ?? []).filter((w) => w.enrolled || snapshot.strictWorkloads.has(w.key))
  const kubelet = podCgroups?.want(pods.filter((w) => !w.cgroup && w.uid !== undefined).map((w) => ({ key: w.key, uid: w.uid!, qos: w.qosClass })))
  for (const w of pods) {
    const isStrict = snapshot.strictWorkloads.has(w.key)
    const cgroup = w.cgroup ?? kubelet?.get(w.key)
    if (!cgroup && kubelet && w.uid !== undefined) { log.debug('the kubelet has not made the pod\'s cgroup yet; enrolled when it appears', { workload: `${w.namespace}/${w.name}` }); continue }
    if (!cgroup) { log.warn(`${w.enrolled ? 'enrolled' : 'STRICT'} pod has no cgroup (annotation weft.dev/cgroup); ${w.enrolled ? 'its traffic is not intercepted' : 'strict mode is not enforced for it'}`, { workload: `${w.namespace}/${w.name}` }); continue }
    try {
      const id = cgroupIdOf(cgroup)
      if (w.enrolled) enrolled.push(id)
      if (isStrict) strict.push(id)
    } catch (err) {
      log.warn('cannot find the cgroup of a pod; its traffic is not intercepted and strict mode is not enforced for it', { workload: `${w.namespace}/${w.name}`, cgroup, error: err })
    }
  }
  interception.setEnrolledCgroups(enrolled)
  interception.setStrictCgroups(strict)
  log.debug('enrolled cgroups', { count: enrolled.length, strict: strict.length })
}
