// Configuration convergence: the time from publishing a change (what `weft apply` does) until
// every node reports that it applied the revision, for N = 2, 10 and 50 node daemons. What is
// measured is the control path — NATS, the watch, validation, the snapshot, the status — so the
// daemons run `weft node --config-only` side by side on loopback (no BPF, no listeners).
// Writes bench/results/convergence-<stamp>.json and prints a Markdown table.
//   .weft/bin/node bench/convergence.ts [--nodes 2,10,50] [--changes 20] [--out DIR]
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { connectBus, startNatsServer, type Bus } from '../src/bus/index.ts'

export const CONVERGENCE_SCHEMA_VERSION = 1
const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url))
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

export interface ConvergenceReport {
  schemaVersion: number
  startedAt: string
  machine: { cpus: number; node: string }
  results: ConvergenceResult[]
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

const service = (i: number): unknown => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name: 'converge', namespace: 'bench' },
  spec: { clusterIP: '198.19.200.1', ports: [{ name: 'http', port: 80, targetPort: 8000 + (i % 1000) }], selector: { app: 'converge' } },
})

/** Follows every node's reported revision through one subscription made before any change. */
class RevisionTracker {
  readonly latest = new Map<string, number>()
  private waiters: Array<() => void> = []
  private readonly sub: { stop(): void }
  constructor(bus: Bus) {
    this.sub = bus.subscribeStatuses((node, status) => {
      this.latest.set(node, Math.max(this.latest.get(node) ?? 0, Number((status as { revision?: number }).revision ?? 0)))
      for (const w of this.waiters) w()
    })
  }
  /** Resolves with the milliseconds since `start` once every node reports `revision`, or undefined at the timeout. */
  waitFor(nodes: string[], revision: number, timeoutMs: number, start: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (!nodes.every((n) => (this.latest.get(n) ?? -1) >= revision)) return
        clearTimeout(timer)
        this.waiters = this.waiters.filter((w) => w !== check)
        resolve(performance.now() - start)
      }
      const timer = setTimeout(() => { this.waiters = this.waiters.filter((w) => w !== check); resolve(undefined) }, timeoutMs)
      this.waiters.push(check)
      check()
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

export function renderConvergenceMarkdown(report: ConvergenceReport): string {
  const rows = report.results.map((r) => `| ${r.nodes} | ${r.changes} | ${r.p50Ms.toFixed(1)} | ${r.p99Ms.toFixed(1)} | ${r.maxMs.toFixed(1)} | ${r.timeouts} |`)
  return ['| nodes | changes | p50 ms | p99 ms | max ms | timed out |', '| ---: | ---: | ---: | ---: | ---: | ---: |', ...rows].join('\n')
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { nodes: { type: 'string' }, changes: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' } } })
  if (values.help) {
    console.log('usage: .weft/bin/node bench/convergence.ts [--nodes 2,10,50] [--changes 20] [--out DIR]\n\nTime from publishing a configuration change until every node reports it applied, p50 and p99.')
    return
  }
  const counts = (values.nodes ?? '2,10,50').split(',').map(Number)
  const changes = Number(values.changes ?? 20)
  if (counts.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(changes) || changes < 1) throw new Error('--nodes takes a list of positive integers, --changes a positive integer')
  const report: ConvergenceReport = { schemaVersion: CONVERGENCE_SCHEMA_VERSION, startedAt: new Date().toISOString(), machine: { cpus: (await import('node:os')).cpus().length, node: process.version }, results: [] }
  for (const n of counts) report.results.push(await measureConvergence(n, changes, (l) => console.error(l)))
  const out = values.out ?? DEFAULT_OUT
  mkdirSync(out, { recursive: true })
  const file = join(out, `convergence-${report.startedAt.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n')
  writeFileSync(join(out, 'convergence-latest.json'), JSON.stringify(report, null, 2) + '\n')
  console.log(renderConvergenceMarkdown(report))
  console.error(`convergence: wrote ${file}`)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => { console.error(`convergence: ${(err as Error).message}`); process.exit(1) })
}
