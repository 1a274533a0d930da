// `weft demo`, the README's main job, run for a few seconds: traffic flows through both node
// proxies (direct and through the tunnel, by pod IP and by service VIP) and the lab is removed.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { labDown, listLabs } from '../src/lab/index.ts'
import { requireLab } from './helpers/lab.ts'

const weft = fileURLToPath(new URL('../bin/weft.js', import.meta.url))

t.test('weft demo --duration 4', async (t) => {
  if (!requireLab(t)) return
  const dir = mkdtempSync(join(tmpdir(), 'weft-demo-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // One lab at a time on a machine: wait for another test's lab to go (as labUpWhenFree does).
  for (const deadline = Date.now() + 120_000; listLabs().length > 0 && Date.now() < deadline;) await new Promise((resolve) => setTimeout(resolve, 500))
  const runId = `d${Date.now().toString(36).slice(-5)}`
  t.teardown(() => labDown(runId)) // also when the demo crashed or timed out
  const r = spawnSync(process.execPath, [weft, 'demo', '--duration', '4', '--run-id', runId], {
    encoding: 'utf8', timeout: 120_000, env: { ...process.env, WEFT_CONFIG: join(dir, 'config.json') },
  })
  t.equal(r.status, 0, `the demo exits 0 (stderr tail: ${r.stderr.slice(-400)})`)
  const rounds = r.stdout.split('\n').filter((l) => l.includes('client: ') && !l.includes('starting'))
  t.ok(rounds.length >= 1, 'it printed per-second client summaries')
  const last = rounds.at(-1) ?? ''
  const targets = [...last.matchAll(/(\d+\.\d+\.\d+\.\d+:\d+) ok (\d+) failed (\d+)/g)]
  t.equal(targets.length, 4, `four targets: three pods and the service VIP (${last})`)
  for (const [, target, ok, failed] of targets) {
    t.ok(Number(ok) > 0, `${target}: calls succeeded`)
    t.equal(Number(failed), 0, `${target}: none failed`)
  }
  t.match(r.stdout, /node1\s+out\s+\d+ conn\/s \(direct \d+, tunnel \d+\)/, 'node1 proxy stats are shown')
  t.match(r.stdout, /198\.19\.0\.20:80 ok/, 'the VIP is called')
  t.match(r.stdout, /node1\s+out .* L7\s+\d+ req\/s \(2xx \d+\)/, 'node1 shows the HTTP requests it routed')
  const split = [...r.stdout.matchAll(/web \(VIP 198\.19\.0\.20\) answered by: (.*)/g)].at(-1)?.[1] ?? ''
  const answered = Object.fromEntries([...split.matchAll(/([\w-]+) (\d+)/g)].map(([, server, n]) => [server, Number(n)]))
  t.ok((answered['web-a'] ?? 0) + (answered['web-b'] ?? 0) > 0, `the stable backends answered the VIP (${split})`)
  t.same(Object.keys(answered).filter((server) => !['web-a', 'web-b', 'web-c'].includes(server)), [], 'and only the route\'s backends did')
  const intruder = [...r.stdout.matchAll(/intruder: (\d+\.\d+\.\d+\.\d+:\d+) ok (\d+) refused (\d+)/g)].at(-1)
  t.ok(intruder, 'the intruder\'s calls are shown')
  t.equal(Number(intruder?.[2]), 0, 'the AuthorizationPolicy let none of the intruder\'s calls through')
  t.ok(Number(intruder?.[3]) > 0, 'and refused them')
  t.match(r.stdout, /node2\s+out .* denied [1-9]\d*\/s/, 'node2 shows the connections it denied')
  t.match(r.stderr, /demo: lab removed/, 'it says the lab is gone')
  t.notOk(listLabs().some((l) => l.runId === runId), 'and it is')
})
