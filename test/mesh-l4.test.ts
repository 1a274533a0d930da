// The L4 mesh end to end, as a platform engineer would check it: a lab of two nodes with their
// daemons, real pods (namespaces + cgroups), real clients (curl, Node's net), the real kernel.
import t from 'tap'
import { readFileSync, existsSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { spawnSync } from 'node:child_process'
import { daemonCommand, type Lab } from '../src/lab/index.ts'
import { sumSamples } from '../src/telemetry/prometheus-text.ts'
import { requireLab, scrapeNode, startIn, startLab } from './helpers/lab.ts'
import { peakRss } from './helpers/proc.ts'
import { until } from './helpers/wait.ts'

const netprobe = fileURLToPath(new URL('./fixtures/netprobe.ts', import.meta.url))
const node = process.execPath
const EXCLUDED_PORT = 9090

const topology = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'client', node: 'node1' },
    { name: 'echo-a', node: 'node1', labels: { app: 'echo' } },
    { name: 'echo-b', node: 'node2', labels: { app: 'echo' } },
    { name: 'outsider', node: 'node1', enrolled: false },
  ],
}

interface ProbeReply { ok: boolean; code?: string; reply?: { peer: string; local: string } }

async function probe(lab: Lab, pod: string, mode: string, ...args: string[]): Promise<Record<string, unknown>> {
  const result = await lab.run(pod, [node, netprobe, mode, ...args])
  const line = result.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as Record<string, unknown>
  } catch {
    throw new Error(`netprobe ${mode} in ${pod} printed ${JSON.stringify(result.stdout)} (stderr ${result.stderr})`)
  }
}
const connect = (lab: Lab, pod: string, ip: string, port: number): Promise<ProbeReply> =>
  probe(lab, pod, 'connect', ip, String(port)) as Promise<unknown> as Promise<ProbeReply>
const peerIp = (r: ProbeReply): string | undefined => r.reply?.peer.replace(/^::ffff:/, '').split(':')[0]

const metrics = scrapeNode

function daemonLog(lab: Lab, nodeName: string): Array<Record<string, unknown>> {
  const file = lab.nodes.find((x) => x.name === nodeName)!.logFile
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('L4 mesh in a two-node lab', async (t) => {
  if (!requireLab(t)) return
  // Extra flags for node1's daemon the next time it starts (the --drain-timeout test sets some).
  let node1Flags: string[] = []
  const lab = await startLab(t, topology, {
    startDaemons: true,
    daemonCommand: (plan, n) => [...daemonCommand(plan, n), '--exclude-port', String(EXCLUDED_PORT), ...(n.name === 'node1' ? node1Flags : [])],
  })
  const ip = (pod: string): string => lab.pods.find((p) => p.name === pod)!.ip
  const proxyIp = (n: string): string => lab.nodes.find((x) => x.name === n)!.proxyIp
  const node2 = lab.nodes.find((x) => x.name === 'node2')!

  await startIn(t, lab, 'echo-a', [node, netprobe, 'serve', '8080'], /listening/)
  await startIn(t, lab, 'echo-a', [node, netprobe, 'serve', String(EXCLUDED_PORT)], /listening/)
  await startIn(t, lab, 'echo-b', [node, netprobe, 'serve', '8080'], /listening/)
  await startIn(t, lab, 'echo-b', [node, netprobe, 'sink', '9000'], /listening/)
  // A server in node2's own namespace, on the underlay (a bypassed range).
  await startIn(t, lab, 'node2', [node, netprobe, 'serve', '7000', node2.address], /listening/)

  t.test('(a) same node: curl gets the reply, and the server sees the proxy, not the client pod', async (t) => {
    const curl = await lab.run('client', ['curl', '-s', '--http0.9', '--max-time', '5', `http://${ip('echo-a')}:8080/`])
    t.equal(curl.code, 0, `curl exit code (stderr: ${curl.stderr})`)
    const reply = JSON.parse(curl.stdout) as { peer: string }
    t.equal(reply.peer.split(':')[0], proxyIp('node1'), 'the connection came from node1\'s proxy')
    t.not(reply.peer.split(':')[0], ip('client'), 'not from the client pod')
    const samples = await metrics(lab, 'node1')
    t.ok(sumSamples(samples, 'weft_connections_opened_total', { direction: 'outbound', path: 'direct', source_workload: 'default/client', destination_workload: 'default/echo-a' }) >= 1,
      'node1 counted the connection client -> echo-a, direct')
  })

  t.test('(b) across nodes, through the tunnel', async (t) => {
    const curl = await lab.run('client', ['curl', '-s', '--http0.9', '--max-time', '5', `http://${ip('echo-b')}:8080/`])
    t.equal(curl.code, 0, `curl exit code (stderr: ${curl.stderr})`)
    const reply = JSON.parse(curl.stdout) as { peer: string }
    t.equal(reply.peer.split(':')[0], proxyIp('node2'), 'the server sees node2\'s proxy (the tunnel\'s far end)')
    t.ok(sumSamples(await metrics(lab, 'node1'), 'weft_connections_opened_total', { direction: 'outbound', path: 'tunnel', destination_workload: 'default/echo-b' }) >= 1,
      'node1 sent it through the tunnel')
    t.ok(sumSamples(await metrics(lab, 'node2'), 'weft_connections_opened_total', { direction: 'inbound', source_workload: 'default/client', destination_workload: 'default/echo-b' }) >= 1,
      'node2 received it on the inbound tunnel, naming the source workload')
  })

  t.test('(c) an unenrolled pod is not redirected', async (t) => {
    const same = await connect(lab, 'outsider', ip('echo-a'), 8080)
    t.equal(peerIp(same), ip('outsider'), 'same node: the server sees the outsider itself')
    const cross = await connect(lab, 'outsider', ip('echo-b'), 8080)
    t.equal(peerIp(cross), ip('outsider'), 'across nodes: routed, not proxied')
  })

  t.test('(d) excluded ports and bypassed CIDRs go around the proxy', async (t) => {
    const port = await connect(lab, 'client', ip('echo-a'), EXCLUDED_PORT)
    t.equal(peerIp(port), ip('client'), `port ${EXCLUDED_PORT} is excluded: the server sees the client pod`)
    const cidr = await connect(lab, 'client', node2.address, 7000)
    t.equal(peerIp(cidr), ip('client'), 'the underlay range is bypassed: the node2 server sees the client pod')
    const redirected = await connect(lab, 'client', ip('echo-a'), 8080)
    t.equal(peerIp(redirected), proxyIp('node1'), 'while port 8080 on the same pod is still proxied')
  })

  t.test('(e) the client\'s getpeername shows the original destination of a redirected connection', async (t) => {
    for (const [pod, proxiedBy] of [['echo-a', 'node1'], ['echo-b', 'node2']] as const) {
      const r = await probe(lab, 'client', 'peer', ip(pod), '8080') as { remote?: string; reply?: { peer: string } | null; code?: string }
      // Redirected: the server saw a proxy, not the client (without the redirection the client's
      // getpeername would show the destination anyway, and prove nothing).
      t.equal(r.reply?.peer.replace(/^::ffff:/, '').split(':')[0], proxyIp(proxiedBy), `the connection to ${pod} was redirected: ${pod} saw ${proxiedBy}'s proxy (${JSON.stringify(r)})`)
      t.equal(String(r.remote).replace(/^::ffff:/, ''), `${ip(pod)}:8080`, `and the client's getpeername shows ${pod}:8080, not the proxy's ${proxyIp('node1')}:15001`)
    }
  })

  t.test('(i) 1 GiB through the tunnel arrives byte-exact while the proxies\' memory stays bounded', async (t) => {
    const pids = lab.nodes.map((n) => lab.daemonPid(n.name)).filter((p): p is number => p !== undefined)
    t.equal(pids.length, 2, 'both daemons are running')
    const sampler = peakRss(pids)
    t.teardown(() => void sampler.stop())
    const result = await probe(lab, 'client', 'send', ip('echo-b'), '9000', String(1 << 30)) as { sent: number; sha256: string; reply: { bytes: number; sha256: string } }
    const peak = sampler.stop()
    t.equal(result.reply.bytes, 1 << 30, 'the sink received every byte')
    t.equal(result.reply.sha256, result.sha256, 'and the same bytes (sha256)')
    t.ok(peak > 0 && peak < 400 * 1024 * 1024, `peak proxy RSS ${(peak / 1048576).toFixed(0)} MiB stays under 400 MiB for a 1024 MiB transfer`)
  })

  t.test('SIGTERM drains (a second one changes nothing): not ready, new connections refused, tunnel peers sent elsewhere (GOAWAY), connections in flight finish, then the daemon exits', async (t) => {
    // node1's daemon is started again in teardown, also when this test fails or throws: the
    // subtests after this one need it. If it did not exit on SIGTERM, it is killed first.
    let stopOutcome: Promise<unknown> = Promise.resolve()
    t.teardown(async () => {
      if ((await stopOutcome) instanceof Error) await lab.stopDaemon('node1', 'SIGKILL')
      if (lab.daemonPid('node1') === undefined) await lab.startDaemon('node1')
    })
    await startIn(t, lab, 'echo-a', [node, netprobe, 'sink', '9000'], /listening/)
    const opened = async (nodeName: string, labels: Record<string, string>): Promise<number> => sumSamples(await metrics(lab, nodeName), 'weft_connections_opened_total', labels)
    const toEchoB = { direction: 'outbound', path: 'tunnel', destination_workload: 'default/echo-b' }
    const fromEchoB = { direction: 'inbound', source_workload: 'default/echo-b', destination_workload: 'default/echo-a' }
    const [toEchoBBefore, fromEchoBBefore] = [await opened('node1', toEchoB), await opened('node1', fromEchoB)]
    // Two slow transfers (60 KiB over about 6 s) through node1: out of it to echo-b, and into it
    // from echo-b (over node2's pooled tunnel connection to node1).
    type Slow = { sent: number; reply: { bytes: number } | null; error?: string }
    const slow = (from: string, to: string): { result: Promise<Slow>; done: () => boolean } => {
      let finished = false
      const result = (probe(lab, from, 'slow', ip(to), '9000', '60', '100') as Promise<unknown> as Promise<Slow>).finally(() => { finished = true })
      return { result, done: () => finished }
    }
    const outOfNode1 = slow('client', 'echo-b')
    const intoNode1 = slow('echo-b', 'echo-a')
    await until('node1 forwarding both slow connections', async () => (await opened('node1', toEchoB)) > toEchoBBefore && (await opened('node1', fromEchoB)) > fromEchoBBefore)

    const drainingLines = (): Array<Record<string, unknown>> => daemonLog(lab, 'node1').filter((l) => l.msg === 'draining')
    const drainingBefore = drainingLines().length
    const stopping = lab.stopDaemon('node1', 'SIGTERM')
    stopOutcome = stopping.then(() => undefined, (error: unknown) => (error instanceof Error ? error : new Error(String(error))))
    const draining = await until('node1 logging "draining"', () => drainingLines()[drainingBefore])
    t.equal(draining.deadlineMs, 10_000, 'with the default --drain-timeout of 10 s')
    // A second SIGTERM (a supervisor and a launcher both signalling) does not cut the drain short.
    const daemonPid = lab.daemonPid('node1')!
    process.kill(daemonPid, 'SIGTERM')
    await until('node1 logging the second SIGTERM', () => daemonLog(lab, 'node1').some((l) => l.msg === 'already stopping; the drain goes on until it is done or its deadline'))
    const stillDraining = (what: string): void => {
      t.ok(lab.daemonPid('node1') !== undefined && !outOfNode1.done() && !intoNode1.done(), `${what}, while the daemon still runs and both transfers are unfinished`)
    }

    const readyz = await fetch(`http://${lab.node('node1').address}:15020/readyz`)
    t.same([readyz.status, (await readyz.text()).trim()], [503, 'draining'], '/readyz answers 503 "draining"')
    stillDraining('/readyz says draining')
    // The listeners close right after "draining" is logged; until then a connect may still get in.
    const refused = await until('a new connection from client to be refused', async () => {
      const r = await connect(lab, 'client', ip('echo-a'), 8080)
      return r.code === 'ECONNREFUSED' ? r : undefined
    }, { timeoutMs: 5_000 })
    t.equal(refused.code, 'ECONNREFUSED', 'a new connection from a pod of node1 is refused (fail closed)')
    stillDraining('it is refused')
    // node1 sent GOAWAY on node2's tunnel connection: node2 opens a new one for the next
    // connection, which node1's closed listener refuses. Without the GOAWAY the new stream would
    // ride the old connection and reach echo-a.
    const viaTunnel = await connect(lab, 'echo-b', ip('echo-a'), 8080)
    t.equal(viaTunnel.reply ?? null, null, `a new connection from node2 to a pod of node1 gets no answer from it (${JSON.stringify(viaTunnel)})`)
    stillDraining('it is not served')

    for (const [what, transfer] of [['out of node1', outOfNode1], ['into node1', intoNode1]] as const) {
      const result = await transfer.result
      t.equal(result.error, undefined, `the transfer ${what} was not cut`)
      t.equal(result.reply?.bytes, 60 * 1024, 'and every byte arrived')
    }
    await stopping
    t.equal(lab.daemonPid('node1'), undefined, 'the daemon exited after draining')
    const stopped = daemonLog(lab, 'node1').filter((l) => l.msg === 'stopped').at(-1)
    t.same(stopped?.abortedAtDeadline, 0, 'nothing had to be cut at the deadline')
  })

  t.test('--drain-timeout: a connection still open at the deadline is cut and the daemon exits', async (t) => {
    t.teardown(async () => {
      node1Flags = []
      if (lab.daemonPid('node1') !== undefined) await lab.stopDaemon('node1', 'SIGKILL')
      await lab.startDaemon('node1')
    })
    await lab.stopDaemon('node1', 'SIGTERM')
    node1Flags = ['--drain-timeout', '1000']
    await lab.startDaemon('node1')
    const toEchoB = async (): Promise<number> => sumSamples(await metrics(lab, 'node1'), 'weft_connections_opened_total', { direction: 'outbound', path: 'tunnel', destination_workload: 'default/echo-b' })
    const before = await toEchoB()
    // 300 KiB over about 30 s: far longer than the drain.
    const transfer = probe(lab, 'client', 'slow', ip('echo-b'), '9000', '300', '100') as Promise<unknown> as Promise<{ sent: number; reply: { bytes: number } | null; error?: string }>
    await until('node1 forwarding the slow connection', async () => (await toEchoB()) > before)
    const drainingBefore = daemonLog(lab, 'node1').filter((l) => l.msg === 'draining').length
    await lab.stopDaemon('node1', 'SIGTERM')
    t.equal(lab.daemonPid('node1'), undefined, 'the daemon exited')
    const draining = daemonLog(lab, 'node1').filter((l) => l.msg === 'draining')[drainingBefore]
    t.equal(draining?.deadlineMs, 1000, 'the drain had the deadline --drain-timeout gave')
    const stopped = daemonLog(lab, 'node1').filter((l) => l.msg === 'stopped').at(-1)
    t.ok(Number(stopped?.abortedAtDeadline) >= 1, `the connection was cut at the deadline (stopped: ${JSON.stringify(stopped)})`)
    const result = await transfer
    t.ok(result.sent < 300 * 1024 && result.reply?.bytes !== 300 * 1024, `the client was cut off in the middle of its transfer (${JSON.stringify(result)})`)
  })

  t.test('(f) a SIGKILLed daemon fails closed, then adopts its pins and serves at once', async (t) => {
    const loaded = daemonLog(lab, 'node1').find((l) => l.msg === 'loaded and attached BPF programs')
    const adoptedBefore = daemonLog(lab, 'node1').filter((l) => l.msg === 'adopted pinned BPF programs and maps').length
    t.ok(loaded, 'the first start loaded the programs')
    await lab.stopDaemon('node1', 'SIGKILL')
    t.equal(lab.daemonPid('node1'), undefined, 'node1 daemon is gone')
    const down = await connect(lab, 'client', ip('echo-a'), 8080)
    t.same({ ok: down.ok, code: down.code }, { ok: false, code: 'ECONNREFUSED' }, 'with no proxy an enrolled pod\'s connect is refused')
    const aroundTheProxy = await connect(lab, 'outsider', ip('echo-a'), 8080)
    t.ok(aroundTheProxy.ok, 'the server itself was up all along (reached by the unenrolled pod)')
    const cross = await connect(lab, 'client', ip('echo-b'), 8080)
    t.equal(cross.code, 'ECONNREFUSED', 'cross-node connects fail closed too')

    await lab.startDaemon('node1')
    const adopted = daemonLog(lab, 'node1').filter((l) => l.msg === 'adopted pinned BPF programs and maps')
    t.equal(adopted.length, adoptedBefore + 1, 'the restarted daemon adopted the pinned programs')
    t.same(adopted.at(-1)?.programIds, loaded?.programIds, 'the same program ids: nothing was reloaded')
    const up = await connect(lab, 'client', ip('echo-a'), 8080)
    t.equal(peerIp(up), proxyIp('node1'), 'the first connection after the restart is proxied')
  })

  t.test('(g) lab down leaves nothing of its run', async (t) => {
    const runId = lab.runId
    const cgroupRoot = lab.nodes[0]!.cgroupRoot.split('/nodes/')[0]!
    await lab.down()
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout
    t.notMatch(netns, new RegExp(`weft-${runId}-`), 'no namespace')
    const links = spawnSync('ip', ['-o', 'link'], { encoding: 'utf8' }).stdout
    t.notMatch(links, new RegExp(`wh-${runId}`), 'no host link')
    t.notOk(existsSync(cgroupRoot), 'no cgroup')
    const pins = existsSync('/sys/fs/bpf/weft') ? readdirSync('/sys/fs/bpf/weft') : []
    t.same(pins.filter((p) => p.includes(`-${runId}-`)), [], 'no BPF pin')
    const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout
    t.notMatch(ps, new RegExp(`lab-${runId}-`), 'no daemon process')
  })
})
