// The typed surface of the weft_native addon (native/). Only src/bpf/ imports this file:
// the rest of weft goes through NodeInterception and the socket helpers in index.ts.
// Every call is synchronous and fd-based; every fd returned here is the caller's to close.
// Errors are rethrown as BpfError (errno, code, and for loads, the verifier log).
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

/** An error from the kernel or libbpf, naming the call and the object it was made on. */
export class BpfError extends Error {
  errno?: number
  code?: string
  /** The kernel verifier's log, when a program failed to load. */
  verifierLog?: string

  constructor(message: string, details: { errno?: number; code?: string; verifierLog?: string; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'BpfError'
    if (details.errno !== undefined) this.errno = details.errno
    if (details.code !== undefined) this.code = details.code
    if (details.verifierLog !== undefined) this.verifierLog = details.verifierLog
  }

  /** Wraps an error thrown by the addon, keeping errno/code/verifierLog. */
  static from(error: unknown): BpfError {
    if (error instanceof BpfError) return error
    if (!(error instanceof Error)) return new BpfError(String(error))
    const fields = error as Error & { errno?: unknown; code?: unknown; verifierLog?: unknown }
    const details: { errno?: number; code?: string; verifierLog?: string; cause?: unknown } = { cause: error }
    if (typeof fields.errno === 'number') details.errno = fields.errno
    if (typeof fields.code === 'string') details.code = fields.code
    if (typeof fields.verifierLog === 'string') details.verifierLog = fields.verifierLog
    return new BpfError(error.message, details)
  }
}

export type CgroupAttachType = 'connect4' | 'connect6' | 'getpeername4' | 'getpeername6' | 'sockops' | 'ingress'

export interface LoadedObject {
  /** Program fds keyed by the C function name. */
  programs: Record<string, number>
  /** Map fds keyed by map name. */
  maps: Record<string, number>
}
/** tag: the kernel's hash of the program's instructions (same code, same tag; map fds aside). */
export interface ProgInfo { id: number; name: string; type: string; tag: string }
export interface MapInfo { id: number; name: string; type: string; keySize: number; valueSize: number; maxEntries: number; flags: number }
export interface LinkInfo { id: number; progId: number; cgroupId?: bigint; attachType?: string }

export interface NativeAddon {
  /** reuseMaps: map name -> fd of an existing map to load the programs against (not created). */
  openAndLoadObject(path: string, reuseMaps?: Record<string, number>): LoadedObject
  objPin(fd: number, path: string): void
  objGet(path: string): number
  close(fd: number): void
  linkCreateCgroup(progFd: number, cgroupFd: number, attachType: CgroupAttachType): number
  /** Attaches a sockmap program to a sockmap/sockhash (BPF_PROG_ATTACH); again: replaces it for sockets added later. */
  progAttachMap(progFd: number, mapFd: number, attachType: 'stream_verdict'): void
  /** Atomically replaces the program of an attached link. */
  linkUpdate(linkFd: number, progFd: number): void
  linkDetach(linkFd: number): void
  progInfo(fd: number): ProgInfo
  mapInfo(fd: number): MapInfo
  linkInfo(fd: number): LinkInfo
  mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | null
  mapLookupAndDelete(fd: number, key: Buffer, valueSize: number): Buffer | null
  /** One Buffer of valueSize bytes per possible CPU; null when the key is absent. */
  mapLookupPercpu(fd: number, key: Buffer, valueSize: number): Buffer[] | null
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void
  /** false when the key was absent. */
  mapDelete(fd: number, key: Buffer): boolean
  mapKeys(fd: number, keySize: number): Buffer[]
  numPossibleCpus(): number
  getSocketCookie(fd: number): bigint
  setSocketMark(fd: number, mark: number): void
  setIpTransparent(fd: number, on: boolean): void
  setReusePort(fd: number, on: boolean): void
  getOriginalDst(fd: number): { ip: string; port: number }
  /** Reads what the receive queue holds (MSG_DONTWAIT) until it is empty or max bytes were read. */
  recvAvailable(fd: number, max: number): { data: Buffer; eof: boolean; error?: string }
  /** TCP_INFO's tcpi_bytes_received and tcpi_bytes_acked, and SIOCOUTQ (unacknowledged bytes queued). */
  tcpCounters(fd: number): { bytesReceived: number; bytesAcked: number; unacked: number }
  /** SO_RCVLOWAT; on TCP this also runs the data-ready callback when data waits. */
  setRcvLowat(fd: number, bytes: number): void
}

/** Where scripts/setup.sh --only native puts the addon. */
export const addonPath = fileURLToPath(new URL('../../native/build/Release/weft_native.node', import.meta.url))

let loaded: NativeAddon | undefined

function loadAddon(): NativeAddon {
  if (loaded) return loaded
  try {
    const raw = createRequire(import.meta.url)(addonPath) as NativeAddon
    // Rethrow every addon error as a BpfError, so callers can rely on one type.
    const wrapped: Record<string, unknown> = {}
    for (const [name, fn] of Object.entries(raw)) {
      if (typeof fn !== 'function') continue
      wrapped[name] = (...args: unknown[]): unknown => {
        try {
          return (fn as (...a: unknown[]) => unknown)(...args)
        } catch (error) {
          throw BpfError.from(error)
        }
      }
    }
    loaded = wrapped as unknown as NativeAddon
    return loaded
  } catch (error) {
    if (error instanceof BpfError) throw error
    throw new BpfError(`cannot load the weft native addon at ${addonPath}: ${(error as Error).message}; build it with: bash scripts/setup.sh --only native`, { cause: error })
  }
}

/** The addon, loaded on first use (so importing src/bpf never fails on a machine without it). */
export const native: NativeAddon = new Proxy({} as NativeAddon, {
  get(_target, property: string | symbol): unknown {
    return (loadAddon() as unknown as Record<string | symbol, unknown>)[property]
  },
})
