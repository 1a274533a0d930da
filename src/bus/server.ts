// Running nats-server for weft: the config file (JetStream, users with subject permissions,
// optional TLS), the process, and the credentials of each identity. Used by the tests and by the
// lab, which runs it inside a lab namespace through the `spawn` hook.
import { spawn as spawnProcess, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { connect as connectTcp } from 'node:net'
import { join } from 'node:path'

import { connectBus } from './bus.ts'
import { controlPermissions, nodePermissions, operatorPermissions, type SubjectPermissions } from './permissions.ts'
import { NODE_NAME } from './subjects.ts'

export type TlsFiles = { ca?: string; cert?: string; key?: string }

/** What connectBus needs to log in as one identity. */
export type BusCredentials = { servers: string; user: string; pass: string; tls?: TlsFiles }

export type NatsUser = { user: string; pass: string; permissions: SubjectPermissions | undefined }

export type NatsServerConfig = {
  host: string
  port: number
  /** JetStream's store directory (keep it across restarts to keep the buckets). */
  storeDir: string
  users: NatsUser[]
  /** Server TLS: cert and key, and a CA to verify client certificates (`verify: true`). */
  tls?: { cert: string; key: string; ca?: string; verifyClients?: boolean }
  serverName?: string
}

/** A quoted string for the nats-server config language (JSON string syntax is accepted). */
function quote(value: string): string {
  return JSON.stringify(value)
}

function permissionsBlock(permissions: SubjectPermissions): string {
  const list = (subjects: string[]): string => `[${subjects.map(quote).join(', ')}]`
  const responses = permissions.allowResponses === true ? ', allow_responses: true' : ''
  return `permissions: { publish: { allow: ${list(permissions.publish.allow)} }, subscribe: { allow: ${list(permissions.subscribe.allow)} }${responses} }`
}

/** The text of a nats-server config file for `config`. */
export function renderNatsServerConfig(config: NatsServerConfig): string {
  const lines = [
    '# Written by weft (src/bus/server.ts). Regenerate rather than edit.',
    `server_name: ${quote(config.serverName ?? 'weft')}`,
    `listen: ${quote(`${config.host}:${config.port}`)}`,
    `jetstream { store_dir: ${quote(config.storeDir)} }`,
    'authorization {',
    '  users: [',
    ...config.users.map(({ user, pass, permissions }) =>
      `    { user: ${quote(user)}, password: ${quote(pass)}${permissions ? `, ${permissionsBlock(permissions)}` : ''} }`,
    ),
    '  ]',
    '}',
  ]
  if (config.tls) {
    const { cert, key, ca, verifyClients } = config.tls
    lines.push('tls {', `  cert_file: ${quote(cert)}`, `  key_file: ${quote(key)}`)
    if (ca !== undefined) lines.push(`  ca_file: ${quote(ca)}`)
    if (verifyClients === true) lines.push('  verify: true')
    lines.push('}')
  }
  return lines.join('\n') + '\n'
}

export type StartNatsServerOptions = {
  /** Directory for the config file, the log and (unless storeDir says otherwise) the store. */
  dir: string
  host?: string
  /** 0 (the default) picks a free port on host. */
  port?: number
  /** Node names: each gets a `node-<name>` user. The set is fixed for this server's life. */
  nodes?: string[]
  storeDir?: string
  /** Passwords to reuse (a restart with the same store keeps the same credentials). */
  passwords?: Partial<Record<string, string>>
  tls?: NatsServerConfig['tls']
  /** How to run nats-server (the lab runs it in a namespace); default child_process.spawn. */
  spawn?: (argv: string[]) => ChildProcess
  /** The binary, default `nats-server` from PATH. */
  binary?: string
  /** Extra nats-server arguments (`-V` traces every protocol message into the log). */
  args?: string[]
  /** Create the weft-config, weft-status and weft-trust buckets once it is up, as operator (default true). */
  createBuckets?: boolean
  /** How long to wait for it to accept connections. */
  readyTimeoutMs?: number
}

export type NatsServer = {
  url: string
  pid: number
  configFile: string
  storeDir: string
  credentials: {
    operator: BusCredentials
    control: BusCredentials
    node(name: string): BusCredentials
  }
  /** Every user and password, to restart with the same credentials (`passwords` option). */
  passwords: Record<string, string>
  /** Kills the server (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
  stop(): Promise<void>
  /** Kills it at once (SIGKILL), as a crash would; waits for the exit. */
  kill(): Promise<void>
}

export class NatsServerError extends Error {
  override name = 'NatsServerError'
}

/** A free TCP port on host, found by binding port 0. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const { createServer } = await import('node:net')
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      server.close(() => (address !== null && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/** JetStream may still be recovering its store just after the port opens: retry until deadline. */
async function createBuckets(operator: BusCredentials, deadline: number): Promise<void> {
  const bus = await connectBus(operator)
  try {
    for (;;) {
      try {
        await bus.configBucket()
        await bus.trustBucket()
        return
      } catch (error) {
        if (Date.now() > deadline) throw error
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  } finally {
    await bus.close()
  }
}

function newPassword(): string {
  return randomBytes(18).toString('base64url')
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTcp({ host, port })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/**
 * Writes `<dir>/nats-server.conf` and starts `nats-server -c` on it; resolves once it accepts
 * TCP connections (JetStream may still be recovering its store for a moment after that — the
 * bus client retries). Users: `operator` (everything), `control` (writes config), and
 * `node-<name>` per entry of `nodes` (reads config, writes its own status).
 */
export async function startNatsServer(options: StartNatsServerOptions): Promise<NatsServer> {
  const host = options.host ?? '127.0.0.1'
  const port = options.port === undefined || options.port === 0 ? await freePort(host) : options.port
  const storeDir = options.storeDir ?? join(options.dir, 'jetstream')
  const nodes = options.nodes ?? []
  for (const node of nodes) {
    if (!NODE_NAME.test(node)) throw new NatsServerError(`node name ${JSON.stringify(node)}: use letters, digits, - and _ only (it becomes a NATS subject token)`)
  }
  mkdirSync(options.dir, { recursive: true })
  mkdirSync(storeDir, { recursive: true })

  const passwords: Record<string, string> = {}
  const password = (user: string): string => (passwords[user] = options.passwords?.[user] ?? newPassword())
  const users: NatsUser[] = [
    { user: 'operator', pass: password('operator'), permissions: operatorPermissions() },
    { user: 'control', pass: password('control'), permissions: controlPermissions('control') },
    ...nodes.map((node) => ({ user: `node-${node}`, pass: password(`node-${node}`), permissions: nodePermissions(node) })),
  ]
  const configFile = join(options.dir, 'nats-server.conf')
  writeFileSync(configFile, renderNatsServerConfig({ host, port, storeDir, users, tls: options.tls }), { mode: 0o600 })

  const logFile = join(options.dir, 'nats-server.log')
  const argv = [options.binary ?? 'nats-server', '-c', configFile, '-l', logFile, ...(options.args ?? [])]
  const child = options.spawn ? options.spawn(argv) : spawnProcess(argv[0]!, argv.slice(1), { stdio: 'ignore' })
  const exited = new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode)
    else child.once('exit', (code) => resolve(code))
  })
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve))
  let exitCode: number | null | undefined
  void exited.then((code) => (exitCode = code))

  const scheme = options.tls ? 'tls' : 'nats'
  const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`
  const deadline = Date.now() + (options.readyTimeoutMs ?? 10_000)
  for (;;) {
    const failed = await Promise.race([spawnError, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 0))])
    if (failed) throw new NatsServerError(`nats-server: cannot start ${argv[0]}: ${failed.message} (Debian: apt-get install nats-server)`)
    if (exitCode !== undefined) throw new NatsServerError(`nats-server exited with code ${exitCode} before accepting connections; see ${logFile}`)
    if (await canConnect(host, port)) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new NatsServerError(`nats-server did not accept connections on ${host}:${port} within ${options.readyTimeoutMs ?? 10_000} ms; see ${logFile}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }

  const stopNow = async (): Promise<void> => {
    if (exitCode === undefined) {
      child.kill('SIGKILL')
      await exited
    }
  }
  if (options.createBuckets !== false) {
    try {
      await createBuckets({ servers: url, user: 'operator', pass: passwords.operator!, ...(options.tls?.ca ? { tls: { ca: options.tls.ca } } : {}) }, deadline)
    } catch (error) {
      await stopNow()
      throw new NatsServerError(`nats-server on ${url} is up but the buckets could not be created: ${(error as Error).message}; see ${logFile}`)
    }
  }

  const credentials = (user: string): BusCredentials => {
    const pass = passwords[user]
    if (pass === undefined) throw new NatsServerError(`no NATS user ${user} on this server (nodes: ${nodes.join(', ') || 'none'}); nodes are declared when the server starts`)
    return { servers: url, user, pass, ...(options.tls?.ca ? { tls: { ca: options.tls.ca } } : {}) }
  }
  const terminate = async (signal: NodeJS.Signals): Promise<void> => {
    if (exitCode !== undefined) return
    child.kill(signal)
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
  return {
    url,
    pid: child.pid ?? -1,
    configFile,
    storeDir,
    passwords,
    credentials: {
      operator: credentials('operator'),
      control: credentials('control'),
      node: (name) => credentials(`node-${name}`),
    },
    stop: () => terminate('SIGTERM'),
    kill: () => terminate('SIGKILL'),
  }
}
