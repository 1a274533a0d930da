// No socket family around the mesh, and strict mode's kernel half, end to end in a two-node lab:
// Python's AF_INET6 sockets to IPv4-mapped addresses are redirected like AF_INET ones (same
// node and across nodes), Debian's python3-grpcio (gRPC's C core) calls a Service VIP, an
// enrolled pod's native IPv6 connect is refused, and a strict pod takes new connections only
// from the mesh. Real daemons, real pods, real kernel. The only IPv6 destination used is
// 2001:db8::1 (documentation range), refused before it leaves the socket; the lab routes no
// IPv6 anyway.
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

import { cgroupIdOf } from '../src/bpf/index.ts'
import { maps, type MapLayout } from '../src/bpf/layout.ts'
import { native } from '../src/bpf/native.ts'
import type { Lab } from '../src/lab/index.ts'
import { parsePrometheusText, sumSamples } from '../src/telemetry/prometheus-text.ts'
import { requireLab, startIn, startLab, waitForNodes } from './helpers/lab.ts'

const pynet = fileURLToPath(new URL('./fixtures/pynet.py', import.meta.url))
const netprobe = fileURLToPath(new URL('./fixtures/netprobe.ts', import.meta.url))
const python = '/usr/bin/python3' // Debian's: python3-grpcio imports here, not necessarily in the python3 first on PATH
const node = process.execPath

const topology = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'client', node: 'node1' },
    { name: 'echo-a', node: 'node1' },
    { name: 'echo-b', node: 'node2' },
    { name: 'grpc-b', node: 'node2', labels: { app: 'grpc-py' } },
    { name: 'guarded', node: 'node2' },
    { name: 'outsider', node: 'node1', enrolled: false },
  ],
}
const GRPC_VIP = '198.19.6.20'
const ECHO_PORT = 8080
const DUAL_STACK_PORT = 8086

interface Connected { ok: true; peer: [string, number]; local: [string, number]; reply: string }
interface Failed { ok: false; error: string; elapsedMs: number }
type ConnectResult = Connected | Failed

async function runJson<T>(lab: Lab, target: string, argv: string[], timeoutMs = 30_000): Promise<T> {
  const r = await lab.run(target, argv, { timeoutMs })
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as T
  } catch {
    throw new Error(`${argv.slice(0, 3).join(' ')} in ${target} exited ${r.code} printing ${JSON.stringify(r.stdout)} (stderr ${r.stderr})`)
  }
}

const connect6 = (lab: Lab, pod: string, host: string, port: number, timeoutS = 3): Promise<ConnectResult> =>
  runJson(lab, pod, [python, pynet, 'connect6', host, String(port), String(timeoutS)])
const connect4 = (lab: Lab, target: string, host: string, port: number, bindIp = '', timeoutS = 3): Promise<ConnectResult> =>
  runJson(lab, target, [python, pynet, 'connect4', host, String(port), bindIp, String(timeoutS)])

/** The address the server saw the connection come from (netprobe and serve6 both answer {"peer":"ip:port"}). */
function serverSawPeer(result: ConnectResult): string | undefined {
  if (!result.ok) return undefined
  const peer = (JSON.parse(result.reply.trim().split('\n')[0] ?? '{}') as { peer?: string }).peer ?? ''
  return peer.replace(/^::ffff:/, '').replace(/:\d+$/, '')
}

async function bpfCounter(lab: Lab, nodeName: string, decision: string): Promise<number> {
  const n = lab.nodes.find((x) => x.name === nodeName)!
  const res = await fetch(`http://${n.address}:15020/metrics`)
  return sumSamples(parsePrometheusText(await res.text()), 'weft_bpf_connects_total', { decision })
}

/**
 * A set-like map of a node's pinned install (strict_cgrps, mesh_sources), opened from bpffs and
 * written the way setStrictCgroups/setMeshSources write it. The programs reading it are the real
 * ones the daemon attached. restore() puts back what the map held when it was opened (the
 * daemon's own entries, once it writes them).
 */
function pinnedSetMap<K>(pinDir: string, layout: MapLayout<K, number>, value: number): { set(keys: K[]): void; restore(): void } {
  const fd = native.objGet(join(pinDir, 'maps', layout.name))
  const original = native.mapKeys(fd, layout.keySize).map((key) => layout.decodeKey(key))
  const set = (keys: K[]): void => {
    for (const key of keys) native.mapUpdate(fd, layout.encodeKey(key), layout.encodeValue(value))
    const wanted = new Set(keys.map((key) => layout.encodeKey(key).toString('hex')))
    for (const key of native.mapKeys(fd, layout.keySize)) if (!wanted.has(key.toString('hex'))) native.mapDelete(fd, key)
  }
  return {
    set,
    restore(): void {
      try {
        set(original)
      } finally {
        native.close(fd)
      }
    },
  }
}

t.test('IPv6 sockets and strict mode in a two-node lab', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, topology, { startDaemons: true })
  const pod = (name: string): Lab['pods'][number] => lab.pods.find((p) => p.name === name)!
  const labNode = (name: string): Lab['nodes'][number] => lab.nodes.find((n) => n.name === name)!

  await startIn(t, lab, 'echo-a', [node, netprobe, 'serve', String(ECHO_PORT)], /listening/)
  await startIn(t, lab, 'echo-b', [node, netprobe, 'serve', String(ECHO_PORT)], /listening/)
  await startIn(t, lab, 'guarded', [node, netprobe, 'serve', String(ECHO_PORT)], /listening/)
  await startIn(t, lab, 'guarded', [python, pynet, 'serve6', String(DUAL_STACK_PORT)], /listening/)
  await startIn(t, lab, 'grpc-b', [python, pynet, 'grpc-server', '9000', 'grpc-b'], /listening/, 15_000)

  t.test('a Python AF_INET6 client to ::ffff:<pod ip> is redirected, across nodes and on the same node; getpeername shows ::ffff:<pod ip>', async (t) => {
    const before = await bpfCounter(lab, 'node1', 'redirected')
    for (const [target, via] of [['echo-b', 'node2'], ['echo-a', 'node1']] as const) {
      const result = await connect6(lab, 'client', `::ffff:${pod(target).ip}`, ECHO_PORT)
      if (!result.ok) {
        t.fail(`connect6 to ${target} failed: ${result.error}`)
        continue
      }
      t.equal(serverSawPeer(result), labNode(via).proxyIp, `${target}: the server sees ${via}'s proxy`)
      t.not(serverSawPeer(result), pod('client').ip, `${target}: not the client pod`)
      t.same(result.peer, [`::ffff:${pod(target).ip}`, ECHO_PORT], `${target}: getpeername in the client shows the original peer, mapped`)
      t.match(result.local[0], /^::ffff:/, `${target}: the client socket is AF_INET6`)
    }
    t.ok((await bpfCounter(lab, 'node1', 'redirected')) >= before + 2, 'node1\'s BPF counters show both redirects')
  })

  t.test('an unenrolled pod\'s AF_INET6 sockets are untouched', async (t) => {
    const mapped = await connect6(lab, 'outsider', `::ffff:${pod('echo-b').ip}`, ECHO_PORT)
    t.equal(serverSawPeer(mapped), pod('outsider').ip, 'mapped: routed, the server sees the outsider itself')
    const refusedBefore = await bpfCounter(lab, 'node1', 'refusedIpv6')
    const native6 = await connect6(lab, 'outsider', '2001:db8::1', 80)
    t.match(native6, { ok: false, error: 'ENETUNREACH' }, 'native IPv6: the kernel\'s own answer (the pod has no IPv6 route), not the mesh\'s')
    t.equal(await bpfCounter(lab, 'node1', 'refusedIpv6'), refusedBefore, 'not counted as refused')
  })

  t.test('an enrolled pod\'s native IPv6 connect is refused at once with EPERM and counted', async (t) => {
    const before = await bpfCounter(lab, 'node1', 'refusedIpv6')
    const result = await connect6(lab, 'client', '2001:db8::1', 80)
    t.match(result, { ok: false, error: 'EPERM' })
    t.ok(!result.ok && result.elapsedMs < 1000, 'immediately, not after a timeout')
    t.equal(await bpfCounter(lab, 'node1', 'refusedIpv6'), before + 1, 'node1 counted it (weft_bpf_connects_total{decision="refusedIpv6"})')
  })

  t.test('python3-grpcio calls a Service VIP with appProtocol grpc: unary and server streaming', async (t) => {
    const operator = await lab.connect('operator')
    t.teardown(() => operator.close())
    const revision = await operator.putResource('service.default.grpc-py', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'grpc-py', namespace: 'default' },
      spec: { clusterIP: GRPC_VIP, selector: { app: 'grpc-py' }, ports: [{ name: 'grpc', port: 80, targetPort: 9000, appProtocol: 'grpc' }] },
    })
    await waitForNodes(operator, revision)
    const before = await bpfCounter(lab, 'node1', 'redirected')
    const result = await runJson<{ unary?: string; stream?: string[]; error?: string }>(lab, 'client', [python, pynet, 'grpc-client', `${GRPC_VIP}:80`, '3'])
    t.same(result, { unary: 'grpc-b:hello', stream: ['grpc-b:1', 'grpc-b:2', 'grpc-b:3'] }, 'both calls answered by the pod behind the VIP')
    t.ok((await bpfCounter(lab, 'node1', 'redirected')) > before, 'gRPC\'s C core socket was redirected to the proxy')
  })

  t.test('strict mode in the kernel: only the mesh reaches a strict pod', async (t) => {
    const node2 = labNode('node2')
    const strict = pinnedSetMap(node2.pinDir, maps.strictCgroups, 0)
    const sources = pinnedSetMap(node2.pinDir, maps.meshSources, 1)
    t.teardown(() => {
      strict.restore()
      sources.restore()
    })
    // What the daemon writes (setMeshSources, setStrictCgroups): this node's proxy ip and node
    // ip; the cgroups of its strict pods.
    sources.set([node2.proxyIp, node2.address])
    strict.set([cgroupIdOf(pod('guarded').cgroup)])
    const droppedBefore = await bpfCounter(lab, 'node2', 'strictDropped')

    for (const port of [ECHO_PORT, DUAL_STACK_PORT]) {
      const listener = port === ECHO_PORT ? 'AF_INET listener' : 'dual-stack AF_INET6 listener'
      const outsider = await connect4(lab, 'outsider', pod('guarded').ip, port, '', 2)
      t.match(outsider, { ok: false, error: 'TIMEOUT' }, `${listener}: an unenrolled pod gets no SYN-ACK`)
      const mapped = await connect6(lab, 'outsider', `::ffff:${pod('guarded').ip}`, port, 2)
      t.match(mapped, { ok: false, error: 'TIMEOUT' }, `${listener}: nor from an AF_INET6 socket`)
      const enrolled = await connect4(lab, 'client', pod('guarded').ip, port)
      t.equal(serverSawPeer(enrolled), node2.proxyIp, `${listener}: an enrolled pod gets through the mesh (from node2's proxy)`)
      const fromProxyIp = await connect4(lab, 'node2', pod('guarded').ip, port, node2.proxyIp)
      t.equal(serverSawPeer(fromProxyIp), node2.proxyIp, `${listener}: a connection from the node's proxy ip gets through`)
    }
    t.ok((await bpfCounter(lab, 'node2', 'strictDropped')) >= droppedBefore + 4, 'node2 counted the drops (retransmitted SYNs count again)')

    const sameNodeBefore = await connect4(lab, 'echo-b', pod('guarded').ip, ECHO_PORT)
    t.equal(serverSawPeer(sameNodeBefore), node2.proxyIp, 'an enrolled pod on the same node also gets through its proxy')

    strict.set([])
    const restored = await connect4(lab, 'outsider', pod('guarded').ip, ECHO_PORT)
    t.equal(serverSawPeer(restored), pod('outsider').ip, 'out of strict_cgrps: the unenrolled pod reaches it again, directly')
  })
})
