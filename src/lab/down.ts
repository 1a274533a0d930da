// Finding and removing labs. Everything is found by name (run id in every name), not from
// state.json, so `down` also cleans up after a crash that left a partial state or none.
import { existsSync, readdirSync, rmSync } from 'node:fs'
import { LabError } from './errors.ts'
import { HOST_LINK_PREFIX, labNames, NETNS_PREFIX, PIN_ROOT, RUN_ID_PATTERN, STATE_ROOT } from './plan.ts'
import { removeLabContext } from './control-plane.ts'
import { readState } from './state.ts'
import {
  cgroup2Mount,
  cgroupTreePids,
  ip,
  ipQuiet,
  isAlive,
  killCgroupTree,
  listNetns,
  netnsPids,
  removeCgroupTree,
  runCommand,
  signal,
  waitGoneSync,
} from './sys.ts'

/** How long processes get between SIGTERM and SIGKILL. */
const TERM_GRACE_MS = 2000

export function checkRunId(runId: string): void {
  if (!RUN_ID_PATTERN.test(runId)) throw new LabError(`bad run id "${runId}" (1 to 8 of a-z, 0-9)`)
}

/** Run ids with anything left on this machine: state dirs, namespaces, cgroups, pins, host links. */
export function findRunIds(): string[] {
  const runs = new Set<string>()
  const add = (candidate: string | undefined): void => {
    if (candidate && RUN_ID_PATTERN.test(candidate)) runs.add(candidate)
  }
  for (const entry of readDir(STATE_ROOT)) add(entry)
  for (const netns of listNetns()) if (netns.startsWith(NETNS_PREFIX)) add(netns.slice(NETNS_PREFIX.length).split('-')[0])
  for (const entry of readDir(cgroup2Mount())) if (entry.startsWith(NETNS_PREFIX)) add(entry.slice(NETNS_PREFIX.length))
  for (const entry of readDir(PIN_ROOT)) if (entry.startsWith('lab-')) add(entry.slice('lab-'.length).split('-')[0])
  for (const link of hostLinks()) add(link.slice(HOST_LINK_PREFIX.length))
  return [...runs].sort()
}

/** Removes every trace of one run; idempotent. Throws a LabError listing what could not be removed. */
export function teardownRun(runId: string, progress: (line: string) => void = () => {}): void {
  checkRunId(runId)
  const problems: string[] = []
  const attempt = (what: string, step: () => void): void => {
    try {
      step()
    } catch (error) {
      problems.push(`${what}: ${(error as Error).message}`)
    }
  }
  const cgroupBase = labNames.cgroupBase(cgroup2Mount(), runId)
  const netnsPrefix = labNames.netnsPrefix(runId)
  const namespaces = listNetns().filter((name) => name.startsWith(netnsPrefix))

  attempt('processes', () => {
    const pids = (): number[] => {
      const all = new Set([...cgroupTreePids(cgroupBase), ...netnsPids(namespaces)])
      all.delete(process.pid)
      return [...all].filter(isAlive)
    }
    const running = pids()
    if (running.length === 0) return
    progress(`lab ${runId}: stopping ${running.length} process(es)`)
    for (const pid of running) signal(pid, 'SIGTERM')
    if (waitGoneSync(pids, TERM_GRACE_MS)) return
    progress(`lab ${runId}: killing processes still running after ${TERM_GRACE_MS} ms`)
    killCgroupTree(cgroupBase)
    for (const pid of pids()) signal(pid, 'SIGKILL')
    if (!waitGoneSync(pids, TERM_GRACE_MS)) throw new LabError(`still running after SIGKILL: ${pids().join(', ')}`)
  })

  attempt('BPF pins', () => {
    // Removing the pinned links detaches the programs; removing pinned maps frees them.
    for (const entry of readDir(PIN_ROOT)) {
      if (entry.startsWith(labNames.pinDirPrefix(runId))) rmSync(`${PIN_ROOT}/${entry}`, { recursive: true, force: true })
    }
  })

  const hostLink = labNames.hostLink(runId)
  attempt('host routes', () => {
    let routes: string[] = []
    try {
      routes = readState(runId).hostRoutes
    } catch {
      // No state: the routes go with the host link below anyway.
    }
    for (const route of routes) ipQuiet(['route', 'del', ...route.split(' ')])
  })
  // Before the namespaces: deleting the underlay netns also deletes this veth, asynchronously.
  attempt(`host link ${hostLink}`, () => {
    if (hostLinks().includes(hostLink) && !ipQuiet(['link', 'del', hostLink]) && hostLinks().includes(hostLink)) {
      ip(['link', 'del', hostLink])
    }
  })

  if (namespaces.length > 0) progress(`lab ${runId}: removing ${namespaces.length} network namespace(s)`)
  // One ip process for all of them (-force: go on past failures), then each leftover alone for its error.
  runCommand('ip', ['-force', '-batch', '-'], namespaces.map((netns) => `netns del ${netns}\n`).join(''))
  for (const netns of listNetns().filter((name) => namespaces.includes(name))) {
    attempt(`netns ${netns}`, () => void ip(['netns', 'del', netns]))
  }

  attempt('cgroups', () => removeCgroupTree(cgroupBase))
  attempt('state', () => rmSync(labNames.stateDir(runId), { recursive: true, force: true }))
  attempt(`context ${labNames.contextName(runId)}`, () => removeLabContext(runId))

  if (problems.length > 0) {
    throw new LabError(`lab ${runId}: could not remove everything: ${problems.join('; ')}; fix the cause and run \`weft lab down --run-id ${runId}\` again`)
  }
}

/** True if anything of the run is still on the machine. */
export function runExists(runId: string): boolean {
  return findRunIds().includes(runId) || existsSync(labNames.stateDir(runId))
}

function hostLinks(): string[] {
  // Only veths named wh-<run id>: the lab's host end into the underlay.
  const result = runCommand('ip', ['-j', 'link', 'show', 'type', 'veth'])
  if (result.code !== 0 || !result.stdout.trim()) return []
  const links = JSON.parse(result.stdout) as { ifname: string }[]
  return links
    .map((link) => link.ifname)
    .filter((name) => name.startsWith(HOST_LINK_PREFIX) && RUN_ID_PATTERN.test(name.slice(HOST_LINK_PREFIX.length)))
}

function readDir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}
