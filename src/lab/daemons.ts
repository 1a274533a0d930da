// The node daemons: one `weft node` per lab node, inside the node's netns and in
// <cg2>/weft-<run>/daemons/<node> (outside every workload root, so the proxy's own sockets are
// never intercepted), reading its configuration from the lab's NATS as `node-<name>`, logging to
// <state dir>/<node>.log.
import type { ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { LabError } from './errors.ts'
import { ADMIN_PORT, credsFile, LAB_CIDR, UNDERLAY_CIDR, type LabNode, type LabPlan } from './plan.ts'
import { cgroupPids, logTail, stopCgroup } from './processes.ts'
import { spawnInCgroup } from './sys.ts'

const REPO_ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))))
export const CLI_MAIN = join(REPO_ROOT, 'src', 'cli', 'main.ts')
/**
 * How the lab starts a weft process: this Node, with bin/strip-cache.js first (the sources come
 * stripped from its cache, so the daemon does not load the TypeScript stripper: less memory, a
 * faster start), then the CLI.
 */
export const CLI_COMMAND: readonly string[] = [process.execPath, '--import', pathToFileURL(join(REPO_ROOT, 'bin', 'strip-cache.js')).href, CLI_MAIN]
const READY_TIMEOUT_MS = 20_000

/** Builds the argv of a node's daemon; the default is `weft node` with the lab's addresses. */
export type DaemonCommand = (plan: LabPlan, node: LabNode) => string[]

export function daemonCommand(plan: LabPlan, node: LabNode): string[] {
  return [
    ...CLI_COMMAND, 'node',
    '--name', node.name,
    '--node-ip', node.address,
    '--proxy-ip', node.proxyIp,
    '--cgroup-root', node.cgroupRoot,
    '--pin-dir', node.pinDir,
    // The configuration (the registered nodes and pods, services, ...) comes from the lab's NATS.
    '--nats', plan.nats.url,
    '--creds', credsFile(plan, `node-${node.name}`),
    '--intercept-cidr', LAB_CIDR,
    '--bypass-cidr', UNDERLAY_CIDR,
  ]
}

/** Spawns the daemon detached (it outlives `weft lab up`); the shell joins the daemon cgroup, then
 *  execs nsenter, which execs the daemon, so the daemon's pid is the spawned pid. */
export function spawnDaemon(plan: LabPlan, node: LabNode, command: DaemonCommand = daemonCommand): ChildProcess {
  return spawnInCgroup(node.netns, node.daemonCgroup, command(plan, node), node.logFile)
}

/** Pids in the node's daemon cgroup (the daemon, and anything it started). */
export function daemonPids(node: LabNode): number[] {
  return cgroupPids(node.daemonCgroup)
}

export async function waitDaemonReady(node: LabNode, child: ChildProcess | undefined, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let exited: string | undefined
  child?.once('exit', (code, signal) => {
    exited = signal ? `was killed by ${signal}` : `exited with code ${code}`
  })
  const url = `http://${node.address}:${ADMIN_PORT}/readyz`
  for (;;) {
    if (exited) throw new LabError(`node daemon ${node.name} ${exited} before it was ready; see ${node.logFile}${logTail(node.logFile)}`)
    if (await answers200(node.address, ADMIN_PORT, '/readyz')) return
    if (Date.now() > deadline) {
      throw new LabError(`node daemon ${node.name} not ready after ${timeoutMs / 1000} s (${url} did not answer 200); see ${node.logFile}${logTail(node.logFile)}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

export async function stopDaemonProcesses(node: LabNode, signal: NodeJS.Signals): Promise<void> {
  await stopCgroup(node.daemonCgroup, `node daemon ${node.name}`, signal, node.logFile)
}

export function answers200(host: string, port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port, path, method: 'GET', timeout: 1000 }, (res) => {
      res.resume()
      resolve(res.statusCode === 200)
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(false))
    req.end()
  })
}
