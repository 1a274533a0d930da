// `weft apply | get | delete | status` as a user runs them: the CLI as a child process against a
// real nats-server with JetStream and users, reaching it through a temp context file (WEFT_CONFIG),
// so the user's own context is never read or written.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import t from 'tap'

import { connectBus, startNatsServer, writeContext, type Bus, type BusCredentials, type NatsServer } from '../src/bus/index.ts'
import { runWeft as runWeftAsUser, userEnv } from './helpers/weft.ts'

type Run = { code: number; stdout: string; stderr: string }

/** Runs weft with env (WEFT_CONFIG of the test's context file; no WEFT_NATS_* from outside). */
function runWeft(args: string[], env: Record<string, string>, stdin?: string): Promise<Run> {
  return runWeftAsUser(args, { env: userEnv(env, { keepWeftVariables: false }), ...(stdin !== undefined ? { input: stdin } : {}) })
}

type Setup = { server: NatsServer; dir: string; env: Record<string, string>; weft: (args: string[], stdin?: string) => Promise<Run>; file: (name: string, text: string) => string; bus: (creds: BusCredentials) => Promise<Bus> }

/** A nats-server with nodes node1..node3, and a context file naming it with operator credentials. */
async function setup(t: Test): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cli-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const server = await startNatsServer({ dir, host: '127.0.0.1', nodes: ['node1', 'node2', 'node3'] })
  t.teardown(() => server.stop())
  const env = { WEFT_CONFIG: join(dir, 'weft-config.json') }
  const { servers, user, pass } = server.credentials.operator
  writeContext('test', { servers, user, pass }, { makeCurrent: true }, env)
  return {
    server,
    dir,
    env,
    weft: (args, stdin) => runWeft(args, env, stdin),
    file: (name, text) => {
      const path = join(dir, name)
      writeFileSync(path, text)
      return path
    },
    bus: async (creds) => {
      const bus = await connectBus(creds)
      t.teardown(() => bus.close())
      return bus
    },
  }
}

const goodFile = `apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  clusterIP: 198.19.0.10
  selector: {app: reviews}
  ports:
    - {name: http, port: 80, targetPort: 9080}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-a
  labels: {app: reviews}
spec:
  nodeName: node1
status:
  podIP: 198.18.1.10
---
apiVersion: weft.dev/v1alpha1
kind: Node
metadata:
  name: node1
spec:
  address: 198.18.0.2
  proxyIp: 198.18.0.2
  podCIDR: 198.18.1.0/24
`

// Document 2 has a field of the wrong type, document 3 a clusterIP outside the VIP range,
// document 4 a port that is not a number; documents 1 and 5 are good.
const badFile = `apiVersion: v1
kind: Service
metadata: {name: good-one}
spec:
  clusterIP: 198.19.0.20
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: wrong-type}
spec:
  clusterIP: 198.19.0.21
  selector: "app=reviews"
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  clusterIP: 10.0.0.1
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  clusterIP: 198.19.0.22
  ports: [{port: eighty}]
---
apiVersion: v1
kind: Service
metadata: {name: good-two}
spec:
  clusterIP: 198.19.0.23
  ports: [{port: 81}]
`

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '')
}

t.test('apply publishes a good file; get shows it; a second apply is unchanged', async (t) => {
  const s = await setup(t)
  const mesh = s.file('mesh.yaml', goodFile)
  const applied = await s.weft(['apply', '-f', mesh])
  t.equal(applied.code, 0, applied.stderr)
  t.same(lines(applied.stdout), [
    'service/default/reviews configured (revision 1)',
    'pod/default/reviews-a configured (revision 2)',
    'node/node1 configured (revision 3)',
    'config revision 3',
  ])
  t.equal(applied.stderr, '')

  const again = await s.weft(['apply', '-f', mesh])
  t.equal(again.code, 0)
  t.same(lines(again.stdout), ['service/default/reviews unchanged', 'pod/default/reviews-a unchanged', 'node/node1 unchanged', 'config revision 3'])

  const changed = await s.weft(['apply', '-f', '-'], goodFile.replace('198.19.0.10', '198.19.0.11'))
  t.equal(changed.code, 0, changed.stderr)
  t.match(changed.stdout, /^service\/default\/reviews configured \(revision 4\)$/m)
  t.match(changed.stdout, /^pod\/default\/reviews-a unchanged$/m)

  for (const kind of ['service', 'services', 'svc', 'Service']) {
    const table = await s.weft(['get', kind])
    t.equal(table.code, 0, table.stderr)
    t.same(lines(table.stdout).map((line) => line.split(/\s{2,}/)), [
      ['KIND', 'NAMESPACE', 'NAME', 'REVISION', 'CLUSTER-IP', 'PORTS'],
      ['Service', 'default', 'reviews', '4', '198.19.0.11', 'http:80>9080/TCP'],
    ], `get ${kind}`)
  }
  const pods = await s.weft(['get', 'po', '-o', 'wide'])
  t.same(lines(pods.stdout).map((line) => line.split(/\s{2,}/)), [
    ['KIND', 'NAMESPACE', 'NAME', 'REVISION', 'IP', 'NODE', 'SERVICE-ACCOUNT', 'LABELS'],
    ['Pod', 'default', 'reviews-a', '2', '198.18.1.10', 'node1', 'default', 'app=reviews'],
  ])
  const nodes = await s.weft(['get', 'nodes'])
  t.same(lines(nodes.stdout).map((line) => line.split(/\s{2,}/)), [['KIND', 'NAME', 'REVISION', 'ADDRESS', 'POD-CIDR'], ['Node', 'node1', '3', '198.18.0.2', '198.18.1.0/24']])

  const one = await s.weft(['get', 'svc', 'reviews', '-o', 'json'])
  t.equal(one.code, 0)
  const resource = JSON.parse(one.stdout) as { kind: string; metadata: { name: string; namespace: string }; spec: { clusterIP: string } }
  t.match(resource, { kind: 'Service', metadata: { name: 'reviews', namespace: 'default' }, spec: { clusterIP: '198.19.0.11' } })
  const yaml = await s.weft(['get', 'svc', '-o', 'yaml'])
  t.match(yaml.stdout, /^apiVersion: v1\nkind: List\nitems:\n/)
  // What get -o yaml prints applies back unchanged.
  const back = await s.weft(['apply', '-f', s.file('back.yaml', yaml.stdout)])
  t.equal(back.code, 0, back.stderr)
  t.match(back.stdout, /^service\/default\/reviews unchanged$/m)

  const elsewhere = await s.weft(['get', 'svc', '-n', 'shop'])
  t.equal(elsewhere.code, 0)
  t.equal(elsewhere.stdout, '')
  t.equal(elsewhere.stderr.trim(), 'weft: no service resources in namespace shop')
  const all = await s.weft(['get', 'svc', '-A'])
  t.match(all.stdout, /reviews/)

  const missing = await s.weft(['get', 'svc', 'nope'])
  t.equal(missing.code, 1)
  t.equal(missing.stderr.trim(), 'weft: service default/nope not found')

  const dryRun = await s.weft(['apply', '-f', mesh, '--dry-run', '-o', 'json'])
  t.equal(dryRun.code, 0)
  t.match(JSON.parse(dryRun.stdout), { dryRun: true, revision: null, resources: [{ key: 'service.default.reviews', result: 'valid' }, {}, {}] })
})

t.test('a bad resource: every error names file, document and field; nothing is published', async (t) => {
  const s = await setup(t)
  const bad = s.file('bad.yaml', badFile)
  const r = await s.weft(['apply', '-f', bad])
  t.equal(r.code, 1)
  t.equal(r.stdout, '')
  t.same(lines(r.stderr), [
    `weft: ${bad}:13: document 2 (Service default/wrong-type): spec.selector: expected a map of labels, got "app=reviews"`,
    `weft: ${bad}:20: document 3 (Service default/outside): spec.clusterIP: expected an address in the service VIP range 198.19.0.0/16, got "10.0.0.1"`,
    `weft: ${bad}:28: document 4 (Service default/ratings): spec.ports[0].port: expected a number from 1 to 65535, got "eighty"`,
    'weft: 3 invalid resources; nothing published (--partial publishes the 2 valid ones)',
  ])
  const bus = await s.bus(s.server.credentials.operator)
  t.equal(await bus.configRevision(), 0, 'nothing published')

  const dry = await s.weft(['apply', '-f', bad, '--dry-run'])
  t.equal(dry.code, 1)
  t.equal(await bus.configRevision(), 0)
})

t.test('--partial publishes the good resources and still fails', async (t) => {
  const s = await setup(t)
  const bad = s.file('bad.yaml', badFile)
  const r = await s.weft(['apply', '-f', bad, '--partial'])
  t.equal(r.code, 1)
  t.same(lines(r.stdout), ['service/default/good-one configured (revision 1)', 'service/default/good-two configured (revision 2)', 'config revision 2'])
  t.match(r.stderr, /document 2 \(Service default\/wrong-type\): spec\.selector/)
  t.match(r.stderr, /document 4 \(Service default\/ratings\): spec\.ports\[0\]\.port/)
  t.match(r.stderr, /^weft: 3 invalid resources were not published; the 2 valid ones were \(--partial\)$/m)
  const bus = await s.bus(s.server.credentials.operator)
  t.same((await bus.listResources()).map((entry) => entry.key), ['service.default.good-one', 'service.default.good-two'])

  const json = await s.weft(['apply', '-f', bad, '--partial', '-o', 'json'])
  const report = JSON.parse(json.stdout) as { revision: number; resources: { result: string }[]; errors: string[] }
  t.equal(report.revision, 2)
  t.same(report.resources.map((entry) => entry.result), ['unchanged', 'unchanged'])
  t.equal(report.errors.length, 3)
})

t.test('malformed YAML, an unknown kind, and bad arguments get clear errors', async (t) => {
  const s = await setup(t)
  const malformed = s.file('malformed.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: x\nspec: {}\n')
  const r = await s.weft(['apply', '-f', malformed])
  t.equal(r.code, 1)
  t.match(lines(r.stderr)[0], new RegExp(`^weft: ${malformed}:\\d+:\\d+: document 1: malformed YAML: `))

  const unknown = s.file('unknown.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n')
  const u = await s.weft(['apply', '-f', unknown])
  t.equal(u.code, 1)
  t.match(lines(u.stderr)[0], new RegExp(`^weft: ${unknown}:2: document 1 \\(ConfigMap default/x\\): kind: unknown kind "ConfigMap" \\(apiVersion "v1"\\); known kinds: Service \\(v1\\), Pod \\(v1\\)`))

  const oneLine = async (args: string[], pattern: RegExp): Promise<void> => {
    const result = await s.weft(args)
    t.equal(result.code, 1, `${args.join(' ')}: exit 1`)
    t.equal(lines(result.stderr).length, 1, `${args.join(' ')}: one line (${result.stderr})`)
    t.match(result.stderr.trim(), pattern, args.join(' '))
  }
  await oneLine(['get', 'configmaps'], /^weft: unknown kind "configmaps"; known kinds: service \(services, svc\), pod \(pods, po\), endpointslice \(endpointslices, eps\), node \(nodes, no\), destinationpolicy \(destinationpolicies, dp\)/)
  await oneLine(['delete', 'gadget', 'x'], /^weft: unknown kind "gadget"/)
  await oneLine(['apply'], /^weft: apply: -f FILE is required/)
  await oneLine(['apply', '-f', join(s.dir, 'absent.yaml')], /^weft: -f .*absent\.yaml: no such file$/)
  await oneLine(['apply', '-f', malformed, '--force'], /^weft: apply: unknown option --force \(see weft apply --help\)/)
  await oneLine(['get', 'svc', '-o', 'xml'], /^weft: get: -o xml: expected one of yaml, json, wide$/)
  await oneLine(['status', '--wait-revision', 'soon'], /^weft: status: --wait-revision: "soon" is not a whole number$/)
  await oneLine(['get', 'svc', 'Bad_Name'], /^weft: "Bad_Name" is not a resource name/)

  for (const command of ['apply', 'get', 'delete', 'status']) {
    const help = await s.weft([command, '--help'])
    t.equal(help.code, 0)
    t.match(help.stdout, new RegExp(`^usage: weft ${command}`))
    t.match(help.stdout, /--nats URL/)
    t.match(help.stdout, /--creds FILE/)
    t.match(help.stdout, /--context NAME/)
  }
})

t.test('delete by name and by file; not found is an error', async (t) => {
  const s = await setup(t)
  const mesh = s.file('mesh.yaml', goodFile)
  t.equal((await s.weft(['apply', '-f', mesh])).code, 0)
  const r = await s.weft(['delete', 'svc', 'reviews'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout.trim(), 'service/default/reviews deleted (revision 4)')
  const again = await s.weft(['delete', 'service', 'reviews'])
  t.equal(again.code, 1)
  t.equal(again.stderr.trim(), 'weft: service default/reviews not found')
  t.equal((await s.weft(['delete', 'service', 'reviews', '--ignore-not-found'])).code, 0)
  const other = await s.weft(['delete', 'svc', 'reviews', '-n', 'shop'])
  t.equal(other.stderr.trim(), 'weft: service shop/reviews not found')

  const byFile = await s.weft(['delete', '-f', mesh])
  t.equal(byFile.code, 1, 'the service was already gone')
  t.same(lines(byFile.stdout), ['pod/default/reviews-a deleted (revision 5)', 'node/node1 deleted (revision 6)'])
  t.equal(byFile.stderr.trim(), 'weft: service default/reviews not found')
  const bus = await s.bus(s.server.credentials.operator)
  t.same(await bus.listResources(), [])
})

const nodeStatus = (node: string, revision: number, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  node, revision, appliedAt: new Date().toISOString(), ready: true, reason: 'serving', nats: 'connected', rejected: [], warnings: [],
  counts: { resources: 3, rejected: 0, warnings: 0, nodes: 1, workloads: 1, services: 1, endpoints: 1 }, updatedAt: new Date().toISOString(), ...extra,
})

t.test('status: a table of nodes with lag, rejections and stale marking', async (t) => {
  const s = await setup(t)
  t.equal((await s.weft(['apply', '-f', s.file('mesh.yaml', goodFile)])).code, 0)
  const empty = await s.weft(['status'])
  t.equal(empty.code, 0)
  t.match(empty.stderr, /no node has reported status yet/)

  const node1 = await s.bus(s.server.credentials.node('node1'))
  const node2 = await s.bus(s.server.credentials.node('node2'))
  await node1.publishStatus('node1', nodeStatus('node1', 3))
  // node2 reports every 3 s (statusIntervalMs): it is stale after 9 s of silence.
  await node2.publishStatus('node2', nodeStatus('node2', 2, { statusIntervalMs: 3000, ready: false, reason: 'no config yet', rejected: [{ key: 'service.default.x', reason: 'spec.ports[0].port: expected a number from 1 to 65535, got 0' }] }))

  const r = await s.weft(['status'])
  t.equal(r.code, 0, r.stderr)
  const table = lines(r.stdout)
  t.equal(table[0], 'config revision 3')
  t.same(table.slice(1).map((line) => line.split(/\s{2,}/).map((cell) => cell.replace(/^\d+s ago$/, 'AGE'))), [
    ['NODE', 'REVISION', 'LAG', 'REJECTED', 'READY', 'LAST SEEN'],
    ['node1', '3', '0', '0', 'yes', 'AGE'],
    ['node2', '2', '1', '1', 'no', 'AGE'],
  ])
  const wide = await s.weft(['status', '-o', 'wide'])
  t.match(wide.stdout, /^node2: rejected service\.default\.x: spec\.ports\[0\]\.port: expected a number from 1 to 65535, got 0$/m)
  t.match(wide.stdout, /NATS\s+WARNINGS\s+RESOURCES\s+REASON/)

  const json = JSON.parse((await s.weft(['status', '-o', 'json'])).stdout) as { revision: number; staleAfterSeconds: number; nodes: { node: string; lag: number; stale: boolean; staleAfterSeconds: number; rejected: unknown[] }[] }
  t.equal(json.revision, 3)
  t.match(json.nodes, [{ node: 'node1', lag: 0, stale: false, rejected: [] }, { node: 'node2', lag: 1, stale: false, rejected: [{ key: 'service.default.x' }] }])
  t.equal(json.staleAfterSeconds, 15, 'a node that does not say its interval is stale after 15 s')
  t.equal(json.nodes[1]?.staleAfterSeconds, 9, 'node2, reporting every 3 s, after three of its intervals')

  // A node silent for longer than its threshold is stale. Poll until node2 is, with a deadline
  // well past the threshold, rather than sleeping.
  const staleAfterMs = (json.nodes[1]?.staleAfterSeconds ?? 0) * 1000
  t.ok(staleAfterMs > 0, 'status -o json says when a node turns stale')
  type StatusJson = { nodes: { node: string; stale: boolean; ageSeconds: number }[] }
  const node2Status = async (): Promise<StatusJson['nodes'][number] | undefined> => {
    const run = await s.weft(['status', '-o', 'json'])
    if (run.code !== 0) throw new Error(`weft status -o json exited ${run.code}: ${run.stderr}`)
    return (JSON.parse(run.stdout) as StatusJson).nodes.find((node) => node.node === 'node2')
  }
  const deadline = Date.now() + staleAfterMs + 30_000
  let silent = await node2Status()
  while (silent?.stale !== true && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    silent = await node2Status()
  }
  t.equal(silent?.stale, true, `node2 turned stale before the deadline (last seen ${silent?.ageSeconds ?? '?'} s ago)`)
  t.ok((silent?.ageSeconds ?? 0) * 1000 >= staleAfterMs, 'only once its age reached the threshold (ageSeconds is rounded to 0.1 s)')

  await node1.publishStatus('node1', nodeStatus('node1', 3))
  const later = lines((await s.weft(['status'])).stdout).map((line) => line.split(/\s{2,}/))
  t.match(later[2], ['node1', '3', '0', '0', 'yes', /^\d+s ago$/], 'node1 reported again: not stale')
  t.match(later[3], ['node2', '2', '1', '1', 'no', /^\d+s ago \(stale\)$/], 'node2 still silent: stale')
})

t.test('status --wait-revision: success once every node reports it, timeout naming the nodes behind', async (t) => {
  const s = await setup(t)
  t.equal((await s.weft(['apply', '-f', s.file('mesh.yaml', goodFile)])).code, 0)
  const node1 = await s.bus(s.server.credentials.node('node1'))
  const node2 = await s.bus(s.server.credentials.node('node2'))
  await node1.publishStatus('node1', nodeStatus('node1', 3))
  await node2.publishStatus('node2', nodeStatus('node2', 1))

  const timeout = await s.weft(['status', '--wait-revision', '3', '--timeout', '1'])
  t.equal(timeout.code, 1)
  t.equal(timeout.stderr.trim(), 'weft: timed out after 1s waiting for revision 3: behind: node2 at 1')

  const tooFew = await s.weft(['status', '--wait-revision', '1', '--timeout', '0.5', '--nodes', '3'])
  t.equal(tooFew.code, 1)
  t.equal(tooFew.stderr.trim(), 'weft: timed out after 0.5s waiting for revision 1: 2 of 3 nodes reported')

  let node2Reported = false
  const waiting = s.weft(['status', '--wait-revision', 'current', '--timeout', '20'])
  setTimeout(() => { node2Reported = true; void node2.publishStatus('node2', nodeStatus('node2', 3)) }, 1500)
  const done = await waiting
  t.equal(done.code, 0, done.stderr)
  t.ok(node2Reported, 'it returned only after node2 reported')
  t.match(done.stdout, /^node2\s+3\s+0\s+/m)
})

t.test('connection: node credentials cannot apply; unreachable NATS and bad passwords are one line', async (t) => {
  const s = await setup(t)
  const mesh = s.file('mesh.yaml', goodFile)
  const nodeCreds = s.file('node1.creds.json', JSON.stringify(s.server.credentials.node('node1')))
  const denied = await s.weft(['apply', '-f', mesh, '--creds', nodeCreds])
  t.equal(denied.code, 1)
  t.equal(denied.stderr.trim(), 'weft: nats: user node-node1 may not write configuration (permission denied on $KV.weft-config.service.default.reviews)')
  // A node may read: get works with its credentials; it may not delete.
  t.equal((await s.weft(['apply', '-f', mesh])).code, 0)
  const deniedDelete = await s.weft(['delete', 'svc', 'reviews', '--creds', nodeCreds])
  t.equal(deniedDelete.code, 1)
  t.match(deniedDelete.stderr, /^weft: nats: user node-node1 may not write configuration \(permission denied on /)
  const read = await s.weft(['get', 'svc', '--creds', nodeCreds])
  t.equal(read.code, 0, read.stderr)

  const wrong = s.file('wrong.creds.json', JSON.stringify({ ...s.server.credentials.operator, pass: 'nope' }))
  const auth = await s.weft(['get', 'svc', '--creds', wrong])
  t.equal(auth.code, 1)
  t.equal(auth.stderr.trim(), 'weft: authorization violation for user operator: check --creds / WEFT_NATS_* or the current context')

  const unreachable = await s.weft(['status', '--nats', 'nats://127.0.0.1:1'])
  t.equal(unreachable.code, 1)
  t.equal(unreachable.stderr.trim(), 'weft: cannot reach NATS at nats://127.0.0.1:1: connection refused; is the lab up? (weft lab ls)')

  const noContext = await runWeft(['get', 'svc'], { WEFT_CONFIG: join(s.dir, 'none.json') })
  t.equal(noContext.code, 1)
  t.equal(noContext.stderr.trim(), 'weft: no NATS configured: bring a lab up (weft lab up) or pass --nats URL')

  // Environment variables instead of a context.
  const { servers, user, pass } = s.server.credentials.control
  const viaEnv = await runWeft(['get', 'svc'], { WEFT_CONFIG: join(s.dir, 'none.json'), WEFT_NATS_URL: servers, WEFT_NATS_USER: user, WEFT_NATS_PASSWORD: pass })
  t.equal(viaEnv.code, 0, viaEnv.stderr)
  t.match(viaEnv.stdout, /reviews/)
})
