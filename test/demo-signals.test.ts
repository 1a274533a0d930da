// Ctrl-C on `weft demo` in a terminal, as on a fresh machine: bin/weft.js started by the system
// Node (older than 22.12) hands over to the Node that set-up installed, and the terminal sends
// SIGINT to the whole foreground process group, the launcher and the demo alike; an impatient
// user presses it again while the lab is being removed. Nothing of the lab may be left: no
// namespace, link, cgroup, pin, state or process.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { labDown, listLabs } from '../src/lab/index.ts'
import { isolateContexts, labLeftovers, requireLab, testRunId } from './helpers/lab.ts'
import { skipOrFail } from './helpers/privileged.ts'
import { alive, processGroup } from './helpers/proc.ts'
import { sleep, until, within } from './helpers/wait.ts'
import { runWeftSync, spawnWeft, userEnv } from './helpers/weft.ts'

const systemNode = '/usr/bin/node'

interface LabLs { nats: { pid: number | null }; control: { pid: number | null }; nodes: { name: string; daemonPid: number | null }[] }

const labLs = (runId: string): ReturnType<typeof runWeftSync> => runWeftSync(['lab', 'ls', '--run-id', runId, '-o', 'json'])

t.test('two Ctrl-Cs to the process group of bin/weft.js demo under the system Node leave nothing of the lab', async (t) => {
  if (!requireLab(t)) return
  const version = spawnSync(systemNode, ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout?.trim() ?? ''
  const [major = 0, minor = 0] = version.split('.').map(Number)
  if (!version || major > 22 || (major === 22 && minor >= 12)) {
    skipOrFail(t, `needs a system Node older than 22.12 at ${systemNode}, so that bin/weft.js hands over to .weft/bin/node (found ${version || 'none'})`)
    return
  }
  t.comment(`system Node ${version}`)
  isolateContexts()
  // One lab at a time on a machine: wait for another test's lab to go.
  await until('no other lab to be up', () => listLabs().length === 0, { timeoutMs: 120_000, intervalMs: 500 })

  const runId = testRunId()
  // detached: its own session and process group, as a terminal gives a foreground job. userEnv:
  // tap's hook in NODE_OPTIONS would catch the signals that this test is about.
  const demo = spawnWeft(['demo', '--run-id', runId], { node: systemNode, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: userEnv() })
  const pgid = demo.pid!
  t.teardown(() => {
    // Also when an assertion failed half-way: nothing of the group or the lab stays.
    try { process.kill(-pgid, 'SIGKILL') } catch { /* gone */ }
    labDown(runId)
  })
  let stdout = ''
  let stderr = ''
  demo.stdout!.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  demo.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => demo.on('exit', (code, signal) => resolve({ code, signal })))

  await until('the demo to print its first round of calls', () => /\[\d+s\][\s\S]*client: /.test(stdout) || demo.exitCode !== null, { timeoutMs: 120_000, intervalMs: 200 })
  t.equal(demo.exitCode, null, `the demo runs (stderr tail: ${stderr.slice(-400)})`)

  // What there is to remove, so that the test shows it was removed.
  const ls = labLs(runId)
  t.equal(ls.code, 0, `weft lab ls finds the lab while the demo runs (${ls.stderr.trim()})`)
  const running = JSON.parse(ls.stdout) as LabLs
  const labPids = [running.nats.pid, running.control.pid, ...running.nodes.map((n) => n.daemonPid)].filter((pid): pid is number => pid !== null)
  t.equal(labPids.length, 2 + running.nodes.length, 'NATS, weft control and a daemon per node run')
  const group = processGroup(pgid)
  t.ok(group.length >= 3, `the demo's group holds the launcher, the demo on Node 24 and the pods' programs (${group.length} processes)`)
  const before = labLeftovers(runId)
  t.ok(before.some((x) => x.startsWith('netns ')) && before.some((x) => x.startsWith('pin ')) && before.some((x) => x.startsWith('cgroup ')), 'namespaces, pins and cgroups are there')

  // A terminal's Ctrl-C, twice as a user double-taps it; then pressed again and again while the
  // lab is removed (the demo removes it in one synchronous step: every one of these lands in it).
  process.kill(-pgid, 'SIGINT')
  await sleep(50)
  process.kill(-pgid, 'SIGINT')
  await until('the demo to say it is stopping', () => stderr.includes('demo: stopping'), { timeoutMs: 10_000, intervalMs: 5 })
  let pressed = 2
  while (!stderr.includes('demo: lab removed') && demo.exitCode === null && demo.signalCode === null) {
    try { process.kill(-pgid, 'SIGINT') } catch { break }
    pressed += 1
    await sleep(20)
  }
  t.comment(`Ctrl-C pressed ${pressed} times`)

  const exit = await within('the demo to exit', exited, 60_000)
  t.same(exit, { code: 0, signal: null }, `the launcher exits 0 as the demo did (stderr tail: ${stderr.slice(-600)})`)
  t.match(stderr, /demo: lab removed/, 'the demo says the lab is gone')
  t.equal((stderr.match(/demo: stopping; removing the lab/g) ?? []).length, 1, 'it stopped once')

  t.same(labLeftovers(runId), [], 'no namespace, host link, route, cgroup, pin or state of the run is left')
  t.same(labPids.filter(alive), [], 'NATS, weft control and the daemons are gone')
  t.same(processGroup(pgid), [], 'no process of the demo\'s group is left')
  const after = labLs(runId)
  t.not(after.code, 0, 'weft lab ls no longer finds the lab')
  t.match(after.stderr, new RegExp(`no lab ${runId}`), `and says so (${after.stderr.trim()})`)
})

t.test('Ctrl-C twice while bin/weft.js lab up builds the lab: it is built, then removed, nothing left', async (t) => {
  if (!requireLab(t)) return
  const version = spawnSync(systemNode, ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout?.trim() ?? ''
  const [major = 0, minor = 0] = version.split('.').map(Number)
  if (!version || major > 22 || (major === 22 && minor >= 12)) {
    skipOrFail(t, `needs a system Node older than 22.12 at ${systemNode} (found ${version || 'none'})`)
    return
  }
  isolateContexts()
  await until('no other lab to be up', () => listLabs().length === 0, { timeoutMs: 120_000, intervalMs: 500 })
  const runId = testRunId()
  const up = spawnWeft(['lab', 'up', '--nodes', '2', '--pods', '1', '--run-id', runId], { node: systemNode, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: userEnv() })
  const pgid = up.pid!
  t.teardown(() => {
    try { process.kill(-pgid, 'SIGKILL') } catch { /* gone */ }
    labDown(runId)
  })
  let stderr = ''
  up.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  up.stdout!.resume()
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => up.on('exit', (code, signal) => resolve({ code, signal })))
  // Half-way: NATS runs, weft control starts, no daemon yet.
  await until('lab up to start weft control', () => stderr.includes('starting weft control') || up.exitCode !== null, { timeoutMs: 60_000, intervalMs: 5 })
  t.ok(labLeftovers(runId).some((x) => x.startsWith('netns ')), 'the lab is half built')
  process.kill(-pgid, 'SIGINT')
  await sleep(50)
  process.kill(-pgid, 'SIGINT')

  const exit = await within('lab up to exit', exited, 120_000)
  t.same(exit, { code: 130, signal: null }, `it exits 130, as after SIGINT (stderr tail: ${stderr.slice(-500)})`)
  t.match(stderr, new RegExp(`lab ${runId} removed \\(interrupted by SIGINT\\)`), 'and says it removed the lab')
  t.same(labLeftovers(runId), [], 'no namespace, host link, route, cgroup (so no process of the lab), pin or state is left')
  t.same(processGroup(pgid), [], 'no process of its group is left')
})
