// Where the CLI finds NATS, like a kubeconfig: named contexts in one file, one of them current.
// The lab writes its context at `up`; `weft apply|get|delete|status` read it. Flags and the
// environment override it (resolveBusOptions).
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'

import type { BusOptions } from './bus.ts'
import { BusError } from './errors.ts'
import type { TlsFiles } from './server.ts'

export type BusContext = { servers: string; user?: string; pass?: string; token?: string; tls?: TlsFiles }

export type ContextFile = { current?: string; contexts: Record<string, BusContext> }

type Env = Partial<Record<string, string>>

/** `$WEFT_CONFIG`, else `$XDG_CONFIG_HOME/weft/config.json`, else `~/.config/weft/config.json`. */
export function contextFilePath(env: Env = process.env): string {
  if (env.WEFT_CONFIG) return env.WEFT_CONFIG
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config')
  return join(base, 'weft', 'config.json')
}

/** The context file (empty when there is none yet). */
export function readContext(env: Env = process.env): ContextFile {
  const file = contextFilePath(env)
  if (!existsSync(file)) return { contexts: {} }
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'))
  } catch (error) {
    throw new BusError('invalid', `${file}: not valid JSON (${(error as Error).message}); fix or remove it`)
  }
  if (typeof parsed !== 'object' || parsed === null || typeof (parsed as ContextFile).contexts !== 'object') {
    throw new BusError('invalid', `${file}: expected {"current": NAME, "contexts": {NAME: {servers, user, pass}}}; fix or remove it`)
  }
  return parsed as ContextFile
}

function save(file: ContextFile, env: Env): void {
  const path = contextFilePath(env)
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  // Written whole and renamed into place: a reader never sees half a file. 0600: it holds passwords.
  const temporary = `${path}.${process.pid}.tmp`
  writeFileSync(temporary, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 })
  chmodSync(temporary, 0o600)
  renameSync(temporary, path)
}

/** Adds or replaces a context; `makeCurrent` makes later CLI calls use it. */
export function writeContext(name: string, context: BusContext, options: { makeCurrent?: boolean } = {}, env: Env = process.env): void {
  const file = readContext(env)
  file.contexts[name] = context
  if (options.makeCurrent === true) file.current = name
  save(file, env)
}

/** Removes a context (and unsets current if it was current). true if it existed. */
export function removeContext(name: string, env: Env = process.env): boolean {
  const file = readContext(env)
  if (!(name in file.contexts)) return false
  delete file.contexts[name]
  if (file.current === name) delete file.current
  save(file, env)
  return true
}

/** CLI flags that say where NATS is. `creds` is a JSON file {servers?, user, pass | token, tls?}. */
export type BusFlags = { nats?: string; creds?: string; user?: string; password?: string; context?: string }

function readCreds(path: string): Partial<BusContext> {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message
    throw new BusError('invalid', `--creds ${path}: ${reason}; expected JSON {"user": ..., "pass": ...}`)
  }
  if (typeof parsed !== 'object' || parsed === null) throw new BusError('invalid', `--creds ${path}: expected JSON {"user": ..., "pass": ...}`)
  const creds = parsed as Partial<BusContext> & { servers?: unknown }
  // `servers` is a string, comma-separated for several, as in a context (and the nats CLI's `url`);
  // a list of URLs, which older lab creds files held, means the same.
  if (Array.isArray(creds.servers) && creds.servers.every((server) => typeof server === 'string')) return { ...creds, servers: creds.servers.join(',') }
  if (creds.servers !== undefined && typeof creds.servers !== 'string') {
    throw new BusError('invalid', `--creds ${path}: servers: expected a string like "nats://host:4222" (several: comma-separated), got ${JSON.stringify(creds.servers)}`)
  }
  return creds as Partial<BusContext>
}

/**
 * Where a CLI call connects, first match wins for each part: flags (`--nats URL`, `--creds
 * FILE` or `--user/--password`) > environment (`WEFT_NATS_URL`, `WEFT_NATS_USER`,
 * `WEFT_NATS_PASSWORD`) > the current context (or `--context NAME`). Credentials only come from
 * a context when the server does too, so a `--nats` elsewhere does not get the lab's password.
 */
export function resolveBusOptions(flags: BusFlags = {}, env: Env = process.env): BusOptions {
  const creds = flags.creds !== undefined ? readCreds(flags.creds) : {}
  const file = readContext(env)
  const contextName = flags.context ?? file.current
  if (flags.context !== undefined && !(flags.context in file.contexts)) {
    throw new BusError('not-configured', `no context ${flags.context} in ${contextFilePath(env)} (have: ${Object.keys(file.contexts).join(', ') || 'none'})`)
  }
  const context = contextName !== undefined ? file.contexts[contextName] : undefined

  const servers = flags.nats ?? creds.servers ?? env.WEFT_NATS_URL ?? context?.servers
  if (servers === undefined) {
    throw new BusError('not-configured', 'no NATS configured: bring a lab up (weft lab up) or pass --nats URL')
  }
  const fromContext = context !== undefined && servers === context.servers ? context : undefined
  const user = flags.user ?? creds.user ?? env.WEFT_NATS_USER ?? fromContext?.user
  const pass = flags.password ?? creds.pass ?? env.WEFT_NATS_PASSWORD ?? fromContext?.pass
  const token = creds.token ?? fromContext?.token
  const tls = creds.tls ?? fromContext?.tls
  return {
    servers,
    ...(user !== undefined ? { user } : {}),
    ...(pass !== undefined ? { pass } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(tls !== undefined ? { tls } : {}),
  }
}
