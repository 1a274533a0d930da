// The cluster's NATS as daemonset/nats.yaml configures it, run for real: Debian's nats-server with
// the ConfigMap's nats.conf (only its listen addresses and store moved to this test's loopback
// ports and directory) and the passwords in the environment, as the StatefulSet gives them. The
// control plane creates the buckets and writes configuration; the one user every node shares
// reads it and writes any node's status, and cannot write configuration; the readiness probe's
// URL answers once JetStream is up.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { parseAllDocuments } from 'yaml'

import { connectBus, freePort } from '../src/bus/index.ts'
import { CLUSTER_NATS_USERS } from '../src/k8s/nats-config.ts'
import { repoRoot } from './helpers/privileged.ts'

/* eslint-disable @typescript-eslint/no-explicit-any */
const objects = parseAllDocuments(readFileSync(join(repoRoot, 'daemonset', 'nats.yaml'), 'utf8')).map((d) => d.toJS() as any)
const conf: string = objects.find((o) => o.kind === 'ConfigMap').data['nats.conf']
const statefulSet = objects.find((o) => o.kind === 'StatefulSet')
/* eslint-enable @typescript-eslint/no-explicit-any */

async function listening(port: number): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); resolve(true) })
      socket.on('error', () => resolve(false))
    })
    if (open) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`nats-server did not listen on 127.0.0.1:${port}`)
}

t.test('the StatefulSet\'s nats.conf: control creates and writes, the shared node user reads and reports, JetStream health answers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-test-k8s-nats-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const [port, monitor] = [await freePort(), await freePort()]
  const moved = conf
    .replace('listen: "0.0.0.0:4222"', `listen: "127.0.0.1:${port}"`)
    .replace('http: "0.0.0.0:8222"', `http: "127.0.0.1:${monitor}"`)
    .replace('store_dir: "/data/jetstream"', `store_dir: ${JSON.stringify(join(dir, 'jetstream'))}`)
  t.not(moved, conf, 'only addresses and the store moved')
  writeFileSync(join(dir, 'nats.conf'), moved)
  const passwords = Object.fromEntries(CLUSTER_NATS_USERS.map((u) => [u.passwordVariable, `pw-${u.user}-${port}`]))
  const server = spawn('nats-server', statefulSet.spec.template.spec.containers[0].args.map((a: string) => (a === '/etc/nats/nats.conf' ? join(dir, 'nats.conf') : a)), {
    env: { PATH: process.env.PATH ?? '', ...passwords }, stdio: 'ignore',
  })
  const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()))
  t.teardown(async () => { server.kill('SIGKILL'); await exited })
  await listening(port)
  const url = `nats://127.0.0.1:${port}`

  const control = await connectBus({ servers: url, user: 'control', pass: passwords.WEFT_CONTROL_PASSWORD })
  t.teardown(() => control.close())
  await control.configBucket()
  await control.trustBucket()
  await control.putResource('node._.node-a', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node-a' }, spec: { address: '192.0.2.11', proxyIp: '192.0.2.11', podCIDR: '10.244.1.0/24' } })

  const node = await connectBus({ servers: url, user: 'node', pass: passwords.WEFT_NODE_PASSWORD })
  t.teardown(() => node.close())
  await node.configBucket()
  t.same((await node.listResources('node')).map((r) => r.key), ['node._.node-a'], 'a node reads the configuration')
  await node.publishStatus('node-a', { revision: 1 })
  await node.publishStatus('node-b', { revision: 1 })
  t.same((await control.readStatuses()).map((s) => s.node).sort(), ['node-a', 'node-b'], 'the shared user writes any node\'s status (the limit docs/kubernetes.md names)')
  await t.rejects(node.putResource('service.default.x', { kind: 'Service' }), /permission|denied|Permissions Violation/i, 'and may not write configuration')

  const wrong = connectBus({ servers: url, user: 'node', pass: 'not-the-password', connectTimeoutMs: 2000 })
  await t.rejects(wrong, /auth/i, 'a wrong password is refused')

  const probe = statefulSet.spec.template.spec.containers[0].readinessProbe.httpGet.path as string
  const health = await fetch(`http://127.0.0.1:${monitor}${probe}`)
  t.equal(health.status, 200, `${probe}: ${await health.text()}`)
})
