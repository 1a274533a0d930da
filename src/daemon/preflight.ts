// Checks the machine before the daemon touches anything, so a missing prerequisite is one
// clear line that says what to do, not a stack trace from deep inside libbpf.
import { existsSync, readFileSync, statfsSync } from 'node:fs'
import { release } from 'node:os'
import { resolve } from 'node:path'
import { findCgroup2Mount, isOnBpfFs } from '../bpf/index.ts'

export class PreflightError extends Error {}

export const KERNEL_FLOOR: [number, number] = [5, 10]

export function checkRoot(): void {
  if (process.geteuid?.() !== 0) {
    throw new PreflightError('weft node must run as root: it loads BPF programs and attaches them to cgroups (run it with sudo)')
  }
}

export function checkKernel(): void {
  const m = /^(\d+)\.(\d+)/.exec(release())
  const [major, minor] = m ? [Number(m[1]), Number(m[2])] : [0, 0]
  if (major < KERNEL_FLOOR[0] || (major === KERNEL_FLOOR[0] && minor < KERNEL_FLOOR[1])) {
    throw new PreflightError(`kernel ${release()} is too old: weft needs Linux ${KERNEL_FLOOR.join('.')} or newer`)
  }
  if (!existsSync('/sys/kernel/btf/vmlinux')) {
    throw new PreflightError('the kernel has no BTF (/sys/kernel/btf/vmlinux is missing): weft needs a kernel built with CONFIG_DEBUG_INFO_BTF=y')
  }
}

export function checkBpfFs(pinDir: string): void {
  if (!isOnBpfFs(pinDir)) {
    throw new PreflightError(`pin directory ${pinDir} is not on a BPF filesystem; mount one with: mount -t bpf bpf /sys/fs/bpf (or pass --pin-dir under a bpffs mount)`)
  }
}

/** statfs(2) f_type of a cgroup v2 filesystem (CGROUP2_SUPER_MAGIC). */
const CGROUP2_SUPER_MAGIC = 0x63677270

export function checkCgroup(cgroupRoot: string): void {
  const mount = findCgroup2Mount()
  if (!mount) {
    throw new PreflightError('no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo); mount one with: mount -t cgroup2 none /sys/fs/cgroup')
  }
  const path = resolve(cgroupRoot)
  if (!existsSync(path)) {
    throw new PreflightError(`--cgroup-root ${cgroupRoot} does not exist; create the node's workload cgroup first`)
  }
  // Any cgroup v2 mount will do, not only the first: in a container the runtime's own (namespaced)
  // /sys/fs/cgroup comes first, and the host's tree is mounted beside it (daemonset/weft-node.yaml).
  if (statfsSync(path).type !== CGROUP2_SUPER_MAGIC) {
    throw new PreflightError(`--cgroup-root ${cgroupRoot} is not in a cgroup v2 hierarchy (the first one mounted is ${mount})`)
  }
}

export function checkBpfObject(path: string): void {
  if (!existsSync(path)) {
    throw new PreflightError(`BPF object ${path} is missing; build it with: bash scripts/setup.sh --only bpf`)
  }
  readFileSync(path, { flag: 'r' }).subarray(0, 4) // readable, or throws with the path
}
