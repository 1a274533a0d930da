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
  t.match(r.stderr, /demo: lab removed/, 'it says the lab is gone')
  t.notOk(listLabs().some((l) => l.runId === runId), 'and it is')
})
