// `weft control` against a real nats-server with JetStream and users: registering and
// deregistering pods and nodes over NATS requests, refusals naming the field, and a clean stop.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import t from 'tap'

import { connectBus, csrSubject, startNatsServer, type BusCredentials } from '../src/bus/index.ts'
import { requestDeregister, requestRegister, type RegistryReply } from '../src/control/index.ts'
import { createCsr, generateP256KeyPair, type CsrReply } from '../src/identity/index.ts'

const cli = join(import.meta.dirname, '..', 'src', 'cli', 'main.ts')

const web = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' }, annotations: { 'weft.dev/cgroup': '/sys/fs/cgroup/weft-x/nodes/node1/web', 'weft.dev/enrolled': 'true' } },
  spec: { nodeName: 'node1', serviceAccountName: 'web' },
  status: { podIP: '198.18.1.2' },
}
const node1 = { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '198.18.0.2', proxyIp: '198.18.1.1', podCIDR: '198.18.1.0/24' } }

function credsFile(dir: string, name: string, credentials: BusCredentials): string {
  const file = join(dir, `${name}.json`)
  writeFileSync(file, JSON.stringify({ servers: credentials.servers, user: credentials.user, pass: credentials.pass }), { mode: 0o600 })
  return file
}

/** Runs `weft control` and resolves once it logs that it serves; its stdout lines are collected. */
function startControl(t: Test, args: string[]): Promise<{ child: ChildProcess; lines: string[]; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [cli, 'control', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => void child.kill('SIGKILL'))
  const lines: string[] = []
  let stderr = ''
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  return new Promise((resolve, reject) => {
    let buffered = ''
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk
      const complete = buffered.split('\n')
      buffered = complete.pop() ?? ''
      lines.push(...complete)
      if (complete.some((line) => line.includes('serving the workload registry'))) resolve({ child, lines, exited })
    })
    void exited.then((code) => reject(new Error(`weft control exited (${code}) before serving: ${stderr}${lines.join('\n')}`)))
  })
}

t.test('weft control owns the workload registry', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-control-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const server = await startNatsServer({ dir, nodes: ['node1'] })
  t.teardown(() => server.stop())
  // As the lab runs it: the user `control`, which src/bus lets serve weft.control.>.
  const control = await startControl(t, ['--creds', credsFile(dir, 'control', server.credentials.control), '--ca-dir', join(dir, 'ca')])
  const operator = await connectBus(server.credentials.operator)
  t.teardown(() => operator.close())
  const node1Creds = server.credentials.node('node1')

  await t.test('a registered Pod lands in the config bucket under pod.<ns>.<name>', async (t) => {
    const reply = await requestRegister(operator, web)
    t.match(reply, { ok: true, key: 'pod.shop.web' })
    const stored = await operator.getResource('pod.shop.web')
    t.same(JSON.parse(stored?.value ?? 'null'), web, 'stored as given')
    t.equal(stored?.revision, (reply as { revision: number }).revision, 'the reply carries the revision of the write')
    const again = await requestRegister(operator, { ...web, metadata: { ...web.metadata, labels: { app: 'web', v: '2' } } })
    t.ok(again.ok && again.revision > (reply as { revision: number }).revision, 'registering again replaces it, at a later revision')
  })

  await t.test('a Node lands under node._.<name>', async (t) => {
    t.match(await requestRegister(operator, node1), { ok: true, key: 'node._.node1' })
    t.ok(await operator.getResource('node._.node1'))
  })

  await t.test('it runs the CA: a node gets a certificate for its pod; rotate-ca brings a new root', async (t) => {
    const nodeBus = await connectBus(server.credentials.node('node1'))
    t.teardown(() => nodeBus.close())
    const identity = 'spiffe://cluster.local/ns/shop/sa/web'
    const ask = async (): Promise<CsrReply> => (await nodeBus.connection.request(csrSubject('node1'), JSON.stringify({ csr: await createCsr(identity, await generateP256KeyPair()) }), { timeout: 5000 })).json<CsrReply>()
    const before = await ask()
    t.match(before, { ok: true, identity })
    const rotate = spawnSync(process.execPath, [cli, 'control', 'rotate-ca', '--creds', credsFile(dir, 'operator', server.credentials.operator)], { encoding: 'utf8', timeout: 20_000 })
    t.equal(rotate.status, 0, rotate.stderr)
    t.match(rotate.stdout, /^new root [0-9A-F:]+ signs from now on \(trust bundle version \d+\); still trusted while retiring: [0-9A-F:]+ until \S+Z\n$/)
    const after = await ask()
    t.ok(before.ok && after.ok && after.root !== before.root && after.bundle.roots.some((root) => root.fingerprint === before.root), 'signed by the new root; the old one still in the bundle')
    const asOperator = spawnSync(process.execPath, [cli, 'control', 'rotate-ca', '--creds', credsFile(dir, node1Creds.user, node1Creds)], { encoding: 'utf8', timeout: 20_000 })
    t.equal(asOperator.status, 1, 'a node may not ask for a rotation')
    t.match(asOperator.stderr, /^weft: control rotate-ca: .*Permissions Violation for Publish to "weft\.control\.ca\.rotate"/)
  })

  await t.test('an invalid Pod is refused, naming the field, and nothing is written', async (t) => {
    const before = await operator.configRevision()
    const badIp = await requestRegister(operator, { ...web, metadata: { ...web.metadata, name: 'bad' }, status: { podIP: '300.1.1.1' } })
    t.same(badIp.ok, false)
    t.match((badIp as { error: string }).error, /^Pod shop\/bad: status\.podIP: expected an IPv4 address, got "300\.1\.1\.1"$/)
    const noNode = await requestRegister(operator, { ...web, spec: {} })
    t.match(noNode, { ok: false, error: /spec\.nodeName: missing/ })
    const service = await requestRegister(operator, { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' }, spec: { clusterIP: '198.19.0.1', ports: [{ port: 80 }] } })
    t.match(service, { ok: false, error: /kind: the control plane registers Pod and Node only, got Service; publish it with weft apply/ })
    t.match(await requestRegister(operator, '{not json'), { ok: false, error: /^request body: not JSON/ })
    t.equal(await operator.configRevision(), before, 'no write happened')
    t.equal(await operator.getResource('pod.shop.bad'), null)
  })

  await t.test('deregister removes a pod or node, by resource or by name', async (t) => {
    const byResource = await requestDeregister(operator, web)
    t.match(byResource, { ok: true, key: 'pod.shop.web' })
    t.equal(await operator.getResource('pod.shop.web'), null, 'gone from the bucket')
    t.match(await requestDeregister(operator, { kind: 'Node', name: 'node1' }), { ok: true, key: 'node._.node1' })
    t.equal(await operator.getResource('node._.node1'), null)
    t.match(await requestDeregister(operator, { kind: 'Pod', namespace: 'shop', name: 'web' }), { ok: false, error: 'Pod shop/web is not registered (no key pod.shop.web)' })
    t.match(await requestDeregister(operator, { kind: 'Service', name: 'x' }), { ok: false, error: /^kind: the control plane registers Pod and Node only, got "Service"$/ })
  })

  await t.test('it logs JSON lines and stops cleanly on SIGTERM', async (t) => {
    control.child.kill('SIGTERM')
    t.equal(await control.exited, 0, 'exit code 0')
    const entries = control.lines.filter(Boolean).map((line) => JSON.parse(line) as { level: string; msg: string; key?: string; error?: string })
    t.ok(entries.some((e) => e.msg === 'registered pod.shop.web' && e.key === 'pod.shop.web'))
    t.ok(entries.some((e) => e.msg === 'register refused' && e.level === 'warn' && /status\.podIP/.test(e.error ?? '')))
    t.equal(entries.at(-1)?.msg, 'stopped')
    const replies: RegistryReply = await requestRegister(operator, web).catch((error: Error) => ({ ok: false, error: error.message }))
    t.match(replies, { ok: false, error: /nobody serves weft\.control\.register .*is weft control running\?/ }, 'without it, a request fails at once, saying so')
  })

  await t.test('as a user that may not serve weft.control.> it stops at start, saying which permission it lacks', async (t) => {
    const node = server.credentials.node('node1')
    const result = spawnSync(process.execPath, [cli, 'control', '--creds', credsFile(dir, node.user, node), '--ca-dir', join(dir, 'ca')], { encoding: 'utf8', timeout: 15_000 })
    t.equal(result.status, 1)
    t.match(result.stderr, /^weft: control: nats: user node-node1 may not serve weft\.control\.> \(permission denied on subscription to weft\.control\.(register|deregister)\)/)
  })
})

t.test('weft control --help says what it is for', async (t) => {
  const result = spawnSync(process.execPath, [cli, 'control', '--help'], { encoding: 'utf8' })
  t.equal(result.status, 0)
  t.match(result.stdout, /weft\.control\.register/)
  t.match(result.stdout, /mirror the Kubernetes API/)
  t.match(result.stdout, /CA/)
  const bad = spawnSync(process.execPath, [cli, 'control', '--bogus'], { encoding: 'utf8' })
  t.equal(bad.status, 2)
  t.equal(bad.stderr, 'weft: control: unknown option --bogus (see weft control --help)\n', 'in the words of weft lab and weft get')
})
