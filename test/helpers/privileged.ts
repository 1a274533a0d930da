// Setup for tests that need the real kernel: root, bpffs, cgroup v2, the built addon and
// BPF object. requirePrivileged() skips (with the reason) when something is missing, or
// fails the test instead when WEFT_REQUIRE_PRIVILEGED=1 (CI on a privileged runner).
// The fixtures below create everything under names carrying a random run id and remove
// it all in t.teardown, also when the test fails.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

import { NodeInterception, defaultObjectPath, findCgroup2Mount, isOnBpfFs } from '../../src/bpf/index.ts'
import { addonPath } from '../../src/bpf/native.ts'

export type Requirement = 'root' | 'bpffs' | 'cgroup2' | 'addon' | 'bpf-object'
export const allRequirements: Requirement[] = ['root', 'bpffs', 'cgroup2', 'addon', 'bpf-object']

export const bpffsRoot = '/sys/fs/bpf'
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url))
export const nodeBinary = process.execPath

function missing(need: Requirement): string | undefined {
  switch (need) {
    case 'root':
      return process.getuid?.() === 0 ? undefined : 'not running as root'
    case 'bpffs':
      return existsSync(bpffsRoot) && isOnBpfFs(bpffsRoot) ? undefined : `no BPF filesystem at ${bpffsRoot} (mount -t bpf bpf ${bpffsRoot})`
    case 'cgroup2':
      return findCgroup2Mount() ? undefined : 'no cgroup v2 mount in /proc/self/mountinfo'
    case 'addon':
      return existsSync(addonPath) ? undefined : `native addon not built at ${addonPath} (bash scripts/setup.sh --only native)`
    case 'bpf-object':
      return existsSync(defaultObjectPath) ? undefined : `BPF object not built at ${defaultObjectPath} (bash scripts/setup.sh --only bpf)`
  }
}

/**
 * true when every requirement holds. Otherwise skips the test with the reasons and returns
 * false, or, with WEFT_REQUIRE_PRIVILEGED=1, fails it and returns false.
 */
export function requirePrivileged(t: Test, needs: Requirement[] = allRequirements): boolean {
  const reasons = needs.map(missing).filter((reason): reason is string => reason !== undefined)
  if (reasons.length === 0) return true
  return skipOrFail(t, `needs a privileged host: ${reasons.join('; ')}`)
}

/**
 * A privileged prerequisite is missing: skip the test with the reason printed, or, when CI sets
 * WEFT_REQUIRE_PRIVILEGED=1, fail it. Returns false so callers can `if (!require...) return`.
 */
export function skipOrFail(t: Test, message: string): false {
  if (process.env.WEFT_REQUIRE_PRIVILEGED === '1') {
    t.fail(`${message} (WEFT_REQUIRE_PRIVILEGED=1, so this is a failure, not a skip)`)
    t.end()
  } else {
    t.comment(`skipping: ${message}`)
    t.plan(0, message)
  }
  return false
}

export const runId = (): string => randomBytes(4).toString('hex')

/** Where tests attach and pin: a node cgroup with pod cgroups under it, and a pin dir. */
export interface CgroupFixture {
  /** <cgroup2>/weft-test-<run> */
  top: string
  /** <top>/node: the cgroup root interception attaches to */
  node: string
  /** makes <node>/<name> (removed in teardown) */
  pod(name: string): string
  /** /sys/fs/bpf/weft-test-<run>/node */
  pinDir: string
}

/** Fixture names carry the test process's pid: `weft-test-p<pid>-<run>`. */
const FIXTURE_NAME = /^weft-test-p(\d+)-[0-9a-f]+$/

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Removes the fixtures of test processes that are gone: a test killed on its timeout never runs
 * its teardown, and its cgroups, attached programs and pins would stay on the machine.
 */
function sweepOrphanedFixtures(cgroup2: string): void {
  const orphaned = (root: string): string[] => {
    try {
      return readdirSync(root).filter((name) => { const m = FIXTURE_NAME.exec(name); return m !== null && !processAlive(Number(m[1])) })
    } catch {
      return []
    }
  }
  for (const name of orphaned(bpffsRoot)) {
    NodeInterception.uninstall(join(bpffsRoot, name, 'node'))
    NodeInterception.uninstall(join(bpffsRoot, name))
  }
  for (const name of orphaned(cgroup2)) {
    const top = join(cgroup2, name)
    const below = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).flatMap((e) => [...below(join(dir, e.name)), join(dir, e.name)])
    // Its processes are gone with it: the cgroups are empty (one that is not stays, for the next sweep).
    for (const dir of [...below(top), top]) {
      try {
        rmdirSync(dir)
      } catch {
        break
      }
    }
  }
}

/** Creates the cgroups and pin dir for one test, and removes them (and the install) in teardown. */
export function cgroupFixture(t: Test): CgroupFixture {
  const cgroup2 = findCgroup2Mount()
  if (!cgroup2) throw new Error('cgroupFixture: no cgroup v2 mount')
  sweepOrphanedFixtures(cgroup2)
  const run = `p${process.pid}-${runId()}`
  const top = join(cgroup2, `weft-test-${run}`)
  const node = join(top, 'node')
  const pinTop = join(bpffsRoot, `weft-test-${run}`)
  const pinDir = join(pinTop, 'node')
  const pods: string[] = []
  mkdirSync(node, { recursive: true })
  t.teardown(async () => {
    NodeInterception.uninstall(pinDir) // detach first: links pinned in pinDir
    NodeInterception.uninstall(pinTop)
    await killChildrenIn(t)
    for (const dir of [...pods.reverse(), node, top]) await removeCgroup(dir)
  })
  return {
    top,
    node,
    pinDir,
    pod(name: string): string {
      const dir = join(node, name)
      mkdirSync(dir)
      pods.push(dir)
      return dir
    },
  }
}

/** rmdir a cgroup, moving out and waiting for stragglers (exited children are reaped asynchronously). */
async function removeCgroup(dir: string): Promise<void> {
  if (!existsSync(dir)) return
  for (let attempt = 0; ; attempt++) {
    try {
      rmdirSync(dir)
      return
    } catch (error) {
      if (attempt >= 50) throw error
      const procs = existsSync(join(dir, 'cgroup.procs')) ? readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean) : []
      for (const pid of procs) {
        try {
          process.kill(Number(pid), 'SIGKILL')
        } catch {
          // already gone
        }
      }
      await new Promise((done) => setTimeout(done, 50))
    }
  }
}

const childrenByTest = new WeakMap<Test, ChildProcess[]>()

async function killChildrenIn(t: Test): Promise<void> {
  const children = childrenByTest.get(t) ?? []
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((done) => {
          if (child.exitCode !== null || child.signalCode !== null) return done()
          child.once('exit', () => done())
          child.kill('SIGKILL')
        }),
    ),
  )
}

/**
 * Runs `node -e script args...` as a process that first moves itself into `cgroupDir`
 * (so it is inside the cgroup before it creates any socket). Resolves with its stdout
 * once it exits; killed in teardown if still running.
 */
export function runInCgroup(t: Test, cgroupDir: string, script: string, args: string[], timeoutMs = 10_000): Promise<{ stdout: string; stderr: string; code: number | null }> {
  const procs = join(cgroupDir, 'cgroup.procs')
  const child = spawn('sh', ['-c', 'echo $$ > "$0" && exec "$@"', procs, nodeBinary, '-e', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const list = childrenByTest.get(t) ?? []
  list.push(child)
  childrenByTest.set(t, list)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child in ${cgroupDir} timed out after ${timeoutMs} ms; stdout: ${stdout} stderr: ${stderr}`))
    }, timeoutMs)
    child.once('error', reject)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve({ stdout, stderr, code })
    })
  })
}

/**
 * A TCP client for runInCgroup: connects to argv[1]:argv[2], prints one JSON line
 * ({remoteAddress, remotePort, localAddress, localPort} or {error: code}) and exits when
 * the server closes (or after an error).
 */
export const tcpClientScript = `
const net = require('node:net')
const [host, port] = process.argv.slice(1)
const socket = net.connect({ host, port: Number(port) })
socket.setTimeout(5000, () => { console.log(JSON.stringify({ error: 'TIMEOUT' })); process.exit(0) })
socket.on('connect', () => {
  console.log(JSON.stringify({ remoteAddress: socket.remoteAddress, remotePort: socket.remotePort, localAddress: socket.localAddress, localPort: socket.localPort }))
})
socket.on('data', () => {})
socket.on('end', () => { socket.end(); process.exit(0) })
socket.on('error', (error) => { console.log(JSON.stringify({ error: error.code })); process.exit(0) })
`

/**
 * Makes sure a stray connect to a lab address fails fast in the host namespace instead of
 * following the default route: `unreachable 198.18.0.0/15`, installed idempotently and left
 * in place (the lab's more specific routes win while a lab is up).
 */
export function ensureLabUnreachableRoute(): void {
  execFileSync('ip', ['route', 'replace', 'unreachable', '198.18.0.0/15'])
}

/** Which programs (by id) bpftool reports attached to a cgroup, by attach type. */
export function attachedPrograms(cgroupDir: string): { id: number; attach_type: string; name: string }[] {
  const output = execFileSync('bpftool', ['cgroup', 'show', cgroupDir, '-j'], { encoding: 'utf8' })
  return output.trim() === '' ? [] : (JSON.parse(output) as { id: number; attach_type: string; name: string }[])
}
