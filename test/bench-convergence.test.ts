// The convergence benchmark's harness on tiny runs: real nats-server, real `weft node
// --config-only` daemons, simulated nodes (real ConfigAgents, many per process), the apply-vs-mesh-size
// measure. Checks the reports' structure and counts, never their timings.
import t from 'tap'
import { measureApplyVsMeshSize, measureConvergence, measureSimulated, renderConvergenceMarkdown, renderMeshSizesMarkdown, renderSimulatedMarkdown, CONVERGENCE_SCHEMA_VERSION } from '../bench/convergence.ts'

t.test('two nodes converge on every change, and the report says so', async (t) => {
  const lines: string[] = []
  const result = await measureConvergence(2, 3, (l) => lines.push(l))
  t.equal(result.nodes, 2)
  t.equal(result.changes, 3)
  t.equal(result.samplesMs.length + result.timeouts, 3, 'every change is either measured or counted as timed out')
  t.equal(result.timeouts, 0, 'every change converged')
  t.ok(result.p50Ms <= result.p99Ms && result.p99Ms <= result.maxMs, 'percentiles are ordered')
  t.match(lines.at(-1), /convergence: 2 nodes: p50 [\d.]+ ms, p99 [\d.]+ ms/, 'progress reported')
  const md = renderConvergenceMarkdown({ schemaVersion: CONVERGENCE_SCHEMA_VERSION, startedAt: '', machine: { cpus: 2, node: '' }, results: [result] })
  t.match(md, /\| 2 \| 3 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 0 \|/, 'a Markdown row per node count')
})

t.test('simulated nodes: many real ConfigAgents per process converge on single changes and on an apply', async (t) => {
  const lines: string[] = []
  const result = await measureSimulated({ nodes: 20, workers: 2, changes: 3, applyResources: 10, sharedConnections: false }, (l) => lines.push(l))
  t.equal(result.nodes, 20)
  t.equal(result.workers, 2)
  t.equal(result.timeouts, 0, 'every single change reached every node')
  t.ok(result.p50Ms <= result.p99Ms && result.p99Ms <= result.maxMs, 'percentiles are ordered')
  t.not(result.applyAllNodesMs, undefined, 'every node applied the whole apply')
  t.ok(result.serverRssMaxMiB >= result.serverRssStartMiB && result.serverRssStartMiB > 0, 'server memory is read')
  t.ok(result.nodeCpuUsPerChange > 0, 'the nodes\' CPU is read')
  t.not(result.statusBucketExactMs, undefined, 'every node\'s stored status names the config revision exactly')
  t.match(renderSimulatedMarkdown([result]), /\| 20 \| 2 \| per-node \| 3 \|/, 'a Markdown row')
  t.match(lines.join('\n'), /10-resource apply: [\d.]+ s/)
})

t.test('apply time against mesh size: a row per size with the endpoints it holds', async (t) => {
  const result = measureApplyVsMeshSize(10, 3)
  t.equal(result.services, 10)
  t.equal(result.endpoints, 100, '10 ready endpoints per service')
  t.ok(result.medianMs <= result.p90Ms, 'median below p90')
  t.match(renderMeshSizesMarkdown([result]), /\| 10 \| 100 \| 3 \|/)
})
