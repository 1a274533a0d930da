// The lab's control plane: nats-server (JetStream, a user per identity) and `weft control`, both
// in the underlay netns (NATS on br0's 198.18.0.254:4222) and each in a cgroup of the run
// (<cg2>/weft-<run>/control/{nats,plane}), so `down`, which empties the run's cgroup tree, stops
// them also after a crash. Credentials live in <state>/creds/<user>.json (0600, the --creds
// format: {"servers": "nats://...", "user", "pass"}); restarts reuse them, so clients and daemons
// keep working across a NATS restart. weft control's CA keeps its root in <state>/ca (0700, the key
// 0600), so a restarted control plane signs with the same root; WEFT_LAB_CERT_LIFETIME (e.g. 30s)
// shortens the workloads' certificates for tests that watch them renew.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { BusError, connectBus, readContext, removeContext, startNatsServer, writeContext, type Bus, type BusCredentials } from '../bus/index.ts'
import { requestRegister } from '../control/index.ts'
import { CLI_COMMAND } from './daemons.ts'
import { LabError } from './errors.ts'
import { credsFile, labNames, labResources, type LabNatsUser, type LabPlan } from './plan.ts'
import { cgroupPids, logTail, stopCgroup } from './processes.ts'
import { spawnInCgroup } from './sys.ts'

/** weft control is a fresh node process: give it time to load before the first request. */
const CONTROL_START_TIMEOUT_MS = 20_000

/** The NATS users of a lab: operator, control, and node-<name> per node. */
export function labNatsUsers(plan: LabPlan): LabNatsUser[] {
  return ['operator', 'control', ...plan.nodes.map((node): LabNatsUser => `node-${node.name}`)]
}

/** A user's credentials from its creds file. */
export function readCreds(plan: LabPlan, user: LabNatsUser): BusCredentials {
  const file = credsFile(plan, user)
  let parsed: { servers?: unknown; user?: string; pass?: string }
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as typeof parsed
  } catch (error) {
    throw new LabError(`lab ${plan.runId}: cannot read NATS credentials ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
  // A lab has one server; creds written before `servers` became a string held a list of it.
  return { servers: typeof parsed.servers === 'string' ? parsed.servers : plan.nats.url, user: parsed.user ?? user, pass: parsed.pass ?? '' }
}

function writeCreds(plan: LabPlan, passwords: Record<string, string>): void {
  mkdirSync(plan.nats.credsDir, { recursive: true, mode: 0o700 })
  for (const user of labNatsUsers(plan)) {
    const pass = passwords[user]
    if (pass === undefined) throw new LabError(`lab ${plan.runId}: nats-server has no user ${user}`)
    const file = credsFile(plan, user)
    writeFileSync(file, `${JSON.stringify({ servers: plan.nats.url, user, pass }, null, 2)}\n`, { mode: 0o600 })
    chmodSync(file, 0o600)
  }
}

export const natsPids = (plan: LabPlan): number[] => cgroupPids(plan.nats.cgroup)
/** Where startNatsServer has nats-server log (`<state>/nats/nats-server.log`). */
export const natsLogFile = (plan: LabPlan): string => join(plan.nats.dir, 'nats-server.log')
export const controlPids = (plan: LabPlan): number[] => cgroupPids(plan.control.cgroup)

/**
 * Starts nats-server in the underlay netns. The first start makes the passwords and writes the
 * creds files; later starts (after stopNats) reuse them, the port and the store.
 */
export async function startNats(plan: LabPlan): Promise<void> {
  const running = natsPids(plan)
  if (running.length > 0) throw new LabError(`lab ${plan.runId}: nats-server is already running (pid ${running.join(', ')})`)
  const restart = existsSync(credsFile(plan, 'operator'))
  const passwords: Record<string, string> = {}
  if (restart) for (const user of labNatsUsers(plan)) passwords[user] = readCreds(plan, user).pass
  mkdirSync(plan.nats.dir, { recursive: true, mode: 0o700 })
  let server
  try {
    server = await startNatsServer({
      dir: plan.nats.dir,
      host: plan.nats.address,
      port: plan.nats.port,
      storeDir: plan.nats.storeDir,
      nodes: plan.nodes.map((node) => node.name),
      ...(restart ? { passwords } : {}),
      spawn: (argv) => spawnInCgroup(plan.underlayNetns, plan.nats.cgroup, argv),
    })
  } catch (error) {
    throw new LabError(`lab ${plan.runId}: ${(error as Error).message}`)
  }
  if (!restart) writeCreds(plan, server.passwords)
}

export async function stopNats(plan: LabPlan, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  await stopCgroup(plan.nats.cgroup, `lab ${plan.runId}: nats-server`, signal, natsLogFile(plan))
}

/** Records the lab's NATS as the current context (operator credentials), like a kubeconfig. */
export function writeLabContext(plan: LabPlan): void {
  const operator = readCreds(plan, 'operator')
  writeContext(plan.nats.contextName, { servers: plan.nats.url, user: operator.user, pass: operator.pass }, { makeCurrent: true })
}

/** Removes the run's context (and `current` with it, if it was current); no-op when absent. */
export function removeLabContext(runId: string): void {
  removeContext(labNames.contextName(runId))
}

export function labContextIsCurrent(plan: LabPlan): boolean {
  try {
    return readContext().current === plan.nats.contextName
  } catch {
    return false
  }
}

/** Where the lab's CA keeps its root: `<state>/ca`. */
export const labCaDir = (plan: LabPlan): string => join(plan.stateDir, 'ca')

/** Starts `weft control` in the underlay netns and its cgroup, logging to <state>/control.log. */
export function startControl(plan: LabPlan, env: NodeJS.ProcessEnv = process.env): void {
  const running = controlPids(plan)
  if (running.length > 0) throw new LabError(`lab ${plan.runId}: weft control is already running (pid ${running.join(', ')})`)
  const lifetime = env.WEFT_LAB_CERT_LIFETIME
  const argv = [...CLI_COMMAND, 'control', '--creds', credsFile(plan, 'control'), '--ca-dir', labCaDir(plan), ...(lifetime ? ['--cert-lifetime', lifetime] : [])]
  spawnInCgroup(plan.underlayNetns, plan.control.cgroup, argv, plan.control.logFile)
}

export async function stopControl(plan: LabPlan, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  await stopCgroup(plan.control.cgroup, `lab ${plan.runId}: weft control`, signal, plan.control.logFile)
}

/** A bus client of the lab's NATS as one of its users (from the host, through wh-<run>). */
export async function connectLab(plan: LabPlan, user: LabNatsUser = 'operator'): Promise<Bus> {
  return await connectBus({ ...readCreds(plan, user), name: `weft lab ${plan.runId}` })
}

/** Registers every node and pod of the lab through weft control (waiting for it to serve). */
export async function registerLab(plan: LabPlan, progress: (line: string) => void): Promise<void> {
  const resources = labResources(plan)
  const bus = await connectLab(plan)
  try {
    const [first, ...rest] = resources
    const ask = async (resource: unknown, waitForControlMs = 0): Promise<string | undefined> => {
      try {
        const reply = await requestRegister(bus, resource, { waitForControlMs })
        return reply.ok ? undefined : reply.error
      } catch (error) {
        if (error instanceof BusError) throw new LabError(`lab ${plan.runId}: registering through weft control: ${error.message}; see ${plan.control.logFile}${logTail(plan.control.logFile, 3)}`)
        throw error
      }
    }
    const problems = [await ask(first, CONTROL_START_TIMEOUT_MS), ...(await Promise.all(rest.map((resource) => ask(resource))))].filter((p) => p !== undefined)
    if (problems.length > 0) throw new LabError(`lab ${plan.runId}: weft control refused: ${problems.join('; ')}`)
    progress(`lab ${plan.runId}: registered ${plan.nodes.length} node(s) and ${plan.pods.length} pod(s) through weft control`)
  } finally {
    await bus.close()
  }
}
