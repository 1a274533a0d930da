// Reaching node daemons' admin endpoints (:15020) from the CLI, shared by `weft identity`,
// `weft proxy-config` and `weft top`: node addresses come from the Node resources on NATS
// (`node._.<name>`, spec.address), or --address names one admin endpoint directly.
import { request } from 'node:http'

import { connectBus, resolveBusOptions, type BusFlags } from '../bus/index.ts'
import { ConfigError } from '../config/node-config.ts'
import type { OptionTable, ParsedOptions } from './options.ts'

export const ADMIN_PORT = 15020

/** --admin-port and --address, the same on every command that asks the daemons. */
export const NODE_ADMIN_OPTIONS: OptionTable = {
  'admin-port': { type: 'string', arg: 'PORT', help: `the daemons' admin port (default ${ADMIN_PORT})` },
  address: { type: 'string', arg: 'HOST[:PORT]', help: 'ask this admin endpoint only (no NATS needed)' },
}

export type NodeTarget = { node: string; host: string; port: number }

/** An admin endpoint answered, but not 200: its status and the body (a daemon's `{error}` included). */
export class AdminHttpError extends Error {
  override name = 'AdminHttpError'
  readonly status: number
  constructor(message: string, status: number) {
    super(message)
    this.status = status
  }
}

/** GET http://host:port<path>: the body as text, or an error naming the URL (what the daemon said, for a non-200). */
export function fetchAdmin(target: NodeTarget, path: string, timeoutMs = 3000): Promise<string> {
  const url = `http://${target.host}:${target.port}${path}`
  return new Promise((resolve, reject) => {
    const req = request({ host: target.host, port: target.port, path, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => {
        if (res.statusCode === 200) return resolve(body)
        let said = ''
        try {
          const parsed = JSON.parse(body) as { error?: unknown }
          if (typeof parsed.error === 'string') said = `: ${parsed.error}`
        } catch { /* not JSON: the status says enough */ }
        reject(new AdminHttpError(`${url}: HTTP ${res.statusCode}${said}`, res.statusCode ?? 0))
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within ${timeoutMs / 1000} s`)))
    req.on('error', (error: NodeJS.ErrnoException) => reject(error.message.startsWith(url) ? error : new Error(`${url}: ${error.code ?? error.message}`)))
    req.end()
  })
}

/** fetchAdmin, parsed as JSON. */
export async function fetchAdminJson<T>(target: NodeTarget, path: string): Promise<T> {
  const body = await fetchAdmin(target, path)
  try {
    return JSON.parse(body) as T
  } catch (error) {
    throw new Error(`http://${target.host}:${target.port}${path}: not JSON (${(error as Error).message})`)
  }
}

function port(command: string, value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const parsed = Number(value)
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > 65535) throw new ConfigError(`${command}: ${flag} ${value}: expected a port number (1-65535)`)
  return parsed
}

/**
 * The admin endpoints to ask: --address, else every node on NATS, or only `only` (a node name;
 * an unknown one is an error listing the known).
 */
export async function nodeTargets(command: string, values: ParsedOptions['values'], only: string | undefined): Promise<NodeTarget[]> {
  const adminPort = port(command, typeof values['admin-port'] === 'string' ? values['admin-port'] : undefined, '--admin-port') ?? ADMIN_PORT
  if (typeof values.address === 'string') {
    const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(values.address)
    if (!match) throw new ConfigError(`${command}: --address ${values.address}: expected HOST or HOST:PORT`)
    return [{ node: only ?? match[1]!, host: match[1]!.replace(/^\[|\]$/g, ''), port: port(command, match[2], '--address') ?? adminPort }]
  }
  const flags: BusFlags = {}
  if (typeof values.nats === 'string') flags.nats = values.nats
  if (typeof values.creds === 'string') flags.creds = values.creds
  if (typeof values.context === 'string') flags.context = values.context
  const bus = await connectBus({ ...resolveBusOptions(flags, process.env), name: `weft ${command}` })
  let nodes: NodeTarget[]
  try {
    nodes = (await bus.listResources('node')).flatMap(({ value }) => {
      try {
        const resource = JSON.parse(value) as { metadata?: { name?: unknown }; spec?: { address?: unknown } }
        const name = resource.metadata?.name
        const address = resource.spec?.address
        return typeof name === 'string' && typeof address === 'string' ? [{ node: name, host: address, port: adminPort }] : []
      } catch {
        return []
      }
    })
  } finally {
    await bus.close()
  }
  if (only === undefined) {
    if (nodes.length === 0) throw new ConfigError(`${command}: no Node resources on NATS (node._.<name> with spec.address); pass --address HOST to ask one daemon`)
    return nodes
  }
  const found = nodes.filter((node) => node.node === only)
  if (found.length === 0) throw new ConfigError(`${command}: no node ${only} (known: ${nodes.map((node) => node.node).join(', ') || 'none'})`)
  return found
}
