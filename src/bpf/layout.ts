// The TypeScript side of every BPF map's key and value layout, declared once and mirroring
// bpf/weft_maps.h. NodeInterception checks these sizes against the kernel's map info on
// open; test/bpf-layout.test.ts checks sizes and member offsets against the compiled
// object's BTF, so the two sides cannot drift.
//
// Byte orders (as in bpf/weft_maps.h): IPv4 addresses and the ports in tuple keys and
// original-destination values are network order; the excluded_ports key is a host-order
// u16; cgroup ids, cookies and counters are host-order (little-endian on x86) u64.
import { isIPv4 } from 'node:net'

import { parseIpv4Cidr as parseCidrText } from '../config/resources/net.ts'
import type { CgroupAttachType } from './native.ts'

/** A C struct as BTF describes it: total size and each member's byte offset and size. */
export interface StructLayout {
  /** The struct's name in bpf/weft_maps.h */
  cName: string
  size: number
  fields: Record<string, { offset: number; size: number }>
}

export const structs = {
  lpm_v4_key: { cName: 'lpm_v4_key', size: 8, fields: { prefixlen: { offset: 0, size: 4 }, addr: { offset: 4, size: 4 } } },
  proxy_v4: { cName: 'proxy_v4', size: 8, fields: { addr: { offset: 0, size: 4 }, port: { offset: 4, size: 2 }, _pad: { offset: 6, size: 2 } } },
  orig_dst_v4: {
    cName: 'orig_dst_v4',
    size: 16,
    fields: { addr: { offset: 0, size: 4 }, port: { offset: 4, size: 2 }, _pad: { offset: 6, size: 2 }, cgroup_id: { offset: 8, size: 8 } },
  },
  tuple_v4_key: { cName: 'tuple_v4_key', size: 8, fields: { addr: { offset: 0, size: 4 }, port: { offset: 4, size: 2 }, _pad: { offset: 6, size: 2 } } },
} as const satisfies Record<string, StructLayout>

/** A key or value: either a named struct above or a plain integer of this many bytes. */
export type FieldType = { struct: keyof typeof structs } | { int: 2 | 4 | 8 }

export interface MapLayout<K, V> {
  name: string
  /** libbpf's name for the map type, as mapInfo reports it */
  type: string
  key: FieldType
  value: FieldType
  keySize: number
  valueSize: number
  encodeKey(key: K): Buffer
  decodeKey(buffer: Buffer): K
  encodeValue(value: V): Buffer
  decodeValue(buffer: Buffer): V
}

// --- address helpers -----------------------------------------------------------------

/** '10.1.2.3' (or '::ffff:10.1.2.3', as a dual-stack socket reports it) -> 4 bytes. */
export function ipv4ToBytes(ip: string): Buffer {
  const plain = ip.startsWith('::ffff:') ? ip.slice(7) : ip
  if (!isIPv4(plain)) throw new TypeError(`not an IPv4 address: "${ip}"`)
  return Buffer.from(plain.split('.').map(Number))
}

export function bytesToIpv4(buffer: Buffer, offset = 0): string {
  return `${buffer[offset]}.${buffer[offset + 1]}.${buffer[offset + 2]}.${buffer[offset + 3]}`
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`${what}: not a port number: ${port}`)
}

function sizeOf(type: FieldType): number {
  return 'struct' in type ? structs[type.struct].size : type.int
}

function mapLayout<K, V>(spec: Omit<MapLayout<K, V>, 'keySize' | 'valueSize'>): MapLayout<K, V> {
  return { ...spec, keySize: sizeOf(spec.key), valueSize: sizeOf(spec.value) }
}

// --- shared shapes -------------------------------------------------------------------

export interface Ipv4Prefix { prefixLength: number; ip: string }
export interface ProxyAddress { ip: string; port: number }
export interface OriginalDestination { ip: string; port: number; sourceCgroupId: bigint }
export interface SocketAddress { ip: string; port: number }

/** intercept_rules values */
export const ruleAction = { intercept: 1, bypass: 2 } as const
export type RuleAction = (typeof ruleAction)[keyof typeof ruleAction]

/** counters indexes: enum weft_counter in bpf/weft_maps.h */
export const counterIndex = {
  redirected: 0,
  bypassed: 1,
  notEnrolled: 2,
  tupleRecorded: 3,
  peerRestored: 4,
  proxySelf: 5,
  refusedIpv6: 6,
  strictDropped: 7,
} as const
export type CounterName = keyof typeof counterIndex

function encodeU32(value: number): Buffer {
  const buffer = Buffer.alloc(4)
  buffer.writeUInt32LE(value)
  return buffer
}
function encodeU64(value: bigint): Buffer {
  const buffer = Buffer.alloc(8)
  buffer.writeBigUInt64LE(value)
  return buffer
}

function encodeIpPort(ip: string, port: number, size: number): Buffer {
  checkPort(port, ip)
  const buffer = Buffer.alloc(size)
  ipv4ToBytes(ip).copy(buffer, 0)
  buffer.writeUInt16BE(port, 4) // network order
  return buffer
}

const origDstCodec = {
  encodeValue(value: OriginalDestination): Buffer {
    const buffer = encodeIpPort(value.ip, value.port, structs.orig_dst_v4.size)
    buffer.writeBigUInt64LE(value.sourceCgroupId, structs.orig_dst_v4.fields.cgroup_id.offset)
    return buffer
  },
  decodeValue(buffer: Buffer): OriginalDestination {
    return { ip: bytesToIpv4(buffer, 0), port: buffer.readUInt16BE(4), sourceCgroupId: buffer.readBigUInt64LE(8) }
  },
}

// --- the maps ------------------------------------------------------------------------

export const maps = {
  /** cgroup id -> flags (0). Daemon writes; connect4 reads. */
  enrolledCgroups: mapLayout<bigint, number>({
    name: 'enrolled_cgrps',
    type: 'hash',
    key: { int: 8 },
    value: { int: 4 },
    encodeKey: encodeU64,
    decodeKey: (buffer) => buffer.readBigUInt64LE(0),
    encodeValue: encodeU32,
    decodeValue: (buffer) => buffer.readUInt32LE(0),
  }),
  /** {prefixlen, ipv4} -> action. Daemon writes; connect4 reads. */
  interceptRules: mapLayout<Ipv4Prefix, number>({
    name: 'intercept_rules',
    type: 'lpm_trie',
    key: { struct: 'lpm_v4_key' },
    value: { int: 4 },
    encodeKey(prefix) {
      const buffer = Buffer.alloc(structs.lpm_v4_key.size)
      buffer.writeUInt32LE(prefix.prefixLength, 0) // host order
      ipv4ToBytes(prefix.ip).copy(buffer, 4)
      return buffer
    },
    decodeKey: (buffer) => ({ prefixLength: buffer.readUInt32LE(0), ip: bytesToIpv4(buffer, 4) }),
    encodeValue: encodeU32,
    decodeValue: (buffer) => buffer.readUInt32LE(0),
  }),
  /** host-order port -> 1. Daemon writes; connect4 reads. */
  excludedPorts: mapLayout<number, number>({
    name: 'excluded_ports',
    type: 'hash',
    key: { int: 2 },
    value: { int: 4 },
    encodeKey(port) {
      checkPort(port, 'excluded port')
      const buffer = Buffer.alloc(2)
      buffer.writeUInt16LE(port) // host order (x86: little-endian)
      return buffer
    },
    decodeKey: (buffer) => buffer.readUInt16LE(0),
    encodeValue: encodeU32,
    decodeValue: (buffer) => buffer.readUInt32LE(0),
  }),
  /** 0 -> the proxy's address. Daemon writes; connect4 reads. */
  proxyConfig: mapLayout<number, ProxyAddress>({
    name: 'proxy_config',
    type: 'array',
    key: { int: 4 },
    value: { struct: 'proxy_v4' },
    encodeKey: encodeU32,
    decodeKey: (buffer) => buffer.readUInt32LE(0),
    encodeValue: (proxy) => encodeIpPort(proxy.ip, proxy.port, structs.proxy_v4.size),
    decodeValue: (buffer) => ({ ip: bytesToIpv4(buffer, 0), port: buffer.readUInt16BE(4) }),
  }),
  /** socket cookie -> original destination. connect4 writes; sockops, getpeername4 read. */
  dstByCookie: mapLayout<bigint, OriginalDestination>({
    name: 'dst_by_cookie',
    type: 'lru_hash',
    key: { int: 8 },
    value: { struct: 'orig_dst_v4' },
    encodeKey: encodeU64,
    decodeKey: (buffer) => buffer.readBigUInt64LE(0),
    ...origDstCodec,
  }),
  /** pod (ip, port) -> original destination. sockops writes; the proxy reads and deletes. */
  dstByTuple: mapLayout<SocketAddress, OriginalDestination>({
    name: 'dst_by_tuple',
    type: 'lru_hash',
    key: { struct: 'tuple_v4_key' },
    value: { struct: 'orig_dst_v4' },
    encodeKey: (address) => encodeIpPort(address.ip, address.port, structs.tuple_v4_key.size),
    decodeKey: (buffer) => ({ ip: bytesToIpv4(buffer, 0), port: buffer.readUInt16BE(4) }),
    ...origDstCodec,
  }),
  /** cgroup id -> flags (0): strict pods. Daemon writes; strict ingress reads. */
  strictCgroups: mapLayout<bigint, number>({
    name: 'strict_cgrps',
    type: 'hash',
    key: { int: 8 },
    value: { int: 4 },
    encodeKey: encodeU64,
    decodeKey: (buffer) => buffer.readBigUInt64LE(0),
    encodeValue: encodeU32,
    decodeValue: (buffer) => buffer.readUInt32LE(0),
  }),
  /** IPv4 (network order) -> 1: where strict pods accept new connections from. Daemon writes; strict ingress reads. */
  meshSources: mapLayout<string, number>({
    name: 'mesh_sources',
    type: 'hash',
    key: { int: 4 },
    value: { int: 4 },
    encodeKey: (ip) => ipv4ToBytes(ip),
    decodeKey: (buffer) => bytesToIpv4(buffer, 0),
    encodeValue: encodeU32,
    decodeValue: (buffer) => buffer.readUInt32LE(0),
  }),
  /** cookie of a proxy-side socket -> the socket its bytes go out of (an fd when written). Daemon writes; the stream verdict reads. */
  splicePeers: mapLayout<bigint, number>({
    name: 'splice_peers',
    type: 'sockhash',
    key: { int: 8 },
    value: { int: 8 },
    encodeKey: encodeU64,
    decodeKey: (buffer) => buffer.readBigUInt64LE(0),
    encodeValue: (fd) => encodeU64(BigInt(fd)),
    decodeValue: (buffer) => Number(buffer.readBigUInt64LE(0)), // a lookup gives the socket's cookie
  }),
  /** cookie -> the socket itself; the stream verdict is attached here. Daemon writes. */
  spliceSockets: mapLayout<bigint, number>({
    name: 'splice_socks',
    type: 'sockhash',
    key: { int: 8 },
    value: { int: 8 },
    encodeKey: encodeU64,
    decodeKey: (buffer) => buffer.readBigUInt64LE(0),
    encodeValue: (fd) => encodeU64(BigInt(fd)),
    decodeValue: (buffer) => Number(buffer.readBigUInt64LE(0)),
  }),
  /** cookie -> payload bytes the stream verdict sent on. Daemon creates and deletes; the stream verdict adds. */
  spliceBytes: mapLayout<bigint, bigint>({
    name: 'splice_bytes',
    type: 'lru_hash',
    key: { int: 8 },
    value: { int: 8 },
    encodeKey: encodeU64,
    decodeKey: (buffer) => buffer.readBigUInt64LE(0),
    encodeValue: encodeU64,
    decodeValue: (buffer) => buffer.readBigUInt64LE(0),
  }),
  /** counter index -> u64 per CPU. Programs write; the daemon reads. */
  counters: mapLayout<number, bigint>({
    name: 'counters',
    type: 'percpu_array',
    key: { int: 4 },
    value: { int: 8 },
    encodeKey: encodeU32,
    decodeKey: (buffer) => buffer.readUInt32LE(0),
    encodeValue: encodeU64,
    decodeValue: (buffer) => buffer.readBigUInt64LE(0),
  }),
}
export type MapKey = keyof typeof maps

/** The programs in the object: attach point -> C function name and cgroup attach type. */
export const programs = {
  connect4: { cName: 'weft_connect4', attachType: 'connect4' },
  connect6: { cName: 'weft_connect6', attachType: 'connect6' },
  sockops: { cName: 'weft_sockops', attachType: 'sockops' },
  getpeername4: { cName: 'weft_getpeer4', attachType: 'getpeername4' },
  getpeername6: { cName: 'weft_getpeer6', attachType: 'getpeername6' },
  ingress: { cName: 'weft_strict_in', attachType: 'ingress' },
} as const satisfies Record<string, { cName: string; attachType: CgroupAttachType }>
export type AttachPoint = keyof typeof programs

/**
 * Programs attached to a map rather than a cgroup: attach point -> C function name, the map (a
 * key of `maps`) and the attach type. Pinned under progs/<attach point>; no link (they live as
 * long as the map).
 */
export const mapPrograms = {
  stream_verdict: { cName: 'weft_sk_verdict', map: 'spliceSockets', attachType: 'stream_verdict' },
} as const satisfies Record<string, { cName: string; map: string; attachType: 'stream_verdict' }>
export type MapAttachPoint = keyof typeof mapPrograms

/**
 * Parses '10.0.0.0/8' (or a bare address, meaning /32) into a prefix with its host bits cleared,
 * for the intercept_rules key. The CIDR syntax is the resource model's (config/resources/net.ts).
 */
export function parseIpv4Cidr(cidr: string): Ipv4Prefix {
  const text = cidr.trim()
  const parsed = parseCidrText(text.includes('/') ? text : `${text}/32`)
  if (parsed === undefined) throw new TypeError(`not an IPv4 CIDR: "${cidr}" (expected e.g. 10.96.0.0/12)`)
  const bytes = Buffer.alloc(4)
  bytes.writeUInt32BE(parsed.base, 0)
  return { prefixLength: parsed.prefix, ip: bytesToIpv4(bytes) }
}
