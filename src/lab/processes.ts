// The lab's long-running processes (nats-server, weft control, the node daemons) each live alone
// in a cgroup of the run, so the cgroup is how they are found and stopped, also from another
// process that opened the lab from state.json. And what their exit statuses and logs say.
import { readFileSync } from 'node:fs'
import { constants } from 'node:os'
import { join } from 'node:path'
import { LabError } from './errors.ts'
import { isAlive, signal as signalPid } from './sys.ts'

const STOP_TIMEOUT_MS = 10_000

/** The live pids of one cgroup (not its descendants); none when the cgroup is missing. */
export function cgroupPids(cgroup: string): number[] {
  try {
    return readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number).filter(isAlive)
  } catch {
    return []
  }
}

/**
 * Signals every process of the cgroup and waits until none is left. `what` names them in the
 * error (`lab t1: nats-server`); `logFile`, when given, is where the error sends the reader.
 */
export async function stopCgroup(cgroup: string, what: string, signal: NodeJS.Signals, logFile?: string): Promise<void> {
  for (const pid of cgroupPids(cgroup)) signalPid(pid, signal)
  const deadline = Date.now() + STOP_TIMEOUT_MS
  while (cgroupPids(cgroup).length > 0) {
    if (Date.now() > deadline) {
      const see = logFile === undefined ? '' : `; see ${logFile}`
      throw new LabError(`${what} still running ${STOP_TIMEOUT_MS / 1000} s after ${signal} (pids ${cgroupPids(cgroup).join(', ')})${see}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** ` (last lines: a | b | c)` from the end of a log, for an error message; '' when there is nothing. */
export function logTail(file: string, lines = 5): string {
  try {
    const last = readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines)
    return last.length && last[0] ? ` (last lines: ${last.join(' | ')})` : ''
  } catch {
    return ''
  }
}

/** A child's status as a shell reports it: its exit code, or 128 + the number of the signal that killed it. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code
  return 128 + (signal ? (constants.signals[signal] ?? 1) : 1)
}
