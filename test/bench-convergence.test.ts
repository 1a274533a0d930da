// The convergence benchmark's harness on a tiny run: real nats-server, real `weft node
// --config-only` daemons. Checks the report's structure and counts, never its timings.
import t from 'tap'
import { measureConvergence, renderConvergenceMarkdown, CONVERGENCE_SCHEMA_VERSION } from '../bench/convergence.ts'

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
