// Zero trust, end to end in a two-node lab: the tunnel between nodes is mutual TLS 1.3 with the
// workloads' SPIFFE identities (a capture of the underlay shows no plaintext; openssl s_client
// without the right certificate is refused), AuthorizationPolicies decide at the destination's
// node for same-node and cross-node traffic alike (L4 by principal and namespace, HTTP by method
// and path), and PeerAuthentication STRICT makes the kernel drop connections that did not come
// through the mesh. Real parts only: the kernel, nats-server, weft control's CA, curl, openssl,
// tcpdump.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { Bus } from '../src/bus/index.ts'
import type { Lab, TopologyInput } from '../src/lab/index.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { requireLab, startIn, startLab, tcpClientScript, tcpServerScript } from './helpers/lab.ts'
import { fileURLToPath } from 'node:url'
import { sniFor } from '../src/datapath/tunnel.ts'
import { testCredentials } from './helpers/svid.ts'

const node = process.execPath

const topology: TopologyInput = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'client', node: 'node1', serviceAccount: 'client' },
    { name: 'intruder', node: 'node1', serviceAccount: 'intruder' },
    { name: 'legacy', node: 'node1', namespace: 'legacy' },
    { name: 'outsider', node: 'node1', enrolled: false },
    { name: 'web-1', node: 'node1', serviceAccount: 'web', labels: { app: 'web' } },
    { name: 'web-2', node: 'node2', serviceAccount: 'web', labels: { app: 'web' } },
    { name: 'api', node: 'node2', namespace: 'secure', serviceAccount: 'api', labels: { app: 'api' } },
    { name: 'open', node: 'node2', labels: { app: 'open' } },
  ],
}

const CERT_LIFETIME = '30s'

/** An echo server on :9090. */
const echoServerScript = `
require('node:net').createServer((socket) => socket.pipe(socket)).listen(9090, () => console.log('listening'))
`

/**
 * One long-lived connection to argv[1]:9090: a line every 100 ms, each echoed back in order. When
 * its stdin ends it prints \`sent echoed\` and exits 0; a connection error or close prints \`error ...\`.
 */
const pingClientScript = `
const socket = require('node:net').connect(9090, process.argv[1])
let sent = 0, echoed = 0, buffer = ''
socket.setEncoding('utf8')
socket.on('data', (chunk) => {
  buffer += chunk
  let i
  while ((i = buffer.indexOf('\\n')) >= 0) { if (buffer.slice(0, i) !== 'ping ' + echoed) { console.log('error out of order: ' + buffer.slice(0, i)); process.exit(1) } echoed++; buffer = buffer.slice(i + 1) }
})
socket.on('connect', () => { console.log('connected'); setInterval(() => socket.write('ping ' + sent++ + '\\n'), 100) })
socket.on('error', (err) => { console.log('error ' + err.code); process.exit(1) })
socket.on('close', () => { console.log('error closed'); process.exit(1) })
process.stdin.resume()
process.stdin.on('end', () => setTimeout(() => { console.log(sent + ' ' + echoed); process.exit(0) }, 500))
`

interface CertsReport {
  identities: Array<{ identity: string; serial: string | null; root: string | null }>
  trustBundle: { signing: string; roots: Array<{ fingerprint: string }> } | null
}

async function certs(lab: Lab, nodeName: string): Promise<CertsReport> {
  const res = await fetch(`http://${lab.node(nodeName).address}:15020/debug/certs`)
  return await res.json() as CertsReport
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}

/** An HTTP server on :8081 answering `<method> <path> from <x-forwarded-for>`. */
const httpServerScript = `
const http = require('node:http')
http.createServer((req, res) => { req.resume(); req.on('end', () => res.end(req.method + ' ' + req.url + '\\n')) })
  .listen(8081, () => console.log('listening'))
`

const netprobe = fileURLToPath(new URL('./fixtures/netprobe.ts', import.meta.url))

async function apply(bus: Bus, key: string, value: unknown): Promise<number> {
  return await bus.putResource(key, value)
}

/** Waits until both nodes applied `revision`; returns the rejections node1 reports. */
async function settle(bus: Bus, revision: number): Promise<Array<{ key: string; reason: string }>> {
  const deadline = Date.now() + 20_000
  for (;;) {
    const statuses = await bus.readStatuses().catch(() => [])
    const byNode = new Map(statuses.map((s) => [s.node, s.status as { revision: number; rejected?: Array<{ key: string; reason: string }> }]))
    if (['node1', 'node2'].every((n) => (byNode.get(n)?.revision ?? 0) >= revision)) return byNode.get('node1')?.rejected ?? []
    if (Date.now() > deadline) throw new Error(`nodes did not apply revision ${revision}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** The TCP client script in `pod` against ip:port: what the server sent (its view of the peer), or `error <code>`. */
async function tcp(lab: Lab, pod: string, ip: string, port: number): Promise<string> {
  const r = await lab.run(pod, [node, '-e', tcpClientScript, ip, String(port)], { timeoutMs: 15_000 })
  return r.stdout.trim()
}

async function metrics(lab: Lab, nodeName: string): Promise<ReturnType<typeof parsePrometheusText>> {
  const res = await fetch(`http://${lab.node(nodeName).address}:15020/metrics`)
  return parsePrometheusText(await res.text())
}

/** openssl s_client from a node's netns to a tunnel port; its combined output and exit code. */
async function sClient(lab: Lab, from: string, address: string, args: string[]): Promise<{ code: number; output: string }> {
  const r = await lab.run(from, ['openssl', 's_client', '-connect', `${address}:15008`, '-alpn', 'h2', '-tls1_3', '-servername', 'x.svid.weft', ...args], { input: 'GET / HTTP/1.1\r\n\r\n', timeoutMs: 15_000 })
  return { code: r.code, output: r.stdout + r.stderr }
}

t.test('zero trust in a two-node lab', async (t) => {
  if (!requireLab(t)) return
  // Short-lived certificates: every test below runs while they renew (about every 15 s).
  process.env.WEFT_LAB_CERT_LIFETIME = CERT_LIFETIME
  const lab = await startLab(t, topology, { startDaemons: true })
  const bus = await lab.connect('operator')
  t.teardown(() => bus.close())
  const ip = (pod: string): string => lab.pod(pod).ip

  for (const pod of ['web-1', 'web-2', 'api', 'open']) await startIn(t, lab, pod, [node, '-e', tcpServerScript, '8080'], /listening/)
  for (const pod of ['web-1', 'web-2']) await startIn(t, lab, pod, [node, '-e', httpServerScript], /listening/)

  t.test('without policies, meshed pods reach each other through the proxies (mTLS across nodes)', async (t) => {
    t.equal(await tcp(lab, 'client', ip('web-2'), 8080), lab.node('node2').proxyIp, 'cross node: web-2 sees node2\'s proxy')
    t.equal(await tcp(lab, 'client', ip('web-1'), 8080), lab.node('node1').proxyIp, 'same node: web-1 sees node1\'s proxy')
    const inbound = sumSamples(await metrics(lab, 'node2'), 'weft_connections_opened_total', { direction: 'inbound', source_workload: 'default/client', destination_workload: 'default/web-2' })
    t.ok(inbound >= 1, 'node2 counted the tunnel stream with the source its certificate proved')
  })

  t.test('the underlay carries no plaintext: a capture during a cross-node HTTP call', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-pcap-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const pcap = join(dir, 'underlay.pcap')
    const ulNetns = `weft-${lab.runId}-ul`
    const capture = spawn('ip', ['netns', 'exec', ulNetns, 'tcpdump', '-i', 'br0', '--immediate-mode', '-U', '-w', pcap, 'tcp port 15008'], { stdio: ['ignore', 'ignore', 'pipe'] })
    let captureLog = ''
    capture.stderr.on('data', (chunk: Buffer) => { captureLog += chunk.toString() })
    t.teardown(() => { if (capture.exitCode === null) capture.kill('SIGKILL') })
    for (let waited = 0; !/listening on/.test(captureLog) && waited < 10_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50))
    const marker = 'weft-secret-marker-7f3a9c'
    const r = await lab.run('client', ['curl', '-s', '--max-time', '10', '-X', 'POST', '--data', `${marker}-body`, `http://${ip('web-2')}:8081/${marker}-path`])
    t.equal(r.stdout.trim(), `POST /${marker}-path`, 'the call worked')
    await new Promise((resolve) => setTimeout(resolve, 300))
    capture.kill('SIGINT')
    await once(capture, 'exit')
    const bytes = readFileSync(pcap)
    t.ok(bytes.length > 24 + 200, `the capture holds packets to :15008 (${bytes.length} bytes; tcpdump: ${captureLog.trim()})`)
    t.equal(bytes.indexOf(marker), -1, 'neither the path nor the body appears on the underlay')
    t.equal(bytes.indexOf('HTTP/1.1'), -1, 'nor any HTTP/1.1 text')
  })

  t.test('openssl s_client to :15008 is refused without the right certificate', async (t) => {
    const node2 = lab.node('node2').address
    const bare = await sClient(lab, 'node1', node2, [])
    t.notMatch(bare.output, /HTTP\/1\.1 200|Verify return code: 0 \(ok\)[\s\S]*Protocol *: TLSv1\.3[\s\S]*HTTP/, 'no certificate: no tunnel')
    t.match(bare.output, /alert|error|errno|unknown/i, `refused: ${bare.output.split('\n').filter((l) => /alert|error/i.test(l)).slice(0, 2).join(' | ')}`)

    // A certificate from another CA (another trust domain).
    const foreign = testCredentials()
    const dir = mkdtempSync(join(tmpdir(), 'weft-sclient-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const svid = foreign.svid('spiffe://other.example/ns/default/sa/client')
    writeFileSync(join(dir, 'foreign.key'), svid.key)
    writeFileSync(join(dir, 'foreign.pem'), svid.cert)
    const other = await sClient(lab, 'node1', node2, ['-cert', join(dir, 'foreign.pem'), '-key', join(dir, 'foreign.key')])
    t.match(other.output, /alert|error|errno|unknown/i, 'a certificate from another trust domain is refused')
    // A valid certificate of the mesh's own CA, for an identity node1 runs no pod of (api is on
    // node2 only): what a compromised node could present if it held such a certificate.
    const ca = testCredentials({ certPem: readFileSync(join(lab.stateDir, 'ca', 'root-cert.pem'), 'utf8'), keyPem: readFileSync(join(lab.stateDir, 'ca', 'root-key.pem'), 'utf8') })
    const api = 'spiffe://cluster.local/ns/secure/sa/api'
    const borrowed = ca.svid(api)
    writeFileSync(join(dir, 'api.key'), borrowed.key)
    writeFileSync(join(dir, 'api.pem'), borrowed.cert)
    const before = sumSamples(await metrics(lab, 'node2'), 'weft_tunnel_refused_total', { reason: 'identity_not_on_node' })
    const stolen = await lab.run('node1', ['openssl', 's_client', '-connect', `${node2}:15008`, '-alpn', 'h2', '-tls1_3', '-servername', sniFor('spiffe://cluster.local/ns/default/sa/web'), '-cert', join(dir, 'api.pem'), '-key', join(dir, 'api.key')], { input: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', timeoutMs: 15_000 })
    t.notMatch(stolen.stdout, /HTTP\/1\.1 200/, 'no tunnel')
    const after = sumSamples(await metrics(lab, 'node2'), 'weft_tunnel_refused_total', { reason: 'identity_not_on_node' })
    t.equal(after - before, 1, 'a valid certificate for an identity the connecting node does not host is refused')
    const refused = sumSamples(await metrics(lab, 'node2'), 'weft_tunnel_refused_total', {})
    t.ok(refused >= 3, `node2 counted the refused handshakes (${refused})`)
  })

  t.test('AuthorizationPolicy ALLOW by principal: client in, intruder out, same node and cross node', async (t) => {
    const revision = await apply(bus, 'authorizationpolicy.default.web-allow-client', {
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'web-allow-client', namespace: 'default' },
      spec: { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client'] } }] }] },
    })
    t.same(await settle(bus, revision), [], 'the policy applies')
    t.equal(await tcp(lab, 'client', ip('web-2'), 8080), lab.node('node2').proxyIp, 'client -> web-2 (cross node) allowed')
    t.equal(await tcp(lab, 'client', ip('web-1'), 8080), lab.node('node1').proxyIp, 'client -> web-1 (same node) allowed')
    t.match(await tcp(lab, 'intruder', ip('web-2'), 8080), /^error|^$/, 'intruder -> web-2 (cross node) refused')
    t.match(await tcp(lab, 'intruder', ip('web-1'), 8080), /^error|^$/, 'intruder -> web-1 (same node) refused')
    const denied = sumSamples(await metrics(lab, 'node2'), 'weft_authorization_denied_total', { source_workload: 'default/intruder', policy: 'default/web-allow-client', layer: 'connection' })
    t.ok(denied >= 1, 'node2 counted the denial')
  })

  t.test('AuthorizationPolicy DENY by namespace', async (t) => {
    const revision = await apply(bus, 'authorizationpolicy.default.open-deny-legacy', {
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'open-deny-legacy', namespace: 'default' },
      spec: { selector: { matchLabels: { app: 'open' } }, action: 'DENY', rules: [{ from: [{ source: { namespaces: ['legacy'] } }] }] },
    })
    await settle(bus, revision)
    t.match(await tcp(lab, 'legacy', ip('open'), 8080), /^error|^$/, 'a pod of namespace legacy is denied')
    t.equal(await tcp(lab, 'client', ip('open'), 8080), lab.node('node2').proxyIp, 'a pod of namespace default still gets in')
    const denied = sumSamples(await metrics(lab, 'node2'), 'weft_authorization_denied_total', { policy: 'default/open-deny-legacy' })
    t.ok(denied >= 1, 'counted with the policy that decided')
  })

  t.test('a policy that now denies an open connection closes it, same node (kernel fast path) and cross node (tunnel)', async (t) => {
    for (const pod of ['web-1', 'open']) await startIn(t, lab, pod, [node, netprobe, 'sink', '9000'], /listening/)
    const opened = async (): Promise<number> => sumSamples(await metrics(lab, 'node1'), 'weft_connections_opened_total', { direction: 'outbound', source_workload: 'default/client' })
    const before = await opened()
    // 300 chunks 100 ms apart: half a minute of sending, far longer than the test waits.
    const slow = (pod: string): Promise<{ sent: number; error?: string }> => lab.run('client', ['timeout', '60', node, netprobe, 'slow', ip(pod), '9000', '300', '100'], { timeoutMs: 70_000 })
      .then((r) => JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { sent: number; error?: string })
    const sameNode = slow('web-1')
    const crossNode = slow('open')
    for (const deadline = Date.now() + 15_000; (await opened()) < before + 2;) {
      if (Date.now() > deadline) throw new Error('node1 did not forward both slow connections')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const key = 'authorizationpolicy.default.deny-port-9000'
    t.teardown(async () => { await settle(bus, await bus.deleteResource(key)) })
    await settle(bus, await apply(bus, key, {
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-port-9000', namespace: 'default' },
      spec: { action: 'DENY', rules: [{ to: [{ operation: { ports: ['9000'] } }] }] },
    }))
    const [same, cross] = await Promise.all([sameNode, crossNode])
    t.equal(same.error, 'ECONNRESET', `same node: the open connection was reset (${JSON.stringify(same)})`)
    t.ok(same.sent < 300 * 1024, 'before it finished')
    t.equal(cross.error, 'ECONNRESET', `cross node: the open connection was reset (${JSON.stringify(cross)})`)
    t.ok(cross.sent < 300 * 1024, 'before it finished')
    const revoked = (samples: Awaited<ReturnType<typeof metrics>>): number => sumSamples(samples, 'weft_authorization_denied_total', { source_workload: 'default/client', policy: 'default/deny-port-9000', layer: 'revoked' })
    t.equal(revoked(await metrics(lab, 'node1')), 1, 'node1 revoked the same-node connection')
    t.equal(revoked(await metrics(lab, 'node2')), 1, 'node2 revoked the cross-node one')
    await tcp(lab, 'client', ip('web-1'), 9000)
    t.equal(sumSamples(await metrics(lab, 'node1'), 'weft_authorization_denied_total', { source_workload: 'default/client', policy: 'default/deny-port-9000', layer: 'connection' }), 1, 'and a new connection is refused at admission')
  })

  t.test('an HTTP rule on method and path: 403 with weft-error for the other requests', async (t) => {
    const revision = await apply(bus, 'authorizationpolicy.default.web-allow-client', {
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'web-allow-client', namespace: 'default' },
      spec: {
        selector: { matchLabels: { app: 'web' } }, action: 'ALLOW',
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client'] } }], to: [{ operation: { methods: ['GET'], paths: ['/public/*'] } }] }],
      },
    })
    await settle(bus, revision)
    for (const pod of ['web-2', 'web-1']) {
      const get = (path: string, method = 'GET') => lab.run('client', ['curl', '-s', '-i', '--max-time', '10', '-X', method, `http://${ip(pod)}:8081${path}`])
      const ok = await get('/public/page')
      t.match(ok.stdout, /^HTTP\/1\.1 200/, `${pod}: GET /public/page allowed`)
      const post = await get('/public/page', 'POST')
      t.match(post.stdout, /^HTTP\/1\.1 403/, `${pod}: POST /public/page gets 403`)
      t.match(post.stdout, /weft-error: .*web-allow-client|weft-error: .*ALLOW/i, `${pod}: weft-error names the reason`)
      const other = await get('/private')
      t.match(other.stdout, /^HTTP\/1\.1 403/, `${pod}: GET /private gets 403`)
    }
    const requestDenials = sumSamples(await metrics(lab, 'node2'), 'weft_authorization_denied_total', { layer: 'request' })
    t.ok(requestDenials >= 2, 'node2 counted request denials')
    const destinationRequests = sumSamples(await metrics(lab, 'node2'), 'weft_requests_total', { reporter: 'destination', response_code: '403' })
    t.ok(destinationRequests >= 2, 'and reported them as reporter="destination" requests')
    // The rule covers every port of the web pods: the tests below speak plain TCP to them.
    await settle(bus, await bus.deleteResource('authorizationpolicy.default.web-allow-client'))
  })

  t.test('an invalid policy is rejected alone, with the field named', async (t) => {
    const revision = await apply(bus, 'authorizationpolicy.default.bad', {
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'bad', namespace: 'default' },
      spec: { action: 'ALLOW', rules: [{ to: [{ operation: { ports: ['not-a-port'] } }] }] },
    })
    const rejected = await settle(bus, revision)
    const bad = rejected.find((r) => r.key === 'authorizationpolicy.default.bad')
    t.ok(bad, 'rejected')
    t.match(bad?.reason ?? '', /ports/, 'the reason names the field')
    t.equal(await tcp(lab, 'client', ip('open'), 8080), lab.node('node2').proxyIp, 'the rest still applies (no policy was broadened or dropped)')
    await bus.deleteResource('authorizationpolicy.default.bad')
  })

  t.test('strict mode: only the mesh reaches a STRICT pod; a PERMISSIVE pod accepts both', async (t) => {
    t.equal(await tcp(lab, 'outsider', ip('api'), 8080), lab.pod('outsider').ip, 'before: the unenrolled pod reaches api directly')
    const revision = await apply(bus, 'peerauthentication.secure.strict', {
      apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: 'secure' },
      spec: { mtls: { mode: 'STRICT' } },
    })
    t.same(await settle(bus, revision), [], 'the PeerAuthentication applies')
    t.match(await tcp(lab, 'outsider', ip('api'), 8080), /^error/, 'an unenrolled pod cannot reach the STRICT pod')
    t.equal(await tcp(lab, 'client', ip('api'), 8080), lab.node('node2').proxyIp, 'an enrolled pod reaches it through the mesh')
    t.equal(await tcp(lab, 'outsider', ip('open'), 8080), lab.pod('outsider').ip, 'a PERMISSIVE pod still accepts the unenrolled pod')
    t.equal(await tcp(lab, 'client', ip('open'), 8080), lab.node('node2').proxyIp, 'and the meshed one')
    t.equal(await tcp(lab, 'node2', ip('api'), 8080), lab.node('node2').proxyIp, 'a node-local probe (the kubelet\'s) still reaches the STRICT pod')
    const back = await apply(bus, 'peerauthentication.secure.strict', {
      apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: 'secure' },
      spec: { mtls: { mode: 'PERMISSIVE' } },
    })
    await settle(bus, back)
    t.equal(await tcp(lab, 'outsider', ip('api'), 8080), lab.pod('outsider').ip, 'PERMISSIVE again: the unenrolled pod gets in')
  })

  t.test('certificates renew under a live connection; weft control stopped stops nothing; a root rotation drops nothing', async (t) => {
    await startIn(t, lab, 'web-2', [node, '-e', echoServerScript], /listening/)
    const client = 'spiffe://cluster.local/ns/default/sa/client'
    const web = 'spiffe://cluster.local/ns/default/sa/web'
    const serial = async (nodeName: string, identity: string): Promise<string | undefined> => (await certs(lab, nodeName)).identities.find((i) => i.identity === identity)?.serial ?? undefined
    const long = lab.exec('client', [node, '-e', pingClientScript, ip('web-2')], { stdio: ['pipe', 'pipe', 'pipe'] })
    const exited = once(long, 'exit') as Promise<[number | null]>
    let output = ''
    long.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
    t.teardown(() => { if (long.exitCode === null) long.kill('SIGKILL') })
    await until('the long-lived connection', 10_000, async () => (/connected|error/.test(output) ? true : undefined))
    t.match(output, /connected/, 'a long-lived cross-node connection is open')

    const first = { client: await serial('node1', client), web: await serial('node2', web) }
    t.ok(first.client && first.web, 'both ends hold certificates')
    const renewed = await until('both certificates to renew', 40_000, async () => {
      const now = { client: await serial('node1', client), web: await serial('node2', web) }
      return now.client !== first.client && now.web !== first.web ? now : undefined
    }).catch(() => undefined)
    t.ok(renewed?.client && renewed.client !== first.client, `node1 renewed ${client} (lifetime ${CERT_LIFETIME})`)
    t.ok(renewed?.web && renewed.web !== first.web, `node2 renewed ${web}`)
    t.equal(await tcp(lab, 'client', ip('web-2'), 8080), lab.node('node2').proxyIp, 'a new connection after the renewal')

    await lab.stopControl()
    t.equal(await tcp(lab, 'client', ip('web-2'), 8080), lab.node('node2').proxyIp, 'weft control stopped: traffic still flows on the current certificates')
    lab.startControl()

    const oldRoot = (await certs(lab, 'node2')).trustBundle?.signing
    const rotate = await until('weft control to answer rotate-ca', 20_000, async () => {
      const r = spawnSync(node, [join(import.meta.dirname, '..', 'bin', 'weft.js'), 'control', 'rotate-ca', '--creds', lab.credsFile('operator')], { encoding: 'utf8' })
      return r.status === 0 ? r : undefined
    })
    t.match(rotate.stdout, /.+/, `rotate-ca: ${rotate.stdout.trim().split('\n')[0]}`)
    const bundle = await until('node2 to trust the new root next to the old', 20_000, async () => {
      const b = (await certs(lab, 'node2')).trustBundle
      return b && b.signing !== oldRoot && b.roots.some((r) => r.fingerprint === oldRoot) ? b : undefined
    })
    t.equal(bundle.roots.length, 2, 'the bundle holds old and new roots during the overlap')
    t.equal(await tcp(lab, 'client', ip('web-2'), 8080), lab.node('node2').proxyIp, 'a new connection right after the rotation')
    await until('both nodes to hold certificates of the new root', 40_000, async () => {
      const [n1, n2] = [await certs(lab, 'node1'), await certs(lab, 'node2')]
      const of = (r: CertsReport, id: string): string | null | undefined => r.identities.find((i) => i.identity === id)?.root
      return of(n1, client) === bundle.signing && of(n2, web) === bundle.signing ? true : undefined
    })
    t.equal(await tcp(lab, 'client', ip('web-2'), 8080), lab.node('node2').proxyIp, 'a new connection with certificates of the new root')

    long.stdin!.end()
    const [code] = await exited
    const [sent, echoed] = output.trim().split('\n').pop()!.split(' ').map(Number)
    t.equal(code, 0, `the long-lived connection lived through it all (${output.trim().split('\n').pop()})`)
    t.ok(sent! > 0 && sent === echoed, 'every line sent across the renewals and the rotation was echoed, in order')
  })
})
