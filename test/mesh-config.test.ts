// Configuration over NATS, end to end in a lab: weft apply -> every node reports the revision;
// pods reach a service by its VIP, balanced across its endpoints; an endpoint taken out gets no
// new connection; a bad resource is rejected alone; NATS down: traffic keeps flowing, and a
// change made once it is back propagates; a node's credentials cannot write configuration.
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Bus } from '../src/bus/index.ts'
import type { Lab } from '../src/lab/index.ts'
import { requireLab, startIn, startLab, waitForNodes } from './helpers/lab.ts'
import { until } from './helpers/wait.ts'
import { runWeftSync, type WeftResult } from './helpers/weft.ts'

const netprobe = fileURLToPath(new URL('./fixtures/netprobe.ts', import.meta.url))
const node = process.execPath
const VIP = '198.19.0.10'

const topology = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'client', node: 'node1' },
    { name: 'echo-a', node: 'node1', labels: { app: 'echo', track: 'stable' } },
    { name: 'echo-b', node: 'node2', labels: { app: 'echo', track: 'stable' } },
    { name: 'echo-c', node: 'node2', labels: { app: 'echo', track: 'canary' } },
  ],
}

function service(selector: Record<string, string>): string {
  return `apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: ${VIP}
  selector: ${JSON.stringify(selector)}
  ports: [{name: tcp, port: 80, targetPort: 8080}]
`
}

const weftCli = (args: string[]): WeftResult => runWeftSync(args)

/** Which server answered a connection to the VIP, by its local address. */
async function callVip(lab: Lab): Promise<string> {
  const r = await lab.run('client', [node, netprobe, 'connect', VIP, '80'])
  const reply = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; code?: string; reply?: { local: string } }
  if (!reply.ok) return `error ${reply.code}`
  const ip = reply.reply!.local.replace(/^::ffff:/, '').split(':')[0]!
  return lab.pods.find((p) => p.ip === ip)?.name ?? ip
}

async function statuses(bus: Bus): Promise<Map<string, { revision: number; rejected: Array<{ key: string; reason: string }> }>> {
  const all = await bus.readStatuses()
  return new Map(all.map((s) => [s.node, s.status as { revision: number; rejected: Array<{ key: string; reason: string }> }]))
}

t.test('configuration over NATS in a two-node lab', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, topology, { startDaemons: true })
  const dir = mkdtempSync(join(tmpdir(), 'weft-mesh-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const operator = await lab.connect('operator')
  t.teardown(() => operator.close())
  for (const pod of ['echo-a', 'echo-b', 'echo-c']) await startIn(t, lab, pod, [node, netprobe, 'serve', '8080'], /listening/)

  const file = join(dir, 'mesh.yaml')
  writeFileSync(file, service({ app: 'echo' }))
  let applied = 0

  t.test('weft apply: every node reports the new revision', async (t) => {
    const r = weftCli(['apply', '-f', file])
    t.equal(r.code, 0, `apply succeeded (stderr: ${r.stderr})`)
    const m = /config revision (\d+)/.exec(r.stdout + r.stderr)
    t.ok(m, `apply printed the revision: ${r.stdout}`)
    applied = Number(m?.[1])
    await waitForNodes(operator, applied)
    const status = weftCli(['status'])
    t.equal(status.code, 0, 'weft status works from the lab context')
    t.match(status.stdout, /node1\s+\d+/, 'and lists node1')
    t.match(status.stdout, /node2\s+\d+/, 'and node2')
  })

  t.test('a connection to the VIP reaches every endpoint in turn', async (t) => {
    const seen: string[] = []
    for (let i = 0; i < 6; i++) seen.push(await callVip(lab))
    t.same([...new Set(seen)].sort(), ['echo-a', 'echo-b', 'echo-c'], `all three endpoints answered (${seen.join(', ')})`)
    t.same(seen.slice(0, 3).sort(), ['echo-a', 'echo-b', 'echo-c'], 'round robin: three calls, three endpoints')
  })

  t.test('an endpoint taken out of the service gets no new connection once that revision applies', async (t) => {
    writeFileSync(file, service({ app: 'echo', track: 'stable' }))
    const r = weftCli(['apply', '-f', file])
    t.equal(r.code, 0, `apply succeeded (stderr: ${r.stderr})`)
    const revision = Number(/config revision (\d+)/.exec(r.stdout + r.stderr)?.[1])
    await waitForNodes(operator, revision)
    const seen = new Set<string>()
    for (let i = 0; i < 8; i++) seen.add(await callVip(lab))
    t.same([...seen].sort(), ['echo-a', 'echo-b'], 'only the stable endpoints answer')
  })

  t.test('a bad resource published by any client is rejected alone, with the reason', async (t) => {
    const bad = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'broken', namespace: 'default' }, spec: { clusterIP: '10.0.0.1', ports: [{ name: 'x', port: 80 }] } }
    const revision = await operator.putResource('service.default.broken', bad)
    await waitForNodes(operator, revision)
    const s = await statuses(operator)
    for (const n of ['node1', 'node2']) {
      const rejected = s.get(n)?.rejected ?? []
      t.equal(rejected.length, 1, `${n} rejected one resource`)
      t.equal(rejected[0]?.key, 'service.default.broken', `${n}: the bad one`)
      t.match(rejected[0]?.reason, /clusterIP/, `${n}: naming the field`)
    }
    t.match(await callVip(lab), /^echo-[ab]$/, 'the good service still works')
    await operator.deleteResource('service.default.broken')
  })

  t.test('a node\'s credentials cannot write configuration', async (t) => {
    writeFileSync(join(dir, 'other.yaml'), service({ app: 'echo' }).replace('name: echo', 'name: other').replace(VIP, '198.19.0.11'))
    const denied = weftCli(['apply', '-f', join(dir, 'other.yaml'), '--creds', lab.credsFile('node-node1')])
    t.not(denied.code, 0, 'apply with node credentials fails')
    t.match(denied.stderr, /may not write configuration \(permission denied on \$KV\.weft-config\.service\.default\.other\)/, 'with the permission named')
  })

  t.test('NATS down: traffic keeps flowing; a change made after it is back propagates', async (t) => {
    await lab.stopNats('SIGKILL')
    const during: string[] = []
    for (let i = 0; i < 4; i++) during.push(await callVip(lab))
    t.same([...new Set(during)].sort(), ['echo-a', 'echo-b'], `the last configuration keeps serving (${during.join(', ')})`)
    const ready = await fetch(`http://${lab.nodes[0]!.address}:15020/readyz`)
    t.equal(ready.status, 200, 'the node stays ready')
    t.match(await ready.text(), /NATS unreachable/, 'and says it is serving without NATS')

    await lab.startNats()
    writeFileSync(file, service({ app: 'echo', track: 'canary' }))
    // The CLI connects fresh; the nodes' watches must resync on their own.
    let r = weftCli(['apply', '-f', file])
    for (let i = 0; i < 20 && r.code !== 0; i++) { await new Promise((res) => setTimeout(res, 500)); r = weftCli(['apply', '-f', file]) }
    t.equal(r.code, 0, `apply after NATS came back (stderr: ${r.stderr})`)
    const revision = Number(/config revision (\d+)/.exec(r.stdout + r.stderr)?.[1])
    await waitForNodes(operator, revision, 30_000)
    const seen = new Set<string>()
    for (let i = 0; i < 4; i++) seen.add(await callVip(lab))
    t.same([...seen], ['echo-c'], 'the change applied: only the canary answers')
  })

  t.test('a node that starts while NATS is down says so, and serves once configuration arrives', async (t) => {
    await lab.stopDaemon('node2')
    await lab.stopNats('SIGKILL')
    const starting = lab.startDaemon('node2')
    starting.catch(() => {})
    const node2 = lab.nodes.find((n) => n.name === 'node2')!
    const readyz = await until('node2 /readyz to say NATS is unreachable', async () => {
      const res = await fetch(`http://${node2.address}:15020/readyz`)
      const answer = { status: res.status, text: await res.text() }
      return /unreachable/.test(answer.text) ? answer : undefined
    }, { timeoutMs: 10_000, intervalMs: 100 })
    t.equal(readyz.status, 503, 'not ready without configuration')
    t.match(readyz.text, /waiting for configuration: NATS at nats:\/\/198\.18\.0\.254:4222 is unreachable/, '/readyz says why')
    await until('node2 logging that it waits for configuration', () => /NATS unreachable; waiting for configuration/.test(readFileSync(node2.logFile, 'utf8')), { timeoutMs: 10_000, intervalMs: 100 })
    t.match(readFileSync(node2.logFile, 'utf8'), /NATS unreachable; waiting for configuration/, 'and so does the log')
    await lab.startNats()
    await starting
    const seen = new Set<string>()
    for (let i = 0; i < 4; i++) seen.add(await callVip(lab))
    t.same([...seen], ['echo-c'], 'once NATS is back the node serves: the canary on node2 answers through its tunnel')
  })
})
