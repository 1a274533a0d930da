// Where the kernel interfaces live on this host: the cgroup v2 mount, bpffs, cgroup ids.
import { readFileSync, statSync, statfsSync, existsSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

const BPF_FS_MAGIC = 0xcafe4a11

/** Mount points in /proc/self/mountinfo escape space, tab, newline and backslash as octal. */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(parseInt(octal, 8)))
}

/**
 * The cgroup v2 mount point from /proc/self/mountinfo (e.g. /sys/fs/cgroup, or
 * /sys/fs/cgroup/unified on a hybrid layout); undefined when cgroup v2 is not mounted.
 */
export function findCgroup2Mount(mountinfo = '/proc/self/mountinfo'): string | undefined {
  for (const line of readFileSync(mountinfo, 'utf8').split('\n')) {
    // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
    const [before, after] = line.split(' - ')
    if (before === undefined || after === undefined) continue
    const fields = before.split(' ')
    const fsType = after.split(' ')[0]
    const mountPoint = fields[4]
    if (fsType === 'cgroup2' && mountPoint !== undefined) return unescapeMountPath(mountPoint)
  }
  return undefined
}

/** Is the path (or, when it does not exist yet, its nearest existing parent) on a BPF filesystem? */
export function isOnBpfFs(path: string): boolean {
  let current = resolve(path)
  while (!existsSync(current)) {
    const parent = dirname(current)
    if (parent === current) return false
    current = parent
  }
  return statfsSync(current).type === BPF_FS_MAGIC
}

/** A cgroup v2 directory's id, as bpf_get_current_cgroup_id() reports it: its inode number. */
export function cgroupIdOf(cgroupDir: string): bigint {
  const stats = statSync(cgroupDir, { bigint: true })
  if (!stats.isDirectory()) throw new Error(`cgroupIdOf ${cgroupDir}: not a cgroup directory`)
  return stats.ino
}
