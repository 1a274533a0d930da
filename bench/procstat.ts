// What a proxy costs, read from /proc: CPU time (utime + stime) and resident memory (VmRSS).
// Processes that have exited count as zero (their cost is lost, so measure while they run).
import { readdirSync, readFileSync } from 'node:fs'

/** Kernel clock ticks per second for /proc/<pid>/stat times; 100 on every Linux we run on. */
const CLOCK_TICKS_PER_SECOND = 100

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may contain spaces), which ends at the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND // utime, stime (fields 14, 15)
  } catch {
    return 0
  }
}

/** Resident set size in bytes (VmRSS), 0 when the process is gone. */
export function rssBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match ? Number(match[1]) * 1024 : 0
  } catch {
    return 0
  }
}

export const totalCpuSeconds = (pids: number[]): number => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0)
export const totalRssBytes = (pids: number[]): number => pids.reduce((sum, pid) => sum + rssBytes(pid), 0)

/** pid and its direct children (nginx: master and workers). */
export function withChildren(pid: number): number[] {
  const pids = [pid]
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === pid) pids.push(Number(entry))
    } catch {
      // Gone between readdir and read.
    }
  }
  return pids
}
