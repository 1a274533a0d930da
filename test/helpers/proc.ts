// Processes seen from /proc: alive or not, who is in a process group, how much memory they hold.
import { readdirSync, readFileSync } from 'node:fs'

/** Whether a process is alive: it exists and is not a zombie waiting for its parent. */
export function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** The live processes of a process group, from /proc. */
export function processGroup(pgid: number): number[] {
  const members: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') members.push(Number(entry))
    } catch {
      // Gone meanwhile.
    }
  }
  return members
}

/** A process's resident memory (VmRSS) in bytes. */
export function rssBytes(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
}

/** Samples the processes' resident memory every intervalMs until `stop`, which returns the highest seen (bytes, one process). */
export function peakRss(pids: number[], intervalMs = 100): { stop: () => number } {
  let peak = 0
  const sample = (): void => {
    for (const pid of pids) {
      try { peak = Math.max(peak, rssBytes(pid)) } catch { /* gone: the caller checks that itself */ }
    }
  }
  sample()
  const timer = setInterval(sample, intervalMs)
  return { stop: () => { clearInterval(timer); sample(); return peak } }
}
