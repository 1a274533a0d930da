// NodeInterception: one node's eBPF interception, loaded once, pinned, and adopted by every
// later daemon start so interception never lapses. See index.ts for the API overview.
//
// Pin layout under pinDir (on bpffs):
//   maps/<map name>          every map (adopting reopens these)
//   progs/<attach point>     connect4, connect6, sockops, getpeername4, getpeername6, ingress
//                            (for bpftool and debugging), and stream_verdict (the L4 fast path's
//                            program, attached to the splice_socks map: no link, the map holds it)
//   links/<attach point>     the cgroup bpf_links; their presence means "installed"
import { closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, rmSync, unlinkSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  counterIndex,
  mapPrograms,
  maps,
  parseIpv4Cidr,
  programs,
  ruleAction,
  type AttachPoint,
  type CounterName,
  type MapAttachPoint,
  type MapKey,
  type MapLayout,
  type OriginalDestination,
} from './layout.ts'
import { BpfError, native } from './native.ts'
import { cgroupIdOf, isOnBpfFs } from './system.ts'

export interface InterceptionSettings {
  /** Where intercepted connects are sent: the proxy's outbound listener. */
  proxyIp: string
  proxyPort: number
  /** Destinations to intercept (service VIP ranges, mesh pod ranges). */
  interceptCidrs: string[]
  /** Holes in the intercept ranges; a bypass prefix wins over an intercept prefix of the same length. */
  bypassCidrs: string[]
  /** Destination ports never intercepted. */
  excludedPorts: number[]
}

export interface InterceptionOptions extends InterceptionSettings {
  /** Per-node directory on bpffs, e.g. /sys/fs/bpf/weft/<node> */
  pinDir: string
  /** The cgroup v2 directory the programs attach to (the node's workload root). */
  cgroupRoot: string
  /** The compiled object; default build/bpf/weft.bpf.o in the repository. */
  objectPath?: string
}

export type InterceptionCounters = Record<CounterName, bigint>

export const defaultObjectPath = fileURLToPath(new URL('../../build/bpf/weft.bpf.o', import.meta.url))

const attachPoints = Object.keys(programs) as AttachPoint[]
const mapAttachPoints = Object.keys(mapPrograms) as MapAttachPoint[]
let lookupAndDeleteWorks = true
const mapKeys = Object.keys(maps) as MapKey[]

function pinPaths(pinDir: string): { maps: string; progs: string; links: string } {
  return { maps: join(pinDir, 'maps'), progs: join(pinDir, 'progs'), links: join(pinDir, 'links') }
}

/** Validates settings and turns them into map contents, before anything touches the kernel. */
function resolveSettings(settings: InterceptionSettings): {
  rules: Map<string, { key: Buffer; action: number }>
  ports: Map<string, Buffer>
  proxy: Buffer
} {
  const rules = new Map<string, { key: Buffer; action: number }>()
  const add = (cidr: string, action: number): void => {
    const key = maps.interceptRules.encodeKey(parseIpv4Cidr(cidr))
    rules.set(key.toString('hex'), { key, action })
  }
  for (const cidr of settings.interceptCidrs) add(cidr, ruleAction.intercept)
  for (const cidr of settings.bypassCidrs) add(cidr, ruleAction.bypass) // same prefix: bypass wins
  const ports = new Map<string, Buffer>()
  for (const port of settings.excludedPorts) {
    const key = maps.excludedPorts.encodeKey(port)
    ports.set(key.toString('hex'), key)
  }
  if (settings.proxyPort === 0) throw new TypeError('interception settings: proxyPort must not be 0')
  const proxy = maps.proxyConfig.encodeValue({ ip: settings.proxyIp, port: settings.proxyPort })
  if (proxy.readUInt32BE(0) === 0) throw new TypeError('interception settings: proxyIp must not be 0.0.0.0 (connect4 treats it as "not configured")')
  return { rules, ports, proxy }
}

function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return
  try {
    native.close(fd)
  } catch {
    // already closed: nothing to release
  }
}

export class NodeInterception {
  /** True when open() found a complete install in pinDir and took it over (never detached). */
  readonly adopted: boolean
  /** When adopted: the programs whose code differed from the object and were swapped in place. */
  readonly updatedPrograms: Array<AttachPoint | MapAttachPoint>
  readonly pinDir: string
  readonly cgroupRoot: string
  private readonly mapFds: Record<MapKey, number>
  private readonly linkFds: Record<AttachPoint, number>
  private readonly progIds: Record<AttachPoint | MapAttachPoint, number>
  private readonly cpus: number
  private closed = false

  private constructor(init: {
    adopted: boolean
    updatedPrograms: Array<AttachPoint | MapAttachPoint>
    pinDir: string
    cgroupRoot: string
    mapFds: Record<MapKey, number>
    linkFds: Record<AttachPoint, number>
    progIds: Record<AttachPoint | MapAttachPoint, number>
  }) {
    this.adopted = init.adopted
    this.updatedPrograms = init.updatedPrograms
    this.pinDir = init.pinDir
    this.cgroupRoot = init.cgroupRoot
    this.mapFds = init.mapFds
    this.linkFds = init.linkFds
    this.progIds = init.progIds
    this.cpus = native.numPossibleCpus()
  }

  /**
   * Loads, configures, pins and attaches interception at cgroupRoot; or, when pinDir already
   * holds a complete install attached there, adopts it (same maps, links never detached),
   * swaps in any program whose code changed (see updatedPrograms) and rewrites the settings.
   * A partial install (e.g. a crash half-way through, or a new version that adds a map) is
   * removed and redone; an install attached elsewhere or with other map layouts is refused.
   */
  static open(options: InterceptionOptions): NodeInterception {
    const pinDir = resolve(options.pinDir)
    const cgroupRoot = resolve(options.cgroupRoot)
    const settings = resolveSettings(options) // fail on bad settings before touching the kernel
    if (!isOnBpfFs(pinDir)) {
      throw new BpfError(`interception: pin directory ${pinDir} is not on a BPF filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or choose a pinDir under it`)
    }
    let cgroupId: bigint
    try {
      cgroupId = cgroupIdOf(cgroupRoot)
    } catch (error) {
      throw new BpfError(`interception: cgroup root ${cgroupRoot} is not usable: ${(error as Error).message}; it must be a cgroup v2 directory (create it first)`, { cause: error })
    }
    const paths = pinPaths(pinDir)
    const linksPinned = attachPoints.map((point) => existsSync(join(paths.links, point)))
    const mapsPinned = mapKeys.map((key) => existsSync(join(paths.maps, maps[key].name)))
    const mapProgramsPinned = mapAttachPoints.map((point) => existsSync(join(paths.progs, point)))
    let interception: NodeInterception
    if (linksPinned.every(Boolean) && mapsPinned.every(Boolean) && mapProgramsPinned.every(Boolean)) {
      interception = NodeInterception.adopt(pinDir, cgroupRoot, cgroupId, options.objectPath ?? defaultObjectPath)
    } else {
      if (existsSync(pinDir)) NodeInterception.uninstall(pinDir) // partial: start clean
      interception = NodeInterception.install(pinDir, cgroupRoot, options.objectPath ?? defaultObjectPath, settings)
    }
    if (interception.adopted) {
      try {
        interception.writeSettings(settings)
      } catch (error) {
        interception.close()
        throw error
      }
    }
    return interception
  }

  private static adopt(pinDir: string, cgroupRoot: string, cgroupId: bigint, objectPath: string): NodeInterception {
    const paths = pinPaths(pinDir)
    const opened: number[] = []
    try {
      const mapFds = {} as Record<MapKey, number>
      for (const key of mapKeys) {
        const fd = native.objGet(join(paths.maps, maps[key].name))
        opened.push(fd)
        mapFds[key] = fd
        checkMapLayout(fd, maps[key], `pinned map ${join(paths.maps, maps[key].name)}`)
      }
      const linkFds = {} as Record<AttachPoint, number>
      const progIds = {} as Record<AttachPoint | MapAttachPoint, number>
      for (const point of mapAttachPoints) {
        const fd = native.objGet(join(paths.progs, point))
        try {
          progIds[point] = native.progInfo(fd).id
        } finally {
          closeQuietly(fd)
        }
      }
      for (const point of attachPoints) {
        const path = join(paths.links, point)
        const fd = native.objGet(path)
        opened.push(fd)
        const info = native.linkInfo(fd)
        if (info.cgroupId !== cgroupId) {
          throw new BpfError(
            `interception: the install pinned at ${pinDir} is attached to cgroup id ${info.cgroupId ?? 'none'}, not ${cgroupRoot} (id ${cgroupId}); uninstall it first (NodeInterception.uninstall / weft node --uninstall) to move it`,
          )
        }
        linkFds[point] = fd
        progIds[point] = info.progId
      }
      const updatedPrograms = NodeInterception.updatePrograms(pinDir, objectPath, mapFds, linkFds, progIds)
      return new NodeInterception({ adopted: true, updatedPrograms, pinDir, cgroupRoot, mapFds, linkFds, progIds })
    } catch (error) {
      for (const fd of opened) closeQuietly(fd)
      throw error
    }
  }

  /**
   * An adopted install keeps its maps and links; if the object on disk has different code
   * for a program (a new weft version), the new program is loaded against the pinned maps
   * and swapped in under the existing link (bpf_link_update): interception never lapses. A map
   * program (the stream verdict) is attached to its pinned map again, which replaces it for the
   * sockets joined from then on.
   * Fills progIds with the programs now attached; returns the attach points it updated.
   */
  private static updatePrograms(
    pinDir: string,
    objectPath: string,
    mapFds: Record<MapKey, number>,
    linkFds: Record<AttachPoint, number>,
    progIds: Record<AttachPoint | MapAttachPoint, number>,
  ): Array<AttachPoint | MapAttachPoint> {
    const paths = pinPaths(pinDir)
    const reuse: Record<string, number> = {}
    for (const key of mapKeys) reuse[maps[key].name] = mapFds[key]
    let object
    try {
      object = native.openAndLoadObject(objectPath, reuse)
    } catch (error) {
      const bpfError = BpfError.from(error)
      bpfError.message = `interception: loading ${objectPath} against the pinned maps in ${pinDir} failed (the pinned programs stay attached): ${bpfError.message}`
      throw bpfError
    }
    const updated: Array<AttachPoint | MapAttachPoint> = []
    try {
      for (const point of [...attachPoints, ...mapAttachPoints]) {
        const cName = point in programs ? programs[point as AttachPoint].cName : mapPrograms[point as MapAttachPoint].cName
        const newFd = object.programs[cName]
        if (newFd === undefined) throw new BpfError(`interception: ${objectPath} has no program "${cName}"; rebuild it`)
        const fresh = native.progInfo(newFd)
        const pinPath = join(paths.progs, point)
        let current: { id: number; tag: string } | undefined
        if (existsSync(pinPath)) {
          const pinnedFd = native.objGet(pinPath)
          try {
            current = native.progInfo(pinnedFd)
          } finally {
            closeQuietly(pinnedFd)
          }
        }
        if (current && current.id === progIds[point] && current.tag === fresh.tag) continue
        if (point in mapPrograms) {
          const spec = mapPrograms[point as MapAttachPoint]
          native.progAttachMap(newFd, mapFds[spec.map], spec.attachType)
        } else {
          native.linkUpdate(linkFds[point as AttachPoint], newFd)
        }
        if (existsSync(pinPath)) unlinkSync(pinPath)
        native.objPin(newFd, pinPath)
        progIds[point] = fresh.id
        updated.push(point)
      }
    } finally {
      for (const fd of [...Object.values(object.programs), ...Object.values(object.maps)]) closeQuietly(fd)
    }
    return updated
  }

  private static install(pinDir: string, cgroupRoot: string, objectPath: string, settings: ReturnType<typeof resolveSettings>): NodeInterception {
    const paths = pinPaths(pinDir)
    let object
    try {
      object = native.openAndLoadObject(objectPath)
    } catch (error) {
      const bpfError = BpfError.from(error)
      bpfError.message = `interception: loading ${objectPath} failed (build it with: bash scripts/setup.sh --only bpf): ${bpfError.message}`
      throw bpfError
    }
    const toClose = [...Object.values(object.programs), ...Object.values(object.maps)]
    let cgroupFd: number | undefined
    const linkFds = {} as Record<AttachPoint, number>
    let pinned = false
    try {
      const mapFds = {} as Record<MapKey, number>
      for (const key of mapKeys) {
        const fd = object.maps[maps[key].name]
        if (fd === undefined) throw new BpfError(`interception: ${objectPath} has no map "${maps[key].name}" (has: ${Object.keys(object.maps).join(', ')}); rebuild it`)
        checkMapLayout(fd, maps[key], `map ${maps[key].name} in ${objectPath}`)
        mapFds[key] = fd
      }
      const progFds = {} as Record<AttachPoint | MapAttachPoint, number>
      const progIds = {} as Record<AttachPoint | MapAttachPoint, number>
      for (const point of [...attachPoints, ...mapAttachPoints]) {
        const cName = point in programs ? programs[point as AttachPoint].cName : mapPrograms[point as MapAttachPoint].cName
        const fd = object.programs[cName]
        if (fd === undefined) throw new BpfError(`interception: ${objectPath} has no program "${cName}" (has: ${Object.keys(object.programs).join(', ')}); rebuild it`)
        progFds[point] = fd
        progIds[point] = native.progInfo(fd).id
      }

      // Configure before attaching, so the programs never run on empty settings.
      const interception = new NodeInterception({ adopted: false, updatedPrograms: [], pinDir, cgroupRoot, mapFds, linkFds, progIds })
      interception.writeSettings(settings)

      pinned = true
      for (const dir of [paths.maps, paths.progs, paths.links]) mkdirSync(dir, { recursive: true })
      for (const key of mapKeys) native.objPin(mapFds[key], join(paths.maps, maps[key].name))
      for (const point of [...attachPoints, ...mapAttachPoints]) native.objPin(progFds[point], join(paths.progs, point))
      // The stream verdict goes with its map (no socket is in it yet), before anything is attached.
      for (const point of mapAttachPoints) native.progAttachMap(progFds[point], mapFds[mapPrograms[point].map], mapPrograms[point].attachType)

      cgroupFd = openSync(cgroupRoot, constants.O_RDONLY | constants.O_DIRECTORY)
      for (const point of attachPoints) {
        linkFds[point] = native.linkCreateCgroup(progFds[point], cgroupFd, programs[point].attachType)
        native.objPin(linkFds[point], join(paths.links, point))
      }
      closeSync(cgroupFd)
      for (const point of [...attachPoints, ...mapAttachPoints]) closeQuietly(progFds[point]) // the links and maps hold the programs
      return interception
    } catch (error) {
      if (cgroupFd !== undefined) closeSync(cgroupFd)
      for (const fd of Object.values(linkFds)) {
        try {
          native.linkDetach(fd)
        } catch {
          // detaching is best effort here; closing the fd below releases the link anyway
        }
        closeQuietly(fd)
      }
      for (const fd of toClose) closeQuietly(fd)
      if (pinned) NodeInterception.uninstall(pinDir)
      throw error
    }
  }

  /** Replaces the proxy address, intercept/bypass rules and excluded ports. */
  applySettings(settings: InterceptionSettings): void {
    this.writeSettings(resolveSettings(settings))
  }

  private writeSettings(settings: ReturnType<typeof resolveSettings>): void {
    this.assertOpen()
    // Add and update first, then remove what is stale: no moment without the rules that stay.
    const rulesFd = this.mapFds.interceptRules
    for (const { key, action } of settings.rules.values()) native.mapUpdate(rulesFd, key, maps.interceptRules.encodeValue(action))
    for (const key of native.mapKeys(rulesFd, maps.interceptRules.keySize)) {
      if (!settings.rules.has(key.toString('hex'))) native.mapDelete(rulesFd, key)
    }
    const portsFd = this.mapFds.excludedPorts
    for (const key of settings.ports.values()) native.mapUpdate(portsFd, key, maps.excludedPorts.encodeValue(1))
    for (const key of native.mapKeys(portsFd, maps.excludedPorts.keySize)) {
      if (!settings.ports.has(key.toString('hex'))) native.mapDelete(portsFd, key)
    }
    native.mapUpdate(this.mapFds.proxyConfig, maps.proxyConfig.encodeKey(0), settings.proxy)
  }

  /** Makes the enrolled set exactly `ids` (cgroup v2 ids, see cgroupIdOf). */
  setEnrolledCgroups(ids: Iterable<bigint>): void {
    this.assertOpen()
    makeMapEqual(this.mapFds.enrolledCgroups, maps.enrolledCgroups, new Set<bigint>(ids), 0)
  }

  enrolledCgroups(): bigint[] {
    this.assertOpen()
    return native.mapKeys(this.mapFds.enrolledCgroups, maps.enrolledCgroups.keySize).map((key) => maps.enrolledCgroups.decodeKey(key))
  }

  /**
   * Makes the strict set exactly `ids` (cgroup v2 ids): sockets in these cgroups, or below
   * them, accept new TCP connections only from the mesh sources (setMeshSources), loopback and
   * themselves. The rest is dropped in the kernel (cgroup_skb/ingress) and counted.
   */
  setStrictCgroups(ids: Iterable<bigint>): void {
    this.assertOpen()
    makeMapEqual(this.mapFds.strictCgroups, maps.strictCgroups, new Set<bigint>(ids), 0)
  }

  strictCgroups(): bigint[] {
    this.assertOpen()
    return native.mapKeys(this.mapFds.strictCgroups, maps.strictCgroups.keySize).map((key) => maps.strictCgroups.decodeKey(key))
  }

  /**
   * Makes the mesh sources exactly `ips` (IPv4): the addresses strict pods accept new
   * connections from, i.e. this node's proxy ip (the proxy connects to pods from it) and node
   * ip (the kubelet's probes). Every address is checked before the map is touched.
   */
  setMeshSources(ips: Iterable<string>): void {
    this.assertOpen()
    const wanted = new Set<string>()
    for (const ip of ips) wanted.add(maps.meshSources.decodeKey(maps.meshSources.encodeKey(ip))) // normalised, throws on a bad one
    makeMapEqual(this.mapFds.meshSources, maps.meshSources, wanted, 1)
  }

  meshSources(): string[] {
    this.assertOpen()
    return native.mapKeys(this.mapFds.meshSources, maps.meshSources.keySize).map((key) => maps.meshSources.decodeKey(key))
  }

  /**
   * The original destination of a redirected connection, by the accepted socket's peer
   * address (the pod's ip and port), removed from the map as it is taken. undefined when
   * there is none (not redirected, already taken, or evicted).
   */
  takeOriginalDestination(peerIp: string, peerPort: number): OriginalDestination | undefined {
    this.assertOpen()
    const layout = maps.dstByTuple
    const key = layout.encodeKey({ ip: peerIp, port: peerPort })
    const fd = this.mapFds.dstByTuple
    if (lookupAndDeleteWorks) {
      try {
        const value = native.mapLookupAndDelete(fd, key, layout.valueSize)
        return value ? layout.decodeValue(value) : undefined
      } catch (error) {
        // Hash maps gained BPF_MAP_LOOKUP_AND_DELETE_ELEM in 5.14; older kernels say so here.
        if (!(error instanceof BpfError) || !['EINVAL', 'ENOTSUPP', 'EOPNOTSUPP'].includes(error.code ?? '') && error.errno !== 524) throw error
        lookupAndDeleteWorks = false
      }
    }
    const value = native.mapLookup(fd, key, layout.valueSize)
    if (!value) return undefined
    native.mapDelete(fd, key)
    return layout.decodeValue(value)
  }

  /**
   * The L4 fast path: joins two connected TCP sockets (by fd) in the kernel, so what each
   * receives is sent out of the other by the stream verdict, never reaching user space. The
   * caller must first have taken everything their receive queues held (drainReceiveQueue) and
   * written it on; afterwards kickReceiveQueue() sends on what arrived in between. Returns both
   * sockets' cookies, for splicedBytes() and releaseSockets(). Either both are joined or neither.
   */
  joinSockets(fdA: number, fdB: number): [bigint, bigint] {
    this.assertOpen()
    const cookieA = native.getSocketCookie(fdA)
    const cookieB = native.getSocketCookie(fdB)
    const { splicePeers, spliceSockets, spliceBytes } = maps
    const zero = spliceBytes.encodeValue(0n)
    try {
      native.mapUpdate(this.mapFds.spliceBytes, spliceBytes.encodeKey(cookieA), zero)
      native.mapUpdate(this.mapFds.spliceBytes, spliceBytes.encodeKey(cookieB), zero)
      // Each socket's peer first: a socket in splice_socks runs the verdict, which must find it.
      native.mapUpdate(this.mapFds.splicePeers, splicePeers.encodeKey(cookieA), splicePeers.encodeValue(fdB))
      native.mapUpdate(this.mapFds.splicePeers, splicePeers.encodeKey(cookieB), splicePeers.encodeValue(fdA))
      native.mapUpdate(this.mapFds.spliceSockets, spliceSockets.encodeKey(cookieA), spliceSockets.encodeValue(fdA))
      native.mapUpdate(this.mapFds.spliceSockets, spliceSockets.encodeKey(cookieB), spliceSockets.encodeValue(fdB))
    } catch (error) {
      this.releaseSockets([cookieA, cookieB])
      throw error
    }
    return [cookieA, cookieB]
  }

  /** Payload bytes the stream verdict sent on from the socket with this cookie (0n when unknown). */
  splicedBytes(cookie: bigint): bigint {
    this.assertOpen()
    const value = native.mapLookup(this.mapFds.spliceBytes, maps.spliceBytes.encodeKey(cookie), maps.spliceBytes.valueSize)
    return value ? maps.spliceBytes.decodeValue(value) : 0n
  }

  /** Removes joined sockets' entries (a closed socket has left the sockhashes already). */
  releaseSockets(cookies: bigint[]): void {
    if (this.closed) return
    for (const cookie of cookies) {
      for (const key of ['spliceSockets', 'splicePeers', 'spliceBytes'] as const) {
        try {
          native.mapDelete(this.mapFds[key], maps[key].encodeKey(cookie))
        } catch {
          // gone already
        }
      }
    }
  }

  /** The programs' counters, summed over CPUs. */
  counters(): InterceptionCounters {
    this.assertOpen()
    const result = {} as InterceptionCounters
    for (const [name, index] of Object.entries(counterIndex) as [CounterName, number][]) {
      const perCpu = native.mapLookupPercpu(this.mapFds.counters, maps.counters.encodeKey(index), maps.counters.valueSize) ?? []
      result[name] = perCpu.reduce((sum, buffer) => sum + maps.counters.decodeValue(buffer), 0n)
    }
    return result
  }

  /** Kernel program ids of the attached programs (stable across adoption). */
  programIds(): Record<AttachPoint | MapAttachPoint, number> {
    return { ...this.progIds }
  }

  /** Kernel link ids of the cgroup attachments (stable across adoption and program updates). */
  linkIds(): Record<AttachPoint, number> {
    this.assertOpen()
    const result = {} as Record<AttachPoint, number>
    for (const point of attachPoints) result[point] = native.linkInfo(this.linkFds[point]).id
    return result
  }

  /** Kernel map ids, by the map's key in layout.ts (for bpftool and debugging). */
  mapIds(): Record<MapKey, number> {
    this.assertOpen()
    const result = {} as Record<MapKey, number>
    for (const key of mapKeys) result[key] = native.mapInfo(this.mapFds[key]).id
    return result
  }

  /** Closes this process's fds; the pins keep interception attached. Idempotent. */
  close(): void {
    if (this.closed) return
    this.closed = true
    for (const fd of [...Object.values(this.mapFds), ...Object.values(this.linkFds)]) closeQuietly(fd)
  }

  /** Detaches the links, unpins everything and removes pinDir. No error when it is absent. */
  static uninstall(pinDir: string): void {
    const dir = resolve(pinDir)
    if (!existsSync(dir)) return
    if (!isOnBpfFs(dir)) throw new BpfError(`interception: refusing to remove ${dir}: it is not on a BPF filesystem`)
    const { links } = pinPaths(dir)
    if (existsSync(links)) {
      for (const name of readdirSync(links)) {
        const fd = native.objGet(join(links, name))
        try {
          // Detach now, even if another process still holds the link open.
          native.linkDetach(fd)
        } finally {
          closeQuietly(fd)
        }
      }
    }
    rmSync(dir, { recursive: true, force: true })
  }

  private assertOpen(): void {
    if (this.closed) throw new BpfError(`interception at ${this.pinDir}: already closed`)
  }
}

/**
 * Makes a set-like map's keys exactly `wanted` (each with `value`): adds what is missing
 * first, then removes what is stale, so members that stay never blink.
 */
function makeMapEqual<K>(fd: number, layout: MapLayout<K, number>, wanted: Set<K>, value: number): void {
  for (const key of wanted) native.mapUpdate(fd, layout.encodeKey(key), layout.encodeValue(value))
  for (const key of native.mapKeys(fd, layout.keySize)) {
    if (!wanted.has(layout.decodeKey(key))) native.mapDelete(fd, key)
  }
}

/** Throws when a kernel map does not have the type and key/value sizes layout.ts declares. */
function checkMapLayout(fd: number, layout: MapLayout<unknown, unknown>, what: string): void {
  const info = native.mapInfo(fd)
  const problems: string[] = []
  if (info.type !== layout.type) problems.push(`type ${info.type}, expected ${layout.type}`)
  if (info.keySize !== layout.keySize) problems.push(`key size ${info.keySize}, expected ${layout.keySize}`)
  if (info.valueSize !== layout.valueSize) problems.push(`value size ${info.valueSize}, expected ${layout.valueSize}`)
  if (problems.length > 0) {
    throw new BpfError(`interception: ${what} has ${problems.join(', ')} (src/bpf/layout.ts and bpf/weft_maps.h disagree, or the pinned install is from another weft version: uninstall it and start again)`)
  }
}
