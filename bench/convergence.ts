// Configuration convergence: the time from publishing a change (what `weft apply` does) until
// every node reports that it applied the revision. What is measured is the control path — NATS,
// following the bucket, validation, the snapshot, the status — on loopback (no BPF, no listeners).
// Two modes:
// - daemons (default): N = 2, 10 and 50 `weft node --config-only` processes side by side;
// - simulated (--simulated): N = 1,000 and 2,000 simulated nodes, real ConfigAgents many per
//   process (bench/sim-nodes.ts, --workers processes): p50/p99 to all nodes for single changes,
//   the time for all to apply a 1,000-resource apply, nats-server's CPU and memory.
// Writes bench/results/convergence-<stamp>.json and prints a Markdown table.
//   .weft/bin/node bench/convergence.ts [--nodes 2,10,50] [--changes 20] [--out DIR]
//   .weft/bin/node bench/convergence.ts --simulated [--nodes 1000,2000] [--workers 2] [--changes 30] [--apply 1000] [--apply-timeout 120] [--shared-connections]
//   .weft/bin/node bench/convergence.ts --mesh-sizes 100,1000,10000 (one node's apply time for one changed service)
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { connectBus, startNatsServer, type Bus } from '../src/bus/index.ts'
import { buildSnapshot, DEFAULT_VALIDATION_CONTEXT, snapshotCounts } from '../src/config/resources/index.ts'
import { cpuSeconds, rssBytes } from './procstat.ts'
import type { SimNodesInput } from './sim-nodes.ts'

export const CONVERGENCE_SCHEMA_VERSION = 1
const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url))
const SIM_NODES = fileURLToPath(new URL('./sim-nodes.ts', import.meta.url))
const DEFAULT_OUT = fileURLToPath(new URL('./results/', import.meta.url))

export interface ConvergenceResult {
  nodes: number
  changes: number
  /** Milliseconds from the publish until the last node reported the revision. */
  p50Ms: number
  p99Ms: number
  maxMs: number
  samplesMs: number[]
  /** Changes that did not converge within the timeout (counted, never dropped). */
  timeouts: number
}

/** One row of the simulated mode. */
export interface SimulatedResult {
  nodes: number
  workers: number
  /** `per-node`: a connection per simulated node; `shared`: one per process (see sim-nodes.ts). */
  connections: 'per-node' | 'shared'
  changes: number
  /** Single changes: milliseconds from the publish until the last node reported it. */
  p50Ms: number
  p99Ms: number
  maxMs: number
  timeouts: number
  /** nats-server CPU per single change (ms), over the whole series (its idle share included). */
  serverCpuMsPerChange: number
  /** nats-server CPU with every node connected and no change (% of one core, over 5 s): status and revision-check traffic. */
  serverIdleCpuPercent: number
  /** The big apply: resources put at once, and ms until every node reported the last revision (undefined: timed out). */
  applyResources: number
  applyAllNodesMs: number | undefined
  applyServerCpuMs: number
  /** nats-server's resident memory: after start, and the most seen during the run. */
  serverRssStartMiB: number
  serverRssMaxMiB: number
  /** Nodes' snapshot builds (ms each), over all nodes: mean and max, during the big apply. */
  nodeApplyMeanMs: number
  nodeApplyMaxMs: number
  /** Seconds until every simulated node had started and reported. */
  startSeconds: number
  /** The simulated nodes' processes: CPU per single change per node (µs), the node-side cost. */
  nodeCpuUsPerChange: number
  /**
   * After the apply: ms until every node's status in the weft-status bucket (what `weft status`
   * reads) named the config revision, exactly; undefined if not within 15 s.
   */
  statusBucketExactMs: number | undefined
}

export interface ConvergenceReport {
  schemaVersion: number
  startedAt: string
  machine: { cpus: number; node: string }
  results: ConvergenceResult[]
  simulated?: SimulatedResult[]
  meshSizes?: MeshSizeResult[]
}

/** One node's apply of one changed service in a mesh of `services` services. */
export interface MeshSizeResult {
  services: number
  /** Ready endpoints in the mesh (EndpointSlice addresses, 10 per service). */
  endpoints: number
  changes: number
  /** Milliseconds per apply (the snapshot build and the status counts, as ConfigAgent does): median and p90. */
  medianMs: number
  p90Ms: number
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

const service = (i: number): unknown => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name: 'converge', namespace: 'bench' },
  spec: { clusterIP: '198.19.200.1', ports: [{ name: 'http', port: 80, targetPort: 8000 + (i % 1000) }], selector: { app: 'converge' } },
})

/**
 * Follows every node's reported revision through one subscription made before any change. Each
 * wait counts the nodes at its revision as statuses arrive (thousands of nodes: no full scan per status).
 */
class RevisionTracker {
  readonly latest = new Map<string, number>()
  private waiters = new Set<{ revision: number; nodes: Set<string>; reached: Set<string>; done: () => void }>()
  private readonly sub: { stop(): void }
  constructor(bus: Bus) {
    this.sub = bus.subscribeStatuses((node, status) => {
      const revision = Math.max(this.latest.get(node) ?? 0, Number((status as { revision?: number }).revision ?? 0))
      this.latest.set(node, revision)
      for (const w of this.waiters) {
        if (revision >= w.revision && w.nodes.has(node)) {
          w.reached.add(node)
          if (w.reached.size === w.nodes.size) w.done()
        }
      }
    })
  }
  /** Resolves with the milliseconds since `start` once every node reports `revision`, or undefined at the timeout. */
  waitFor(nodes: string[], revision: number, timeoutMs: number, start: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const waiter = { revision, nodes: new Set(nodes), reached: new Set(nodes.filter((n) => (this.latest.get(n) ?? -1) >= revision)), done: () => {} }
      const timer = setTimeout(() => { this.waiters.delete(waiter); resolve(undefined) }, timeoutMs)
      waiter.done = () => { clearTimeout(timer); this.waiters.delete(waiter); resolve(performance.now() - start) }
      if (waiter.reached.size === waiter.nodes.size) waiter.done()
      else this.waiters.add(waiter)
    })
  }
  stop(): void { this.sub.stop() }
}

export async function measureConvergence(nodeCount: number, changes: number, progress: (line: string) => void): Promise<ConvergenceResult> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-converge-'))
  const names = Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`)
  const server = await startNatsServer({ dir, nodes: names })
  const children: ChildProcess[] = []
  const operator = await connectBus({ ...server.credentials.operator, servers: server.url })
  try {
    const tracker = new RevisionTracker(operator)
    await operator.connection.flush() // the subscription is in place before any node starts
    for (const name of names) {
      const creds = join(dir, `${name}.json`)
      writeFileSync(creds, JSON.stringify({ ...server.credentials.node(name), servers: server.url }), { mode: 0o600 })
      children.push(spawn(process.execPath, [CLI, 'node', '--name', name, '--config-only', '--creds', creds, '--status-interval', '60000'], { stdio: 'ignore' }))
    }
    progress(`convergence: ${nodeCount} nodes starting`)
    const ready = await tracker.waitFor(names, 0, 120_000, performance.now())
    if (ready === undefined) throw new Error(`convergence: not every node reported within 120 s (reported: ${tracker.latest.size}/${nodeCount})`)
    const samples: number[] = []
    let timeouts = 0
    for (let i = 0; i < changes; i++) {
      const start = performance.now()
      const revision = await operator.putResource('service.bench.converge', service(i))
      const took = await tracker.waitFor(names, revision, 10_000, start)
      if (took === undefined) timeouts++
      else samples.push(took)
    }
    samples.sort((a, b) => a - b)
    const result = { nodes: nodeCount, changes, p50Ms: percentile(samples, 50), p99Ms: percentile(samples, 99), maxMs: samples.at(-1) ?? NaN, samplesMs: samples, timeouts }
    tracker.stop()
    progress(`convergence: ${nodeCount} nodes: p50 ${result.p50Ms.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms${timeouts ? `, ${timeouts} timed out` : ''}`)
    return result
  } finally {
    for (const child of children) child.kill('SIGTERM')
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null) ? undefined : new Promise((r) => c.once('exit', r))))
    await operator.close()
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The most resident memory seen, sampled every 100 ms while `during` runs. */
async function sampleRss(pid: number, during: Promise<unknown>): Promise<number> {
  let max = rssBytes(pid)
  const timer = setInterval(() => (max = Math.max(max, rssBytes(pid))), 100)
  try {
    await during
  } finally {
    clearInterval(timer)
  }
  return Math.max(max, rssBytes(pid))
}

/** A service per index, each with its own VIP (198.19.0.0/16 holds 65,534). */
export const benchService = (i: number, port = 80): unknown => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name: `svc-${i}`, namespace: 'bench' },
  spec: { clusterIP: `198.19.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`, ports: [{ name: 'http', port, targetPort: 8080 }], selector: { app: `svc-${i}` } },
})

/** An EndpointSlice of `count` ready addresses for benchService(i), addresses from 198.18.0.0/15 by index. */
export function benchEndpointSlice(i: number, count: number): unknown {
  const address = (n: number): string => `198.${18 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`
  return {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name: `svc-${i}-1`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
    addressType: 'IPv4',
    endpoints: Array.from({ length: count }, (_, k) => ({ addresses: [address(i * count + k)] })),
    ports: [{ name: 'http', port: 8080 }],
  }
}

/**
 * A node's apply time against mesh size: `services` services with 10 endpoints each in the
 * node's store, then one service changed at a time and the snapshot rebuilt as ConfigAgent
 * rebuilds it (from every stored value; the unchanged ones' validation is reused).
 */
export function measureApplyVsMeshSize(services: number, changes: number): MeshSizeResult {
  const stored = new Map<string, unknown>()
  // Parsed from JSON text, as the agent stores what it receives.
  const parsed = (value: unknown): unknown => JSON.parse(JSON.stringify(value))
  for (let i = 1; i <= services; i++) {
    stored.set(`service.bench.svc-${i}`, parsed(benchService(i)))
    stored.set(`endpointslice.bench.svc-${i}-1`, parsed(benchEndpointSlice(i, 10)))
  }
  let snapshot = buildSnapshot(new Map(stored), DEFAULT_VALIDATION_CONTEXT, 1)
  const samples: number[] = []
  for (let k = 0; k < changes; k++) {
    const i = 1 + ((k * 7919) % services)
    stored.set(`service.bench.svc-${i}`, parsed(benchService(i, 81 + (k % 1000))))
    const start = performance.now()
    snapshot = buildSnapshot(new Map(stored), DEFAULT_VALIDATION_CONTEXT, 2 + k, snapshot)
    snapshotCounts(snapshot)
    samples.push(performance.now() - start)
  }
  const endpoints = snapshotCounts(snapshot).endpoints
  samples.sort((a, b) => a - b)
  return { services, endpoints, changes, medianMs: percentile(samples, 50), p90Ms: percentile(samples, 90) }
}

export function renderMeshSizesMarkdown(results: MeshSizeResult[]): string {
  return [
    '| services | endpoints | changes | apply ms median | apply ms p90 |',
    '| ---: | ---: | ---: | ---: | ---: |',
    ...results.map((r) => `| ${r.services} | ${r.endpoints} | ${r.changes} | ${r.medianMs.toFixed(2)} | ${r.p90Ms.toFixed(2)} |`),
  ].join('\n')
}

export interface SimulatedOptions {
  nodes: number
  workers: number
  sharedConnections: boolean
  /** How long the big apply may take before it counts as timed out (default 120 s). */
  applyTimeoutMs?: number
  changes: number
  applyResources: number
}

/** Spawns a simulated-nodes worker and resolves once it reports every agent ready. */
function startWorker(input: SimNodesInput, file: string): Promise<ChildProcess> {
  writeFileSync(file, JSON.stringify(input), { mode: 0o600 })
  const child = spawn(process.execPath, [SIM_NODES, file], { stdio: ['pipe', 'pipe', 'inherit'] })
  return new Promise((resolve, reject) => {
    let out = ''
    const onData = (chunk: Buffer): void => {
      out += chunk.toString()
      if (/^ready \d+$/m.test(out)) { child.stdout!.off('data', onData); resolve(child) }
    }
    child.stdout!.on('data', onData)
    child.once('exit', (code) => reject(new Error(`sim-nodes worker exited (${code}) before it was ready`)))
  })
}

/** Asks a worker for its agents' snapshot builds so far (SIGUSR2 -> one "applied {...}" line). */
function applyStatsOf(child: ChildProcess): Promise<{ count: number; totalMs: number; maxMs: number }> {
  return new Promise((resolve) => {
    let out = ''
    const onData = (chunk: Buffer): void => {
      out += chunk.toString()
      const match = /^applied (.*)\n/m.exec(out)
      if (match) { child.stdout!.off('data', onData); resolve(JSON.parse(match[1]!)) }
    }
    child.stdout!.on('data', onData)
    child.kill('SIGUSR2')
  })
}

/**
 * Many simulated nodes (real ConfigAgents, `workers` processes) against one nats-server: single
 * changes one after another, then `applyResources` resources put at once.
 */
export async function measureSimulated(options: SimulatedOptions, progress: (line: string) => void): Promise<SimulatedResult> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-converge-sim-'))
  const names = Array.from({ length: options.nodes }, (_, i) => `s${i + 1}`)
  const server = await startNatsServer({ dir, nodes: names, readyTimeoutMs: 30_000 })
  const workers: ChildProcess[] = []
  const operator = await connectBus({ ...server.credentials.operator, servers: server.url, requestTimeoutMs: 30_000 })
  try {
    const tracker = new RevisionTracker(operator)
    await operator.connection.flush()
    await operator.putResource('service.bench.converge', benchService(0, 1))
    const rssStart = rssBytes(server.pid)
    const startedAt = performance.now()
    const perWorker = Math.ceil(options.nodes / options.workers)
    const starting: Array<Promise<ChildProcess>> = []
    for (let w = 0; w < options.workers; w++) {
      const nodes = names.slice(w * perWorker, (w + 1) * perWorker).map((name) => ({ name, pass: server.passwords[`node-${name}`]! }))
      if (nodes.length === 0) continue
      // Shared connections log in as operator: one user publishes every node's status.
      const shared = options.sharedConnections ? { shared: { user: 'operator', pass: server.passwords.operator! } } : {}
      starting.push(startWorker({ servers: server.url, nodes, statusIntervalMs: 60_000, ...shared }, join(dir, `worker-${w}.json`)).then((child) => { workers.push(child); return child }))
    }
    let rssMax = await sampleRss(server.pid, Promise.all(starting))
    const ready = await tracker.waitFor(names, 1, 120_000, startedAt)
    if (ready === undefined) throw new Error(`simulated convergence: not every node reported within 120 s (reported: ${tracker.latest.size}/${options.nodes})`)
    const startSeconds = (performance.now() - startedAt) / 1000
    progress(`convergence: ${options.nodes} simulated nodes in ${workers.length} processes up in ${startSeconds.toFixed(1)} s`)

    const idleBefore = cpuSeconds(server.pid)
    await new Promise((resolve) => setTimeout(resolve, 5000))
    const serverIdleCpuPercent = (cpuSeconds(server.pid) - idleBefore) / 5 * 100
    const samples: number[] = []
    let timeouts = 0
    const cpuBefore = cpuSeconds(server.pid)
    const workerPids = workers.map((c) => c.pid!)
    const workersCpuBefore = workerPids.reduce((sum, pid) => sum + cpuSeconds(pid), 0)
    const series = (async () => {
      for (let i = 0; i < options.changes; i++) {
        const start = performance.now()
        const revision = await operator.putResource('service.bench.converge', benchService(0, 1 + (i % 1000)))
        const took = await tracker.waitFor(names, revision, 10_000, start)
        if (took === undefined) timeouts++
        else samples.push(took)
      }
    })()
    rssMax = Math.max(rssMax, await sampleRss(server.pid, series))
    const serverCpuMsPerChange = ((cpuSeconds(server.pid) - cpuBefore) * 1000) / options.changes
    const nodeCpuUsPerChange = ((workerPids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - workersCpuBefore) * 1e6) / options.changes / options.nodes
    samples.sort((a, b) => a - b)
    progress(`convergence: ${options.nodes} simulated nodes, single changes: p50 ${percentile(samples, 50).toFixed(1)} ms, p99 ${percentile(samples, 99).toFixed(1)} ms`)

    const before = await Promise.all(workers.map(applyStatsOf))
    const applyCpuBefore = cpuSeconds(server.pid)
    const applyStart = performance.now()
    const apply = (async () => {
      const revisions = await Promise.all(Array.from({ length: options.applyResources }, (_, i) => operator.putResource(`service.bench.svc-${i + 1}`, benchService(i + 1))))
      return await tracker.waitFor(names, Math.max(...revisions), options.applyTimeoutMs ?? 120_000, applyStart)
    })()
    rssMax = Math.max(rssMax, await sampleRss(server.pid, apply))
    const applyAllNodesMs = await apply
    const applyServerCpuMs = (cpuSeconds(server.pid) - applyCpuBefore) * 1000
    const after = await Promise.all(workers.map(applyStatsOf))
    let builds = 0
    let buildMs = 0
    let buildMax = 0
    after.forEach((stats, w) => {
      builds += stats.count - before[w]!.count
      buildMs += stats.totalMs - before[w]!.totalMs
      buildMax = Math.max(buildMax, stats.maxMs)
    })
    progress(`convergence: ${options.nodes} simulated nodes, ${options.applyResources}-resource apply: ${applyAllNodesMs === undefined ? 'timed out' : `${(applyAllNodesMs / 1000).toFixed(2)} s`}`)
    // What `weft status` shows: every node's stored status at exactly the config revision.
    const finalRevision = await operator.configRevision()
    const nameSet = new Set(names)
    const exactSince = performance.now()
    let statusBucketExactMs: number | undefined
    while (performance.now() - exactSince < 15_000) {
      const statuses = await operator.readStatuses()
      const exact = statuses.filter((e) => nameSet.has(e.node) && (e.status as { revision?: number }).revision === finalRevision).length
      if (exact === options.nodes) { statusBucketExactMs = performance.now() - exactSince; break }
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    progress(`convergence: ${options.nodes} simulated nodes: weft-status ${statusBucketExactMs === undefined ? 'not exact within 15 s' : `exact (revision ${finalRevision} for every node) ${(statusBucketExactMs / 1000).toFixed(1)} s after`}`)
    tracker.stop()
    const mib = (bytes: number): number => Math.round(bytes / 1024 / 1024)
    return {
      nodes: options.nodes, workers: workers.length, connections: options.sharedConnections ? 'shared' : 'per-node', changes: options.changes,
      p50Ms: percentile(samples, 50), p99Ms: percentile(samples, 99), maxMs: samples.at(-1) ?? NaN, timeouts,
      serverCpuMsPerChange, serverIdleCpuPercent,
      applyResources: options.applyResources, applyAllNodesMs, applyServerCpuMs,
      serverRssStartMiB: mib(rssStart), serverRssMaxMiB: mib(rssMax),
      nodeApplyMeanMs: builds > 0 ? buildMs / builds : NaN, nodeApplyMaxMs: buildMax,
      startSeconds, nodeCpuUsPerChange, statusBucketExactMs,
    }
  } finally {
    for (const child of workers) child.kill('SIGTERM')
    await Promise.all(workers.map((c) => (c.exitCode !== null || c.signalCode !== null) ? undefined : new Promise((r) => c.once('exit', r))))
    await operator.close()
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export function renderSimulatedMarkdown(results: SimulatedResult[]): string {
  const f = (n: number | undefined, digits = 1): string => (n === undefined || Number.isNaN(n) ? '—' : n.toFixed(digits))
  const rows = results.map((r) => `| ${r.nodes} | ${r.workers} | ${r.connections} | ${r.changes} | ${f(r.p50Ms)} | ${f(r.p99Ms)} | ${r.timeouts} | ${f(r.serverCpuMsPerChange)} | ${f(r.serverIdleCpuPercent, 0)} | ${f(r.nodeCpuUsPerChange, 0)} | ${r.applyResources} | ${r.applyAllNodesMs === undefined ? 'timed out' : f(r.applyAllNodesMs / 1000, 2)} | ${f(r.applyServerCpuMs / 1000, 2)} | ${r.serverRssStartMiB} / ${r.serverRssMaxMiB} | ${f(r.nodeApplyMeanMs, 3)} / ${f(r.nodeApplyMaxMs, 2)} |`)
  return [
    '| nodes | processes | connections | changes | p50 ms | p99 ms | timed out | server CPU ms / change | server idle CPU % | node CPU µs / change / node | apply resources | apply: all nodes s | apply: server CPU s | server RSS MiB start / max | node snapshot build ms mean / max |',
    '| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n')
}

export function renderConvergenceMarkdown(report: ConvergenceReport): string {
  const rows = report.results.map((r) => `| ${r.nodes} | ${r.changes} | ${r.p50Ms.toFixed(1)} | ${r.p99Ms.toFixed(1)} | ${r.maxMs.toFixed(1)} | ${r.timeouts} |`)
  return ['| nodes | changes | p50 ms | p99 ms | max ms | timed out |', '| ---: | ---: | ---: | ---: | ---: | ---: |', ...rows].join('\n')
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { nodes: { type: 'string' }, changes: { type: 'string' }, out: { type: 'string' }, simulated: { type: 'boolean' }, 'mesh-sizes': { type: 'string' }, 'shared-connections': { type: 'boolean' }, workers: { type: 'string' }, apply: { type: 'string' }, 'apply-timeout': { type: 'string' }, help: { type: 'boolean' } } })
  if (values.help) {
    console.log([
      'usage: .weft/bin/node bench/convergence.ts [--nodes 2,10,50] [--changes 20] [--out DIR]',
      '       .weft/bin/node bench/convergence.ts --simulated [--nodes 1000,2000] [--workers 2] [--changes 30] [--apply 1000] [--apply-timeout S] [--shared-connections] [--out DIR]',
      '',
      'Time from publishing a configuration change until every node reports it applied, p50 and p99.',
      'Default: `weft node --config-only` daemons. --simulated: real ConfigAgents, many per process',
      '(--workers processes), single changes then --apply resources at once; with nats-server CPU and memory.',
      'Each simulated node has its own connection, or with --shared-connections one per process.',
      '       .weft/bin/node bench/convergence.ts --mesh-sizes 100,1000,10000 [--changes 20]',
      'One node\'s apply time for one changed service against the number of services (10 endpoints each).',
    ].join('\n'))
    return
  }
  if (values['mesh-sizes'] !== undefined) {
    const sizes = values['mesh-sizes'].split(',').map(Number)
    const changes = Number(values.changes ?? 20)
    if (!sizes.every((n) => Number.isInteger(n) && n >= 1) || !Number.isInteger(changes) || changes < 1) throw new Error('--mesh-sizes takes a list of positive integers, --changes a positive integer')
    const meshSizes = sizes.map((n) => {
      const result = measureApplyVsMeshSize(n, changes)
      console.error(`convergence: ${n} services: apply median ${result.medianMs.toFixed(2)} ms`)
      return result
    })
    const report: ConvergenceReport = { schemaVersion: CONVERGENCE_SCHEMA_VERSION, startedAt: new Date().toISOString(), machine: { cpus: (await import('node:os')).cpus().length, node: process.version }, results: [], meshSizes }
    const out = values.out ?? DEFAULT_OUT
    mkdirSync(out, { recursive: true })
    writeFileSync(join(out, `convergence-mesh-sizes-${report.startedAt.replace(/[:.]/g, '-')}.json`), JSON.stringify(report, null, 2) + '\n')
    console.log(renderMeshSizesMarkdown(meshSizes))
    return
  }
  const simulated = values.simulated === true
  const counts = (values.nodes ?? (simulated ? '1000,2000' : '2,10,50')).split(',').map(Number)
  const changes = Number(values.changes ?? (simulated ? 30 : 20))
  const workers = Number(values.workers ?? 2)
  const applyResources = Number(values.apply ?? 1000)
  const positive = (n: number): boolean => Number.isInteger(n) && n >= 1
  if (!counts.every(positive) || !positive(changes) || !positive(workers) || !positive(applyResources)) throw new Error('--nodes takes a list of positive integers; --changes, --workers and --apply a positive integer')
  const report: ConvergenceReport = { schemaVersion: CONVERGENCE_SCHEMA_VERSION, startedAt: new Date().toISOString(), machine: { cpus: (await import('node:os')).cpus().length, node: process.version }, results: [] }
  if (simulated) {
    report.simulated = []
    for (const n of counts) report.simulated.push(await measureSimulated({ nodes: n, workers, changes, applyResources, sharedConnections: values['shared-connections'] === true, applyTimeoutMs: Number(values['apply-timeout'] ?? 120) * 1000 }, (l) => console.error(l)))
  } else {
    for (const n of counts) report.results.push(await measureConvergence(n, changes, (l) => console.error(l)))
  }
  const out = values.out ?? DEFAULT_OUT
  mkdirSync(out, { recursive: true })
  const file = join(out, `convergence-${report.startedAt.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n')
  writeFileSync(join(out, 'convergence-latest.json'), JSON.stringify(report, null, 2) + '\n')
  console.log(simulated ? renderSimulatedMarkdown(report.simulated ?? []) : renderConvergenceMarkdown(report))
  console.error(`convergence: wrote ${file}`)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => { console.error(`convergence: ${(err as Error).message}`); process.exit(1) })
}
