// IPv4 helpers for validation and the snapshot. Only IPv4: the lab and the BPF maps are IPv4.
import { isIPv4 } from 'node:net'

export interface Ipv4Cidr { readonly base: number; readonly prefix: number; readonly text: string }

export function ipv4ToNumber(ip: string): number {
  return ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0)
}

/** `a.b.c.d/n`, or undefined when the text is not one. The base need not be aligned: it is masked. */
export function parseIpv4Cidr(text: string): Ipv4Cidr | undefined {
  const match = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(text)
  if (!match || !isIPv4(match[1] ?? '')) return undefined
  const prefix = Number(match[2])
  if (prefix > 32) return undefined
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
  return { base: (ipv4ToNumber(match[1] ?? '') & mask) >>> 0, prefix, text }
}

export function cidrContains(cidr: Ipv4Cidr, ip: string): boolean {
  if (!isIPv4(ip)) return false
  const mask = cidr.prefix === 0 ? 0 : (0xffffffff << (32 - cidr.prefix)) >>> 0
  return ((ipv4ToNumber(ip) & mask) >>> 0) === cidr.base
}

export { isIPv4 }
