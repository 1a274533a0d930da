// The NATS layer against a real nats-server with JetStream and users: the config bucket, the
// watch (initial state, changes, a server restart), statuses, and who may write what.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import t from 'tap'

import { BusError, connectBus, freePort, renderNatsServerConfig, startNatsServer, type Bus, type BusCredentials, type ConfigEvent, type NatsServer, type StartNatsServerOptions } from '../src/bus/index.ts'
import { until } from './helpers/wait.ts'

/** A nats-server on loopback with a temp dir, stopped and removed in t's teardown. */
async function natsFor(t: Test, options: Partial<StartNatsServerOptions> = {}): Promise<{ server: NatsServer; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-bus-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const server = await startNatsServer({ dir, nodes: ['node1', 'node2'], ...options })
  t.teardown(() => server.stop())
  return { server, dir }
}

async function busFor(t: Test, credentials: BusCredentials): Promise<Bus> {
  const bus = await connectBus(credentials)
  t.teardown(() => bus.close())
  return bus
}

async function rejection(promise: Promise<unknown>): Promise<BusError> {
  try {
    await promise
  } catch (error) {
    if (error instanceof BusError) return error
    throw error
  }
  throw new Error('expected a rejection')
}

const reviews = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'reviews', namespace: 'default' }, spec: { clusterIP: '198.19.0.10', ports: [{ port: 80 }] } }

t.test('the config generator writes JetStream, users with permissions and TLS', async (t) => {
  const text = renderNatsServerConfig({
    host: '127.0.0.1',
    port: 4222,
    storeDir: '/tmp/store',
    users: [{ user: 'operator', pass: 'p"w', permissions: undefined }],
    tls: { cert: '/c.pem', key: '/k.pem', ca: '/ca.pem', verifyClients: true },
  })
  t.match(text, 'listen: "127.0.0.1:4222"')
  t.match(text, 'jetstream { store_dir: "/tmp/store" }')
  t.match(text, '{ user: "operator", password: "p\\"w" }')
  t.match(text, /tls \{\n {2}cert_file: "\/c.pem"\n {2}key_file: "\/k.pem"\n {2}ca_file: "\/ca.pem"\n {2}verify: true\n\}/)
})

t.test('resources: put, get, list by prefix, delete; revisions are the stream sequence', async (t) => {
  const { server } = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  await control.configBucket()
  t.equal(await control.configRevision(), 0, 'an empty bucket is at revision 0')
  const first = await control.putResource('service.default.reviews', reviews)
  const second = await control.putResource('service.default.ratings', '{"kind":"Service"}')
  const third = await control.putResource('pod.default.reviews-v1', { kind: 'Pod' })
  t.same([first, second, third], [1, 2, 3])
  t.same(await control.getResource('service.default.reviews'), { key: 'service.default.reviews', value: JSON.stringify(reviews), revision: 1 })
  t.equal(await control.getResource('service.default.nope'), null)
  t.same((await control.listResources('service')).map((r) => r.key), ['service.default.ratings', 'service.default.reviews'])
  t.same((await control.listResources()).map((r) => r.key), ['pod.default.reviews-v1', 'service.default.ratings', 'service.default.reviews'])
  t.equal(await control.deleteResource('service.default.ratings'), 4, 'a delete gets a revision too')
  t.equal(await control.getResource('service.default.ratings'), null)
  t.same((await control.listResources('service')).map((r) => r.key), ['service.default.reviews'])
  t.equal(await control.configRevision(), 4)
})

t.test('a watch delivers the current state, says when it is complete, then live changes', async (t) => {
  const { server } = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  await control.putResource('service.default.reviews', reviews)
  await control.putResource('service.default.gone', reviews)
  await control.deleteResource('service.default.gone')
  const node = await busFor(t, server.credentials.node('node1'))
  const events: ConfigEvent[] = []
  let initialRevision = -1
  const watch = await node.watchConfig((event) => events.push(event), { initialDone: (revision) => (initialRevision = revision) })
  t.teardown(() => watch.stop())
  await until('the initial state', () => (initialRevision >= 0 ? true : undefined), { timeoutMs: 15_000 })
  t.equal(initialRevision, 3, 'initial state is at the last revision (the delete)')
  t.same(events, [{ key: 'service.default.reviews', value: JSON.stringify(reviews), revision: 1 }], 'only current values, no deleted ones')

  events.length = 0
  await control.putResource('route.default.reviews', { kind: 'HTTPRoute' })
  await control.deleteResource('service.default.reviews')
  await until('two changes', () => (events.length >= 2 ? true : undefined), { timeoutMs: 15_000 })
  t.same(events, [
    { key: 'route.default.reviews', value: '{"kind":"HTTPRoute"}', revision: 4 },
    { key: 'service.default.reviews', value: null, revision: 5 },
  ])
  t.equal(watch.revision, 5)
})

t.test('a watch on an empty bucket is complete at once, at revision 0', async (t) => {
  const { server } = await natsFor(t)
  await (await busFor(t, server.credentials.control)).configBucket()
  const node = await busFor(t, server.credentials.node('node1'))
  const initial = await new Promise<number>((resolve) => void node.watchConfig(() => {}, { initialDone: resolve }).then((w) => t.teardown(() => w.stop())))
  t.equal(initial, 0)
})

t.test('node credentials read configuration but cannot write it', async (t) => {
  const { server } = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  await control.putResource('service.default.reviews', reviews)
  const node = await busFor(t, server.credentials.node('node1'))
  t.equal((await node.getResource('service.default.reviews'))?.revision, 1)
  t.equal((await node.listResources()).length, 1)

  const put = await rejection(node.putResource('service.default.x', { kind: 'Service' }))
  t.equal(put.kind, 'permission')
  t.equal(put.message, 'nats: user node-node1 may not write configuration (permission denied on $KV.weft-config.service.default.x)')
  const del = await rejection(node.deleteResource('service.default.reviews'))
  t.equal(del.message, 'nats: user node-node1 may not write configuration (permission denied on $KV.weft-config.service.default.reviews)')
  t.equal((await control.getResource('service.default.reviews'))?.revision, 1, 'still there')
  t.equal(node.connection.isClosed(), false, 'a denied publish does not cost the connection')
})

t.test('a node writes its own status and no other', async (t) => {
  const { server } = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  await control.configBucket()
  const live: Array<[string, unknown]> = []
  const subscription = control.subscribeStatuses((node, status) => live.push([node, status]))
  t.teardown(() => subscription.stop())
  await control.connection.flush()

  const node1 = await busFor(t, server.credentials.node('node1'))
  await node1.publishStatus('node1', { revision: 7, rejected: [] })
  const other = await rejection(node1.publishStatus('node2', { revision: 0 }))
  t.equal(other.kind, 'permission')
  t.match(other.message, /^nats: user node-node1 may not write this status \(permission denied on (weft\.status|\$KV\.weft-status)\.node2\)$/)

  const statuses = await control.readStatuses()
  t.same(statuses.map(({ node, status }) => ({ node, status })), [{ node: 'node1', status: { revision: 7, rejected: [] } }])
  t.type(statuses[0]?.updated, Date)
  await until('the live status', () => (live.length > 0 ? true : undefined), { timeoutMs: 15_000 })
  t.same(live, [['node1', { revision: 7, rejected: [] }]], 'published on weft.status.node1 as well')
})

t.test('a node asks the CA only on its own CSR subject', async (t) => {
  const { server } = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  const asked: string[] = []
  const subscription = control.connection.subscribe('weft.control.csr.*', {
    callback: (error, message) => {
      if (error) return
      asked.push(message.subject)
      message.respond('{"ok":false,"error":"test"}')
    },
  })
  t.teardown(() => subscription.unsubscribe())
  await control.connection.flush()
  const node1 = await busFor(t, server.credentials.node('node1'))
  const own = await node1.connection.request('weft.control.csr.node1', '{}', { timeout: 5000 })
  t.equal(own.string(), '{"ok":false,"error":"test"}', 'its own subject is answered')
  const other = await node1.connection.request('weft.control.csr.node2', '{}', { timeout: 5000 }).then(() => 'answered', (error: Error) => error.message)
  t.match(other, /Permissions Violation for Publish to "weft\.control\.csr\.node2"/, 'another node\'s subject is refused at once')
  await control.connection.flush()
  t.same(asked, ['weft.control.csr.node1'], 'the CA never saw the request on node2\'s subject')
  const rotate = await node1.connection.request('weft.control.ca.rotate', '{}', { timeout: 5000 }).then(() => 'answered', (error: Error) => error.message)
  t.match(rotate, /Permissions Violation for Publish to "weft\.control\.ca\.rotate"/, 'nor may it ask for a rotation')
  t.equal(node1.connection.isClosed(), false)
})

t.test('the trust bundle: control writes it, nodes read and watch it, and may not write it', async (t) => {
  const { server } = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  const node1 = await busFor(t, server.credentials.node('node1'))
  t.equal(await node1.getTrustBundle(), null, 'the bucket exists from the start (the server made it), empty')
  const seen: Array<string | null> = []
  const watch = await node1.watchTrustBundle((value) => seen.push(value))
  t.teardown(() => watch.stop())
  const revision = await control.putTrustBundle({ version: 1 })
  t.equal((await node1.getTrustBundle())?.value, '{"version":1}')
  await until('the watched bundle', () => (seen.length > 0 ? true : undefined), { timeoutMs: 15_000 })
  t.same(seen, ['{"version":1}'])
  const put = await rejection(node1.putTrustBundle({ version: 2 }))
  t.equal(put.kind, 'permission')
  t.equal(put.message, 'nats: user node-node1 may not write the trust bundle (only the control plane\'s CA does) (permission denied on $KV.weft-trust.bundle)')
  node1.connection.publish('$KV.weft-trust.bundle', '{"version":3}')
  await node1.connection.flush().catch(() => {})
  t.equal((await control.getTrustBundle())?.revision, revision, 'a bare PUB from a node did not land either')
})

t.test('a watch survives nats-server being killed and restarted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-bus-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const port = await freePort()
  let server = await startNatsServer({ dir, port, nodes: ['node1'] })
  t.teardown(() => server.stop())
  const control = await busFor(t, server.credentials.control)
  await control.putResource('service.default.reviews', reviews)
  await control.putResource('service.default.ratings', reviews)

  const node = await busFor(t, server.credentials.node('node1'))
  const state = new Map<string, string>()
  let initialDone = 0
  let resyncs = 0
  const watch = await node.watchConfig(
    ({ key, value }) => (value === null ? state.delete(key) : state.set(key, value)),
    { initialDone: () => initialDone++, onResync: () => resyncs++ },
  )
  t.teardown(() => watch.stop())
  await until('the initial state', () => (initialDone === 1 ? true : undefined), { timeoutMs: 15_000 })
  t.same([...state.keys()].sort(), ['service.default.ratings', 'service.default.reviews'])

  await server.kill()
  server = await startNatsServer({ dir, port, nodes: ['node1'], passwords: server.passwords })
  // The control plane writes as soon as JetStream takes writes again.
  const revision = await until('a put after the restart', () => control.putResource('route.default.reviews', { kind: 'HTTPRoute' }), { timeoutMs: 15_000 })
  await until('the change after the restart', () => (state.has('route.default.reviews') ? true : undefined), { timeoutMs: 15_000 })
  t.equal(revision, 3, 'the store survived the restart')
  t.ok(resyncs >= 1, 'the watch said it resynced')
  t.ok(initialDone >= 2, 'and when the resync was complete')
  t.same([...state.keys()].sort(), ['route.default.reviews', 'service.default.ratings', 'service.default.reviews'])
  await until('the watch revision', () => (watch.revision === 3 ? true : undefined), { timeoutMs: 15_000 })

  await control.deleteResource('service.default.ratings')
  await until('a later delete', () => (state.has('service.default.ratings') ? undefined : true), { timeoutMs: 15_000 })
})

t.test('any NATS client can publish: a bare PUB on $KV.weft-config.<key> is a put', async (t) => {
  const { server } = await natsFor(t)
  // A node first: the server created the buckets, so nodes need no control plane to start.
  const node = await busFor(t, server.credentials.node('node1'))
  const events: ConfigEvent[] = []
  const watch = await node.watchConfig((event) => events.push(event))
  t.teardown(() => watch.stop())
  const control = await busFor(t, server.credentials.control)
  control.connection.publish('$KV.weft-config.service.default.reviews', JSON.stringify(reviews))
  await control.connection.flush()
  await until('the bare PUB', () => (events.length > 0 ? true : undefined), { timeoutMs: 15_000 })
  t.same(events, [{ key: 'service.default.reviews', value: JSON.stringify(reviews), revision: 1 }])
  t.equal((await control.getResource('service.default.reviews'))?.revision, 1)
})

t.test('TLS: the server config takes a certificate, the client a CA', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-bus-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const openssl = (...args: string[]): void => {
    const result = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
    if (result.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${result.stderr}`)
  }
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=weft test CA', '-keyout', 'ca.key', '-out', 'ca.pem')
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr')
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n')
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'san.ext', '-out', 'server.pem')
  const { server } = await natsFor(t, { tls: { cert: join(dir, 'server.pem'), key: join(dir, 'server.key'), ca: join(dir, 'ca.pem') } })
  t.match(server.url, /^tls:\/\//)
  const node = await busFor(t, server.credentials.node('node1'))
  t.same(await node.listResources(), [], 'connected over TLS, verified by the CA')
  const untrusted = await rejection(connectBus({ ...server.credentials.node('node1'), tls: {} }))
  t.equal(untrusted.kind, 'tls', 'a client that does not trust the CA does not connect')
  t.match(untrusted.message, new RegExp(`^TLS to NATS at ${server.url} failed: .*certificate.*; check the CA and client certificate \\(tls in --creds or the context\\)$`))
})

t.test('a wrong password is one clear line', async (t) => {
  const { server } = await natsFor(t)
  const error = await rejection(connectBus({ ...server.credentials.node('node1'), pass: 'wrong' }))
  t.equal(error.kind, 'auth')
  t.equal(error.message, 'authorization violation for user node-node1: check --creds / WEFT_NATS_* or the current context')
})

t.test('no server is one clear line, within a few seconds', async (t) => {
  const port = await freePort()
  const error = await rejection(connectBus({ servers: `nats://127.0.0.1:${port}`, user: 'operator', pass: 'x' }))
  t.equal(error.kind, 'unreachable')
  t.equal(error.message, `cannot reach NATS at nats://127.0.0.1:${port}: connection refused; is the lab up? (weft lab ls)`)
})
