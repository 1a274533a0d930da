// `weft demo`, the README's main job: traffic flows through both node proxies (direct and through
// the tunnel, by pod IP and by service VIP), policy refuses the intruder, and SIGTERM removes the lab.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { labDown, listLabs } from '../src/lab/index.ts'
import { requireLab } from './helpers/lab.ts'
import { until, within } from './helpers/wait.ts'
import { spawnWeft, userEnv } from './helpers/weft.ts'

t.test('weft demo: traffic through both proxies until SIGTERM, which removes the lab', async (t) => {
  if (!requireLab(t)) return
  const dir = mkdtempSync(join(tmpdir(), 'weft-demo-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // One lab at a time on a machine: wait for another test's lab to go (as labUpWhenFree does).
  await until('no other lab to be up', () => listLabs().length === 0, { timeoutMs: 120_000, intervalMs: 500 })
  const runId = `d${Date.now().toString(36).slice(-5)}`
  t.teardown(() => labDown(runId)) // also when the demo crashed or timed out
  // --duration only bounds it: it is stopped as soon as a round shows what this test checks (how
  // long the pods' programs take to start depends on the machine's load).
  const demo = spawnWeft(['demo', '--duration', '120', '--run-id', runId], { stdio: ['ignore', 'pipe', 'pipe'], env: userEnv({ WEFT_CONFIG: join(dir, 'config.json') }) })
  t.teardown(() => { if (demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL') })
  let stdout = ''
  let stderr = ''
  demo.stdout!.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  demo.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<number | null>((resolve) => demo.on('exit', (code) => resolve(code)))
  const complete = (round: string): boolean => {
    const counts = [...round.matchAll(/ok (\d+) (?:failed|refused) (\d+)/g)]
    return counts.length === 5 && counts.slice(0, 4).every(([, ok]) => Number(ok) > 0) && Number(counts[4]?.[2]) > 0
  }
  await until('a round in which every target answered and the intruder was refused',
    () => demo.exitCode !== null || stdout.split(/\n(?=\[\d+s\])/).some(complete), { timeoutMs: 110_000, intervalMs: 200 })
  t.equal(demo.exitCode, null, `the demo runs until stopped (stderr tail: ${stderr.slice(-400)})`)
  demo.kill('SIGTERM')
  t.equal(await within('the demo to exit', exited, 60_000), 0, `the demo exits 0 on SIGTERM (stderr tail: ${stderr.slice(-400)})`)
  const rounds = stdout.split('\n').filter((l) => l.includes('client: ') && !l.includes('starting'))
  t.ok(rounds.length >= 1, 'it printed per-second client summaries')
  const last = rounds.at(-1) ?? ''
  const targets = [...last.matchAll(/(\d+\.\d+\.\d+\.\d+:\d+) ok (\d+) failed (\d+)/g)]
  t.equal(targets.length, 4, `four targets: three pods and the service VIP (${last})`)
  for (const [, target, ok, failed] of targets) {
    t.ok(Number(ok) > 0, `${target}: calls succeeded`)
    t.equal(Number(failed), 0, `${target}: none failed`)
  }
  t.match(stdout, /node1\s+out\s+\d+ conn\/s \(direct \d+, tunnel \d+\)/, 'node1 proxy stats are shown')
  t.match(stdout, /198\.19\.0\.20:80 ok/, 'the VIP is called')
  t.match(stdout, /node1\s+out .* L7\s+\d+ req\/s \(2xx \d+\)/, 'node1 shows the HTTP requests it routed')
  const split = [...stdout.matchAll(/web \(VIP 198\.19\.0\.20\) answered by: (.*)/g)].at(-1)?.[1] ?? ''
  const answered = Object.fromEntries([...split.matchAll(/([\w-]+) (\d+)/g)].map(([, server, n]) => [server, Number(n)]))
  t.ok((answered['web-a'] ?? 0) + (answered['web-b'] ?? 0) > 0, `the stable backends answered the VIP (${split})`)
  t.same(Object.keys(answered).filter((server) => !['web-a', 'web-b', 'web-c'].includes(server)), [], 'and only the route\'s backends did')
  const intruder = [...stdout.matchAll(/intruder: (\d+\.\d+\.\d+\.\d+:\d+) ok (\d+) refused (\d+)/g)].at(-1)
  t.ok(intruder, 'the intruder\'s calls are shown')
  t.equal(Number(intruder?.[2]), 0, 'the AuthorizationPolicy let none of the intruder\'s calls through')
  t.ok(Number(intruder?.[3]) > 0, 'and refused them')
  t.match(stdout, /node2\s+out .* denied [1-9]\d*\/s/, 'node2 shows the connections it denied')
  t.match(stderr, /demo: lab removed/, 'it says the lab is gone')
  t.notOk(listLabs().some((l) => l.runId === runId), 'and it is')
})
