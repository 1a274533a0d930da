// The CA in weft control, against a real nats-server and checked with real openssl: a node gets
// X.509-SVIDs for its own pods' identities only, in the shape the SPIFFE spec asks for; bad CSRs
// are refused with the reason; an operator-supplied intermediate CA works; the key file is 0600
// and a readable one stops the start.
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import t from 'tap'

import { connectBus, csrSubject, startNatsServer, type Bus, type BusCredentials } from '../src/bus/index.ts'
import { serveCa } from '../src/control/index.ts'
import { bundlePem, CertificateAuthority, createCsr, generateP256KeyPair, parseTrustBundle, type CsrReply } from '../src/identity/index.ts'
import { SIGNING, x509 } from '../src/identity/x509.ts'
import type { Logger } from '../src/telemetry/log.ts'

const cli = join(import.meta.dirname, '..', 'src', 'cli', 'main.ts')
const WEB = 'spiffe://cluster.local/ns/shop/sa/web'
const DB = 'spiffe://cluster.local/ns/shop/sa/db'

function pod(name: string, node: string, serviceAccount: string, ip: string): unknown {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop' }, spec: { nodeName: node, serviceAccountName: serviceAccount }, status: { podIP: ip } }
}

const quiet: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} }

function tempDir(t: Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function openssl(dir: string, ...args: string[]): string {
  const result = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${result.stderr}`)
  return result.stdout
}

async function busFor(t: Test, credentials: BusCredentials): Promise<Bus> {
  const bus = await connectBus(credentials)
  t.teardown(() => bus.close())
  return bus
}

async function ask(bus: Bus, node: string, csr: string): Promise<{ reply: CsrReply; text: string }> {
  const message = await bus.connection.request(csrSubject(node), JSON.stringify({ csr }), { timeout: 5000 })
  return { reply: message.json<CsrReply>(), text: message.string() }
}

async function csrFor(...uris: string[]): Promise<string> {
  const keys = await generateP256KeyPair()
  if (uris.length === 1) return await createCsr(uris[0]!, keys)
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: SIGNING,
    extensions: [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value })), true)],
  })
  return csr.toString('pem')
}

t.test('the CA signs a node its own pods\' identities, as X.509-SVIDs', async (t) => {
  const dir = tempDir(t, 'weft-identity-ca-')
  const server = await startNatsServer({ dir: join(dir, 'nats'), nodes: ['node1', 'node2'] })
  t.teardown(() => server.stop())
  const control = await busFor(t, server.credentials.control)
  await control.putResource('pod.shop.web', pod('web', 'node1', 'web', '198.18.1.2'))
  await control.putResource('pod.shop.db', pod('db', 'node2', 'db', '198.18.2.2'))

  const lifetimeMs = 2 * 3_600_000
  const ca = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: join(dir, 'ca'), leafLifetimeMs: lifetimeMs })
  const service = await serveCa(control, { ca, log: quiet })
  t.teardown(() => service.stop())
  const node1 = await busFor(t, server.credentials.node('node1'))

  await t.test('the CA key file is 0600 and the trust bundle is in the weft-trust bucket', async (t) => {
    t.equal(statSync(join(dir, 'ca', 'root-key.pem')).mode & 0o777, 0o600)
    const stored = await node1.getTrustBundle()
    t.ok(stored, 'a node reads the bundle')
    const bundle = parseTrustBundle(stored!.value)
    t.equal(bundle.roots.length, 1)
    t.equal(bundle.signing, bundle.roots[0]!.fingerprint)
  })

  await t.test('a CSR for a pod of the asking node is signed; openssl accepts the leaf', async (t) => {
    const { reply, text } = await ask(node1, 'node1', await csrFor(WEB))
    if (!reply.ok) throw new Error(reply.error)
    t.notMatch(text, /PRIVATE KEY/, 'no key travels on NATS')
    t.equal(reply.identity, WEB)
    t.equal(reply.chain.length, 1, 'a self-generated root: the chain is the leaf alone')
    writeFileSync(join(dir, 'leaf.pem'), reply.chain.join(''))
    writeFileSync(join(dir, 'bundle.pem'), bundlePem(reply.bundle))
    const text509 = openssl(dir, 'x509', '-in', 'leaf.pem', '-noout', '-text')
    t.equal(text509.match(/URI:/g)?.length, 1, 'exactly one URI SAN')
    t.match(text509, `URI:${WEB}`)
    t.notMatch(text509, /DNS:|IP Address:|email:/, 'no other SAN')
    t.match(text509, /ASN1 OID: prime256v1/, 'P-256 key')
    t.match(text509, /X509v3 Basic Constraints: critical\s+CA:FALSE/)
    t.match(text509, /X509v3 Key Usage: critical\s+Digital Signature\n/)
    t.match(text509, /X509v3 Extended Key Usage: *\s+TLS Web Server Authentication, TLS Web Client Authentication/)
    t.match(text509, /Signature Algorithm: ecdsa-with-SHA256/)
    t.match(openssl(dir, 'verify', '-CAfile', 'bundle.pem', 'leaf.pem'), /leaf\.pem: OK/)
    const dates = openssl(dir, 'x509', '-in', 'leaf.pem', '-noout', '-startdate', '-enddate')
    const notBefore = Date.parse(/notBefore=(.*)/.exec(dates)![1]!)
    const notAfter = Date.parse(/notAfter=(.*)/.exec(dates)![1]!)
    t.equal(notAfter - notBefore, lifetimeMs, 'lifetime as configured')
    const serials = new Set<string>()
    for (let i = 0; i < 3; i++) {
      const again = await ask(node1, 'node1', await csrFor(WEB))
      if (again.reply.ok) serials.add(again.reply.serial)
    }
    t.equal(serials.size, 3, 'random serials')
  })

  await t.test('a CSR for an identity with no pod on the asking node is refused, naming it', async (t) => {
    const { reply } = await ask(node1, 'node1', await csrFor(DB))
    t.same(reply.ok, false)
    t.match((reply as { error: string }).error, `${DB}: no pod on node node1 runs as this identity (its pods run as ${WEB})`)
  })

  await t.test('a pod registered a moment ago is signed (the CA looks again before refusing)', async (t) => {
    await control.putResource('pod.shop.db-2', pod('db-2', 'node1', 'db', '198.18.1.3'))
    const { reply } = await ask(node1, 'node1', await csrFor(DB))
    t.match(reply, { ok: true, identity: DB })
  })

  await t.test('bad CSRs are refused with the reason', async (t) => {
    const refusal = async (csr: string): Promise<string> => {
      const { reply } = await ask(node1, 'node1', csr)
      if (reply.ok) throw new Error(`signed ${reply.identity}`)
      return reply.error
    }
    t.match(await refusal(await csrFor(WEB, 'spiffe://cluster.local/ns/shop/sa/other')), /^CSR: 2 URI SANs .*; an X\.509-SVID has exactly one$/, 'two SANs')
    t.match(await refusal(await csrFor('https://example.com/web')), 'CSR: URI SAN https://example.com/web is not a SPIFFE ID', 'a non-SPIFFE SAN')
    t.match(await refusal(await csrFor('spiffe://other.example/ns/shop/sa/web')), 'CSR: spiffe://other.example/ns/shop/sa/web is in trust domain other.example; this CA signs for cluster.local only', 'another trust domain')

    const rsa = await globalThis.crypto.subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify'])
    const rsaCsr = await x509.Pkcs10CertificateRequestGenerator.create({ keys: rsa, signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' }, extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: WEB }], true)] })
    t.match(await refusal(rsaCsr.toString('pem')), 'CSR: key must be EC P-256, got RSASSA-PKCS1-v1_5', 'an RSA key')

    const der = Buffer.from(new x509.Pkcs10CertificateRequest(await csrFor(WEB)).rawData)
    der[der.length - 1]! ^= 0x01 // the last octet of the signature's s
    t.match(await refusal(x509.PemConverter.encode(der, 'CERTIFICATE REQUEST')), 'CSR: signature does not verify', 'a bad signature')
    t.match(await refusal('not a csr'), /^CSR: does not parse/)
  })
})

t.test('an operator-supplied intermediate CA: leaves chain to the operator\'s root', async (t) => {
  const dir = tempDir(t, 'weft-identity-plugin-')
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl(dir, 'req', '-x509', ...ec, '-days', '2', '-subj', '/O=operator/CN=operator root', '-keyout', 'root.key', '-out', 'root.pem',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  openssl(dir, 'req', ...ec, '-subj', '/O=operator/CN=weft intermediate', '-keyout', 'ca-key.pem', '-out', 'ca.csr')
  writeFileSync(join(dir, 'ca.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n')
  openssl(dir, 'x509', '-req', '-in', 'ca.csr', '-CA', 'root.pem', '-CAkey', 'root.key', '-CAcreateserial', '-days', '1', '-extfile', 'ca.ext', '-out', 'ca-cert.pem')
  chmodSync(join(dir, 'ca-key.pem'), 0o600)

  const plugin = { cert: join(dir, 'ca-cert.pem'), key: join(dir, 'ca-key.pem') }
  await t.rejects(CertificateAuthority.open({ trustDomain: 'cluster.local', dir: join(dir, 'state'), plugin }), /is an intermediate .*: pass --ca-chain with the certificates up to the root/, 'an intermediate without its chain is refused')

  const ca = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: join(dir, 'state'), plugin: { ...plugin, chain: join(dir, 'root.pem') } })
  t.equal(ca.mode, 'plug-in')
  const reply = await ca.sign(await csrFor(WEB), () => undefined)
  if (!reply.ok) throw new Error(reply.error)
  t.equal(reply.chain.length, 2, 'leaf and the intermediate')
  writeFileSync(join(dir, 'leaf.pem'), reply.chain[0]!)
  writeFileSync(join(dir, 'intermediates.pem'), reply.chain.slice(1).join(''))
  writeFileSync(join(dir, 'bundle.pem'), bundlePem(reply.bundle))
  t.equal(openssl(dir, 'x509', '-in', 'bundle.pem', '-noout', '-subject').trim(), 'subject=O = operator, CN = operator root', 'the bundle is the operator\'s root')
  t.match(openssl(dir, 'verify', '-CAfile', 'root.pem', '-untrusted', 'intermediates.pem', 'leaf.pem'), /leaf\.pem: OK/)
  t.match(openssl(dir, 'x509', '-in', 'leaf.pem', '-noout', '-issuer'), /CN = weft intermediate/)
  t.match(await ca.rotate(), { ok: false, error: /operator-supplied .*restarting weft control with the new --ca-cert\/--ca-key/ }, 'rotation is the operator\'s')
})

t.test('a CA key others may read stops weft control at start, saying what to do', async (t) => {
  const dir = tempDir(t, 'weft-identity-perms-')
  const caDir = join(dir, 'ca')
  await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: caDir })
  const keyFile = join(caDir, 'root-key.pem')
  chmodSync(keyFile, 0o644)
  await t.rejects(CertificateAuthority.open({ trustDomain: 'cluster.local', dir: caDir }), { name: 'CaError', message: `CA key ${keyFile} is readable by group or others (mode 0644): run chmod 600 ${keyFile}, or remove it and root-cert.pem to start a new root` })
  const result = spawnSync(process.execPath, [cli, 'control', '--ca-dir', caDir, '--nats', 'nats://127.0.0.1:1'], { encoding: 'utf8', timeout: 20_000 })
  t.equal(result.status, 1)
  t.equal(result.stderr, `weft: control: CA key ${keyFile} is readable by group or others (mode 0644): run chmod 600 ${keyFile}, or remove it and root-cert.pem to start a new root\n`)

  chmodSync(keyFile, 0o600)
  const first = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: caDir })
  const again = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: caDir })
  t.equal(again.bundle.signing, first.bundle.signing, 'the root is reused across restarts')
  const bad = spawnSync(process.execPath, [cli, 'control', '--cert-lifetime', 'soon'], { encoding: 'utf8', timeout: 20_000 })
  t.equal(bad.status, 2)
  t.equal(bad.stderr, 'weft: control: --cert-lifetime soon: expected a duration like 24h, 90m or 10s (see weft control --help)\n')
})

t.test('a restart keeps the overlap: a retiring root stays in the bundle until its time', async (t) => {
  const dir = tempDir(t, 'weft-identity-restart-')
  const caDir = join(dir, 'ca')
  const first = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: caDir, leafLifetimeMs: 3_600_000 })
  const oldRoot = first.bundle.signing
  const rotated = await first.rotate()
  if (!rotated.ok) throw new Error(rotated.error)
  t.equal(first.nextRetirement(), Date.parse(rotated.retiring[0]!.retiresAt), 'the old root retires after the overlap (the leaf lifetime)')
  t.equal(Date.parse(rotated.retiring[0]!.retiresAt) - Date.parse(first.bundle.updatedAt), 3_600_000)

  const restarted = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: caDir, leafLifetimeMs: 3_600_000 })
  t.equal(restarted.bundle.signing, rotated.signing, 'the new root signs after a restart')
  t.same(restarted.bundle.roots.map((root) => [root.fingerprint, root.retiresAt]), [[rotated.signing, undefined], [oldRoot, rotated.retiring[0]!.retiresAt]], 'the old root is still retiring, at the same time')
  t.equal(restarted.bundle.version, first.bundle.version, 'nothing changed, so the version did not either')

  const later = await CertificateAuthority.open({ trustDomain: 'cluster.local', dir: caDir, now: () => Date.parse(rotated.retiring[0]!.retiresAt) + 1 })
  t.same(later.bundle.roots.map((root) => root.fingerprint), [rotated.signing], 'past its time, it is gone')
  t.ok(later.bundle.version > first.bundle.version)
})
