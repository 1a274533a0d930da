// A running lab: bring it up from a topology, open it again from state.json, run things in its
// pods and nodes, start and stop its daemons, its NATS and weft control, take it down.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { daemonCommand, daemonPids, spawnDaemon, stopDaemonProcesses, waitDaemonReady, type DaemonCommand } from './daemons.ts'
import { checkRunId, findRunIds, teardownRun } from './down.ts'
import { LabBusyError, LabError } from './errors.ts'
import type { Bus } from '../bus/index.ts'
import {
  connectLab,
  controlPids,
  labContextIsCurrent,
  labNatsUsers,
  natsLogFile,
  natsPids,
  registerLab,
  startControl,
  startNats,
  stopControl,
  stopNats,
  writeLabContext,
} from './control-plane.ts'
import { exitStatus } from './processes.ts'
import { buildNetwork, ensureHostUnreachableRoute, hostRoutes } from './network.ts'
import { credsFile, labNames, labResources, planLab, type LabNatsUser, type LabNode, type LabPlan, type LabPod } from './plan.ts'
import { readState, STATE_VERSION, writeState, type LabState } from './state.ts'
import { cgroup2Mount, inNetns, listNetns } from './sys.ts'
import { validateTopology, type TopologyInput } from './topology.ts'

export interface LabUpOptions {
  /** Default: 6 random characters of [a-z0-9]. */
  runId?: string
  /** Start one `weft node` daemon per node and wait until each is ready (default true). */
  startDaemons?: boolean
  /** What to run as each node's daemon (default: `weft node ...`, see daemonCommand); for stand-ins
   *  in tests and benchmarks. Only this Lab object uses it: a lab opened later runs the default. */
  daemonCommand?: DaemonCommand
  onProgress?: (line: string) => void
}

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** Written to the process's stdin, which is then closed. */
  input?: string
  /** Kill the process (SIGKILL) after this long; the result then has code 137. */
  timeoutMs?: number
}

export class Lab {
  readonly runId: string
  readonly nodes: readonly LabNode[]
  readonly pods: readonly LabPod[]
  readonly stateDir: string
  /** The lab's NATS (`nats://198.18.0.254:4222`), reachable from the host and every node. */
  readonly natsUrl: string
  /** The context `up` recorded (and made current) for `weft apply|get|delete|status`. */
  readonly contextName: string
  readonly plan: LabPlan
  readonly #daemonCommand: DaemonCommand

  constructor(plan: LabPlan, command: DaemonCommand = daemonCommand) {
    this.plan = plan
    this.#daemonCommand = command
    this.runId = plan.runId
    this.nodes = plan.nodes
    this.pods = plan.pods
    this.stateDir = plan.stateDir
    this.natsUrl = plan.nats.url
    this.contextName = plan.nats.contextName
  }

  /** The `--creds` file of a NATS user: `operator`, `control` or `node-<name>`. */
  credsFile(user: string): string {
    const users: string[] = labNatsUsers(this.plan)
    if (!users.includes(user)) throw new LabError(`lab ${this.runId}: no NATS user "${user}" (users: ${users.join(', ')})`)
    return credsFile(this.plan, user as LabNatsUser)
  }

  /** A bus client of the lab's NATS as one of its users (default operator); close it when done. */
  connect(user = 'operator'): Promise<Bus> {
    this.credsFile(user)
    return connectLab(this.plan, user as LabNatsUser)
  }

  /** The Nodes and Pods `up` registers through weft control. */
  resources(): unknown[] {
    return labResources(this.plan)
  }

  /** Stops nats-server (SIGTERM; SIGKILL to simulate a crash) and waits until it has exited. */
  stopNats(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return stopNats(this.plan, signal)
  }

  /** Starts nats-server again: same address, port, store and credentials. */
  startNats(): Promise<void> {
    return startNats(this.plan)
  }

  /** nats-server's pid, from its cgroup. */
  natsPid(): number | undefined {
    return natsPids(this.plan)[0]
  }

  /** weft control's pid, from its cgroup. */
  controlPid(): number | undefined {
    return controlPids(this.plan)[0]
  }

  stopControl(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return stopControl(this.plan, signal)
  }

  /** Starts weft control again (it serves once it has connected; requests wait for it). */
  startControl(): void {
    startControl(this.plan)
  }

  /** Whether this lab's context is the current one. */
  contextIsCurrent(): boolean {
    return labContextIsCurrent(this.plan)
  }

  node(name: string): LabNode {
    const node = this.nodes.find((n) => n.name === name)
    if (!node) throw new LabError(`lab ${this.runId}: no node "${name}" (nodes: ${this.nodes.map((n) => n.name).join(', ')})`)
    return node
  }

  pod(name: string): LabPod {
    const pod = this.pods.find((p) => p.name === name)
    if (!pod) throw new LabError(`lab ${this.runId}: no pod "${name}" (pods: ${this.pods.map((p) => p.name).join(', ') || 'none'})`)
    return pod
  }

  /** Starts argv in a pod (its netns and its cgroup, so the mesh sees it as the pod) or in a
   *  node's netns. stdio defaults to pipes. */
  exec(target: string, argv: string[], options: SpawnOptions = {}): ChildProcess {
    if (argv.length === 0) throw new LabError('exec: nothing to run')
    const pod = this.pods.find((p) => p.name === target)
    if (pod) {
      // Join the pod's cgroup, then its netns; sh and nsenter both exec, so the pid is argv's.
      return spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', pod.cgroup, ...inNetns(pod.netns, argv)], options)
    }
    const node = this.nodes.find((n) => n.name === target)
    if (node) {
      const [command, ...args] = inNetns(node.netns, argv)
      return spawn(command as string, args, options)
    }
    throw new LabError(
      `lab ${this.runId}: no pod or node "${target}" (pods: ${this.pods.map((p) => p.name).join(', ') || 'none'}; nodes: ${this.nodes.map((n) => n.name).join(', ')})`,
    )
  }

  /** Runs argv to completion in a pod or node and collects its output. */
  run(target: string, argv: string[], options: RunOptions = {}): Promise<RunResult> {
    const child = this.exec(target, argv, { stdio: ['pipe', 'pipe', 'pipe'] })
    return new Promise((resolve, reject) => {
      let stdout = ''
      let stderr = ''
      child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
      const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.timeoutMs)
      child.on('error', (error) => {
        clearTimeout(timer)
        reject(new LabError(`exec in ${target}: ${error.message}`))
      })
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        resolve({ code: exitStatus(code, signal), stdout, stderr })
      })
      child.stdin?.on('error', () => {})
      child.stdin?.end(options.input ?? '')
    })
  }

  /** Starts the node's daemon and waits until its /readyz answers 200 from the host. */
  async startDaemon(nodeName: string): Promise<void> {
    const node = this.node(nodeName)
    const running = daemonPids(node)
    if (running.length > 0) throw new LabError(`node daemon ${node.name} is already running (pid ${running.join(', ')})`)
    await waitDaemonReady(node, spawnDaemon(this.plan, node, this.#daemonCommand))
  }

  /** Signals the node's daemon and waits until it has exited. */
  async stopDaemon(nodeName: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await stopDaemonProcesses(this.node(nodeName), signal)
  }

  /** The daemon's pid, read from its cgroup (so it also works on a lab opened from state.json). */
  daemonPid(nodeName: string): number | undefined {
    return daemonPids(this.node(nodeName))[0]
  }

  logFile(nodeName: string): string {
    return this.node(nodeName).logFile
  }

  /** Removes everything of this run (processes, pins, namespaces, links, routes, cgroups, state). */
  down(onProgress?: (line: string) => void): void {
    teardownRun(this.runId, onProgress)
  }
}

export async function labUp(topologyInput: TopologyInput, options: LabUpOptions = {}): Promise<Lab> {
  const topology = validateTopology(topologyInput)
  const runId = options.runId ?? randomRunId()
  checkRunId(runId)
  const progress = options.onProgress ?? (() => {})
  if (process.getuid?.() !== 0) throw new LabError('the lab needs root (it creates network namespaces, veths and cgroups)')

  const others = findRunIds()
  if (others.includes(runId)) throw new LabError(`lab ${runId} already exists; remove it first with \`weft lab down --run-id ${runId}\``)
  if (others[0]) throw new LabBusyError(others[0])

  const plan = planLab(topology, runId, cgroup2Mount())
  const state: LabState = {
    version: STATE_VERSION,
    createdAt: new Date().toISOString(),
    complete: false,
    daemons: options.startDaemons ?? true,
    hostRoutes: hostRoutes(plan),
    plan,
  }
  mkdirSync(plan.stateDir, { recursive: true })
  writeState(state)
  // Two `up`s racing both got past the check above: the later one (by run id order) backs off.
  const racing = findRunIds().filter((other) => other !== runId)
  if (racing[0]) {
    teardownRun(runId)
    throw new LabBusyError(racing[0])
  }

  const lab = new Lab(plan, options.daemonCommand)
  try {
    progress(`lab ${runId}: up with ${plan.nodes.length} node(s), ${plan.pods.length} pod(s)`)
    ensureHostUnreachableRoute()
    buildNetwork(plan, progress)
    progress(`lab ${runId}: NATS with JetStream on ${plan.nats.url} (underlay netns; log ${natsLogFile(plan)})`)
    await startNats(plan)
    writeLabContext(plan)
    progress(`lab ${runId}: context ${plan.nats.contextName} is current (weft apply|get|delete|status need no flags)`)
    progress(`lab ${runId}: starting weft control (log ${plan.control.logFile})`)
    startControl(plan)
    await registerLab(plan, progress)
    writeState({ ...state, complete: true })
    if (state.daemons) {
      for (const node of plan.nodes) {
        progress(`lab ${runId}: starting node daemon ${node.name} (log ${node.logFile})`)
        await lab.startDaemon(node.name)
      }
    }
    progress(`lab ${runId}: ready`)
    return lab
  } catch (error) {
    progress(`lab ${runId}: up failed, removing what was made`)
    const message = keepDaemonLogs(plan, error)
    try {
      teardownRun(runId)
    } catch (cleanupError) {
      progress(`lab ${runId}: ${(cleanupError as Error).message}`)
    }
    throw error instanceof LabError ? new LabError(message) : error
  }
}

/** The state dir goes with the failed lab: copy the daemon, control and NATS logs to the temp dir
 *  and point the error message there instead. */
function keepDaemonLogs(plan: LabPlan, error: unknown): string {
  let message = error instanceof Error ? error.message : String(error)
  const logs: [string, string][] = [
    ...plan.nodes.map((node): [string, string] => [node.name, node.logFile]),
    ['control', plan.control.logFile],
    ['nats-server', natsLogFile(plan)],
  ]
  for (const [name, logFile] of logs) {
    if (!existsSync(logFile)) continue
    const kept = join(tmpdir(), `weft-lab-${plan.runId}-${name}.log`)
    try {
      copyFileSync(logFile, kept)
      message = message.split(logFile).join(kept)
    } catch {
      // Best effort: the message still has the last lines of the log.
    }
  }
  return message
}

/** Opens a lab that is up (possibly made by another process) from its state.json. */
export function openLab(runId: string): Lab {
  checkRunId(runId)
  const state = readState(runId)
  if (!state.complete) throw new LabError(`lab ${runId} is not complete (still coming up, or \`up\` crashed); remove it with \`weft lab down --run-id ${runId}\``)
  return new Lab(state.plan)
}

export function labDown(runId: string, onProgress?: (line: string) => void): void {
  teardownRun(runId, onProgress)
}

/** Takes down every lab found on this machine; returns their run ids. */
export function labDownAll(onProgress?: (line: string) => void): string[] {
  const runs = findRunIds()
  const problems: string[] = []
  for (const runId of runs) {
    try {
      teardownRun(runId, onProgress)
    } catch (error) {
      problems.push((error as Error).message)
    }
  }
  if (problems.length > 0) throw new LabError(problems.join('; '))
  return runs
}

export interface LabSummary {
  runId: string
  natsUrl?: string
  context?: string
  /** `up`: state.json complete; `partial`: being built, crashed, or leftovers without state. */
  status: 'up' | 'partial'
  createdAt?: string
  nodes: string[]
  pods: string[]
  namespaces: string[]
}

export function listLabs(): LabSummary[] {
  const netns = listNetns()
  return findRunIds().map((runId): LabSummary => {
    const namespaces = netns.filter((name) => name.startsWith(labNames.netnsPrefix(runId)))
    try {
      const state = readState(runId)
      return {
        runId,
        status: state.complete ? 'up' : 'partial',
        natsUrl: state.plan.nats.url,
        context: state.plan.nats.contextName,
        createdAt: state.createdAt,
        nodes: state.plan.nodes.map((n) => n.name),
        pods: state.plan.pods.map((p) => p.name),
        namespaces,
      }
    } catch {
      return { runId, status: 'partial', nodes: [], pods: [], namespaces }
    }
  })
}

export function randomRunId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'
  return [...randomBytes(6)].map((byte) => alphabet[byte % alphabet.length]).join('')
}
