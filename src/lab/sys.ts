// Small synchronous wrappers over the tools and kernel files the lab drives: iproute2, cgroup v2,
// /proc. Setup and teardown are a sequence of short commands, so synchronous is simplest here.
import { spawn, spawnSync, type ChildProcess, type SpawnSyncOptionsWithStringEncoding } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, readdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { LabError } from './errors.ts'

export interface CommandResult {
  code: number
  stdout: string
  stderr: string
}

/**
 * Runs a short command to completion. Detached: in a process group of its own, so that a
 * terminal's Ctrl-C, which reaches every process of the foreground group, cannot kill an `ip netns
 * del` in the middle of a teardown that the Ctrl-C itself started (`weft demo`).
 */
export function runCommand(command: string, args: string[], input?: string): CommandResult {
  // `detached` works for spawnSync too, though @types/node does not list it there.
  const options: SpawnSyncOptionsWithStringEncoding & { detached: boolean } = { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], detached: true }
  const result = spawnSync(command, args, options)
  if (result.error) throw new LabError(`cannot run ${command}: ${result.error.message}`)
  return { code: result.status ?? 128, stdout: result.stdout, stderr: result.stderr }
}

/** `ip ARGS`, throwing a LabError that shows the command and iproute2's complaint. */
export function ip(args: string[]): string {
  const result = runCommand('ip', args)
  if (result.code !== 0) throw new LabError(`ip ${args.join(' ')} failed: ${result.stderr.trim() || `exit ${result.code}`}`)
  return result.stdout
}

/** `ip ARGS` where failure is expected and fine (teardown of things that may be gone already). */
export function ipQuiet(args: string[]): boolean {
  return runCommand('ip', args).code === 0
}

/**
 * argv that runs `command` in a lab network namespace. nsenter changes only the network
 * namespace; `ip netns exec` would also remount /sys, hiding /sys/fs/cgroup and /sys/fs/bpf from
 * the command (the node daemon needs both).
 */
export function inNetns(netns: string, command: string[]): string[] {
  return ['nsenter', `--net=/run/netns/${netns}`, '--', ...command]
}

export function listNetns(): string[] {
  // /run/netns is where `ip netns add` mounts the namespaces; reading it avoids parsing `ip netns`.
  try {
    return readdirSync('/run/netns')
  } catch {
    return []
  }
}

/** Pids of the processes in any of these network namespaces (one pass over /proc, like `ip netns pids`). */
export function netnsPids(namespaces: string[]): number[] {
  const inodes = new Set<bigint>()
  for (const netns of namespaces) {
    try {
      inodes.add(statSync(`/run/netns/${netns}`, { bigint: true }).ino)
    } catch {
      // Gone already.
    }
  }
  if (inodes.size === 0) return []
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (inodes.has(statSync(`/proc/${entry}/ns/net`, { bigint: true }).ino)) pids.push(Number(entry))
    } catch {
      // Exited meanwhile, or a kernel thread.
    }
  }
  return pids
}

export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

let cachedCgroupMount: string | undefined

/** The cgroup v2 mount point, from /proc/self/mountinfo (hybrid hosts put it at .../unified). */
export function cgroup2Mount(): string {
  if (cachedCgroupMount) return cachedCgroupMount
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')
  for (const line of mountinfo.split('\n')) {
    // "<id> <parent> <major:minor> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
    const [before, after] = line.split(' - ')
    if (!before || !after || after.split(' ')[0] !== 'cgroup2') continue
    const mountPoint = before.split(' ')[4]
    if (mountPoint) return (cachedCgroupMount = mountPoint.replace(/\\040/g, ' '))
  }
  throw new LabError('no cgroup v2 mount found in /proc/self/mountinfo; the lab needs cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup)')
}

/** Pids of the processes in a cgroup and all its descendants. */
export function cgroupTreePids(dir: string): number[] {
  const pids: number[] = []
  const visit = (current: string): void => {
    try {
      for (const line of readFileSync(join(current, 'cgroup.procs'), 'utf8').split('\n')) {
        const pid = Number(line)
        if (line && Number.isInteger(pid)) pids.push(pid)
      }
    } catch {
      return
    }
    for (const child of childCgroups(current)) visit(child)
  }
  visit(dir)
  return pids
}

function childCgroups(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => join(dir, entry.name))
  } catch {
    return []
  }
}

/** Removes a cgroup and its descendants, bottom-up (cgroupfs only allows rmdir of empty leaves). */
export function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return
  for (const child of childCgroups(dir)) removeCgroupTree(child)
  try {
    rmdirSync(dir)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code !== 'ENOENT') throw new LabError(`cannot remove cgroup ${dir}: ${code} (processes still inside? see ${dir}/cgroup.procs)`)
  }
}

/** Kills every process of a cgroup tree at once (cgroup.kill, Linux 5.14+); no-op when missing. */
export function killCgroupTree(dir: string): void {
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1')
  } catch {
    for (const pid of cgroupTreePids(dir)) signal(pid, 'SIGKILL')
  }
}

/** Alive means it exists and is not a zombie waiting for its parent to reap it. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // "pid (comm) S ...": comm may contain spaces and parentheses, so read after the last ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch {
    // Gone already.
  }
}

/** Waits (blocking) until none of the pids is alive; true if they all went within the timeout. */
export function waitGoneSync(pids: () => number[], timeoutMs: number): boolean {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (pids().filter(isAlive).length === 0) return true
    if (Date.now() >= deadline) return false
    sleepSync(25)
  }
}

/** Runs argv in a netns and a cgroup, detached (it outlives `weft lab up`). sh and nsenter exec, so the pid is argv's. */
export function spawnInCgroup(netns: string, cgroup: string, argv: string[], logFile?: string): ChildProcess {
  const log = logFile === undefined ? 'ignore' : openSync(logFile, 'a')
  try {
    const child = spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...inNetns(netns, argv)], {
      detached: true,
      stdio: ['ignore', log, log],
    })
    child.unref()
    child.on('error', () => {})
    return child
  } finally {
    if (typeof log === 'number') closeSync(log)
  }
}
