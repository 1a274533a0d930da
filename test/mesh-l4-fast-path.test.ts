// The L4 fast path end to end (`weft node --l4-fast-path`): a lab node with its daemon, two real
// pods on it, real clients, the real kernel. A same-node opaque TCP connection is joined in the
// kernel after the proxy accepted and authorized it: large transfers arrive intact both ways,
// half-close and resets behave as on the user-space splice, the proxy counts the connection and
// its bytes, the kernel (not the proxy) moved them, and a daemon stop still closes it.
// Run it as: flock /tmp/weft-lab.lock bash scripts/test.sh test/mesh-l4-fast-path.test.ts
import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { daemonCommand, type Lab } from '../src/lab/index.ts'
import { sumSamples } from '../src/telemetry/prometheus-text.ts'
import { requireLab, scrapeNode, startIn, startLab } from './helpers/lab.ts'
import { until } from './helpers/wait.ts'

const netprobe = fileURLToPath(new URL('./fixtures/netprobe.ts', import.meta.url))
const node = process.execPath
const DRAIN_TIMEOUT_MS = 1500

const topology = {
  nodes: ['node1'],
  pods: [
    { name: 'client', node: 'node1' },
    { name: 'echo', node: 'node1' },
  ],
}

async function probe(lab: Lab, pod: string, mode: string, ...args: string[]): Promise<Record<string, unknown>> {
  // Bounded, so a stuck connection fails the test (and its teardown takes the lab down) instead of hanging it.
  const result = await lab.run(pod, ['timeout', '120', node, netprobe, mode, ...args])
  const line = result.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as Record<string, unknown>
  } catch {
    throw new Error(`netprobe ${mode} in ${pod} printed ${JSON.stringify(result.stdout)} (stderr ${result.stderr})`)
  }
}

const metrics = (lab: Lab): ReturnType<typeof scrapeNode> => scrapeNode(lab, lab.nodes[0]!.name)

function daemonLog(lab: Lab): Array<Record<string, unknown>> {
  return readFileSync(lab.nodes[0]!.logFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('L4 fast path in a one-node lab', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, topology, {
    startDaemons: true,
    daemonCommand: (plan, n) => [...daemonCommand(plan, n), '--l4-fast-path', '--drain-timeout', String(DRAIN_TIMEOUT_MS)],
  })
  const echoIp = lab.pods.find((p) => p.name === 'echo')!.ip
  await startIn(t, lab, 'echo', [node, netprobe, 'echo', '8080'], /listening/)
  await startIn(t, lab, 'echo', [node, netprobe, 'sink', '9000'], /listening/)
  const bytePair = { direction: 'outbound', source_workload: 'default/client', destination_workload: 'default/echo' }
  const pair = { ...bytePair, path: 'direct' }
  const counted = async (): Promise<{ kernel: number; userSpace: number; kernelSent: number; kernelReceived: number; sent: number; received: number; opened: number; closed: number }> => {
    const samples = await metrics(lab)
    return {
      kernel: sumSamples(samples, 'weft_l4_fast_path_connections_total', { result: 'kernel' }),
      userSpace: sumSamples(samples, 'weft_l4_fast_path_connections_total', { result: 'user_space' }),
      kernelSent: sumSamples(samples, 'weft_l4_fast_path_bytes_total', { flow: 'sent' }),
      kernelReceived: sumSamples(samples, 'weft_l4_fast_path_bytes_total', { flow: 'received' }),
      sent: sumSamples(samples, 'weft_bytes_total', { ...bytePair, flow: 'sent' }),
      received: sumSamples(samples, 'weft_bytes_total', { ...bytePair, flow: 'received' }),
      opened: sumSamples(samples, 'weft_connections_opened_total', pair),
      closed: sumSamples(samples, 'weft_connections_closed_total', pair),
    }
  }

  t.test('50 MB each way through an echo pod arrive intact, while the client half-closes; the kernel moved them and the proxy counted them', async (t) => {
    const before = await counted()
    const size = 50 * 1024 * 1024
    const result = await probe(lab, 'client', 'echo-send', echoIp, '8080', String(size)) as { sent: number; sha256: string; received: number; receivedSha256: string; error?: string }
    t.equal(result.error, undefined, 'no error')
    t.equal(result.received, size, 'every byte came back after the client\'s FIN (half-close: the reply direction kept flowing)')
    t.equal(result.receivedSha256, result.sha256, 'the same bytes (sha256)')
    await until('the proxy counting the connection closed', async () => (await counted()).closed > before.closed)
    const after = await counted()
    t.equal(after.opened - before.opened, 1, 'one connection opened, counted by the proxy')
    t.equal(after.kernel - before.kernel, 1, 'joined in the kernel (weft_l4_fast_path_connections_total{result="kernel"})')
    t.equal(after.userSpace - before.userSpace, 0, 'not left in user space')
    t.equal(after.sent - before.sent, size, 'weft_bytes_total counts every byte sent')
    t.equal(after.received - before.received, size, 'and every byte received')
    // Bytes the client sent before the proxy joined the sockets went through user space; the rest did not.
    t.ok(after.kernelSent - before.kernelSent > size / 2, `the kernel forwarded most of the request (${after.kernelSent - before.kernelSent} of ${size})`)
    t.ok(after.kernelReceived - before.kernelReceived > size / 2, `and of the reply (${after.kernelReceived - before.kernelReceived} of ${size})`)
  })

  t.test('half-close the other way round: the client half-closes, the server answers after the FIN', async (t) => {
    const result = await probe(lab, 'client', 'send', echoIp, '9000', String(8 * 1024 * 1024)) as { sent: number; sha256: string; reply: { bytes: number; sha256: string } | null }
    t.equal(result.reply?.bytes, 8 * 1024 * 1024, 'the sink saw every byte, then EOF (it answers only on EOF)')
    t.equal(result.reply?.sha256, result.sha256, 'the same bytes (sha256), and its answer came back after the client\'s FIN')
  })

  t.test('a reset by the server reaches the client as a reset', async (t) => {
    const before = await counted()
    const result = await probe(lab, 'client', 'reset-after', echoIp, '8080') as { echoed: string; error: string }
    t.equal(result.echoed, 'ping\n', 'the connection was up and flowing first')
    t.equal(result.error, 'ECONNRESET', 'then the client saw the server\'s reset')
    await until('the proxy counting the connection closed', async () => (await counted()).closed > before.closed)
    const samples = await metrics(lab)
    t.ok(sumSamples(samples, 'weft_connections_closed_total', { ...pair, outcome: 'reset' }) >= 1, 'counted as closed by reset')
    t.equal((await counted()).kernel - before.kernel, 1, 'on the fast path')
  })

  t.test('a daemon stop closes a fast-path connection at the drain deadline', async (t) => {
    let stopOutcome: Promise<unknown> = Promise.resolve()
    t.teardown(async () => {
      if ((await stopOutcome) instanceof Error) await lab.stopDaemon('node1', 'SIGKILL')
    })
    const before = await counted()
    // 200 chunks 100 ms apart: still sending long after the drain deadline.
    const inFlight = probe(lab, 'client', 'slow', echoIp, '9000', '200', '100') as Promise<unknown> as Promise<{ sent: number; error?: string }>
    await until('node1 forwarding the slow connection', async () => (await counted()).opened > before.opened)
    const stopping = lab.stopDaemon('node1', 'SIGTERM')
    stopOutcome = stopping.then(() => undefined, (error: unknown) => (error instanceof Error ? error : new Error(String(error))))
    const result = await inFlight
    t.equal(result.error, 'ECONNRESET', 'the client\'s connection was reset by the draining proxy')
    t.ok(result.sent < 200 * 1024, `before it finished (${result.sent} of ${200 * 1024} bytes sent)`)
    await stopping
    const stopped = daemonLog(lab).find((l) => l.msg === 'stopped')
    t.equal(stopped?.abortedAtDeadline, 1, 'the daemon aborted one connection at the deadline')
    const closedLine = daemonLog(lab).find((l) => l.msg === 'draining')
    t.ok(closedLine, 'after logging "draining"')
  })
})
