// `weft demo`: the mesh at work in one command. Builds a lab of 2 nodes x 2 pods, runs a small
// HTTP server in every pod and a client in the first pod that calls the other three by pod IP
// (one on its own node, two across nodes through the tunnel: L4) and by the VIP of a Service
// applied over NATS whose HTTPRoute splits requests 80/20 between a stable and a canary version
// (L7), and prints, every second, what each node proxy forwarded and answered, read from its
// /metrics. Cross-node calls ride mutual TLS with the pods' SPIFFE identities; an
// AuthorizationPolicy lets only the client's identity call the web pods, so a second pod,
// `intruder`, is refused. Ctrl-C (or --duration) tears it all down.
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../config/node-config.ts'
import { labUp, randomRunId, type Lab, type TopologyInput } from '../lab/index.ts'
import { listenForStop } from '../cli/signals.ts'
import { parsePrometheusText, sumSamples } from '../telemetry/prometheus-text.ts'

const here = dirname(fileURLToPath(import.meta.url))
const SERVER_PORT = 8080
const SERVICE_VIP = '198.19.0.20'

const service = (name: string, vip: string, selector: Record<string, string>): Record<string, unknown> => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' },
  spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort: SERVER_PORT, appProtocol: 'http' }] },
})

/**
 * What the demo applies over NATS, like `weft apply` would: the web pods behind a VIP, a stable
 * (web-a, web-b) and a canary (web-c) version of it, an HTTPRoute sending 80% of the requests to
 * the VIP to stable and 20% to canary, retried on gateway errors, and an AuthorizationPolicy
 * letting only the client's identity call the web pods.
 */
const demoResources: Array<[string, Record<string, unknown>]> = [
  ['service.default.web', service('web', SERVICE_VIP, { app: 'web' })],
  ['service.default.web-stable', service('web-stable', '198.19.0.21', { app: 'web', track: 'stable' })],
  ['service.default.web-canary', service('web-canary', '198.19.0.22', { app: 'web', track: 'canary' })],
  // Zero trust: the web pods accept only the client's identity (its service account).
  ['authorizationpolicy.default.web-allow-client', {
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'web-allow-client', namespace: 'default' },
    spec: { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/client'] } }] }] },
  }],
  ['httproute.default.web', {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'default' },
    spec: {
      parentRefs: [{ kind: 'Service', name: 'web', port: 80 }],
      rules: [{ backendRefs: [{ name: 'web-stable', port: 80, weight: 80 }, { name: 'web-canary', port: 80, weight: 20 }], retry: { attempts: 2 } }],
    },
  }],
]

export const demoHelp = `usage: weft demo [--duration SECONDS] [--run-id ID]

Builds a lab of 2 nodes and 5 pods (client, intruder and web-a on node1, web-b and web-c on
node2), starts an HTTP server in each web pod, applies over the lab's NATS a Service "web" (VIP
${SERVICE_VIP}:80, HTTP), two versions of it (web-stable: web-a and web-b; web-canary: web-c), an
HTTPRoute that sends 80% of web's requests to stable and 20% to canary, and an
AuthorizationPolicy that lets only the client's identity (service account "client") call the web
pods. It runs a client in "client" that calls the three web pods by IP (opaque TCP through the
proxy: L4) and the VIP (HTTP routed per request: L7), a new connection each time, and the same
calls to web-b from "intruder" (service account "intruder"), which the policy refuses. Every
second it prints, per node proxy, the connections and bytes it forwarded (direct to a pod on the
same node, or through the mutual-TLS tunnel to another node), the HTTP requests it routed and
the connections it denied, the client's calls with the servers that answered the VIP, and the
intruder's refused calls. Ctrl-C, or the end of --duration, removes the lab.`

interface NodeTotals { opened: number; direct: number; tunnel: number; inbound: number; active: number; bytes: number; requests: number; requests2xx: number; denied: number }

async function scrape(address: string): Promise<NodeTotals | undefined> {
  try {
    const res = await fetch(`http://${address}:15020/metrics`, { signal: AbortSignal.timeout(900) })
    const samples = parsePrometheusText(await res.text())
    return {
      opened: sumSamples(samples, 'weft_connections_opened_total', { direction: 'outbound' }),
      direct: sumSamples(samples, 'weft_connections_opened_total', { direction: 'outbound', path: 'direct' }),
      tunnel: sumSamples(samples, 'weft_connections_opened_total', { direction: 'outbound', path: 'tunnel' }),
      inbound: sumSamples(samples, 'weft_connections_opened_total', { direction: 'inbound' }),
      active: sumSamples(samples, 'weft_connections_active', {}),
      bytes: sumSamples(samples, 'weft_bytes_total', {}),
      requests: sumSamples(samples, 'weft_requests_total', {}),
      requests2xx: [200, 201, 202, 204].reduce((sum, code) => sum + sumSamples(samples, 'weft_requests_total', { response_code: String(code) }), 0),
      denied: sumSamples(samples, 'weft_authorization_denied_total', {}),
    }
  } catch {
    return undefined
  }
}

export async function runDemoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: 'string' }, 'run-id': { type: 'string' }, help: { type: 'boolean' } }, strict: true })
  if (values.help) { console.log(demoHelp); return 0 }
  const duration = values.duration === undefined ? Infinity : Number(values.duration)
  if (!(duration > 0)) throw new ConfigError(`--duration: "${values.duration}" is not a positive number of seconds`)

  const topology: TopologyInput = {
    nodes: ['node1', 'node2'],
    pods: [
      { name: 'client', node: 'node1', labels: { app: 'client' }, serviceAccount: 'client', enrolled: true },
      { name: 'intruder', node: 'node1', labels: { app: 'intruder' }, serviceAccount: 'intruder', enrolled: true },
      { name: 'web-a', node: 'node1', labels: { app: 'web', track: 'stable' }, enrolled: true },
      { name: 'web-b', node: 'node2', labels: { app: 'web', track: 'stable' }, enrolled: true },
      { name: 'web-c', node: 'node2', labels: { app: 'web', track: 'canary' }, enrolled: true },
    ],
  }
  const runId = values['run-id'] ?? randomRunId()
  let lab: Lab | undefined
  const children: ChildProcess[] = []
  let stopping: Promise<void> | undefined
  let removed = false
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      console.error('\ndemo: stopping; removing the lab ...')
      for (const child of children) child.kill('SIGTERM')
      lab?.down()
      removed = true
      console.error('demo: lab removed')
    })()
    return stopping
  }
  // Listening from before the lab exists until the demo returns: a Ctrl-C while the lab is built
  // stops the demo as soon as it is up, and another Ctrl-C does not interrupt the lab's removal.
  let repeatAnswered = false
  const signals = listenForStop((signal) => {
    if (removed || repeatAnswered) return
    repeatAnswered = true
    console.error(`demo: ${signal} again; lab ${runId} is still to be removed, which takes a few seconds (if this process is killed, \`weft lab down --run-id ${runId}\` removes what is left)`)
  })
  let signalled = false
  void signals.first.then(() => {
    signalled = true
    if (!lab) console.error(`\ndemo: stopping once lab ${runId} is built, then removing it ...`)
    // Else the main loop sees \`stopping\`, awaits the same promise and reports its failure.
    else stop().catch(() => {})
  })

  console.error('demo: building the lab (2 nodes, 5 pods) and starting a weft node daemon per node ...')
  lab = await labUp(topology, { runId, onProgress: (line: string) => console.error(`  ${line}`) })
  if (signalled) { await stop(); return 0 }

  try {
    const callers = new Set(['client', 'intruder'])
    for (const pod of lab.pods.filter((p) => !callers.has(p.name))) {
      children.push(lab.exec(pod.name, [process.execPath, join(here, 'http-server.ts'), pod.name, String(SERVER_PORT)], { stdio: 'ignore' }))
    }
    const bus = await lab.connect('operator')
    let revision = 0
    for (const [key, resource] of demoResources) revision = await bus.putResource(key, resource)
    await bus.close()
    console.error(`  applied services web (VIP ${SERVICE_VIP}:80), web-stable, web-canary, HTTPRoute web (80/20) and AuthorizationPolicy web-allow-client at config revision ${revision}`)
    const webPods = lab.pods.filter((p) => !callers.has(p.name))
    const targets = [...webPods.map((p) => `${p.ip}:${SERVER_PORT}`), `${SERVICE_VIP}:80`]
    await new Promise((r) => setTimeout(r, 500)) // let the servers bind
    const client = lab.exec('client', [process.execPath, join(here, 'http-client.ts'), ...targets], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(client)
    let calls: Record<string, { ok: number; failed: number; servers?: Record<string, number>; lastError?: string }> = {}
    if (client.stdout) createInterface({ input: client.stdout }).on('line', (line) => { try { calls = JSON.parse(line) } catch { /* partial line */ } })

    const refusedTarget = `${lab.pod('web-b').ip}:${SERVER_PORT}`
    const intruder = lab.exec('intruder', [process.execPath, join(here, 'http-client.ts'), refusedTarget], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(intruder)
    let intruderCalls: typeof calls = {}
    if (intruder.stdout) createInterface({ input: intruder.stdout }).on('line', (line) => { try { intruderCalls = JSON.parse(line) } catch { /* partial line */ } })
    console.log(`\nclient ${lab.pod('client').ip} calls ${webPods.map((p) => `${p.name} ${p.ip} (${p.node})`).join(', ')}, and service web at ${SERVICE_VIP}:80`)
    console.log('Every connection is redirected by eBPF to the client\'s node proxy; cross-node ones ride mutual TLS between the pods\' identities.')
    console.log('Calls to the VIP are HTTP routed per request: 80% to web-stable (web-a, web-b), 20% to web-canary (web-c).')
    console.log(`intruder ${lab.pod('intruder').ip} calls web-b too: AuthorizationPolicy default/web-allow-client admits only spiffe://cluster.local/ns/default/sa/client.\n`)
    const previous = new Map<string, NodeTotals>()
    const started = Date.now()
    while (!stopping && Date.now() - started < duration * 1000) {
      await new Promise((r) => setTimeout(r, 1000))
      if (stopping) break
      const lines: string[] = []
      for (const node of lab.nodes) {
        const now = await scrape(node.address)
        if (!now) { lines.push(`  ${node.name.padEnd(6)} proxy not answering on ${node.address}:15020`); continue }
        const before = previous.get(node.name) ?? { opened: 0, direct: 0, tunnel: 0, inbound: 0, active: 0, bytes: 0, requests: 0, requests2xx: 0, denied: 0 }
        previous.set(node.name, now)
        lines.push(`  ${node.name.padEnd(6)} out ${String(now.opened - before.opened).padStart(3)} conn/s (direct ${now.direct - before.direct}, tunnel ${now.tunnel - before.tunnel})` +
          `  in-tunnel ${String(now.inbound - before.inbound).padStart(3)} conn/s  ${formatBytes(now.bytes - before.bytes)}/s  total ${now.opened + now.inbound} conns, ${formatBytes(now.bytes)}` +
          `  L7 ${String(now.requests - before.requests).padStart(3)} req/s (2xx ${now.requests2xx - before.requests2xx})  denied ${now.denied - before.denied}/s`)
      }
      const callSummary = Object.entries(calls).map(([t, c]) => `${t} ok ${c.ok} failed ${c.failed}`).join('; ')
      const vip = calls[`${SERVICE_VIP}:80`]
      const split = vip?.servers ? Object.entries(vip.servers).sort(([a], [b]) => a.localeCompare(b)).map(([server, n]) => `${server} ${n}`).join(', ') : ''
      const refused = intruderCalls[refusedTarget]
      const intruderSummary = refused ? `${refusedTarget} ok ${refused.ok} refused ${refused.failed}${refused.lastError ? ` (${refused.lastError})` : ''}` : 'starting'
      console.log(`[${Math.round((Date.now() - started) / 1000)}s]\n${lines.join('\n')}\n  client: ${callSummary || 'starting'}${split ? `\n  web (VIP ${SERVICE_VIP}) answered by: ${split}` : ''}\n  intruder: ${intruderSummary}`)
    }
  } finally {
    await stop()
  }
  return 0
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}
