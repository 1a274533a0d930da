// Setup for tests that run in a lab (src/lab): the privilege check, a lab that is always taken
// down in teardown (also when the test fails), and small tools to run things in pods and nodes.
import { spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

import { skipOrFail } from './privileged.ts'
import type { Bus } from '../../src/bus/index.ts'
import { STATE_ROOT } from '../../src/lab/plan.ts'
import { ADMIN_PORT, LabBusyError, labDown, labUp, type Lab, type LabUpOptions, type TopologyInput } from '../../src/lab/index.ts'
import { parsePrometheusText } from '../../src/telemetry/prometheus-text.ts'

export const labCli = fileURLToPath(new URL('../../src/lab/cli.ts', import.meta.url))

function missingForLab(): string[] {
  const reasons: string[] = []
  if (process.getuid?.() !== 0) reasons.push('not running as root')
  if (spawnSync('ip', ['-V']).status !== 0) reasons.push('iproute2 (ip) not found')
  if (!/ - cgroup2 /.test(readFileSync('/proc/self/mountinfo', 'utf8'))) reasons.push('no cgroup v2 mount in /proc/self/mountinfo')
  if (!existsSync('/sys/fs/bpf')) reasons.push('no /sys/fs/bpf')
  return reasons
}

/**
 * true when this machine can run a lab. Otherwise skips the test with the reasons and returns
 * false, or, with WEFT_REQUIRE_PRIVILEGED=1, fails it and returns false.
 */
export function requireLab(t: Test): boolean {
  const reasons = missingForLab()
  if (reasons.length === 0) return true
  return skipOrFail(t, `needs a privileged host for the lab: ${reasons.join('; ')}`)
}

/** A run id for a test lab: `t` and 5 random characters, so leftovers are recognisable. */
export function testRunId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'
  return `t${[...randomBytes(5)].map((byte) => alphabet[byte % alphabet.length]).join('')}`
}

/** How long a test waits for another lab (another test run, someone's demo) to go down. */
const WAIT_FOR_OTHER_LAB_MS = 60_000

/**
 * `up` records the lab's context (and makes it current) in the weft config file: a test process
 * gets its own file in the temp dir unless WEFT_CONFIG says otherwise, so tests never change the
 * user's contexts. Child processes (weft lab, weft apply) inherit it.
 */
export function isolateContexts(): string {
  process.env.WEFT_CONFIG ??= join(mkdtempSync(join(tmpdir(), 'weft-test-config-')), 'config.json')
  return process.env.WEFT_CONFIG
}

/**
 * labUp, but when another lab is up (only one fits the address plan), waits up to a minute for
 * it to go down before failing with LabBusyError's message.
 */
export async function labUpWhenFree(t: Test, topology: TopologyInput, options: LabUpOptions = {}): Promise<Lab> {
  isolateContexts()
  const deadline = Date.now() + WAIT_FOR_OTHER_LAB_MS
  let announced = false
  for (;;) {
    try {
      return await labUp(topology, options)
    } catch (error) {
      if (!(error instanceof LabBusyError) || Date.now() > deadline) throw error
      // A lab whose test process is gone (killed on its timeout, so its teardown never ran)
      // would hold the address plan for good: remove it.
      const owner = ownerPid(error.otherRunId)
      if (owner !== undefined && !alive(owner)) {
        t.comment(`lab ${error.otherRunId} was left by test process ${owner}, which is gone: removing it`)
        labDown(error.otherRunId)
        continue
      }
      if (!announced) t.comment(`waiting up to ${WAIT_FOR_OTHER_LAB_MS / 1000} s for lab ${error.otherRunId} to go down`)
      announced = true
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
  }
}

/** Where a test records which process owns its lab (labs made by hand have no such file). */
const ownerFile = (runId: string): string => join(STATE_ROOT, runId, 'test-owner.pid')

function ownerPid(runId: string): number | undefined {
  try {
    const pid = Number(readFileSync(ownerFile(runId), 'utf8').trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Brings a lab up (daemons off unless asked) and takes it down in t's teardown. */
export async function startLab(t: Test, topology: TopologyInput, options: LabUpOptions = {}): Promise<Lab> {
  const runId = options.runId ?? testRunId()
  // Registered first: if up fails half-way (or the test is interrupted) the run is still removed.
  t.teardown(() => labDown(runId))
  const lab = await labUpWhenFree(t, topology, { startDaemons: false, ...options, runId })
  writeFileSync(ownerFile(runId), `${process.pid}\n`)
  return lab
}

/**
 * Waits until node1 and node2 report configuration `revision` or later on their status. A failed
 * read (JetStream still starting after a NATS restart) is retried until the deadline.
 */
export async function waitForNodes(bus: Bus, revision: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no status read yet'
  for (;;) {
    try {
      const revisions = new Map((await bus.readStatuses()).map((s) => [s.node, (s.status as { revision: number }).revision]))
      if (['node1', 'node2'].every((n) => (revisions.get(n) ?? 0) >= revision)) return
      last = JSON.stringify([...revisions])
    } catch (err) {
      last = (err as Error).message
    }
    if (Date.now() > deadline) throw new Error(`nodes did not reach revision ${revision}: ${last}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

export interface CurlReply { status: number; headers: Record<string, string>; body: string }

/** curl in the lab's `client` pod; -i so the status and headers come back too. */
export async function curl(lab: Lab, url: string, ...args: string[]): Promise<CurlReply> {
  const r = await lab.run('client', ['curl', '-s', '-i', '--max-time', '10', ...args, url])
  if (r.code !== 0) throw new Error(`curl ${url} exited ${r.code}: ${r.stderr}`)
  const [head = '', ...rest] = r.stdout.split('\r\n\r\n')
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') }
}

/**
 * Starts a long-running process in a pod or node and resolves once a line of its stdout matches
 * `ready`; killed in t's teardown (the lab's down would kill it too).
 */
export function startIn(t: Test, lab: Lab, target: string, argv: string[], ready: RegExp, timeoutMs = 5000): Promise<ChildProcess> {
  const child = lab.exec(target, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let output = ''
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} in ${target}: not ready after ${timeoutMs} ms; output: ${output}`)), timeoutMs)
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      if (ready.test(output)) {
        clearTimeout(timer)
        resolve(child)
      }
    })
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${argv.join(' ')} in ${target} exited (${code}) before it was ready; output: ${output}`))
    })
  })
}

/** A TCP server for startIn: answers each connection with `<peer ip>\n` and closes; prints `listening`. */
export const tcpServerScript = `
const net = require('node:net')
net.createServer((socket) => socket.end(socket.remoteAddress.replace(/^::ffff:/, '') + '\\n'))
  .listen(Number(process.argv[1]), () => console.log('listening'))
`

/** A TCP client: connects to argv[1]:argv[2] and prints what the server sent, or `error <code>`. */
export const tcpClientScript = `
const net = require('node:net')
const socket = net.connect(Number(process.argv[2]), process.argv[1])
let reply = ''
socket.setTimeout(3000, () => { console.log('error TIMEOUT'); process.exit(2) })
socket.on('data', (chunk) => (reply += chunk))
socket.on('end', () => { process.stdout.write(reply); process.exit(0) })
socket.on('error', (error) => { console.log('error ' + error.code); process.exit(1) })
`

/** Runs `weft lab ARGS` (runLabCommand) in a child process, as the CLI would. */
export function runLabCli(args: string[]): { code: number; stdout: string; stderr: string } {
  const script = `import { runLabCommand } from ${JSON.stringify(labCli)}; process.exitCode = await runLabCommand(process.argv.slice(1))`
  const result = spawnSync(process.execPath, ['--input-type=module', '--disable-warning=ExperimentalWarning', '-e', script, ...args], { encoding: 'utf8' })
  return { code: result.status ?? 128, stdout: result.stdout, stderr: result.stderr }
}

/** The network namespaces `ip netns` knows. */
export const netnsList = (): string[] => (existsSync('/run/netns') ? readdirSync('/run/netns') : [])

/** Where the cgroup v2 tree is mounted, from /proc/self/mountinfo. */
export function cgroup2(): string {
  const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.includes(' - cgroup2 '))
  return line?.split(' ')[4] ?? '/sys/fs/cgroup'
}

export const hostLinkExists = (name: string): boolean => spawnSync('ip', ['link', 'show', 'dev', name]).status === 0

/** Everything of a run the machine still has (namespaces, host link and routes, cgroups, pins, state); empty when down did its job. */
export function labLeftovers(runId: string): string[] {
  const found: string[] = []
  for (const netns of netnsList()) if (netns.startsWith(`weft-${runId}-`)) found.push(`netns ${netns}`)
  if (hostLinkExists(`wh-${runId}`)) found.push(`link wh-${runId}`)
  if (existsSync(join(cgroup2(), `weft-${runId}`))) found.push(`cgroup weft-${runId}`)
  if (existsSync('/sys/fs/bpf/weft')) for (const pin of readdirSync('/sys/fs/bpf/weft')) if (pin.startsWith(`lab-${runId}-`)) found.push(`pin ${pin}`)
  if (existsSync(`${STATE_ROOT}/${runId}`)) found.push(`state ${STATE_ROOT}/${runId}`)
  if (spawnSync('ip', ['route', 'show', 'dev', `wh-${runId}`], { encoding: 'utf8' }).stdout.trim()) found.push('host routes')
  return found
}

/** A lab node daemon's /metrics, parsed (sum them with sumSamples). */
export async function scrapeNode(lab: Lab, nodeName: string): Promise<ReturnType<typeof parsePrometheusText>> {
  const res = await fetch(`http://${lab.node(nodeName).address}:${ADMIN_PORT}/metrics`)
  if (res.status !== 200) throw new Error(`${nodeName} /metrics answered ${res.status}`)
  return parsePrometheusText(await res.text())
}
