// `weft node --uninstall` detaches a node's programs and removes its pins, so nothing of weft
// stays attached to the workload cgroup.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { NodeInterception } from '../src/bpf/index.ts'
import { attachedPrograms, cgroupFixture, requirePrivileged } from './helpers/privileged.ts'

const weft = fileURLToPath(new URL('../bin/weft.js', import.meta.url))

t.test('weft node --uninstall detaches and unpins', async (t) => {
  if (!requirePrivileged(t)) return
  const fixture = cgroupFixture(t)
  const interception = NodeInterception.open({
    pinDir: fixture.pinDir, cgroupRoot: fixture.node,
    proxyIp: '127.0.0.1', proxyPort: 15001, interceptCidrs: ['198.18.0.0/15'], bypassCidrs: [], excludedPorts: [],
  })
  interception.close()
  t.equal(attachedPrograms(fixture.node).length, 6, 'installed: six programs attached to the node cgroup (connect4/6, sockops, getpeername4/6, strict ingress)')
  t.ok(existsSync(fixture.pinDir), 'and pinned')

  const r = spawnSync(process.execPath, [weft, 'node', '--name', 'uninstall-test', '--pin-dir', fixture.pinDir, '--uninstall'], { encoding: 'utf8' })
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr})`)
  t.match(r.stderr, /removed the BPF programs, links and maps pinned in/, 'says what it did')
  t.equal(attachedPrograms(fixture.node).length, 0, 'nothing attached any more')
  t.notOk(existsSync(fixture.pinDir), 'no pins left')

  const again = spawnSync(process.execPath, [weft, 'node', '--name', 'uninstall-test', '--pin-dir', fixture.pinDir, '--uninstall'], { encoding: 'utf8' })
  t.equal(again.status, 0, 'uninstalling again is harmless')
})
