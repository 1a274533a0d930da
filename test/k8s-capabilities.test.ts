// The node daemon's DaemonSet grants it exactly the capabilities in its securityContext (everything
// else dropped). Here the real loader runs with exactly that set as its bounding, permitted and
// effective capabilities (setpriv), on this kernel: it must load, pin, attach and fill the maps;
// with none of them it must fail. (What this cannot show: a container runtime's seccomp and
// AppArmor profiles, which docs/kubernetes.md covers.)
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parseAllDocuments } from 'yaml'

import { defaultObjectPath } from '../src/bpf/index.ts'
import { attachedPrograms, cgroupFixture, nodeBinary, repoRoot, requirePrivileged } from './helpers/privileged.ts'

const daemonSet = parseAllDocuments(readFileSync(join(repoRoot, 'daemonset', 'weft-node.yaml'), 'utf8'))
  .map((doc) => doc.toJS() as { kind: string; spec: { template: { spec: { containers: Array<{ securityContext: { capabilities: { add: string[]; drop: string[] } } }> } } } })
  .find((o) => o.kind === 'DaemonSet')!
const capabilities = daemonSet.spec.template.spec.containers[0]!.securityContext.capabilities

/** Loads and attaches the interception at `cgroup` with only `caps`; then uninstalls. */
function loadWith(caps: string[], cgroup: string, pinDir: string): { status: number | null; output: string } {
  const script = `
    import { NodeInterception } from ${JSON.stringify(join(repoRoot, 'src/bpf/index.ts'))}
    const i = NodeInterception.open({ pinDir: process.argv[1], cgroupRoot: process.argv[2], objectPath: process.argv[3],
      proxyIp: '198.18.0.2', proxyPort: 15001, interceptCidrs: ['198.18.0.0/15'], bypassCidrs: [], excludedPorts: [] })
    i.setEnrolledCgroups([12345n])
    i.setStrictCgroups([12345n])
    console.log('loaded ' + Object.keys(i.programIds()).join(','))
    i.close()`
  const bounding = ['-all', ...caps.map((c) => `+${c.toLowerCase()}`)].join(',')
  const result = spawnSync('setpriv', ['--bounding-set', bounding, '--inh-caps', '-all', '--ambient-caps', '-all', '--',
    nodeBinary, '--input-type=module', '-e', script, pinDir, cgroup, defaultObjectPath], { encoding: 'utf8', timeout: 60_000 })
  return { status: result.status, output: `${result.stdout}${result.stderr}${result.error?.message ?? ''}` }
}

t.test('the daemon\'s capabilities are enough to load, pin, attach and fill the maps; none are not', async (t) => {
  if (!requirePrivileged(t)) return
  t.same(capabilities.drop, ['ALL'])
  const fixture = cgroupFixture(t)
  const granted = loadWith(capabilities.add, fixture.node, fixture.pinDir)
  t.equal(granted.status, 0, granted.output)
  t.match(granted.output, /loaded .*connect4/)
  t.ok(attachedPrograms(fixture.node).length > 0, 'programs stay attached (pinned links) after the process exits')

  const none = loadWith([], fixture.node, `${fixture.pinDir}-none`)
  t.not(none.status, 0, 'without capabilities the loader fails')
  t.match(none.output, /Operation not permitted|EPERM|permission/i)
})
