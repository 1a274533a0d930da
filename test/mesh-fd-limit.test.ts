// A node proxy that runs out of file descriptors (EMFILE) while a pod holds connections through
// it stays up, refuses what it cannot take, and serves again as descriptors come back. What it
// refuses: when accept(2) fails with EMFILE or ENFILE, libuv (uv__emfile_trick) frees a reserved
// descriptor, accepts and closes every pending connection (their clients see it closed), and
// accepts again once descriptors are free; Node emits no error for it. Which connections wait in
// the backlog and which are reset depends on when the first ones close, so the test counts both.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Lab } from '../src/lab/index.ts'
import { requireLab, startIn, startLab } from './helpers/lab.ts'
import { until } from './helpers/wait.ts'

const netprobe = fileURLToPath(new URL('./fixtures/netprobe.ts', import.meta.url))
const node = process.execPath

const topology = {
  nodes: ['node1', 'node2'],
  pods: [
    { name: 'client', node: 'node1' },
    { name: 'echo-b', node: 'node2', labels: { app: 'echo' } },
  ],
}

const openFds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length
const fdLimit = (pid: number): string => /^Max open files\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] ?? '?'

interface Held { answered: number; failed: Record<string, number> }
async function hold(lab: Lab, count: number): Promise<Held> {
  const r = await lab.run('client', [node, netprobe, 'hold', lab.pod('echo-b').ip, '9000', String(count)], { timeoutMs: 60_000 })
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Held
  } catch {
    throw new Error(`netprobe hold printed ${JSON.stringify(r.stdout)} (stderr ${r.stderr}, status ${r.code})`)
  }
}

t.test('EMFILE: at its descriptor limit the proxy refuses new connections promptly, stays up, and serves again', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, topology, { startDaemons: true })
  await startIn(t, lab, 'echo-b', [node, netprobe, 'sink', '9000'], /listening/)
  await startIn(t, lab, 'echo-b', [node, netprobe, 'serve', '8080'], /listening/)
  const pid = lab.daemonPid('node1')!
  // Warm up: the tunnel connection to node2 is open before the limit is set.
  t.same(await hold(lab, 5), { answered: 5, failed: {} }, 'before the limit: five connections held through node1 and answered')

  // Room for 64 more descriptors than the daemon has open; each connection held through the
  // tunnel costs node1 one (the pod's socket; the streams share one tunnel connection).
  const limit = openFds(pid) + 64
  const set = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`], { encoding: 'utf8' })
  t.equal(set.status, 0, `prlimit set node1's daemon to ${limit} open files (${set.stderr.trim()})`)
  t.equal(fdLimit(pid), String(limit), 'the kernel reports the limit')

  let peak = 0
  const sampler = setInterval(() => { try { peak = Math.max(peak, openFds(pid)) } catch { /* gone: asserted below */ } }, 10)
  t.teardown(() => clearInterval(sampler))
  const flooded = await hold(lab, 300)
  clearInterval(sampler)
  t.comment(`300 connections at once: ${flooded.answered} answered, failed ${JSON.stringify(flooded.failed)}; peak ${peak} open files of ${limit}`)
  t.ok(peak >= limit - 8, `the daemon reached its limit (peak ${peak} of ${limit} open files)`)
  t.ok(flooded.answered >= 32, `connections within the limit were served (${flooded.answered})`)
  // Closed with the pod's byte unread: a reset, or a plain close when the byte had not arrived yet.
  t.same(Object.keys(flooded.failed).filter((code) => code !== 'ECONNRESET' && code !== 'closed'), [], 'the others were closed unanswered: none hung, none failed otherwise')
  t.equal(lab.daemonPid('node1'), pid, 'the daemon is still running')

  // Once the pod's connections are closed the descriptors come back, and the proxy serves again.
  await until('node1\'s descriptors to be released', () => openFds(pid) < limit - 32, { timeoutMs: 20_000 })
  t.same(await hold(lab, 20), { answered: 20, failed: {} }, 'afterwards: twenty connections held at once, all answered')
  const probe = await lab.run('client', [node, netprobe, 'connect', lab.pod('echo-b').ip, '8080'])
  const reply = JSON.parse(probe.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; reply?: { peer: string } }
  t.equal(reply.reply?.peer.split(':')[0], lab.node('node2').proxyIp, `a new connection is proxied through the tunnel (${probe.stdout.trim()})`)
  const readyz = await fetch(`http://${lab.node('node1').address}:15020/readyz`)
  t.equal(readyz.status, 200, 'and node1 is ready')
})
