// Bad input gets one clear line on stderr, starting with "weft:", and a non-zero exit — for the
// lab and for a daemon started without what it needs (root, bpffs, cgroup v2).
import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { findCgroup2Mount } from '../src/bpf/index.ts'
import { requireLab, startLab } from './helpers/lab.ts'

const weft = fileURLToPath(new URL('../bin/weft.js', import.meta.url))

function run(args: string[], asUser?: number): { code: number; stderr: string; stdout: string } {
  const argv = asUser === undefined ? [process.execPath, weft, ...args] : ['setpriv', `--reuid=${asUser}`, `--regid=${asUser}`, '--clear-groups', 'env', '-u', 'NODE_OPTIONS', process.execPath, weft, ...args]
  // tap instruments child processes through NODE_OPTIONS, and a process running as another user
  // cannot write tap's files: `env -u NODE_OPTIONS` drops it for that one.
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000 })
  return { code: r.status ?? 128, stderr: r.stderr, stdout: r.stdout }
}

function oneClearLine(t: Test, r: { code: number; stderr: string }, pattern: RegExp, what: string): void {
  t.not(r.code, 0, `${what}: non-zero exit`)
  const lines = r.stderr.trim().split('\n')
  t.equal(lines.length, 1, `${what}: exactly one line (got ${JSON.stringify(r.stderr)})`)
  t.match(lines[0], /^weft: /, `${what}: starts with "weft: "`)
  t.match(lines[0], pattern, `${what}: says what is wrong`)
}

const tmp = mkdtempSync(join(tmpdir(), 'weft-cli-'))
t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
// Should a check ever let the daemon through, nothing it installed may stay behind.
t.teardown(() => { if (process.getuid?.() === 0) spawnSync(process.execPath, [weft, 'node', '--name', 'clitest', '--pin-dir', '/sys/fs/bpf/weft/clitest', '--uninstall']) })
const cgroupMount = findCgroup2Mount() ?? '/sys/fs/cgroup'
const nodeArgs = (extra: string[]): string[] => ['node', '--name', 'clitest', '--node-ip', '198.18.0.2', '--proxy-ip', '198.18.1.1',
  '--cgroup-root', cgroupMount, '--nats', 'nats://127.0.0.1:1', '--pin-dir', '/sys/fs/bpf/weft/clitest', ...extra]

t.test('the daemon refuses to start without root', async (t) => {
  if (!requireLab(t)) return // dropping to another user with setpriv needs root
  const r = run(nodeArgs([]), 65534)
  oneClearLine(t, r, /must run as root/, 'as nobody')
})

t.test('the daemon refuses a pin directory that is not on bpffs', async (t) => {
  if (!requireLab(t)) return
  const r = run(nodeArgs(['--pin-dir', join(tmp, 'pins')]))
  oneClearLine(t, r, /not on a BPF filesystem; mount one with: mount -t bpf bpf \/sys\/fs\/bpf/, 'pin dir in /tmp')
})

t.test('the daemon refuses a cgroup root outside cgroup v2', async (t) => {
  if (!requireLab(t)) return
  const r = run(nodeArgs(['--cgroup-root', tmp]))
  oneClearLine(t, r, /--cgroup-root \S+ is not in a cgroup v2 hierarchy/, 'cgroup root in /tmp')
})

t.test('the daemon names a missing required flag and a bad value', async (t) => {
  oneClearLine(t, run(['node', '--name', 'x']), /--node-ip is required/, 'missing flag')
  oneClearLine(t, run(nodeArgs(['--exclude-port', 'http'])), /--exclude-port: "http" is not a port/, 'bad port')
  oneClearLine(t, run(['nodes']), /unknown command "nodes"/, 'unknown command')
})

t.test('a flag or argument a command does not take, or a flag without its value', async (t) => {
  oneClearLine(t, run(['lab', 'ls', '--bogus']), /^weft: lab ls: unknown option --bogus \(see weft lab ls --help\)$/, 'lab: unknown flag')
  oneClearLine(t, run(['lab', 'down', 'extra']), /^weft: lab down: unexpected argument extra \(see weft lab down --help\)$/, 'lab: stray argument')
  oneClearLine(t, run(['lab', 'up', '--nodes']), /^weft: lab up: Option '--nodes <value>' argument missing \(see weft lab up --help\)$/, 'lab: flag without its value')
  oneClearLine(t, run(['get', 'pods', '--bogus']), /^weft: get: unknown option --bogus \(see weft get --help\)$/, 'get: unknown flag')
})

t.test('a malformed topology file', async (t) => {
  const bad = join(tmp, 'bad.yaml')
  writeFileSync(bad, 'nodes: [node1\npods:\n  - {name: a, node: node1}\n')
  const r = run(['lab', 'up', '-f', bad, '--no-daemons'])
  oneClearLine(t, r, /bad\.yaml/, 'unclosed flow sequence')
  const unknownNode = join(tmp, 'unknown-node.yaml')
  writeFileSync(unknownNode, 'nodes: [node1]\npods:\n  - {name: a, node: node9}\n')
  oneClearLine(t, run(['lab', 'up', '-f', unknownNode, '--no-daemons']), /node9/, 'a pod on an unknown node')
})

t.test('an unknown pod in lab exec', async (t) => {
  if (!requireLab(t)) return
  const lab = await startLab(t, { nodes: ['node1'], pods: [{ name: 'client', node: 'node1' }] })
  const r = run(['lab', 'exec', '--run-id', lab.runId, 'nosuchpod', '--', 'true'])
  oneClearLine(t, r, /nosuchpod/, 'unknown pod')
  const ok = run(['lab', 'exec', '--run-id', lab.runId, 'client', '--', 'sh', '-c', 'exit 7'])
  t.equal(ok.code, 7, 'a known pod: the command\'s exit code passes through')
})
