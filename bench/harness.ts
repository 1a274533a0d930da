// The benchmark harness: brings up a lab, starts the servers and the hops under test, runs the
// load interleaved (A B C A B C ...) so that machine drift hits every configuration alike,
// reads what the proxies cost from /proc, then measures density in a second lab, and returns
// the report. Everything runs in lab namespaces on lab addresses (198.18.0.0/15) and is taken
// down at the end, also after a failure.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { cpus as osCpus, hostname, loadavg, release, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import hdr from 'hdr-histogram-js'
import { randomRunId } from '../src/lab/lab.ts'
import { daemonCommand, LabBusyError, labDown, labUp, type Lab, type LabPod, type TopologyInput } from '../src/lab/index.ts'
import { HISTOGRAM_OPTIONS, type LoadResult, type LoadSpec } from './loadgen.ts'
import { totalCpuSeconds, totalRssBytes, withChildren } from './procstat.ts'
import {
  SCHEMA_VERSION, type BenchReport, type ClosedLoopResult, type ConfigurationId, type ConfigurationInfo, type DensityPoint,
  type DensityResult, type PathId, type Percentiles, type ScenarioResult, type WorkloadId,
} from './report.ts'
import {
  BODY_BYTES, ECHO_PORT, HTTP_PORT, PROXY_PORTS, echoServerScript, haproxyConfig, nginxProxyConfig, nginxServerConfig,
  startInLab, stopProcess, toolVersion, writeConfig, type Started,
} from './servers.ts'
import { sidecarConnections, startSidecars, stopSidecar, type Sidecar } from './sidecar.ts'
import {
  accessLogLinesByService, accessLogSetting, applyL7Services, l7PodLabels, l7RequestsCounted, L7_SERVICE_PORT, L7_SERVICES, runtimeSummary,
} from './l7.ts'
import { DEFAULTS as NODE_DEFAULTS } from '../src/config/node-config.ts'

const LOADGEN = fileURLToPath(new URL('./loadgen.ts', import.meta.url))

export interface BenchOptions {
  profile: 'quick' | 'default' | 'custom'
  rate: number
  connections: number
  rounds: number
  sliceSeconds: number
  warmupSeconds: number
  closedLoopSeconds: number
  closedLoopConnections: number
  workloads: WorkloadId[]
  /** Pod counts for the density view; empty skips it. */
  densityPods: number[]
  /** How long to wait for someone else's lab to go down before giving up. */
  labWaitSeconds: number
  /** Flags added to the lab's `weft node` daemons' command line (e.g. `--access-log off`); empty:
   *  the daemons' defaults, which is what the report's weft rows mean unless the run says otherwise. */
  nodeFlags?: string[]
  /** Run ids of the benchmark's two labs (default random). */
  runIds?: { main: string; density: string }
  onProgress: (line: string) => void
}

export const PROFILES: Record<'quick' | 'default', Omit<BenchOptions, 'onProgress' | 'profile' | 'labWaitSeconds'>> = {
  quick: { rate: 1000, connections: 4, rounds: 1, sliceSeconds: 1.5, warmupSeconds: 0.3, closedLoopSeconds: 1, closedLoopConnections: 16, workloads: ['http', 'echo'], densityPods: [1, 10] },
  default: { rate: 1000, connections: 4, rounds: 3, sliceSeconds: 5, warmupSeconds: 0.5, closedLoopSeconds: 3, closedLoopConnections: 16, workloads: ['http', 'echo'], densityPods: [1, 10, 50] },
}

export const CONFIGURATIONS: ConfigurationInfo[] = [
  { id: 'direct', title: 'direct (no mesh)', available: true, description: 'An unenrolled client pod connects straight to the server pod: the floor every other row is compared with.' },
  { id: 'weft-l4', title: 'weft L4', available: true, description: 'An enrolled client pod: eBPF redirects its connect to the node proxy (one `weft node` per node), which splices bytes to the server pod (same node: joined in the kernel by the L4 fast path, the daemon\'s default, once accepted and authorized, so the bytes skip the proxy) or through the pooled HTTP/2 CONNECT tunnel to the destination node\'s proxy (cross node: two proxies).' },
  {
    id: 'weft-l7', title: 'weft L7 (HTTP, metrics on)', available: true,
    description: `The weft L4 path, but the enrolled client dials a Service VIP (${L7_SERVICES['same-node'].vip} selecting srv1, ${L7_SERVICES['cross-node'].vip} selecting srv2; published over NATS) whose port declares appProtocol: http, so the node proxy terminates HTTP/1.1 (keep-alive to the client) and runs each request through the L7 pipeline (route, EWMA pick, retry policy, per-request metrics, access log), forwarding over a pooled keep-alive connection to the pod (same node) or through the HTTP/2 CONNECT tunnel to node2's proxy, which splices to the pod (cross node: two proxies, the second L4). The daemons run with their default telemetry: metrics on and the access log on (--access-log ${NODE_DEFAULTS.accessLog}, --access-log-sample ${NODE_DEFAULTS.accessLogSample}: a JSON line per request; in the lab stdout is the node's log file). Checked: node1's weft_requests_total for the Service must grow by at least the requests answered in each slice, else the row fails. HTTP only.`,
  },
  { id: 'sidecar', title: 'sidecar (weft proxy per pod)', available: true, description: 'The sidecar model built from weft\'s own proxy so only the architecture differs: a `weft node` instance in the client pod (eBPF at the pod\'s cgroup intercepts the client\'s outbound) tunnels over HTTP/2 CONNECT to a second instance in the server pod (ssrv1/ssrv2: the same servers as srv1/srv2, kept apart because a pod with a sidecar is on its sidecar\'s node for every proxy), which connects to the app over the pod\'s own address. Two proxies on every path, same node or not. Each sidecar reads NATS with operator creds (bench only). Both sidecars hold their pods\' certificates from weft control, so the tunnel between them is mutual TLS as between node proxies. Not measured: iptables redirection (eBPF here).' },
  { id: 'nginx', title: 'nginx (node L7 hop)', available: true, description: 'nginx (one worker) in the client node\'s namespace as an HTTP reverse proxy with keep-alive upstream pools; the client addresses it explicitly (no transparent interception). One proxy on either path. HTTP only.' },
  { id: 'haproxy', title: 'haproxy (node L7 hop)', available: true, description: 'haproxy (one thread, HTTP mode, keep-alive and connection reuse) in the client node\'s namespace, addressed explicitly. One proxy on either path. HTTP only.' },
]

const TOPOLOGY: TopologyInput = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'plain', node: 'node1', enrolled: false },
    { name: 'meshed', node: 'node1', enrolled: true },
    { name: 'sidecar', node: 'node1', enrolled: false },
    // Labelled so that the weft L7 row's Services select them (bench/l7.ts).
    { name: 'srv1', node: 'node1', enrolled: false, labels: l7PodLabels('srv1') },
    { name: 'srv2', node: 'node2', enrolled: false, labels: l7PodLabels('srv2') },
    // The sidecar model's servers (same servers, same nodes): a pod with a sidecar is on its
    // sidecar's "node" for every proxy (bench/sidecar.ts), so srv1/srv2 stay the node daemons'.
    { name: 'ssrv1', node: 'node1', enrolled: false },
    { name: 'ssrv2', node: 'node2', enrolled: false },
  ],
}

interface Scenario {
  configuration: ConfigurationId
  path: PathId
  workload: WorkloadId
  client: string
  host: string
  port: number
  /** Processes whose CPU and memory are the hop's cost, with labels for the report. */
  proxies: () => { pids: number[]; labels: string[] }
  /** The weft L7 row: where to read that its requests took the L7 path (the client node's admin
   *  address and the Service, `namespace/name`, as weft_requests_total labels it). */
  l7?: { nodeAddress: string; service: string }
}

interface Accumulator {
  latency: ReturnType<typeof hdr.build>
  service: ReturnType<typeof hdr.build>
  counts: { slices: number; scheduled: number; ok: number; badStatus: number; connectionErrors: number; timeouts: number; maxTimerLagUs: number }
  cpuSeconds: number
  requestsForCpu: number
  rssBytes: number
  proxyLabels: string[]
  closed: ClosedLoopResult | null
  failure: string | undefined
  /** The weft L7 row: requests sent, requests the client node's L7 proxy counted for the Service,
   *  access log lines written for it (counted at the end of the run). */
  l7: { requestsSent: number; requestsCounted: number; accessLogLines: number } | undefined
  /** The traffic did not take the path the row is about: the row fails with this reason. */
  pathProblem: string | undefined
}

/** Where the load generator runs and where everything else does, when there are CPUs to spare. */
export function cpuPinning(): { loadGenerator: string; everythingElse: string } | null {
  const n = osCpus().length
  if (n < 2) return null
  return { loadGenerator: String(n - 1), everythingElse: n === 2 ? '0' : `0-${n - 2}` }
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const started = new Date()
  const progress = options.onProgress
  const pinning = cpuPinning()
  const loadAverageAtStart = loadavg()
  const flags: string[] = []
  const work = mkdtempSync(join(tmpdir(), 'weft-bench-'))
  const runIds = options.runIds ?? { main: randomRunId(), density: randomRunId() }
  const results: ScenarioResult[] = []
  const notes: { l7Telemetry?: string } = {}
  let density: DensityResult = { status: 'skipped', reason: 'no pod counts given', method: '', weft: [], sidecar: [] }
  try {
    const accumulators = await runLatency(options, runIds.main, work, pinning, flags, notes)
    results.push(...summarise(options, accumulators, flags))
    if (options.densityPods.length > 0) density = await runDensity(options, runIds.density, work, pinning, flags)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  for (const c of CONFIGURATIONS) if (!c.available) flags.push(`${c.title}: not measured: ${c.reason}`)
  const finished = new Date()
  progress(`done in ${((finished.getTime() - started.getTime()) / 1000).toFixed(0)} s`)
  return {
    schemaVersion: SCHEMA_VERSION,
    tool: 'weft-bench',
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationSeconds: Math.round((finished.getTime() - started.getTime()) / 100) / 10,
    machine: { ...machineInfo(), loadAverageAtStart, loadAverageAtEnd: loadavg() },
    options: {
      profile: options.profile, rate: options.rate, connections: options.connections, rounds: options.rounds,
      sliceSeconds: options.sliceSeconds, warmupSeconds: options.warmupSeconds, closedLoopSeconds: options.closedLoopSeconds,
      closedLoopConnections: options.closedLoopConnections, workloads: options.workloads, densityPods: options.densityPods, cpuPinning: pinning,
      ...(options.nodeFlags && options.nodeFlags.length > 0 ? { nodeFlags: options.nodeFlags } : {}),
    },
    configurations: CONFIGURATIONS.map((c) => (c.id === 'weft-l7' && notes.l7Telemetry ? { ...c, description: `${c.description} ${notes.l7Telemetry}` } : c)),
    results,
    density,
    flags,
  }
}

function machineInfo(): Omit<BenchReport['machine'], 'loadAverageAtStart' | 'loadAverageAtEnd'> {
  return {
    hostname: hostname(), kernel: release(), cpus: osCpus().length, cpuModel: osCpus()[0]?.model.trim() ?? 'unknown',
    memoryBytes: totalmem(), node: process.version,
    tools: { nginx: toolVersion('nginx', ['-v']), haproxy: toolVersion('haproxy', ['-v']), wrk: toolVersion('wrk', ['-v']) },
  }
}

/** labUp, waiting for another lab (someone's tests, a demo) to go down first; never touches it. */
async function labUpWhenFree(topology: TopologyInput, runId: string, options: BenchOptions, startDaemons: boolean): Promise<Lab> {
  const deadline = Date.now() + options.labWaitSeconds * 1000
  let announced = false
  for (;;) {
    try {
      const nodeFlags = options.nodeFlags ?? []
      return await labUp(topology, {
        runId, startDaemons, onProgress: (line) => options.onProgress(line),
        ...(nodeFlags.length > 0 ? { daemonCommand: (plan, node) => [...daemonCommand(plan, node), ...nodeFlags] } : {}),
      })
    } catch (error) {
      if (!(error instanceof LabBusyError) || Date.now() > deadline) throw error
      if (!announced) options.onProgress(`waiting up to ${options.labWaitSeconds} s for lab ${error.otherRunId} to go down (one lab at a time)`)
      announced = true
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
  }
}

function pinDaemons(lab: Lab, cpus: string | undefined): void {
  if (!cpus) return
  for (const node of lab.nodes) {
    const pid = lab.daemonPid(node.name)
    if (pid) spawn('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' })
  }
}

async function runLatency(options: BenchOptions, runId: string, work: string, pinning: ReturnType<typeof cpuPinning>, flags: string[], notes: { l7Telemetry?: string }): Promise<Map<string, Accumulator>> {
  const progress = options.onProgress
  const other = pinning?.everythingElse
  const lab = await labUpWhenFree(TOPOLOGY, runId, options, true)
  const processes: Started[] = []
  let sidecars: Sidecar[] = []
  const accumulators = new Map<string, Accumulator>()
  try {
    pinDaemons(lab, other)
    const node1 = lab.node('node1')
    const srv1 = lab.pod('srv1')
    const srv2 = lab.pod('srv2')
    const ssrv1 = lab.pod('ssrv1')
    const ssrv2 = lab.pod('ssrv2')
    for (const srv of [srv1, srv2, ssrv1, ssrv2]) {
      const dir = join(work, `nginx-${srv.name}`)
      const conf = writeConfig(dir, 'nginx.conf', nginxServerConfig(dir, srv.ip))
      processes.push(await startInLab(lab, srv.name, `nginx server`, ['nginx', '-p', dir, '-c', conf, '-e', join(dir, 'error.log')], other, { host: srv.ip, port: HTTP_PORT }, join(dir, 'out.log')))
      processes.push(await startInLab(lab, srv.name, 'echo server', [process.execPath, '-e', echoServerScript, srv.ip, String(ECHO_PORT)], other, { host: srv.ip, port: ECHO_PORT }, join(work, `echo-${srv.name}.log`)))
    }
    progress('servers up: nginx (1 KB) and TCP echo in srv1 and ssrv1 (node1), srv2 and ssrv2 (node2)')
    const nginxDir = join(work, 'nginx-proxy')
    const nginxConf = writeConfig(nginxDir, 'nginx.conf', nginxProxyConfig(nginxDir, node1.proxyIp, srv1.ip, srv2.ip))
    const nginxProxy = await startInLab(lab, 'node1', 'nginx proxy', ['nginx', '-p', nginxDir, '-c', nginxConf, '-e', join(nginxDir, 'error.log')], other, { host: node1.proxyIp, port: PROXY_PORTS.nginx['same-node'] }, join(nginxDir, 'out.log'))
    processes.push(nginxProxy)
    const haproxyConf = writeConfig(join(work, 'haproxy'), 'haproxy.cfg', haproxyConfig(node1.proxyIp, srv1.ip, srv2.ip))
    const haproxy = await startInLab(lab, 'node1', 'haproxy', ['haproxy', '-f', haproxyConf, '-db'], other, { host: node1.proxyIp, port: PROXY_PORTS.haproxy['same-node'] }, join(work, 'haproxy', 'out.log'))
    processes.push(haproxy)
    progress('node-level proxies up: nginx and haproxy in node1')
    const l7Wanted = options.workloads.includes('http')
    if (l7Wanted) {
      await applyL7Services(lab, srv1.namespace)
      progress(`weft L7 Services applied on every node: ${Object.entries(L7_SERVICES).map(([path, s]) => `${s.vip}:${L7_SERVICE_PORT} -> ${s.pod} (${path})`).join(', ')}, appProtocol http`)
    }
    sidecars = await startSidecars(lab, [lab.pod('sidecar'), ssrv1, ssrv2], work, other)
    progress(`sidecars up: ${sidecars.map((s) => s.name).join(', ')}`)

    const daemon = (node: string): number[] => { const pid = lab.daemonPid(node); return pid ? [pid] : [] }
    const sidecarPid = (pod: string): number[] => sidecars.filter((s) => s.pod.name === pod).map((s) => s.pid)
    const scenarios: Scenario[] = []
    for (const workload of options.workloads) {
      for (const path of ['same-node', 'cross-node'] as const) {
        const server = path === 'same-node' ? srv1 : srv2
        const sidecarServer = path === 'same-node' ? ssrv1 : ssrv2
        const port = workload === 'http' ? HTTP_PORT : ECHO_PORT
        const base = { path, workload, port }
        scenarios.push({ ...base, configuration: 'direct', client: 'plain', host: server.ip, proxies: () => ({ pids: [], labels: [] }) })
        scenarios.push({
          ...base, configuration: 'weft-l4', client: 'meshed', host: server.ip,
          proxies: () => (path === 'same-node' ? { pids: daemon('node1'), labels: ['weft node1'] } : { pids: [...daemon('node1'), ...daemon('node2')], labels: ['weft node1', 'weft node2'] }),
        })
        scenarios.push({
          ...base, configuration: 'sidecar', client: 'sidecar', host: sidecarServer.ip,
          proxies: () => ({ pids: [...sidecarPid('sidecar'), ...sidecarPid(sidecarServer.name)], labels: ['weft sidecar (client pod)', `weft sidecar (${sidecarServer.name})`] }),
        })
        if (workload === 'http') {
          const service = L7_SERVICES[path]
          scenarios.push({
            ...base, configuration: 'weft-l7', client: 'meshed', host: service.vip, port: L7_SERVICE_PORT,
            proxies: () => (path === 'same-node' ? { pids: daemon('node1'), labels: ['weft node1'] } : { pids: [...daemon('node1'), ...daemon('node2')], labels: ['weft node1 (L7)', 'weft node2 (L4 from the tunnel)'] }),
            l7: { nodeAddress: node1.address, service: `${srv1.namespace}/${service.name}` },
          })
          scenarios.push({ ...base, configuration: 'nginx', client: 'plain', host: node1.proxyIp, port: PROXY_PORTS.nginx[path], proxies: () => ({ pids: withChildren(nginxProxy.pid), labels: ['nginx master+worker'] }) })
          scenarios.push({ ...base, configuration: 'haproxy', client: 'plain', host: node1.proxyIp, port: PROXY_PORTS.haproxy[path], proxies: () => ({ pids: withChildren(haproxy.pid), labels: ['haproxy'] }) })
        }
      }
    }
    for (const s of scenarios) accumulators.set(key(s), newAccumulator())

    const sliceCount = scenarios.length * options.rounds
    let done = 0
    for (let round = 1; round <= options.rounds; round++) {
      for (const s of scenarios) {
        const acc = accumulators.get(key(s)) as Accumulator
        done++
        if (acc.failure) continue
        try {
          await openLoopSlice(lab, s, acc, options, pinning?.loadGenerator)
          const errors = acc.counts.badStatus + acc.counts.connectionErrors + acc.counts.timeouts
          progress(`open loop ${done}/${sliceCount} (round ${round}): ${key(s)}: ${acc.counts.ok} ok, ${errors} errors so far, p50 ${percentiles(acc.latency).p50} µs`)
        } catch (error) {
          acc.failure = (error as Error).message
          progress(`open loop ${key(s)}: FAILED: ${acc.failure}`)
        }
      }
    }
    await checkSidecarPath(sidecars, flags, progress)
    const httpScenarios = scenarios.filter((s) => s.workload === 'http')
    done = 0
    for (let round = 1; round <= options.rounds; round++) {
      for (const s of httpScenarios) {
        const acc = accumulators.get(key(s)) as Accumulator
        done++
        if (acc.failure) continue
        try {
          const before = s.l7 ? await l7RequestsCounted(s.l7.nodeAddress, s.l7.service) : 0
          const result = await closedLoopSlice(lab, s, options, pinning?.loadGenerator)
          if (s.l7) checkL7(acc, s, 'closed loop', result.requests, result.requests, (await l7RequestsCounted(s.l7.nodeAddress, s.l7.service)) - before, progress)
          const c = acc.closed ?? { tool: result.tool, connections: result.connections, seconds: 0, requests: 0, errors: 0, requestsPerSecond: 0 }
          c.seconds += result.seconds
          c.requests += result.requests
          c.errors += result.errors
          c.requestsPerSecond = c.requests / c.seconds
          acc.closed = c
          progress(`closed loop ${done}/${httpScenarios.length * options.rounds} (round ${round}): ${key(s)}: ${Math.round(result.requestsPerSecond)} req/s, ${result.errors} errors`)
        } catch (error) {
          flags.push(`${key(s)}: closed loop failed: ${(error as Error).message}`)
          progress(`closed loop ${key(s)}: FAILED: ${(error as Error).message}`)
        }
      }
    }
    if (l7Wanted) {
      // The access log holds lines up to a second before writing them (src/telemetry/access-log.ts).
      await new Promise((resolve) => setTimeout(resolve, 1500))
      const setting = accessLogSetting(lab.daemonPid('node1'))
      const lines = accessLogLinesByService(lab.logFile('node1'))
      const counted: string[] = []
      for (const s of scenarios) {
        const acc = accumulators.get(key(s)) as Accumulator
        if (!s.l7 || !acc.l7) continue
        acc.l7.accessLogLines = lines.get(s.l7.service) ?? 0
        counted.push(`${s.path}: ${acc.l7.accessLogLines.toLocaleString('en-US')} access log lines for ${acc.l7.requestsCounted.toLocaleString('en-US')} requests`)
      }
      let runtime = ''
      try {
        runtime = ` node1's daemon over the whole run (every row it served): ${await runtimeSummary(node1.address)}.`
      } catch (error) {
        flags.push(`cannot read node1's runtime metrics: ${(error as Error).message}`)
      }
      notes.l7Telemetry = `This run: node1's daemon ran with --access-log ${setting.destination} --access-log-sample ${setting.sampleRate}${setting.fromDefaults ? ' (its defaults)' : ''}; ${counted.join('; ')}.${runtime}`
      progress(`weft L7: ${notes.l7Telemetry}`)
    }
    return accumulators
  } finally {
    progress('stopping sidecars, proxies and servers')
    await Promise.all(sidecars.map(stopSidecar))
    await Promise.all(processes.map((p) => stopProcess(p.child)))
    lab.down(progress)
  }
}

/** The sidecar rows are only the sidecar model if the traffic took it: the client's sidecar
 *  tunnelled (never connected directly) and each server's sidecar accepted from the tunnel.
 *  Anything else is flagged, not hidden. */
async function checkSidecarPath(sidecars: Sidecar[], flags: string[], progress: (line: string) => void): Promise<void> {
  for (const sidecar of sidecars) {
    try {
      const c = await sidecarConnections(sidecar)
      const client = sidecar.pod.name === 'sidecar'
      const problem = client
        ? (c.outboundTunnel === 0 ? 'the client sidecar tunnelled no connection' : c.outboundDirect > 0 ? `the client sidecar connected ${c.outboundDirect} directly (not through the server's sidecar)` : undefined)
        : (c.inbound === 0 ? `${sidecar.name} accepted no tunnelled connection` : undefined)
      progress(`sidecar path: ${sidecar.name}: outbound tunnel ${c.outboundTunnel}, outbound direct ${c.outboundDirect}, inbound ${c.inbound}`)
      if (problem) flags.push(`sidecar: ${problem}: its rows do not measure the sidecar model`)
    } catch (error) {
      flags.push(`sidecar: cannot read ${sidecar.name}'s metrics to check the path: ${(error as Error).message}`)
    }
  }
}

/** The weft L7 row is only L7 if its requests took the L7 path: the client node's L7 proxy must
 *  have counted (weft_requests_total for the Service) at least the requests that were answered.
 *  Fewer means some went another way (spliced as opaque TCP, or not through weft at all): the row
 *  fails, with the counts. */
function checkL7(acc: Accumulator, s: Scenario, phase: string, sent: number, answered: number, counted: number, progress: (line: string) => void): void {
  const l7 = acc.l7 ?? { requestsSent: 0, requestsCounted: 0, accessLogLines: 0 }
  l7.requestsSent += sent
  l7.requestsCounted += counted
  acc.l7 = l7
  progress(`weft L7 path: ${key(s)} ${phase}: ${sent} requests sent, ${answered} answered, ${counted} counted by node1's L7 proxy (weft_requests_total, ${s.l7?.service})`)
  if (counted < answered && !acc.pathProblem) {
    acc.pathProblem = `not through L7: node1's weft_requests_total for ${s.l7?.service} grew by ${counted} in a ${phase} slice that got ${answered} answers (of ${sent} sent)`
  }
}

const key = (s: { configuration: string; path: string; workload: string }): string => `${s.configuration}/${s.path}/${s.workload}`

function newAccumulator(): Accumulator {
  return {
    latency: hdr.build(HISTOGRAM_OPTIONS), service: hdr.build(HISTOGRAM_OPTIONS),
    counts: { slices: 0, scheduled: 0, ok: 0, badStatus: 0, connectionErrors: 0, timeouts: 0, maxTimerLagUs: 0 },
    cpuSeconds: 0, requestsForCpu: 0, rssBytes: 0, proxyLabels: [], closed: null, failure: undefined, l7: undefined, pathProblem: undefined,
  }
}

async function openLoopSlice(lab: Lab, s: Scenario, acc: Accumulator, options: BenchOptions, cpu: string | undefined): Promise<void> {
  const spec: LoadSpec = {
    mode: s.workload, host: s.host, port: s.port, path: '/1k', rate: options.rate, connections: options.connections,
    durationMs: Math.round(options.sliceSeconds * 1000), warmupMs: Math.round(options.warmupSeconds * 1000), payloadBytes: BODY_BYTES, drainMs: 2000,
  }
  const argv = [process.execPath, '--disable-warning=ExperimentalWarning', LOADGEN, JSON.stringify(spec)]
  const proxies = s.proxies()
  const l7Before = s.l7 ? await l7RequestsCounted(s.l7.nodeAddress, s.l7.service) : 0
  const cpuBefore = totalCpuSeconds(proxies.pids)
  const run = await lab.run(s.client, cpu ? ['taskset', '-c', cpu, ...argv] : argv, { timeoutMs: spec.durationMs + spec.warmupMs + 20_000 })
  const cpuAfter = totalCpuSeconds(proxies.pids)
  const line = run.stdout.trim().split('\n').pop() ?? ''
  if (run.code !== 0 || !line.startsWith('{')) throw new Error(`load generator in ${s.client} exited ${run.code}: ${(run.stderr || run.stdout).trim().slice(-400)}`)
  const result = JSON.parse(line) as LoadResult
  const warmupSent = Math.round(options.rate * options.warmupSeconds)
  if (s.l7) checkL7(acc, s, 'open loop', result.scheduled + warmupSent, result.ok, (await l7RequestsCounted(s.l7.nodeAddress, s.l7.service)) - l7Before, options.onProgress)
  acc.latency.add(hdr.decodeFromCompressedBase64(result.latency))
  acc.service.add(hdr.decodeFromCompressedBase64(result.serviceTime))
  const c = acc.counts
  c.slices++
  c.scheduled += result.scheduled
  c.ok += result.ok
  c.badStatus += result.badStatus
  c.connectionErrors += result.connectionErrors
  c.timeouts += result.timeouts
  c.maxTimerLagUs = Math.max(c.maxTimerLagUs, result.maxTimerLagUs)
  // The CPU window holds the warm-up requests too.
  acc.cpuSeconds += cpuAfter - cpuBefore
  acc.requestsForCpu += result.scheduled + warmupSent
  acc.rssBytes = Math.max(acc.rssBytes, totalRssBytes(proxies.pids))
  acc.proxyLabels = proxies.labels
}

async function closedLoopSlice(lab: Lab, s: Scenario, options: BenchOptions, cpu: string | undefined): Promise<ClosedLoopResult> {
  const seconds = options.closedLoopSeconds
  const argv = ['wrk', '-t1', `-c${options.closedLoopConnections}`, `-d${seconds}s`, '--timeout', '5s', `http://${s.host}:${s.port}/1k`]
  const run = await lab.run(s.client, cpu ? ['taskset', '-c', cpu, ...argv] : argv, { timeoutMs: seconds * 1000 + 20_000 })
  if (run.code !== 0) throw new Error(`wrk in ${s.client} exited ${run.code}: ${(run.stderr || run.stdout).trim().slice(-400)}`)
  return parseWrk(run.stdout, options.closedLoopConnections)
}

/** Reads wrk's summary: `N requests in 2.00s`, `Socket errors: connect a, read b, write c, timeout d`, `Non-2xx or 3xx responses: n`. */
export function parseWrk(text: string, connections: number): ClosedLoopResult {
  const total = /(\d+) requests in ([\d.]+)(m?s|m)\b/.exec(text)
  if (!total) throw new Error(`cannot read wrk's output: ${text.trim().slice(-300)}`)
  const unit = total[3] === 'ms' ? 0.001 : total[3] === 'm' ? 60 : 1
  const seconds = Number(total[2]) * unit
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  const socketErrors = socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0)
  const requests = Number(total[1])
  return { tool: 'wrk', connections, seconds, requests, errors: socketErrors + non2xx, requestsPerSecond: seconds > 0 ? requests / seconds : 0 }
}

function percentiles(h: ReturnType<typeof hdr.build>): Percentiles {
  if (h.totalCount === 0) return { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 }
  return {
    p50: h.getValueAtPercentile(50), p90: h.getValueAtPercentile(90), p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9), max: h.maxValue, mean: Math.round(h.mean),
  }
}

function summarise(options: BenchOptions, accumulators: Map<string, Accumulator>, flags: string[]): ScenarioResult[] {
  const results: ScenarioResult[] = []
  for (const workload of options.workloads) {
    for (const path of ['same-node', 'cross-node'] as const) {
      const direct = accumulators.get(key({ configuration: 'direct', path, workload }))
      const directLatency = direct && !direct.failure && direct.latency.totalCount > 0 ? percentiles(direct.latency) : undefined
      for (const c of CONFIGURATIONS) {
        const base = { configuration: c.id, path, workload }
        if (!c.available) { results.push({ ...base, status: 'not-available', reason: c.reason as string, flagged: false, openLoop: null, closedLoop: null, proxy: null }); continue }
        const acc = accumulators.get(key(base))
        if (!acc) { results.push({ ...base, status: 'not-applicable', reason: `${c.title} is an HTTP hop; the ${workload} workload is not HTTP`, flagged: false, openLoop: null, closedLoop: null, proxy: null }); continue }
        if (acc.failure && acc.counts.slices === 0) {
          flags.push(`${key(base)}: failed: ${acc.failure}`)
          results.push({ ...base, status: 'failed', reason: acc.failure, flagged: true, openLoop: null, closedLoop: acc.closed, proxy: null })
          continue
        }
        if (acc.pathProblem) {
          flags.push(`${key(base)}: failed: ${acc.pathProblem}`)
          results.push({ ...base, status: 'failed', reason: acc.pathProblem, flagged: true, openLoop: null, closedLoop: acc.closed, proxy: null, ...(acc.l7 ? { l7: acc.l7 } : {}) })
          continue
        }
        const latency = percentiles(acc.latency)
        const errorsTotal = acc.counts.badStatus + acc.counts.connectionErrors + acc.counts.timeouts
        const closedErrors = acc.closed?.errors ?? 0
        const flagged = errorsTotal > 0 || closedErrors > 0 || acc.failure !== undefined
        if (errorsTotal > 0) flags.push(`${key(base)}: ${errorsTotal} of ${acc.counts.scheduled} open-loop requests failed (bad status ${acc.counts.badStatus}, connection ${acc.counts.connectionErrors}, timeout ${acc.counts.timeouts})`)
        if (closedErrors > 0) flags.push(`${key(base)}: ${closedErrors} closed-loop requests failed`)
        if (acc.failure) flags.push(`${key(base)}: a slice failed after ${acc.counts.slices} measured: ${acc.failure}`)
        const added = directLatency && c.id !== 'direct'
          ? { p50: latency.p50 - directLatency.p50, p90: latency.p90 - directLatency.p90, p99: latency.p99 - directLatency.p99, p999: latency.p999 - directLatency.p999 }
          : null
        results.push({
          ...base, status: 'measured', flagged,
          openLoop: {
            slices: acc.counts.slices, scheduled: acc.counts.scheduled, ok: acc.counts.ok,
            errors: { badStatus: acc.counts.badStatus, connectionErrors: acc.counts.connectionErrors, timeouts: acc.counts.timeouts, total: errorsTotal },
            latencyUs: latency, serviceTimeUs: percentiles(acc.service), addedOverDirectUs: added, maxTimerLagUs: acc.counts.maxTimerLagUs,
          },
          closedLoop: acc.closed,
          proxy: c.id === 'direct' ? null : {
            processes: acc.proxyLabels,
            cpuSecondsPer1000Requests: acc.requestsForCpu > 0 ? Math.round((acc.cpuSeconds / acc.requestsForCpu) * 1000 * 10000) / 10000 : 0,
            rssBytes: acc.rssBytes,
          },
          ...(acc.l7 ? { l7: acc.l7 } : {}),
        })
      }
    }
  }
  return results
}

const DENSITY_METHOD = [
  'One node; for each model a server pod and N client pods. weft: the N pods are enrolled and share the node\'s one proxy;',
  'sidecar: N other pods and a second server pod, each with its own `weft node` instance (the same proxy code, one per pod: N + 1 processes),',
  'each client sidecar tunnelling to the server\'s sidecar.',
  'Each active pod runs wrk (2 connections, 1 thread) against its model\'s server at once; RSS (VmRSS, user space only:',
  'BPF maps and socket buffers are kernel memory and not counted) is sampled while they run and the largest total is kept.',
].join(' ')

async function runDensity(options: BenchOptions, runId: string, work: string, pinning: ReturnType<typeof cpuPinning>, flags: string[]): Promise<DensityResult> {
  const progress = options.onProgress
  const counts = [...new Set(options.densityPods)].sort((a, b) => a - b)
  const maxPods = counts[counts.length - 1] as number
  const topology: TopologyInput = {
    nodes: ['node1'],
    pods: [
      { name: 'srv', node: 'node1', enrolled: false },
      // The sidecar model's server: it has a sidecar too (a pod with a sidecar is on its sidecar's
      // "node" for every proxy, bench/sidecar.ts), so srv stays the node proxy's.
      { name: 'ssrv', node: 'node1', enrolled: false },
      ...Array.from({ length: maxPods }, (_, i) => ({ name: `m${i + 1}`, node: 'node1', enrolled: true })),
      ...Array.from({ length: maxPods }, (_, i) => ({ name: `s${i + 1}`, node: 'node1', enrolled: false })),
    ],
  }
  const result: DensityResult = { status: 'measured', method: DENSITY_METHOD, weft: [], sidecar: [] }
  let lab: Lab | undefined
  const processes: Started[] = []
  let sidecars: Sidecar[] = []
  try {
    progress(`density: a lab with one node, ${maxPods} enrolled pods, ${maxPods} sidecar pods and a server for each model`)
    lab = await labUpWhenFree(topology, runId, options, true)
    pinDaemons(lab, pinning?.everythingElse)
    const srv = lab.pod('srv')
    const ssrv = lab.pod('ssrv')
    for (const server of [srv, ssrv]) {
      const dir = join(work, `density-nginx-${server.name}`)
      const conf = writeConfig(dir, 'nginx.conf', nginxServerConfig(dir, server.ip))
      processes.push(await startInLab(lab, server.name, 'nginx server', ['nginx', '-p', dir, '-c', conf, '-e', join(dir, 'error.log')], pinning?.everythingElse, { host: server.ip, port: HTTP_PORT }, join(dir, 'out.log')))
    }
    const daemonPid = lab.daemonPid('node1')
    for (const n of counts) {
      const pods = Array.from({ length: n }, (_, i) => (lab as Lab).pod(`m${i + 1}`))
      const point = await densityLoad(lab, pods, srv, () => (daemonPid ? [daemonPid] : []), pinning?.loadGenerator)
      result.weft.push(point)
      progress(`density weft: ${n} pod(s), one proxy: ${(point.rssBytes / 1048576).toFixed(1)} MiB, ${point.requests} requests, ${point.errors} errors`)
    }
    const sidecarPods = Array.from({ length: maxPods }, (_, i) => (lab as Lab).pod(`s${i + 1}`))
    progress('density sidecar: starting the server\'s sidecar')
    sidecars.push(...(await startSidecars(lab, [ssrv], work, pinning?.everythingElse)))
    for (const n of counts) {
      const more = sidecarPods.slice(sidecars.length - 1, n)
      progress(`density sidecar: starting ${more.length} more sidecar(s)`)
      sidecars.push(...(await startSidecars(lab, more, work, pinning?.everythingElse)))
      const point = await densityLoad(lab, sidecarPods.slice(0, n), ssrv, () => sidecars.map((s) => s.pid), pinning?.loadGenerator)
      result.sidecar.push(point)
      progress(`density sidecar: ${n} pod(s), ${point.processes} proxies: ${(point.rssBytes / 1048576).toFixed(1)} MiB, ${point.requests} requests, ${point.errors} errors`)
    }
    for (const p of [...result.weft, ...result.sidecar]) if (p.errors > 0) flags.push(`density: ${p.errors} failed requests with ${p.pods} pod(s) (${p.processes} proxies)`)
  } catch (error) {
    result.status = 'failed'
    result.reason = (error as Error).message
    flags.push(`density: failed: ${result.reason}`)
    progress(`density: FAILED: ${result.reason}`)
  } finally {
    await Promise.all(sidecars.map(stopSidecar))
    sidecars = []
    await Promise.all(processes.map((p) => stopProcess(p.child)))
    if (lab) lab.down(progress)
    else labDown(runId)
  }
  return result
}

async function densityLoad(lab: Lab, pods: LabPod[], server: LabPod, proxyPids: () => number[], cpu: string | undefined): Promise<DensityPoint> {
  const seconds = 2
  const runs = pods.map((pod) => {
    const argv = ['wrk', '-t1', '-c2', `-d${seconds}s`, '--timeout', '5s', `http://${server.ip}:${HTTP_PORT}/1k`]
    return lab.run(pod.name, cpu ? ['taskset', '-c', cpu, ...argv] : argv, { timeoutMs: seconds * 1000 + 30_000 })
  })
  let rss = 0
  const sampler = setInterval(() => (rss = Math.max(rss, totalRssBytes(proxyPids()))), 250)
  const finished = await Promise.all(runs)
  clearInterval(sampler)
  rss = Math.max(rss, totalRssBytes(proxyPids()))
  let requests = 0
  let errors = 0
  for (const run of finished) {
    try {
      const r = parseWrk(run.stdout, 2)
      requests += r.requests
      errors += r.errors
    } catch {
      errors += 1 // a wrk that could not run at all counts as one failure, and the run is flagged
    }
  }
  return { pods: pods.length, processes: proxyPids().length, rssBytes: rss, requests, errors }
}

/** Reads a report back (for the test and for tools that compare runs). */
export function readReport(file: string): BenchReport {
  const report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport
  if (report.schemaVersion !== SCHEMA_VERSION) throw new Error(`${file}: schemaVersion ${String(report.schemaVersion)}, this harness reads ${SCHEMA_VERSION}`)
  return report
}
