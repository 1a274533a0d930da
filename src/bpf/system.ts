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

/** The oldest kernel weft's programs load on: bpf_link for cgroups, getpeername hooks, BTF. */
export const minimumKernel = { major: 5, minor: 10 } as const

/**
 * What this host lacks for interception, as sentences saying what to do; empty when all is
 * there. Checks the kernel version, kernel BTF, cgroup v2 and bpffs (at bpffsPath).
 */
export function interceptionPrerequisites(bpffsPath = '/sys/fs/bpf'): string[] {
  const problems: string[] = []
  const release = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()
  const [major = 0, minor = 0] = release.split(/[.-]/).map(Number)
  if (major < minimumKernel.major || (major === minimumKernel.major && minor < minimumKernel.minor)) {
    problems.push(`kernel ${release} is older than ${minimumKernel.major}.${minimumKernel.minor}: weft's BPF programs need ${minimumKernel.major}.${minimumKernel.minor}+`)
  }
  if (!existsSync('/sys/kernel/btf/vmlinux')) problems.push('the kernel has no BTF (/sys/kernel/btf/vmlinux): it must be built with CONFIG_DEBUG_INFO_BTF=y')
  if (findCgroup2Mount() === undefined) problems.push('no cgroup v2 mount in /proc/self/mountinfo: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified)')
  if (!existsSync(bpffsPath) || !isOnBpfFs(bpffsPath)) problems.push(`no BPF filesystem at ${bpffsPath}: mount -t bpf bpf ${bpffsPath}`)
  return problems
}
