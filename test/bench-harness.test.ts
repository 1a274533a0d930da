// The benchmark harness on a tiny load: the report has every configuration, every path and
// workload, counts that add up, errors counted (never dropped), the weft L7 rows checked to have
// gone through the L7 proxy, the density view, and the JSON, Markdown and SVG files. No timing
// assertions: numbers on a shared machine are not a spec.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { labDown } from '../src/lab/index.ts'
import { CONFIGURATIONS, runBench } from '../bench/harness.ts'
import { SCHEMA_VERSION } from '../bench/report.ts'
import { parseBenchArgs, writeReport } from '../bench/run.ts'
import { readReport } from '../bench/harness.ts'
import { DEFAULTS as NODE_DEFAULTS } from '../src/config/node-config.ts'
import { requireLab, testRunId } from './helpers/lab.ts'

t.test('options: --quick and overrides', async (t) => {
  const quick = parseBenchArgs(['--quick'], () => {})
  t.equal(quick.help, false)
  if (!quick.help) {
    t.equal(quick.options.profile, 'quick')
    t.same(quick.options.densityPods, [1, 10])
  }
  const custom = parseBenchArgs(['--rate', '200', '--density', 'none', '--workloads', 'http'], () => {})
  if (!custom.help) {
    t.equal(custom.options.profile, 'custom')
    t.equal(custom.options.rate, 200)
    t.same(custom.options.densityPods, [])
    t.same(custom.options.workloads, ['http'])
  }
  t.throws(() => parseBenchArgs(['--workloads', 'grpc'], () => {}), /--workloads: "grpc" is not http or echo/)
  const unlogged = parseBenchArgs(['--quick', '--access-log', 'off', '--access-log-sample', '0.5'], () => {})
  if (!unlogged.help) {
    t.same(unlogged.options.nodeFlags, ['--access-log', 'off', '--access-log-sample', '0.5'], 'access log flags go to the node daemons')
    t.equal(unlogged.options.profile, 'custom', 'a run with other daemon flags is not the quick profile')
  }
  if (!quick.help) t.same(quick.options.nodeFlags, [], 'by default the daemons run with their defaults')
  t.throws(() => parseBenchArgs(['--access-log-sample', '2'], () => {}), /--access-log-sample: "2" is not a fraction from 0 to 1/)
  t.same(parseBenchArgs(['--help'], () => {}), { help: true })
})

t.test('a tiny run: structure and counts', async (t) => {
  if (!requireLab(t)) return
  const runIds = { main: testRunId(), density: testRunId() }
  t.teardown(() => { labDown(runIds.main); labDown(runIds.density) })
  const out = mkdtempSync(join(tmpdir(), 'weft-bench-test-'))
  t.teardown(() => rmSync(out, { recursive: true, force: true }))
  const rate = 100
  const report = await runBench({
    profile: 'custom', rate, connections: 2, rounds: 1, sliceSeconds: 0.3, warmupSeconds: 0.1,
    closedLoopSeconds: 1, closedLoopConnections: 2, workloads: ['http', 'echo'], densityPods: [1, 2],
    labWaitSeconds: 120, runIds, onProgress: (line) => t.comment(line),
  })
  const files = writeReport(report, out)

  t.equal(report.schemaVersion, SCHEMA_VERSION)
  t.same(report.configurations.map((c) => c.id), ['direct', 'weft-l4', 'weft-l7', 'sidecar', 'nginx', 'haproxy'])
  // Every configuration x path x workload has a row: none is dropped.
  t.equal(report.results.length, CONFIGURATIONS.length * 2 * 2)
  for (const r of report.results) {
    const where = `${r.configuration}/${r.path}/${r.workload}`
    if ((r.configuration === 'weft-l7' || r.configuration === 'nginx' || r.configuration === 'haproxy') && r.workload === 'echo') {
      t.equal(r.status, 'not-applicable', where)
      continue
    }
    t.equal(r.status, 'measured', `${where}: measured (${r.reason ?? ''})`)
    const o = r.openLoop
    if (!o) { t.fail(`${where}: no open-loop result`); continue }
    t.equal(o.slices, 1, `${where}: one slice per round`)
    t.equal(o.scheduled, Math.round(rate * 0.3), `${where}: the fixed rate times the measured time`)
    t.equal(o.ok + o.errors.total, o.scheduled, `${where}: every scheduled request is ok or an error`)
    t.equal(o.errors.total, o.errors.badStatus + o.errors.connectionErrors + o.errors.timeouts, `${where}: error kinds add up`)
    t.equal(r.flagged, o.errors.total > 0 || (r.closedLoop?.errors ?? 0) > 0, `${where}: flagged exactly when something failed`)
    t.ok(o.latencyUs.p50 <= o.latencyUs.p90 && o.latencyUs.p90 <= o.latencyUs.p99 && o.latencyUs.p99 <= o.latencyUs.p999, `${where}: percentiles ordered`)
    t.equal(o.addedOverDirectUs === null, r.configuration === 'direct', `${where}: added-over-direct for all but direct`)
    if (r.workload === 'http') {
      t.ok(r.closedLoop && r.closedLoop.requests > 0, `${where}: closed loop ran`)
    } else {
      t.equal(r.closedLoop, null, `${where}: no closed loop for echo`)
    }
    if (r.configuration === 'direct') t.equal(r.proxy, null, `${where}: no proxy on the direct path`)
    else t.ok(r.proxy && r.proxy.rssBytes > 0 && r.proxy.processes.length > 0, `${where}: proxy memory read`)
    if (r.configuration === 'weft-l7') {
      const l7 = r.l7
      if (!l7) { t.fail(`${where}: no L7 path check`); continue }
      const answered = o.ok + (r.closedLoop?.requests ?? 0)
      t.ok(l7.requestsCounted >= answered, `${where}: node1's L7 proxy counted every answered request (${l7.requestsCounted} counted, ${answered} answered)`)
      t.ok(l7.requestsCounted <= l7.requestsSent + 2 * 16, `${where}: and not more than were sent, give or take wrk's last in-flight requests (${l7.requestsCounted} counted, ${l7.requestsSent} sent)`)
      // The lab starts daemons with the defaults: every request logged when the default rate is 1.
      const defaults: { accessLog: string; accessLogSample: number } = NODE_DEFAULTS
      if (defaults.accessLog !== 'off' && defaults.accessLogSample === 1) t.equal(l7.accessLogLines, l7.requestsCounted, `${where}: an access log line per request at sample rate 1`)
      else t.ok(l7.accessLogLines <= l7.requestsCounted, `${where}: at most an access log line per request`)
    } else {
      t.equal(r.l7, undefined, `${where}: no L7 path check on other rows`)
    }
  }
  t.match(report.configurations.find((c) => c.id === 'weft-l7')?.description ?? '', /This run: node1's daemon ran with --access-log \S+ --access-log-sample [\d.]+/, 'the L7 row says the access log setting it measured')
  t.match(report.configurations.find((c) => c.id === 'weft-l7')?.description ?? '', /node1's daemon over the whole run \(every row it served\): event-loop delay p99 ≤ [\d.]+ ms, longest ≤ [\d.]+ ms \([\d,]+ samples\); minor GC [\d,]+×/, 'and what its event loop and garbage collector did')
  t.equal(report.density.status, 'measured', `density: ${report.density.reason ?? ''}`)
  t.same(report.density.weft.map((p) => [p.pods, p.processes]), [[1, 1], [2, 1]], 'one weft proxy whatever the pods')
  t.same(report.density.sidecar.map((p) => [p.pods, p.processes]), [[1, 2], [2, 3]], 'a proxy per pod: each client pod and the server pod')
  t.same(report.flags.filter((f) => f.startsWith('weft-l7/') || f.includes('not measured')), [], 'the weft L7 rows went through the L7 proxy, and every configuration was measured')
  t.same(report.flags.filter((f) => f.startsWith('sidecar:')), [], 'the sidecar rows took the sidecar path (client sidecar tunnelled to the servers\' sidecars)')

  t.same(readReport(files.json).results.length, report.results.length, 'the JSON reads back')
  const markdown = readFileSync(files.markdown, 'utf8')
  t.match(markdown, /\| weft L4 \| same-node \|/)
  t.match(markdown, /\| weft L7 \(HTTP, metrics on\) \| cross-node \| \d/)
  t.match(markdown, /Ratios to haproxy on the same path[^\n]*\n\n\| configuration \| path \| max req\/s \| CPU s \/ 1k req \| p50 \| p99 \| added p50 \| added p99 \|\n[^\n]*\n(\|[^\n]*\n)*\| weft L7 \(HTTP, metrics on\) \| same-node \| (\d+\.\d\d×|—) \| (\d+\.\d\d×|—) \| \d+\.\d\d× \|/, 'the HTTP table has its ratios to haproxy')
  t.notMatch(markdown, /\| (direct \(no mesh\)|haproxy \(node L7 hop\)) \| [a-z-]+ \| (\d+\.\d\d×|—) \|/, 'no ratio rows for direct or haproxy itself')
  t.match(markdown, /L7 path check \(weft L7 \(HTTP, metrics on\)\): same-node: [\d,]+ requests sent, [\d,]+ counted/)
  const svg = readFileSync(files.svg, 'utf8')
  t.match(svg, /^<svg /)
  t.equal((svg.match(/<rect [^>]*><title>/g) ?? []).length, 4 * report.results.filter((r) => r.status === 'measured').length, 'four percentile bars per measured row')
  t.ok(existsSync(join(out, 'latest.json')))
})
