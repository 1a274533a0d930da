// A node's identities against a real nats-server and the CA service: certificates renewed at
// half-life, the current one kept while the CA is away, and a root rotation during which TLS
// between two nodes' workloads (mutual, node:tls, the trust bundle as the only CA) never fails.
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls'
import type { Test } from 'tap'
import t from 'tap'

import { connectBus, startNatsServer, type Bus, type NatsServer } from '../src/bus/index.ts'
import { requestRotateRoot, serveCa, type CaService } from '../src/control/index.ts'
import { CertificateAuthority, checkSpiffeServer, NodeIdentities, peerIdentity, type IdentityReport } from '../src/identity/index.ts'
import { AdminServer } from '../src/telemetry/admin.ts'
import type { Logger } from '../src/telemetry/log.ts'
import { Registry } from 'prom-client'
import { until } from './helpers/wait.ts'

const WEB = 'spiffe://cluster.local/ns/shop/sa/web'
const DB = 'spiffe://cluster.local/ns/shop/sa/db'

const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} }

function pod(name: string, node: string, serviceAccount: string, ip: string): unknown {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop' }, spec: { nodeName: node, serviceAccountName: serviceAccount }, status: { podIP: ip } }
}

type Setup = { server: NatsServer; control: Bus; operator: Bus; dir: string }

async function setup(t: Test): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-identity-node-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const server = await startNatsServer({ dir: join(dir, 'nats'), nodes: ['node1', 'node2'] })
  t.teardown(() => server.stop())
  const control = await connectBus(server.credentials.control)
  t.teardown(() => control.close())
  const operator = await connectBus(server.credentials.operator)
  t.teardown(() => operator.close())
  await control.putResource('pod.shop.web', pod('web', 'node1', 'web', '198.18.1.2'))
  await control.putResource('pod.shop.db', pod('db', 'node2', 'db', '198.18.2.2'))
  return { server, control, operator, dir }
}

async function startCa(t: Test, s: Setup, name: string, lifetimeMs: number): Promise<{ ca: CertificateAuthority; service: () => CaService; restart: () => Promise<void>; stop: () => Promise<void> }> {
  const ca = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: join(s.dir, name), leafLifetimeMs: lifetimeMs })
  let service: CaService | undefined = await serveCa(s.control, { ca, log: quiet })
  t.teardown(() => service?.stop())
  return {
    ca,
    service: () => service!,
    stop: async () => {
      await service?.stop()
      service = undefined
    },
    restart: async () => {
      service = await serveCa(s.control, { ca, log: quiet })
    },
  }
}

function nodeIdentities(t: Test, s: Setup, node: string, wanted: string[]): NodeIdentities {
  const identities = new NodeIdentities({
    node, bus: s.server.credentials.node(node), trustDomain: 'cluster.local', log: quiet,
    retryMinMs: 100, retryMaxMs: 500, rotationWindowMs: 1000, requestTimeoutMs: 2000,
  })
  identities.setWanted(wanted)
  identities.start()
  t.teardown(() => identities.stop())
  return identities
}

function report(identities: NodeIdentities, identity: string): IdentityReport {
  const found = identities.describe().identities.find((entry) => entry.identity === identity)
  if (!found) throw new Error(`no ${identity} on ${identities.node}`)
  return found
}

t.test('a certificate is renewed at about half its life, before it expires', async (t) => {
  const s = await setup(t)
  const lifetimeMs = 4000
  await startCa(t, s, 'ca', lifetimeMs)
  const node1 = nodeIdentities(t, s, 'node1', [WEB])
  const first = await until('the first certificate', () => report(node1, WEB).state === 'valid' && report(node1, WEB), { timeoutMs: 20_000 })
  t.ok(node1.secureContext(WEB), 'a SecureContext for the identity')
  t.equal(node1.secureContext(DB), undefined, 'none for an identity not wanted')
  t.equal(Date.parse(first.notAfter!) - Date.parse(first.notBefore!), lifetimeMs)
  const renewAt = Date.parse(first.nextRenewal!) - Date.parse(first.notBefore!)
  t.ok(renewAt >= 0.4 * lifetimeMs && renewAt <= 0.5 * lifetimeMs + 100, `renewal scheduled at ${renewAt} ms of ${lifetimeMs} (half-life, minus up to a tenth of jitter)`)

  const changes: string[] = []
  node1.onChange((change) => changes.push(change.reason))
  const second = await until('the renewal', () => report(node1, WEB).serial !== first.serial && report(node1, WEB), { timeoutMs: 20_000 })
  t.not(second.serial, first.serial, 'a new serial')
  t.ok(Date.parse(second.notBefore!) < Date.parse(first.notAfter!), 'renewed before the old one expired')
  t.ok(changes.includes('renewed'))
  t.notOk(changes.includes('expired'), 'it never lapsed')

  node1.setWanted([])
  t.same(node1.describe().identities, [], 'an identity no longer wanted is dropped')
  t.equal(node1.secureContext(WEB), undefined)
})

t.test('with the CA away a node keeps its certificate and retries; it renews when the CA is back', async (t) => {
  const s = await setup(t)
  const ca = await startCa(t, s, 'ca', 6000)
  const node1 = nodeIdentities(t, s, 'node1', [WEB])
  const first = await until('the first certificate', () => report(node1, WEB).state === 'valid' && report(node1, WEB), { timeoutMs: 20_000 })
  await ca.stop()
  const retrying = await until('failed renewals', () => report(node1, WEB).failures >= 2 && report(node1, WEB), { timeoutMs: 20_000 })
  t.equal(retrying.serial, first.serial, 'the current certificate is kept')
  t.equal(retrying.state, 'retrying')
  t.match(retrying.lastError, /nobody serves weft\.control\.csr\.node1: is weft control running\?/)
  t.ok(retrying.nextRenewal, 'a retry is scheduled')
  t.ok(node1.secureContext(WEB), 'and still served')
  await ca.restart()
  const renewed = await until('a renewal once the CA is back', () => report(node1, WEB).state === 'valid' && report(node1, WEB).serial !== first.serial && report(node1, WEB), { timeoutMs: 20_000 })
  t.equal(renewed.failures, 0)
  t.equal(renewed.lastError, null)
})

/** One mutual TLS handshake: a client as `client` on node1 to a server as `server` on node2. */
async function handshake(clientIds: NodeIdentities, client: string, serverIds: NodeIdentities, server: string): Promise<{ clientSaw: string | undefined; serverSaw: string | undefined }> {
  const tls = createTlsServer({
    requestCert: true,
    rejectUnauthorized: true,
    SNICallback: (_name, done) => done(null, serverIds.secureContext(server)),
  })
  let serverSaw: string | undefined
  tls.on('secureConnection', (socket: TLSSocket) => {
    serverSaw = peerIdentity(socket.getPeerCertificate())
    socket.end('hello')
  })
  await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve))
  const port = (tls.address() as { port: number }).port
  try {
    const clientSaw = await new Promise<string | undefined>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'mesh', secureContext: clientIds.secureContext(client), checkServerIdentity: checkSpiffeServer(server) }, () => {
        const seen = peerIdentity(socket.getPeerCertificate())
        socket.on('data', () => {})
        socket.on('end', () => resolve(seen))
      })
      socket.on('error', reject)
    })
    return { clientSaw, serverSaw }
  } finally {
    tls.close()
  }
}

t.test('root rotation: old and new roots overlap, leaves move, TLS between nodes never fails', async (t) => {
  const s = await setup(t)
  const lifetimeMs = 6000
  const { ca } = await startCa(t, s, 'ca', lifetimeMs)
  const node1 = nodeIdentities(t, s, 'node1', [WEB])
  const node2 = nodeIdentities(t, s, 'node2', [DB])
  await until('both certificates', () => report(node1, WEB).state === 'valid' && report(node2, DB).state === 'valid', { timeoutMs: 20_000 })
  const oldRoot = ca.bundle.signing
  const oldRootPem = ca.bundle.roots[0]!.pem.trim()
  t.same(await handshake(node1, WEB, node2, DB), { clientSaw: DB, serverSaw: WEB }, 'before: each side sees the other\'s SPIFFE ID')

  // Handshakes all along, from before the rotation until after the old root has left.
  const failures: string[] = []
  let handshakes = 0
  let running = true
  const loop = (async () => {
    while (running) {
      try {
        const seen = await handshake(node1, WEB, node2, DB)
        if (seen.clientSaw !== DB || seen.serverSaw !== WEB) failures.push(`saw ${JSON.stringify(seen)}`)
      } catch (error) {
        failures.push((error as Error).message)
      }
      handshakes++
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })()

  const rotated = await requestRotateRoot(s.operator)
  if (!rotated.ok) throw new Error(rotated.error)
  t.not(rotated.signing, oldRoot, 'a new root signs')
  t.same(rotated.retiring.map((root) => root.fingerprint), [oldRoot], 'the old one is retiring')

  const bothRoots = (ids: NodeIdentities): boolean => {
    const roots = ids.trustBundle?.roots.map((root) => root.fingerprint) ?? []
    return roots.length === 2 && roots.includes(oldRoot) && roots.includes(rotated.signing)
  }
  await until('both nodes trusting old and new', () => bothRoots(node1) && bothRoots(node2), { timeoutMs: 20_000 })
  t.pass('the bundle went old+new on both nodes')
  await until('the leaves on the new root', () => report(node1, WEB).root === rotated.signing && report(node2, DB).root === rotated.signing, { timeoutMs: 20_000 })
  t.ok(bothRoots(node1) && bothRoots(node2), 'leaves moved to the new root while the old one is still trusted')
  t.same(await handshake(node1, WEB, node2, DB), { clientSaw: DB, serverSaw: WEB }, 'during the overlap')

  const onlyNew = (ids: NodeIdentities): boolean => ids.trustBundle?.roots.map((root) => root.fingerprint).join() === rotated.signing
  await until('the old root to leave after the overlap', () => onlyNew(node1) && onlyNew(node2), { timeoutMs: 20_000 })
  t.pass('the old root left the bundle on both nodes')
  t.notOk(node1.trustBundlePem().includes(oldRootPem), 'not in the PEM node:tls gets either')
  const handshakesAfter = handshakes
  await until('handshakes after the overlap', () => handshakes >= handshakesAfter + 3, { timeoutMs: 20_000 })
  running = false
  await loop
  t.same(await handshake(node1, WEB, node2, DB), { clientSaw: DB, serverSaw: WEB }, 'after')
  t.same(failures, [], `no handshake failed (${handshakes} handshakes before, during and after the rotation)`)

  const described = node1.describe()
  t.match(described, { node: 'node1', trustDomain: 'cluster.local', nats: 'connected', trustBundle: { signing: rotated.signing, roots: [{ fingerprint: rotated.signing, signing: true, retiresAt: null }] } })
  t.match(described.identities[0], { identity: WEB, state: /^(valid|renewing)$/, root: rotated.signing, serial: /^[0-9a-f]+$/, chain: [{ issuer: /weft root CA cluster\.local/ }] })
})

t.test('a client without a certificate is refused by a workload\'s server', async (t) => {
  const s = await setup(t)
  await startCa(t, s, 'ca', 60_000)
  const node2 = nodeIdentities(t, s, 'node2', [DB])
  await until('the certificate', () => report(node2, DB).state === 'valid', { timeoutMs: 20_000 })
  const tls = createTlsServer({ requestCert: true, rejectUnauthorized: true, SNICallback: (_name, done) => done(null, node2.secureContext(DB)) })
  await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve))
  t.teardown(() => tls.close())
  const port = (tls.address() as { port: number }).port
  const outcome = await new Promise<string>((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'mesh', ca: node2.trustBundlePem(), checkServerIdentity: checkSpiffeServer(DB) })
    socket.on('data', () => resolve('data'))
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    socket.on('end', () => resolve('end'))
  })
  t.match(outcome, /CERTIFICATE_REQUIRED|ECONNRESET|end/, `refused (${outcome})`)
})

t.test('GET /debug/certs and weft identity show the certificates and the trust bundle', async (t) => {
  const s = await setup(t)
  await startCa(t, s, 'ca', 3_600_000)
  const node1 = nodeIdentities(t, s, 'node1', [WEB])
  await until('the certificate', () => report(node1, WEB).state === 'valid', { timeoutMs: 20_000 })
  const { freePort } = await import('../src/bus/index.ts')
  const adminPort = await freePort()
  const admin = new AdminServer({ listenIp: '127.0.0.1', port: adminPort, registry: new Registry(), readiness: () => ({ ready: true, reason: 'ready' }), certs: () => node1.describe() })
  await admin.listen()
  t.teardown(() => admin.close())

  const response = await fetch(`http://127.0.0.1:${adminPort}/debug/certs`)
  t.equal(response.status, 200)
  const body = await response.json() as ReturnType<NodeIdentities['describe']>
  t.match(body, { node: 'node1', identities: [{ identity: WEB, state: 'valid', serial: /^[0-9a-f]+$/, notBefore: /Z$/, notAfter: /Z$/, nextRenewal: /Z$/ }], trustBundle: { version: Number, roots: [{ subject: /weft root CA/, fingerprint: /^[0-9A-F:]{95}$/, notAfter: /Z$/, signing: true }] } })
  const missing = await fetch(`http://127.0.0.1:${adminPort}/nope`)
  t.equal(await missing.text(), 'not found; try /healthz, /readyz, /metrics or /debug/certs\n')

  const cli = join(import.meta.dirname, '..', 'src', 'cli', 'main.ts')
  // Asynchronously: the admin server answering is in this process.
  const weft = (args: string[]): Promise<{ status: number; stdout: string; stderr: string }> => new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 20_000 }, (error, stdout, stderr) => resolve({ status: error ? Number(error.code ?? 1) : 0, stdout, stderr }))
  })
  const direct = await weft(['identity', '--address', `127.0.0.1:${adminPort}`, '-o', 'json'])
  t.equal(direct.status, 0, direct.stderr)
  t.match(JSON.parse(direct.stdout), { nodes: [{ node: '127.0.0.1', address: `127.0.0.1:${adminPort}`, certs: { node: 'node1', identities: [{ identity: WEB }] } }] })

  // By node name: the address from the Node resource on NATS.
  await s.control.putResource('node._.node1', { apiVersion: 'weft.dev/v1alpha1', kind: 'Node', metadata: { name: 'node1' }, spec: { address: '127.0.0.1', proxyIp: '198.18.1.1', podCIDR: '198.18.1.0/24' } })
  const creds = join(s.dir, 'operator.json')
  const operator = s.server.credentials.operator
  writeFileSync(creds, JSON.stringify({ servers: operator.servers, user: operator.user, pass: operator.pass }), { mode: 0o600 })
  const table = await weft(['identity', 'node1', '--creds', creds, '--admin-port', String(adminPort)])
  t.equal(table.status, 0, table.stderr)
  t.match(table.stdout, /^NODE +IDENTITY +STATE +SERIAL +NOT AFTER +NEXT RENEWAL +ROOT\nnode1 +spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web +valid +[0-9a-f]+ +\S+Z \(in 59m\) +in \d+m +[0-9A-F:]+…\n/)
  t.match(table.stdout, /\nNODE +BUNDLE +ROOT +FINGERPRINT \(SHA-256\) +NOT AFTER +SIGNING +RETIRES\nnode1 +\d+ +O=weft, CN=weft root CA cluster\.local \S+ +[0-9A-F:]{95} +\S+Z +yes +-\n$/)
  const unknown = await weft(['identity', 'node9', '--creds', creds])
  t.equal(unknown.status, 1)
  t.equal(unknown.stderr, 'weft: identity: no node node9 (known: node1)\n')
})
