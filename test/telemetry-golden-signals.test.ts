// Golden signals (what `weft top` shows) from two scrapes of real node metrics: a NodeMetrics
// registry records requests as the L7 proxy does, its Prometheus text is parsed back, and the
// difference between two scrapes gives requests/s, success rate and p50/p99 per service and workload.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { goldenSignals, histogramQuantile, type NodeScrape } from '../src/telemetry/golden-signals.ts'
import { NO_GRPC_STATUS, NodeMetrics, type RequestLabels } from '../src/telemetry/metrics.ts'
import { parsePrometheusText } from '../src/telemetry/prometheus-text.ts'

const reviews: RequestLabels = {
  reporter: 'source', source_workload: 'default/client', destination_service: 'shop/reviews',
  destination_workload: 'shop/reviews-v1', response_code: '200', grpc_status: NO_GRPC_STATUS, protocol: 'http',
}

async function scrape(node: string, metrics: NodeMetrics): Promise<NodeScrape> {
  return { node, samples: parsePrometheusText(await metrics.registry.metrics()) }
}

t.test('two scrapes give requests/s, success rate and p50/p99 per service and per workload', async (t) => {
  const node1 = new NodeMetrics('node1', () => undefined)
  const node2 = new NodeMetrics('node2', () => undefined)
  // Before the first scrape: traffic that must not count.
  for (let i = 0; i < 50; i++) node1.recordRequest(reviews, { durationS: 2, requestBytes: 0, responseBytes: 0 })
  const before = [await scrape('node1', node1), await scrape('node2', node2)]

  // Between the scrapes: 30 requests to reviews-v1 from node1 (one in four 503), 10 to reviews-v2
  // from node2, all at 3 ms; 4 gRPC calls answered 200 with grpc-status 14 (failures).
  for (let i = 0; i < 30; i++) node1.recordRequest({ ...reviews, response_code: i % 4 === 0 ? '503' : '200' }, { durationS: 0.003, requestBytes: 0, responseBytes: 0 })
  for (let i = 0; i < 10; i++) node2.recordRequest({ ...reviews, destination_workload: 'shop/reviews-v2' }, { durationS: 0.003, requestBytes: 0, responseBytes: 0 })
  const grpc: RequestLabels = { ...reviews, destination_service: 'shop/ratings', destination_workload: 'shop/ratings-v1', grpc_status: '14', protocol: 'grpc' }
  for (let i = 0; i < 4; i++) node2.recordRequest(grpc, { durationS: 0.3, requestBytes: 0, responseBytes: 0 })
  // The destination's node counting the same requests again does not count twice.
  for (let i = 0; i < 40; i++) node2.recordRequest({ ...reviews, reporter: 'destination' }, { durationS: 0.003, requestBytes: 0, responseBytes: 0 })
  const after = [await scrape('node1', node1), await scrape('node2', node2)]

  const report = goldenSignals(before, after, 2)
  t.equal(report.intervalSeconds, 2)
  t.same(report.services.map((s) => s.name), ['shop/ratings', 'shop/reviews'], 'services by name')
  const svc = report.services.find((s) => s.name === 'shop/reviews')!
  t.equal(svc.requests, 40, 'both nodes\' requests, none from before the first scrape or from the destination reporter')
  t.equal(svc.requestsPerSecond, 20)
  t.equal(svc.successRate, 32 / 40, 'eight 503s of 40')
  t.ok(svc.p50! > 0.0025 && svc.p50! <= 0.005, `p50 within the 2.5-5 ms bucket, where every request fell (${svc.p50})`)
  t.ok(svc.p99! > 0.0025 && svc.p99! <= 0.005, `p99 within the 2.5-5 ms bucket (${svc.p99})`)
  t.match(report.services.find((s) => s.name === 'shop/ratings'), { requests: 4, successRate: 0, p50: Number }, 'grpc-status 14 is a failure though the status was 200')

  t.same(report.workloads.map((w) => [w.name, w.requests, w.successRate]), [
    ['shop/ratings-v1', 4, 0],
    ['shop/reviews-v1', 30, 22 / 30],
    ['shop/reviews-v2', 10, 1],
  ], 'per destination workload')

  // A daemon that restarted between the scrapes: its counters start again from zero.
  const restarted = new NodeMetrics('node1', () => undefined)
  for (let i = 0; i < 3; i++) restarted.recordRequest(reviews, { durationS: 0.003, requestBytes: 0, responseBytes: 0 })
  const afterRestart = goldenSignals(after, [await scrape('node1', restarted)], 1)
  t.match(afterRestart.services, [{ name: 'shop/reviews', requests: 3, successRate: 1 }], 'counts from zero after a reset')

  t.same(goldenSignals(after, after, 2), { intervalSeconds: 2, services: [], workloads: [] }, 'no traffic: no rows')
})

t.test('histogramQuantile interpolates within the bucket, as Prometheus does', async (t) => {
  const buckets = new Map([[0.1, 0], [0.2, 50], [0.4, 100], [Infinity, 100]])
  t.equal(histogramQuantile(0.5, buckets), 0.2)
  t.ok(Math.abs(histogramQuantile(0.25, buckets)! - 0.15) < 1e-12, 'half way through the 0.1-0.2 bucket')
  t.ok(Math.abs(histogramQuantile(0.75, buckets)! - 0.3) < 1e-12, 'half way through the 0.2-0.4 bucket')
  t.equal(histogramQuantile(0.99, new Map([[1, 0], [Infinity, 10]])), 1, 'in +Inf: the highest finite bound')
  t.equal(histogramQuantile(0.5, new Map([[1, 0], [Infinity, 0]])), null, 'no observations')
})

t.test('weft top names every node that did not answer and exits 1 when none did', async (t) => {
  // A port that was just free on loopback: nothing listens there.
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  const weft = fileURLToPath(new URL('../bin/weft.js', import.meta.url))
  const r = spawnSync(process.execPath, [weft, 'top', '--address', `127.0.0.1:${port}`, '-o', 'json'], { encoding: 'utf8', timeout: 30_000 })
  t.equal(r.status, 1)
  t.equal(r.stdout, '')
  t.equal(r.stderr, `weft: top: no node answered on /metrics (127.0.0.1: http://127.0.0.1:${port}/metrics: ECONNREFUSED); are the node daemons running?\n`)
  const bad = spawnSync(process.execPath, [weft, 'top', '--interval', '0'], { encoding: 'utf8', timeout: 30_000 })
  t.equal(bad.stderr, 'weft: top: --interval 0: expected seconds between 0.1 and 3600\n')
})
