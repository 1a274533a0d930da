// The node daemon's configuration: one type, every field documented with its default.
// `weft node --help` is generated from the same table, so the two cannot drift.
import { parseArgs } from 'node:util'
import { isIPv4 } from 'node:net'
import { resolve } from 'node:path'
import { parseIpv4Cidr } from './resources/net.ts'

export interface NodeConfig {
  /** This node's name; status, metrics and the default pin directory carry it. Required. */
  name: string
  /** The address other nodes' proxies reach this node on (the inbound tunnel listens here). Required. */
  nodeIp: string
  /** The address enrolled pods' connections are redirected to (a local address of this node). Required. */
  proxyIp: string
  /** Outbound listener: redirected pod connections arrive here. Default 15001. */
  outboundPort: number
  /** Inbound tunnel listener (HTTP/2 CONNECT over mutual TLS from other nodes). Default 15008. */
  inboundPort: number
  /** Admin listener: /healthz, /readyz, /metrics, /debug/destinations, /debug/certs. Default 15020. */
  adminPort: number
  /**
   * The cgroup v2 directory that holds the node's pods; the BPF programs are attached here. Required.
   * When it is the kubelet's (`kubepods.slice`, `kubepods`), pods' cgroups are found from their UID
   * and QoS class (src/k8s/kubelet-cgroups.ts) instead of the weft.dev/cgroup annotation.
   */
  cgroupRoot: string
  /** Where programs, maps and links are pinned (bpffs). Default /sys/fs/bpf/weft/<name>. */
  pinDir: string
  /** The compiled BPF object. Default build/bpf/weft.bpf.o in the weft checkout. */
  bpfObject: string | undefined
  /** Destination ranges whose connections are intercepted (repeatable). Default none: nothing is intercepted. */
  interceptCidrs: string[]
  /** Destination ranges carved out of the intercepted ones (repeatable). Default none. */
  bypassCidrs: string[]
  /** Destination ports never intercepted (repeatable). Default none. */
  excludedPorts: number[]
  /** NATS connection (URL and credentials): flags, then WEFT_NATS_* variables, then the current context. */
  nats: { url: string | undefined; creds: string | undefined; context: string | undefined }
  /** Service VIPs live in this range: a Service's clusterIP must be inside it; it is always intercepted. Default 198.19.0.0/16. */
  vipCidr: string
  /** The SPIFFE trust domain of workload identities (spiffe://<domain>/ns/<ns>/sa/<sa>); must match weft control's. Default cluster.local. */
  trustDomain: string
  /** Republish this node's status this often even when nothing changed. Default 5000. */
  statusIntervalMs: number
  /** Only follow configuration and report status: no BPF, no listeners (the convergence benchmark runs many such nodes). */
  configOnly: boolean
  /** Close a forwarded connection after this long with no bytes either way. Default 3600000 (1 h). */
  idleTimeoutMs: number
  /**
   * The L4 fast path: same-node opaque TCP, once accepted and authorized, is joined in the kernel
   * (sockhash + sk_skb stream verdict) so its bytes no longer cross the proxy. Default on (`--no-l4-fast-path` turns it off).
   */
  l4FastPath: boolean
  /** On SIGTERM, how long to let open connections finish before closing them. Default 10000. */
  drainTimeoutMs: number
  /** Connecting to a destination (or opening a tunnel stream) fails after this long. Default 5000. */
  connectTimeoutMs: number
  /** Remove this node's BPF programs, links and maps (detaching interception) and exit. */
  uninstall: boolean
  /**
   * Where the L7 proxy writes access log lines (JSON, `"type":"access"`): `stdout` (shared with
   * the daemon's own log lines), `off`, or an absolute file path (appended to). Default stdout.
   */
  accessLog: string
  /** The fraction of L7 requests written to the access log, 0 to 1. Default 1 (every request). */
  accessLogSample: number
}

export class ConfigError extends Error {}

/** The defaults the field comments above and `--help` state. */
export const DEFAULTS = {
  outboundPort: 15001, inboundPort: 15008, adminPort: 15020, vipCidr: '198.19.0.0/16', trustDomain: 'cluster.local',
  idleTimeoutMs: 3_600_000, drainTimeoutMs: 10_000, connectTimeoutMs: 5_000, statusIntervalMs: 5_000,
  // Every request on stdout is what Envoy/Istio users expect of a demo mesh; a busy node samples.
  accessLog: 'stdout', accessLogSample: 1,
} as const

interface OptionSpec { type: 'string' | 'boolean'; multiple?: boolean; help: string; arg?: string }
export const nodeOptionSpecs: Record<string, OptionSpec> = {
  name: { type: 'string', arg: 'NAME', help: 'this node\'s name (required)' },
  'node-ip': { type: 'string', arg: 'IP', help: 'address other nodes reach this node on; the inbound tunnel listens here (required)' },
  'proxy-ip': { type: 'string', arg: 'IP', help: 'local address enrolled pods are redirected to (required)' },
  'outbound-port': { type: 'string', arg: 'PORT', help: `outbound listener for redirected connections (default ${DEFAULTS.outboundPort})` },
  'inbound-port': { type: 'string', arg: 'PORT', help: `inbound mutual-TLS HTTP/2 tunnel listener (default ${DEFAULTS.inboundPort})` },
  'admin-port': { type: 'string', arg: 'PORT', help: `admin listener: /healthz /readyz /metrics /debug/destinations /debug/certs (default ${DEFAULTS.adminPort})` },
  'cgroup-root': { type: 'string', arg: 'DIR', help: 'cgroup v2 directory holding the node\'s pods; BPF attaches here (required). The kubelet\'s kubepods.slice or kubepods: each pod\'s cgroup is found from its UID and QoS class' },
  'pin-dir': { type: 'string', arg: 'DIR', help: 'bpffs directory for pins (default /sys/fs/bpf/weft/<name>)' },
  'bpf-object': { type: 'string', arg: 'FILE', help: 'compiled BPF object (default build/bpf/weft.bpf.o)' },
  'intercept-cidr': { type: 'string', multiple: true, arg: 'CIDR', help: 'intercept connections to this range (repeatable)' },
  'bypass-cidr': { type: 'string', multiple: true, arg: 'CIDR', help: 'never intercept this range (repeatable)' },
  'exclude-port': { type: 'string', multiple: true, arg: 'PORT', help: 'never intercept this destination port (repeatable)' },
  nats: { type: 'string', arg: 'URL', help: 'NATS server(s) carrying the configuration (default: WEFT_NATS_URL or the current context)' },
  creds: { type: 'string', arg: 'FILE', help: 'NATS credentials file, JSON {servers?, user, pass} (default: WEFT_NATS_USER/PASSWORD or the context)' },
  context: { type: 'string', arg: 'NAME', help: 'use this context from the weft config file' },
  'vip-cidr': { type: 'string', arg: 'CIDR', help: `service VIP range; always intercepted (default ${DEFAULTS.vipCidr})` },
  'trust-domain': { type: 'string', arg: 'DOMAIN', help: `SPIFFE trust domain of workload identities; must match weft control's (default ${DEFAULTS.trustDomain})` },
  'status-interval': { type: 'string', arg: 'MS', help: `republish status at least this often (default ${DEFAULTS.statusIntervalMs})` },
  'config-only': { type: 'boolean', help: 'follow configuration and report status only: no BPF, no listeners' },
  'l4-fast-path': { type: 'boolean', help: 'join same-node opaque TCP connections in the kernel once accepted and authorized (sockmap), so their bytes skip the proxy (default on; --no-l4-fast-path keeps every byte in the proxy)' },
  'idle-timeout': { type: 'string', arg: 'MS', help: `close connections idle this long (default ${DEFAULTS.idleTimeoutMs})` },
  'drain-timeout': { type: 'string', arg: 'MS', help: `on SIGTERM, let connections finish this long (default ${DEFAULTS.drainTimeoutMs})` },
  'connect-timeout': { type: 'string', arg: 'MS', help: `upstream connect / tunnel stream timeout (default ${DEFAULTS.connectTimeoutMs})` },
  'access-log': { type: 'string', arg: 'DEST', help: `L7 access log: stdout, off, or a file PATH (appended); one JSON line per request, "type":"access" (default ${DEFAULTS.accessLog}); a logged request costs ~3 µs of CPU on a 2-vCPU VM, about 4× the metrics (npm run bench:telemetry; docs/benchmarks.md)` },
  'access-log-sample': { type: 'string', arg: 'RATE', help: `fraction of L7 requests logged, 0 to 1 (default ${DEFAULTS.accessLogSample}); an unlogged request costs one random draw, so 0.01 on a busy node makes logging ~free` },
  uninstall: { type: 'boolean', help: 'detach and unpin this node\'s BPF programs and maps, then exit' },
  help: { type: 'boolean', help: 'show this help' },
}

export function nodeHelp(): string {
  const lines = ['usage: weft node --name NAME --node-ip IP --proxy-ip IP --cgroup-root DIR [--nats URL --creds FILE] [options]',
    '       weft node --name NAME --config-only [--nats URL --creds FILE]',
    '       weft node --name NAME [--pin-dir DIR] --uninstall', '',
    'Runs the node daemon: loads (or adopts) the eBPF interception, follows the mesh configuration on',
    'NATS, and proxies enrolled pods\' connections. Status goes to weft.status.<name>.', '',
    'options:']
  for (const [name, spec] of Object.entries(nodeOptionSpecs)) {
    const flag = `--${name}${spec.arg ? ' ' + spec.arg : ''}`
    lines.push(`  ${flag.padEnd(26)} ${spec.help}`)
  }
  return lines.join('\n')
}

function port(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(`--${flag}: "${value}" is not a port (1-65535)`)
  return n
}
function millis(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`--${flag}: "${value}" is not a number of milliseconds`)
  return n
}
export function checkCidr(value: string, flag: string): string {
  if (parseIpv4Cidr(value) === undefined) throw new ConfigError(`--${flag}: "${value}" is not an IPv4 CIDR like 198.18.0.0/15`)
  return value
}
/** `stdout`, `off`, or a file path (made absolute: the daemon may change directory, and errors should name the real file). */
export function parseAccessLog(value: string | undefined): string {
  if (value === undefined) return DEFAULTS.accessLog
  if (value === 'stdout' || value === 'off') return value
  if (value === '' || value.endsWith('/')) throw new ConfigError(`--access-log: "${value}" is not stdout, off or a file path`)
  return resolve(value)
}
export function parseSampleRate(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) {
    throw new ConfigError(`--${flag}: "${value}" is not a sample rate; give a number from 0 (log nothing) to 1 (log every request), e.g. 0.01 for 1 in 100`)
  }
  return n
}
function ipv4(value: string | undefined, flag: string): string {
  if (value === undefined) throw new ConfigError(`--${flag} is required (see weft node --help)`)
  if (!isIPv4(value)) throw new ConfigError(`--${flag}: "${value}" is not an IPv4 address`)
  return value
}
/** A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_' (the SPIFFE ID spec). */
function trustDomain(value: string | undefined): string {
  if (value === undefined) return DEFAULTS.trustDomain
  if (!/^[a-z0-9._-]{1,255}$/.test(value)) throw new ConfigError(`--trust-domain: "${value}" is not a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_'), e.g. cluster.local`)
  return value
}
function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new ConfigError(`--${flag} is required (see weft node --help)`)
  return value
}

export type ParsedNodeArgs = { help: true } | { help: false; config: NodeConfig }

export function parseNodeArgs(argv: string[]): ParsedNodeArgs {
  let values: Record<string, string | string[] | boolean | undefined>
  try {
    const options = Object.fromEntries(Object.entries(nodeOptionSpecs).map(([k, s]) => [k, { type: s.type, multiple: s.multiple ?? false }]))
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false, allowNegative: true }).values as typeof values
  } catch (err) {
    throw new ConfigError(`${(err as Error).message.split('\n')[0]} (see weft node --help)`)
  }
  if (values.help === true) return { help: true }
  const str = (k: string): string | undefined => values[k] as string | undefined
  const list = (k: string): string[] => (values[k] as string[] | undefined) ?? []
  const name = required(str('name'), 'name')
  if (!/^[a-z0-9][a-z0-9.-]{0,62}$/.test(name)) throw new ConfigError(`--name: "${name}" must be lowercase letters, digits, '.' and '-'`)
  const pinDir = str('pin-dir') ?? `/sys/fs/bpf/weft/${name}`
  const uninstall = values.uninstall === true
  const configOnly = values['config-only'] === true
  // Only a daemon that intercepts needs to know its addresses and cgroup.
  const intercepting = !uninstall && !configOnly
  return {
    help: false,
    config: {
      name,
      nodeIp: intercepting ? ipv4(str('node-ip'), 'node-ip') : str('node-ip') ?? '',
      proxyIp: intercepting ? ipv4(str('proxy-ip'), 'proxy-ip') : str('proxy-ip') ?? '',
      outboundPort: port(str('outbound-port'), 'outbound-port', DEFAULTS.outboundPort),
      inboundPort: port(str('inbound-port'), 'inbound-port', DEFAULTS.inboundPort),
      adminPort: port(str('admin-port'), 'admin-port', DEFAULTS.adminPort),
      cgroupRoot: intercepting ? required(str('cgroup-root'), 'cgroup-root') : '',
      pinDir,
      bpfObject: str('bpf-object'),
      interceptCidrs: list('intercept-cidr').map((c) => checkCidr(c, 'intercept-cidr')),
      bypassCidrs: list('bypass-cidr').map((c) => checkCidr(c, 'bypass-cidr')),
      excludedPorts: list('exclude-port').map((p) => port(p, 'exclude-port', 0)),
      nats: { url: str('nats'), creds: str('creds'), context: str('context') },
      vipCidr: checkCidr(str('vip-cidr') ?? DEFAULTS.vipCidr, 'vip-cidr'),
      trustDomain: trustDomain(str('trust-domain')),
      statusIntervalMs: millis(str('status-interval'), 'status-interval', DEFAULTS.statusIntervalMs),
      configOnly,
      idleTimeoutMs: millis(str('idle-timeout'), 'idle-timeout', DEFAULTS.idleTimeoutMs),
      l4FastPath: values['l4-fast-path'] !== false,
      drainTimeoutMs: millis(str('drain-timeout'), 'drain-timeout', DEFAULTS.drainTimeoutMs),
      connectTimeoutMs: millis(str('connect-timeout'), 'connect-timeout', DEFAULTS.connectTimeoutMs),
      uninstall,
      accessLog: parseAccessLog(str('access-log')),
      accessLogSample: parseSampleRate(str('access-log-sample'), 'access-log-sample', DEFAULTS.accessLogSample),
    },
  }
}
