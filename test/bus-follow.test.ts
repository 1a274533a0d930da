// How a node follows the configuration (src/bus/follow.ts), against a real nats-server: changes
// arrive on the stream's RePublish subject with no consumer left per node; a node that misses
// changes (lost on the wire, cut by a NATS restart, the last one of a burst) notices and ends at
// the exact revision and state; deletes and re-creates in quick succession end right.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import type { Test } from 'tap'
import t from 'tap'

import { CONFIG_CHANGES, GAP_FETCH_LIMIT, connectBus, freePort, startNatsServer, streamOf, type Bus, type BusCredentials, type CatchUp, type ConfigEvent, type ConfigWatch, type FollowConfigOptions, type NatsServer } from '../src/bus/index.ts'
import { startNatsRelay, type NatsRelay } from './helpers/nats-relay.ts'
import { until } from './helpers/wait.ts'

async function natsFor(t: Test, options: { port?: number; dir?: string } = {}): Promise<NatsServer> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'weft-follow-test-'))
  if (options.dir === undefined) t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const server = await startNatsServer({ dir, nodes: ['node1'], ...(options.port !== undefined ? { port: options.port } : {}) })
  t.teardown(() => server.stop())
  return server
}

async function busFor(t: Test, credentials: BusCredentials): Promise<Bus> {
  const bus = await connectBus(credentials)
  t.teardown(() => bus.close())
  return bus
}

/** A node following the bucket: the state it was given, every event, every catch-up. */
type Follower = { state: Map<string, string>; events: ConfigEvent[]; catchUps: CatchUp[]; watch: ConfigWatch }

async function follow(t: Test, bus: Bus, options: FollowConfigOptions = {}): Promise<Follower> {
  const follower: Omit<Follower, 'watch'> = { state: new Map(), events: [], catchUps: [] }
  const watch = await bus.followConfig((event) => {
    follower.events.push(event)
    if (event.value === null) follower.state.delete(event.key)
    else follower.state.set(event.key, event.value)
  }, { ...options, onCatchUp: (c) => follower.catchUps.push(c) })
  t.teardown(() => watch.stop())
  return { ...follower, watch }
}

/** The bucket as stored: key -> value. */
async function stored(bus: Bus): Promise<Map<string, string>> {
  return new Map((await bus.listResources()).map((r) => [r.key, r.value]))
}

/** Waits until the node is at the bucket's revision, then checks it holds exactly what is stored. */
async function converged(t: Test, control: Bus, node: Follower, what: string): Promise<void> {
  const revision = await control.configRevision()
  await until(`${what}: the node at revision ${revision}`, () => node.watch.revision === revision, { timeoutMs: 15_000 })
  t.same([...node.state].sort(), [...await stored(control)].sort(), `${what}: the node holds exactly what is stored`)
}

const svc = (port: number): unknown => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'reviews', namespace: 'default' }, spec: { clusterIP: '198.19.0.10', ports: [{ port }] } })

t.test('changes arrive on the RePublish subject in order, deletes included, with no consumer left on the stream', async (t) => {
  const server = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  await control.putResource('service.default.reviews', svc(80))
  await control.putResource('service.default.gone', svc(81))
  await control.deleteResource('service.default.gone')
  const node = await follow(t, await busFor(t, server.credentials.node('node1')))
  t.equal(node.watch.revision, 3, 'the start loads the current state at the last revision')
  t.same(node.events, [{ key: 'service.default.reviews', value: JSON.stringify(svc(80)), revision: 1 }], 'only current values')
  t.same(node.catchUps, [{ reason: 'start', how: 'reloaded', from: 0, to: 3 }])

  node.events.length = 0
  await control.putResource('httproute.default.reviews', { kind: 'HTTPRoute' })
  await control.deleteResource('service.default.reviews')
  await until('two live changes', () => node.events.length >= 2)
  t.same(node.events, [
    { key: 'httproute.default.reviews', value: '{"kind":"HTTPRoute"}', revision: 4 },
    { key: 'service.default.reviews', value: null, revision: 5 },
  ])
  t.equal(node.watch.revision, 5)
  t.equal(node.catchUps.length, 1, 'live changes needed no catch-up')
  const manager = await jetstreamManager(control.connection)
  t.equal((await manager.streams.info(streamOf('weft-config'))).state.consumer_count, 0, 'the consumer that loaded the state is gone: the node keeps none')
})

t.test('deletes and re-creates in quick succession end in the stored state', async (t) => {
  const server = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  const node = await follow(t, await busFor(t, server.credentials.node('node1')))
  // Not awaited one by one: the puts and deletes race each other to the server as a burst would.
  const writes: Array<Promise<number>> = []
  for (let round = 0; round < 30; round++) {
    writes.push(control.putResource('service.default.reviews', svc(1000 + round)))
    writes.push(control.deleteResource('service.default.reviews'))
    writes.push(control.putResource('service.default.reviews', svc(2000 + round)))
    writes.push(control.putResource(`pod.default.p${round % 3}`, { kind: 'Pod', round }))
    if (round % 2 === 0) writes.push(control.deleteResource(`pod.default.p${round % 3}`))
  }
  await Promise.all(writes)
  await converged(t, control, node, 'after the burst')
  t.equal(node.state.get('service.default.reviews'), JSON.stringify(svc(2029)), 'the last put wins')
  const revisions = node.events.map((e) => e.revision)
  t.same(revisions, [...revisions].sort((a, b) => a - b), 'every change was delivered in revision order')
})

t.test('changes lost on the wire: the next change shows the gap, the missing revisions are fetched', async (t) => {
  const server = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  const relay: NatsRelay = await startNatsRelay(server.url)
  t.teardown(() => relay.close())
  const node = await follow(t, await busFor(t, { ...server.credentials.node('node1'), servers: relay.url }))
  await control.putResource('service.default.reviews', svc(80))
  await control.putResource('service.default.ratings', svc(80))
  await converged(t, control, node, 'before the loss')

  relay.drop = (subject) => subject.startsWith('weft.config.')
  await control.putResource('service.default.reviews', svc(81))
  await control.deleteResource('service.default.ratings')
  await control.putResource('pod.default.a', { kind: 'Pod' })
  await control.connection.flush()
  await until('the relay dropped the three changes', () => relay.dropped >= 3)
  relay.drop = () => false
  t.equal(node.watch.revision, 2, 'the node saw none of them')

  await control.putResource('pod.default.b', { kind: 'Pod' })
  await converged(t, control, node, 'after the gap')
  t.equal(node.watch.revision, 6)
  t.same(node.catchUps.at(-1), { reason: 'gap', how: 'fetched', from: 2, to: 5 }, 'the three missing revisions were fetched by sequence')
  t.notOk(node.state.has('service.default.ratings'), 'the lost delete was applied')
})

t.test('a lost change that is gone from the stream (superseded beyond its history) makes the node reload', async (t) => {
  const server = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  const relay = await startNatsRelay(server.url)
  t.teardown(() => relay.close())
  const node = await follow(t, await busFor(t, { ...server.credentials.node('node1'), servers: relay.url }))
  await control.putResource('service.default.reviews', svc(80))
  await converged(t, control, node, 'before the loss')

  // The bucket keeps 5 revisions per key: of 7 lost puts, the first 2 are gone from the stream.
  relay.drop = (subject) => subject.startsWith('weft.config.')
  for (let i = 0; i < 7; i++) await control.putResource('service.default.reviews', svc(90 + i))
  await control.putResource('pod.default.x', { kind: 'Pod' })
  await control.connection.flush()
  await until('the relay dropped the eight changes', () => relay.dropped >= 8)
  relay.drop = () => false
  await control.putResource('pod.default.y', { kind: 'Pod' })
  await converged(t, control, node, 'after the gap')
  t.match(node.catchUps.at(-1), { reason: 'gap', how: 'reloaded' }, 'a missing revision cannot be fetched: the node reloaded')
  t.equal(node.state.get('service.default.reviews'), JSON.stringify(svc(96)))
})

t.test(`more than ${GAP_FETCH_LIMIT} lost changes are reloaded rather than fetched`, async (t) => {
  const server = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  const relay = await startNatsRelay(server.url)
  t.teardown(() => relay.close())
  const node = await follow(t, await busFor(t, { ...server.credentials.node('node1'), servers: relay.url }))
  relay.drop = (subject) => subject.startsWith('weft.config.')
  await Promise.all(Array.from({ length: GAP_FETCH_LIMIT + 10 }, (_, i) => control.putResource(`pod.default.p${i}`, { kind: 'Pod', i })))
  await control.connection.flush()
  await until('every change dropped', () => relay.dropped >= GAP_FETCH_LIMIT + 10)
  relay.drop = () => false
  await control.deleteResource('pod.default.p0')
  await converged(t, control, node, 'after the large gap')
  t.match(node.catchUps.at(-1), { reason: 'gap', how: 'reloaded' })
  t.equal(node.state.size, GAP_FETCH_LIMIT + 9)
})

t.test('a lost last change, with nothing after it, is found by the revision check', async (t) => {
  const server = await natsFor(t)
  const control = await busFor(t, server.credentials.control)
  const relay = await startNatsRelay(server.url)
  t.teardown(() => relay.close())
  const node = await follow(t, await busFor(t, { ...server.credentials.node('node1'), servers: relay.url }), { revisionCheckMs: 300 })
  await control.putResource('service.default.reviews', svc(80))
  await converged(t, control, node, 'before the loss')
  relay.drop = (subject) => subject.startsWith('weft.config.')
  await control.deleteResource('service.default.reviews')
  await control.connection.flush()
  await until('the delete dropped', () => relay.dropped >= 1)
  relay.drop = () => false
  await converged(t, control, node, 'after the check')
  t.ok(node.catchUps.some((c) => c.reason === 'check' && c.how === 'fetched'), 'the periodic check fetched it')
})

t.test('NATS killed and restarted: changes made while the node was away reach it exactly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-follow-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const port = await freePort()
  let server = await startNatsServer({ dir, port, nodes: ['node1'] })
  t.teardown(() => server.stop())
  const writer = async (): Promise<Bus> => await busFor(t, server.credentials.operator)
  let control = await writer()
  for (const name of ['a', 'b', 'c']) await control.putResource(`service.default.${name}`, svc(80))
  const node = await follow(t, await busFor(t, server.credentials.node('node1')))
  await converged(t, control, node, 'before the restart')

  await server.kill()
  await control.close()
  // The node is still away (it retries every 500 ms) while another client writes to the new server.
  server = await startNatsServer({ dir, port, nodes: ['node1'], passwords: server.passwords })
  control = await writer()
  await control.putResource('service.default.a', svc(81))
  await control.deleteResource('service.default.b')
  await control.putResource('service.default.d', svc(80))
  await converged(t, control, node, 'after the restart')
  t.ok(node.catchUps.some((c) => c.reason === 'reconnect' || c.reason === 'gap'), 'the node caught up after the reconnect')
  await control.deleteResource('service.default.c')
  await converged(t, control, node, 'a live change after it')
})

t.test('a config bucket made without RePublish (before weft republished): nodes still follow it, with a consumer, and say why', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-follow-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const server = await startNatsServer({ dir, nodes: ['node1'], createBuckets: false })
  t.teardown(() => server.stop())
  const operator = await busFor(t, server.credentials.operator)
  await new Kvm(operator.connection).create('weft-config', { history: 5 })
  await new Kvm(operator.connection).create('weft-status', { history: 1 })
  const control = await busFor(t, server.credentials.control)
  await control.configBucket() // tries to add the RePublish; nats-server 2.9 refuses to change it
  await control.putResource('service.default.reviews', svc(80))
  const errors: string[] = []
  const node = await follow(t, await busFor(t, server.credentials.node('node1')), { onError: (error) => errors.push(error.message) })
  t.match(errors[0], `does not republish its changes on ${CONFIG_CHANGES}`, 'the node says why it costs more')
  await control.putResource('service.default.ratings', svc(80))
  await converged(t, control, node, 'through the consumer')
})
