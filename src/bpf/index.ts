// src/bpf: the typed loader over weft's eBPF interception. The only code that imports the
// native addon; the daemon uses what this file exports.
//
//   NodeInterception.open({ pinDir, cgroupRoot, objectPath?, proxyIp, proxyPort,
//                           interceptCidrs, bypassCidrs, excludedPorts }): NodeInterception
//     load + configure + pin + attach at cgroupRoot, or adopt a complete install in pinDir
//     (.adopted === true: same maps and links, never detached; programs whose code changed
//     are swapped in place, listed in .updatedPrograms), then (re)write the settings.
//   .applySettings(settings): void            replace proxy address, rules, excluded ports
//   .setEnrolledCgroups(ids: Iterable<bigint>) make the enrolled set exactly ids
//   .enrolledCgroups(): bigint[]
//   .setStrictCgroups(ids: Iterable<bigint>)  make the strict set exactly ids (strict pods take new
//                                             connections only from mesh sources, loopback, themselves)
//   .strictCgroups(): bigint[]
//   .setMeshSources(ips: Iterable<string>)    make the mesh sources exactly ips (IPv4: proxy ip, node ip)
//   .meshSources(): string[]
//   .joinSockets(fdA, fdB): [cookieA, cookieB]  the L4 fast path: join two TCP sockets in the kernel
//   .splicedBytes(cookie): bigint             payload bytes the kernel sent on from that socket
//   .releaseSockets(cookies)                  forget joined sockets' entries
//   .takeOriginalDestination(peerIp, peerPort): { ip, port, sourceCgroupId } | undefined
//                                             by the accepted socket's peer; lookup + delete
//   .counters(): { redirected, bypassed, notEnrolled, tupleRecorded, peerRestored, proxySelf,
//                  refusedIpv6, strictDropped }
//   .programIds(): { connect4, connect6, sockops, getpeername4, getpeername6, ingress, stream_verdict }
//   .linkIds()   .mapIds()
//   .close(): void                            close fds; pins keep interception in place
//   NodeInterception.uninstall(pinDir): void  detach, unpin, remove pinDir (absent: no-op)
//
//   findCgroup2Mount(), isOnBpfFs(path), cgroupIdOf(dir), interceptionPrerequisites(): string[]
//   socketCookie(fd), setSocketMark(fd, mark), setIpTransparent(fd, on), setReusePort(fd, on),
//   originalDstOf(fd) (SO_ORIGINAL_DST), socketFd(net.Socket | net.Server)
//   drainReceiveQueue(fd, max), tcpCounters(fd), kickReceiveQueue(fd)   (the L4 fast path)
//   BpfError { errno?, code?, verifierLog? }
//
// Map layouts live in layout.ts (mirroring bpf/weft_maps.h) and are checked against the
// kernel on open and against the object's BTF by test/bpf-layout.test.ts.
import { native } from './native.ts'

export { NodeInterception, defaultObjectPath, type InterceptionSettings, type InterceptionOptions, type InterceptionCounters } from './interception.ts'
export { findCgroup2Mount, isOnBpfFs, cgroupIdOf, interceptionPrerequisites, minimumKernel } from './system.ts'
export { BpfError } from './native.ts'
export { type OriginalDestination, type AttachPoint, type MapAttachPoint, parseIpv4Cidr } from './layout.ts'

/** SO_COOKIE: the socket's cookie, as bpf_get_socket_cookie() sees it. */
export function socketCookie(fd: number): bigint {
  return native.getSocketCookie(fd)
}
/** SO_MARK (needs CAP_NET_ADMIN). */
export function setSocketMark(fd: number, mark: number): void {
  native.setSocketMark(fd, mark)
}
/** IP_TRANSPARENT (needs CAP_NET_ADMIN). */
export function setIpTransparent(fd: number, on: boolean): void {
  native.setIpTransparent(fd, on)
}
export function setReusePort(fd: number, on: boolean): void {
  native.setReusePort(fd, on)
}
/** SO_ORIGINAL_DST: the pre-DNAT destination of a socket accepted after an iptables REDIRECT. */
export function originalDstOf(fd: number): { ip: string; port: number } {
  return native.getOriginalDst(fd)
}

/**
 * Reads, without blocking, what a socket's receive queue holds, until it is empty or `max` bytes
 * were read. Reading until empty leaves no skb half-read before joinSockets (the stream verdict
 * takes whole skbs, so a half-read one would be sent again in full).
 */
export function drainReceiveQueue(fd: number, max: number): { data: Buffer; eof: boolean; error?: string } {
  return native.recvAvailable(fd, max)
}
/** TCP_INFO's bytes received and acknowledged, and the bytes sent but not yet acknowledged (SIOCOUTQ). */
export function tcpCounters(fd: number): { bytesReceived: number; bytesAcked: number; unacked: number } {
  return native.tcpCounters(fd)
}
/**
 * Hands what arrived on a joined socket before it joined to its stream verdict: setting
 * SO_RCVLOWAT runs the socket's data-ready callback when data waits (tcp_set_rcvlowat).
 */
export function kickReceiveQueue(fd: number): void {
  native.setRcvLowat(fd, 1)
}

/**
 * The fd under a connected net.Socket or a listening net.Server (Node keeps it on the
 * internal handle); undefined when there is none (e.g. not yet connected).
 */
export function socketFd(socketOrServer: object): number | undefined {
  const handle = (socketOrServer as { _handle?: { fd?: unknown } | null })._handle
  const fd = handle?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : undefined
}
