// `weft apply | get | delete | status`: the operator's side of configuration over NATS.
// apply validates every document before publishing anything; get and delete address resources by
// kind and name; status reads what each node reports on weft.status.<node>.
// Every problem is one line `weft: ...` on stderr and a non-zero exit.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

import { stringify as toYaml } from 'yaml'

import { BusError, connectBus, resolveBusOptions, type Bus, type BusFlags, type NodeStatusEntry } from '../bus/index.ts'
import { checkCidr, ConfigError } from '../config/node-config.ts'
import {
  CLUSTER_SCOPE,
  DEFAULT_VALIDATION_CONTEXT,
  ResourceKeyError,
  parseResourceDocuments,
  parseResourceKey,
  resourceKey,
  validateResource,
  type Kind,
  type KindInfo,
  type Resource,
  type ResourceError,
  type ValidationContext,
} from '../config/resources/index.ts'
import { kindFromArgument, kindNamesList } from './kind-names.ts'
import { renderTable } from './table.ts'
import { CONNECTION_OPTIONS, HELP_OPTION, commandHelp, outputFormat, parseCommandArgs, type CommandSpec, type ParsedOptions } from './options.ts'

/**
 * A node whose last status is older than this is shown as stale (daemons republish every 5 s by
 * default); a node that reports its --status-interval is stale after three of its intervals.
 */
export const STALE_AFTER_MS = 15_000
const STALE_AFTER_INTERVALS = 3

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

// ---------------------------------------------------------------------------------------------
// Command tables (parsing and --help both come from these)

const APPLY: CommandSpec = {
  name: 'apply',
  usage: ['weft apply -f FILE [-f FILE...] [--partial] [--dry-run] [-o json] [--nats URL] [--creds FILE]'],
  description: [
    'Validates every resource in the files (YAML or JSON, several documents each; - for stdin, a',
    'directory for its *.yaml, *.yml and *.json files), then publishes them to the weft-config bucket.',
    'If any document is invalid, each error is printed (file, document, field) and nothing is',
    'published, unless --partial: then the valid resources are published and the exit code is still 1.',
    'A resource equal to the stored one is left alone (unchanged).',
  ],
  options: {
    file: { type: 'string', short: 'f', multiple: true, arg: 'FILE', help: 'file, directory or - (stdin); repeatable' },
    partial: { type: 'boolean', help: 'publish the valid resources even if others are invalid' },
    'dry-run': { type: 'boolean', help: 'validate only; publish nothing (does not connect)' },
    output: { type: 'string', short: 'o', arg: 'json', help: 'print the result as JSON' },
    'vip-cidr': { type: 'string', arg: 'CIDR', help: 'service VIP range clusterIPs must lie in (default 198.19.0.0/16, as the nodes)' },
    ...CONNECTION_OPTIONS,
    ...HELP_OPTION,
  },
  examples: [
    'weft apply -f mesh.yaml',
    'weft apply -f services.yaml -f pods.yaml --partial',
    'cat mesh.json | weft apply -f - --dry-run',
  ],
}

const GET: CommandSpec = {
  name: 'get',
  usage: ['weft get KIND [NAME] [-n NAMESPACE | -A] [-o yaml|json|wide] [--nats URL] [--creds FILE]'],
  description: [
    'Lists resources of one kind from the weft-config bucket, or shows one by name.',
    `Kinds: ${kindNamesList()}.`,
    '-o yaml and -o json print a List (or the one resource) that weft apply accepts back.',
  ],
  options: {
    namespace: { type: 'string', short: 'n', arg: 'NAMESPACE', help: 'namespace (default "default"; ignored for nodes)' },
    'all-namespaces': { type: 'boolean', short: 'A', help: 'every namespace' },
    output: { type: 'string', short: 'o', arg: 'yaml|json|wide', help: 'output format (default: a table)' },
    ...CONNECTION_OPTIONS,
    ...HELP_OPTION,
  },
  examples: ['weft get svc', 'weft get pods -A -o wide', 'weft get service reviews -o yaml'],
}

const DELETE: CommandSpec = {
  name: 'delete',
  usage: ['weft delete KIND NAME [-n NAMESPACE] [--nats URL] [--creds FILE]', 'weft delete -f FILE [-f FILE...]'],
  description: [
    'Deletes resources from the weft-config bucket: one by kind and name, or every resource a file',
    'declares (the file must validate). A resource that does not exist is an error unless',
    '--ignore-not-found.',
  ],
  options: {
    namespace: { type: 'string', short: 'n', arg: 'NAMESPACE', help: 'namespace (default "default")' },
    file: { type: 'string', short: 'f', multiple: true, arg: 'FILE', help: 'delete what this file declares; repeatable' },
    'ignore-not-found': { type: 'boolean', help: 'a missing resource is not an error' },
    ...CONNECTION_OPTIONS,
    ...HELP_OPTION,
  },
  examples: ['weft delete svc reviews', 'weft delete httproute reviews -n shop', 'weft delete -f mesh.yaml'],
}

const STATUS: CommandSpec = {
  name: 'status',
  usage: ['weft status [-o json|wide] [--wait-revision N|current [--timeout S] [--nodes K]] [--nats URL] [--creds FILE]'],
  description: [
    'Shows what every node reports on weft.status.<node>: the configuration revision it applied, its',
    'lag behind the bucket, rejected resources, readiness and when it last reported. A node silent',
    `for three of its status intervals (15 s at the daemon's default 5 s) is marked stale.`,
    'With --wait-revision, waits until every node that has reported is at revision N or later',
    '("current": the bucket\'s revision now), then prints the table; on timeout it names the nodes',
    'behind and exits 1.',
  ],
  options: {
    output: { type: 'string', short: 'o', arg: 'json|wide', help: 'JSON, or a wider table with rejected keys and reasons' },
    'wait-revision': { type: 'string', arg: 'N', help: 'wait until every node reports revision >= N (or "current")' },
    timeout: { type: 'string', arg: 'S', help: 'give up waiting after S seconds (default 30)' },
    nodes: { type: 'string', arg: 'K', help: 'with --wait-revision: also wait until at least K nodes have reported (default 1)' },
    ...CONNECTION_OPTIONS,
    ...HELP_OPTION,
  },
  examples: ['weft status', 'weft status -o wide', 'weft status --wait-revision 42 --timeout 10'],
}

export const CONFIG_COMMANDS: Record<string, CommandSpec> = { apply: APPLY, get: GET, delete: DELETE, status: STATUS }

// ---------------------------------------------------------------------------------------------
// Entry point

type Io = { out: (text: string) => void; err: (text: string) => void }
const stdio: Io = { out: (text) => process.stdout.write(`${text}\n`), err: (text) => process.stderr.write(`${text}\n`) }

/** Runs `weft <command> ...args`; returns the exit code. User errors are printed as one line. */
export async function runConfigCommand(command: string, args: string[], io: Io = stdio): Promise<number> {
  const spec = CONFIG_COMMANDS[command]
  if (!spec) throw new Error(`not a configuration command: ${command}`)
  try {
    const parsed = parseCommandArgs(spec, args, command === 'get' || command === 'delete' ? 2 : 0)
    if (parsed.values.help === true) {
      io.out(commandHelp(spec))
      return 0
    }
    switch (command) {
      case 'apply': return await apply(parsed, io)
      case 'get': return await get(parsed, io)
      case 'delete': return await remove(parsed, io)
      default: return await status(parsed, io)
    }
  } catch (error) {
    if (error instanceof ConfigError || error instanceof BusError || error instanceof ResourceKeyError) {
      io.err(`weft: ${error.message.split('\n')[0]}`)
      return 1
    }
    throw error
  }
}

function busFlags(values: ParsedOptions['values']): BusFlags {
  const flags: BusFlags = {}
  if (typeof values.nats === 'string') flags.nats = values.nats
  if (typeof values.creds === 'string') flags.creds = values.creds
  if (typeof values.context === 'string') flags.context = values.context
  return flags
}

async function withBus<T>(command: string, values: ParsedOptions['values'], use: (bus: Bus) => Promise<T>): Promise<T> {
  const bus = await connectBus({ ...resolveBusOptions(busFlags(values), process.env), name: `weft ${command}` })
  try {
    return await use(bus)
  } finally {
    await bus.close()
  }
}

// ---------------------------------------------------------------------------------------------
// Names

/** `service/default/reviews`, `node/node1`: how apply and delete name a resource. */
function resourcePath(key: string): string {
  const { kind, namespace, name } = parseResourceKey(key)
  return namespace === undefined ? `${kind.toLowerCase()}/${name}` : `${kind.toLowerCase()}/${namespace}/${name}`
}

/** `service default/reviews`, `node node1`: how error messages name a resource. */
function resourceLabel(info: KindInfo, namespace: string | undefined, name: string): string {
  return info.namespaced ? `${info.kind.toLowerCase()} ${namespace ?? 'default'}/${name}` : `${info.kind.toLowerCase()} ${name}`
}

function checkNamespace(value: string | boolean | string[] | undefined): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !DNS_LABEL.test(value)) throw new ConfigError(`-n ${String(value)}: a namespace is a DNS label (lowercase letters, digits and "-")`)
  return value
}

function checkName(name: string): string {
  if (!DNS_SUBDOMAIN.test(name) || name.length > 253) throw new ConfigError(`"${name}" is not a resource name (lowercase letters, digits, "-" and ".")`)
  return name
}

function keyFor(info: KindInfo, namespace: string | undefined, name: string): string {
  return `${info.kind.toLowerCase()}.${info.namespaced ? namespace ?? 'default' : CLUSTER_SCOPE}.${name}`
}

// ---------------------------------------------------------------------------------------------
// Files

type InputFile = { name: string; text: string }

function readInputs(paths: string[]): InputFile[] {
  const files: InputFile[] = []
  for (const path of paths) {
    if (path === '-') {
      files.push({ name: '<stdin>', text: readFileSync(0, 'utf8') })
      continue
    }
    let isDirectory: boolean
    try {
      isDirectory = statSync(path).isDirectory()
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      throw new ConfigError(`-f ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (error as Error).message}`)
    }
    const names = isDirectory
      ? readdirSync(path).filter((entry) => /\.(ya?ml|json)$/i.test(entry)).sort().map((entry) => join(path, entry))
      : [path]
    if (isDirectory && names.length === 0) throw new ConfigError(`-f ${path}: the directory holds no .yaml, .yml or .json files`)
    for (const name of names) {
      try {
        files.push({ name, text: readFileSync(name, 'utf8') })
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        throw new ConfigError(`-f ${name}: ${code === 'EACCES' ? 'permission denied' : (error as Error).message}`)
      }
    }
  }
  return files
}

type Declared = { key: string; resource: Resource; file: string }

/** Every resource the files declare, and every problem, as lines (ResourceError.toString()). */
function parseInputs(files: InputFile[], ctx: ValidationContext): { declared: Declared[]; errors: string[]; invalidDocuments: number } {
  const declared: Declared[] = []
  const errors: string[] = []
  const invalid = new Set<string>()
  const firstFile = new Map<string, string>()
  for (const file of files) {
    const parsed = parseResourceDocuments(file.text, file.name, ctx)
    parsed.errors.forEach((error: ResourceError) => {
      errors.push(error.toString())
      invalid.add(`${error.file}#${error.documentIndex}#${error.item ?? ''}`)
    })
    for (const resource of parsed.resources) {
      const key = resourceKey(resource)
      const other = firstFile.get(key)
      if (other !== undefined) {
        // parseResourceDocuments catches duplicates within a file; this catches them across files.
        errors.push(`${file.name}: ${resourcePath(key)}: defined twice: also in ${other}`)
        invalid.add(`${file.name}#${key}`)
        continue
      }
      firstFile.set(key, file.name)
      declared.push({ key, resource, file: file.name })
    }
  }
  return { declared, errors, invalidDocuments: invalid.size }
}

/** JSON with object keys sorted, so two equal resources compare equal whatever their key order. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) return inner
    return Object.fromEntries(Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
  })
}

/** The stored JSON as the validated resource it stands for (defaults filled in), if it is one. */
function storedResource(value: string, ctx: ValidationContext): Resource | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(value)
  } catch {
    return undefined
  }
  const result = validateResource(parsed, ctx)
  return result.ok ? result.resource : undefined
}

// ---------------------------------------------------------------------------------------------
// apply

type ApplyResult = { key: string; resource: string; result: 'configured' | 'unchanged' | 'valid'; revision?: number }

async function apply(parsed: ParsedOptions, io: Io): Promise<number> {
  const { values } = parsed
  const paths = (values.file as string[] | undefined) ?? []
  if (paths.length === 0) throw new ConfigError('apply: -f FILE is required (see weft apply --help)')
  const json = outputFormat('apply', values.output, ['json'] as const) === 'json'
  const ctx: ValidationContext = typeof values['vip-cidr'] === 'string'
    ? { ...DEFAULT_VALIDATION_CONTEXT, vipCidr: checkCidr(values['vip-cidr'], 'vip-cidr') }
    : DEFAULT_VALIDATION_CONTEXT
  const partial = values.partial === true
  const dryRun = values['dry-run'] === true

  const { declared, errors, invalidDocuments } = parseInputs(readInputs(paths), ctx)
  for (const error of errors) io.err(`weft: ${error}`)
  const failed = errors.length > 0
  const report = (results: ApplyResult[], revision: number | undefined): void => {
    if (json) io.out(JSON.stringify({ dryRun, revision: revision ?? null, resources: results, errors }, null, 2))
  }

  if (failed && !partial) {
    const valid = declared.length
    io.err(`weft: ${invalidDocuments} invalid ${invalidDocuments === 1 ? 'resource' : 'resources'}; nothing ${dryRun ? 'would be ' : ''}published${valid > 0 ? ` (--partial publishes the ${valid} valid ${valid === 1 ? 'one' : 'ones'})` : ''}`)
    report([], undefined)
    return 1
  }
  if (declared.length === 0 && !failed) {
    io.err(`weft: ${paths.join(', ')}: no resources`)
    report([], undefined)
    return 1
  }

  if (dryRun) {
    const results: ApplyResult[] = declared.map(({ key }) => ({ key, resource: resourcePath(key), result: 'valid' }))
    if (!json) for (const result of results) io.out(`${result.resource} valid (dry run)`)
    report(results, undefined)
    if (failed) io.err(`weft: ${invalidDocuments} invalid; ${declared.length} valid (dry run: nothing published)`)
    return failed ? 1 : 0
  }

  return await withBus('apply', values, async (bus) => {
    const results: ApplyResult[] = []
    for (const { key, resource } of declared) {
      const stored = await bus.getResource(key)
      const current = stored === null ? undefined : storedResource(stored.value, ctx)
      if (stored !== null && current !== undefined && canonical(current) === canonical(resource)) {
        results.push({ key, resource: resourcePath(key), result: 'unchanged', revision: stored.revision })
        if (!json) io.out(`${resourcePath(key)} unchanged`)
        continue
      }
      const revision = await bus.putResource(key, resource)
      results.push({ key, resource: resourcePath(key), result: 'configured', revision })
      if (!json) io.out(`${resourcePath(key)} configured (revision ${revision})`)
    }
    const revision = await bus.configRevision()
    if (json) report(results, revision)
    else io.out(`config revision ${revision}`)
    if (failed) {
      io.err(`weft: ${invalidDocuments} invalid ${invalidDocuments === 1 ? 'resource was' : 'resources were'} not published; the ${declared.length} valid ${declared.length === 1 ? 'one was' : 'ones were'} (--partial)`)
      return 1
    }
    return 0
  })
}

// ---------------------------------------------------------------------------------------------
// get

type Row = Record<string, string>
type Column = { header: string; wide?: boolean; value: (resource: Resource) => string }

const none = '<none>'
const joinOr = (items: string[], max = 3): string => (items.length === 0 ? none : items.length <= max ? items.join(',') : `${items.slice(0, max).join(',')} +${items.length - max} more`)
const labels = (map: Record<string, string> | undefined): string => joinOr(Object.entries(map ?? {}).map(([k, v]) => `${k}=${v}`), 10)

/** The summary columns of each kind, as kubectl shows them. */
const SUMMARY: Record<Kind, Column[]> = {
  Service: [
    { header: 'CLUSTER-IP', value: (r) => (r.kind === 'Service' ? r.spec.clusterIP : '') },
    { header: 'PORTS', value: (r) => (r.kind === 'Service' ? joinOr(r.spec.ports.map((p) => `${p.name ? `${p.name}:` : ''}${p.port}${p.targetPort !== p.port ? `>${p.targetPort}` : ''}/${p.protocol}`), 6) : '') },
    { header: 'SELECTOR', wide: true, value: (r) => (r.kind === 'Service' ? labels(r.spec.selector) : '') },
  ],
  Pod: [
    { header: 'IP', value: (r) => (r.kind === 'Pod' ? r.status.podIP : '') },
    { header: 'NODE', value: (r) => (r.kind === 'Pod' ? r.spec.nodeName : '') },
    { header: 'SERVICE-ACCOUNT', wide: true, value: (r) => (r.kind === 'Pod' ? r.spec.serviceAccountName ?? 'default' : '') },
    { header: 'LABELS', wide: true, value: (r) => (r.kind === 'Pod' ? labels(r.metadata.labels) : '') },
  ],
  EndpointSlice: [
    { header: 'SERVICE', value: (r) => (r.kind === 'EndpointSlice' ? r.metadata.labels?.['kubernetes.io/service-name'] ?? none : '') },
    { header: 'ENDPOINTS', value: (r) => (r.kind === 'EndpointSlice' ? joinOr(r.endpoints.flatMap((e) => e.addresses)) : '') },
    { header: 'PORTS', wide: true, value: (r) => (r.kind === 'EndpointSlice' ? joinOr((r.ports ?? []).map((p) => `${p.name ? `${p.name}:` : ''}${p.port}`), 6) : '') },
  ],
  Node: [
    { header: 'ADDRESS', value: (r) => (r.kind === 'Node' ? r.spec.address : '') },
    { header: 'POD-CIDR', value: (r) => (r.kind === 'Node' ? r.spec.podCIDR ?? none : '') },
    { header: 'PROXY-IP', wide: true, value: (r) => (r.kind === 'Node' ? r.spec.proxyIp ?? none : '') },
  ],
  DestinationPolicy: [
    { header: 'TARGET', value: (r) => (r.kind === 'DestinationPolicy' ? r.spec.host ?? (r.spec.targetRef ? `${r.spec.targetRef.kind}/${r.spec.targetRef.name}` : none) : '') },
    { header: 'LOAD-BALANCER', value: (r) => (r.kind === 'DestinationPolicy' ? r.spec.loadBalancer?.type ?? none : '') },
  ],
  AuthorizationPolicy: [
    { header: 'SELECTOR', value: (r) => (r.kind === 'AuthorizationPolicy' ? labels(r.spec.selector?.matchLabels) : '') },
    { header: 'ACTION', value: (r) => (r.kind === 'AuthorizationPolicy' ? r.spec.action : '') },
    { header: 'RULES', value: (r) => (r.kind === 'AuthorizationPolicy' ? String(r.spec.rules?.length ?? 0) : '') },
  ],
  PeerAuthentication: [
    { header: 'SELECTOR', value: (r) => (r.kind === 'PeerAuthentication' ? labels(r.spec.selector?.matchLabels) : '') },
    { header: 'MODE', value: (r) => (r.kind === 'PeerAuthentication' ? r.spec.mtls?.mode ?? 'UNSET' : '') },
  ],
  HTTPRoute: [
    { header: 'PARENTS', value: (r) => (r.kind === 'HTTPRoute' ? joinOr(r.spec.parentRefs.map((p) => `${p.name}${p.port ? `:${p.port}` : ''}`)) : '') },
    { header: 'HOSTNAMES', value: (r) => (r.kind === 'HTTPRoute' ? joinOr(r.spec.hostnames ?? []) : '') },
    { header: 'RULES', value: (r) => (r.kind === 'HTTPRoute' ? String(r.spec.rules?.length ?? 0) : '') },
  ],
  GRPCRoute: [
    { header: 'PARENTS', value: (r) => (r.kind === 'GRPCRoute' ? joinOr(r.spec.parentRefs.map((p) => `${p.name}${p.port ? `:${p.port}` : ''}`)) : '') },
    { header: 'HOSTNAMES', value: (r) => (r.kind === 'GRPCRoute' ? joinOr(r.spec.hostnames ?? []) : '') },
    { header: 'RULES', value: (r) => (r.kind === 'GRPCRoute' ? String(r.spec.rules?.length ?? 0) : '') },
  ],
}

function parseStored(value: string): unknown {
  try {
    return JSON.parse(value)
  } catch {
    return undefined
  }
}

async function get(parsed: ParsedOptions, io: Io): Promise<number> {
  const { values, positionals } = parsed
  const [kindWord, nameArgument] = positionals
  if (kindWord === undefined) throw new ConfigError(`get: KIND is required (one of ${kindNamesList()}); see weft get --help`)
  // `weft get svc/reviews` as kubectl allows.
  const [kindPart, slashName] = kindWord.includes('/') && nameArgument === undefined ? kindWord.split('/', 2) as [string, string] : [kindWord, undefined]
  const info = kindFromArgument(kindPart)
  const name = slashName ?? nameArgument
  if (name !== undefined) checkName(name)
  const format = outputFormat('get', values.output, ['yaml', 'json', 'wide'] as const)
  const all = values['all-namespaces'] === true
  const namespace = checkNamespace(values.namespace)
  if (all && namespace !== undefined) throw new ConfigError('get: give -n NAMESPACE or -A, not both')
  if (all && name !== undefined) throw new ConfigError('get: a NAME needs one namespace (-n), not -A')

  return await withBus('get', values, async (bus) => {
    const kindSegment = info.kind.toLowerCase()
    const stored = name !== undefined
      ? [await bus.getResource(keyFor(info, namespace, name))].filter((entry) => entry !== null)
      : await bus.listResources(info.namespaced ? (all ? kindSegment : `${kindSegment}.${namespace ?? 'default'}`) : `${kindSegment}.${CLUSTER_SCOPE}`)
    if (name !== undefined && stored.length === 0) {
      io.err(`weft: ${resourceLabel(info, namespace, name)} not found`)
      return 1
    }
    if (stored.length === 0) {
      io.err(`weft: no ${kindSegment} resources${info.namespaced ? (all ? '' : ` in namespace ${namespace ?? 'default'}`) : ''}`)
      return 0
    }

    if (format === 'yaml' || format === 'json') {
      const objects = stored.map((entry) => parseStored(entry.value) ?? { unparsable: entry.value, key: entry.key })
      const document = name !== undefined ? objects[0] : { apiVersion: 'v1', kind: 'List', items: objects }
      io.out(format === 'json' ? JSON.stringify(document, null, 2) : toYaml(document).trimEnd())
      return 0
    }

    const wide = format === 'wide'
    const columns = SUMMARY[info.kind as Kind].filter((column) => wide || column.wide !== true)
    const headers = ['KIND', ...(info.namespaced ? ['NAMESPACE'] : []), 'NAME', 'REVISION', ...columns.map((column) => column.header)]
    const rows = stored.map((entry) => {
      const parts = parseResourceKey(entry.key)
      const row = [info.kind, ...(info.namespaced ? [parts.namespace ?? ''] : []), parts.name, String(entry.revision)]
      // Anyone may publish with a NATS client: a stored value may not validate. Say so in the row.
      const json = parseStored(entry.value)
      const result = json === undefined ? undefined : validateResource(json)
      if (result?.ok === true) return [...row, ...columns.map((column) => column.value(result.resource))]
      const reason = result === undefined ? 'not JSON' : result.ok ? '' : result.errors[0]?.toString() ?? 'invalid'
      return [...row, `INVALID: ${reason}`, ...columns.slice(1).map(() => '')]
    })
    io.out(renderTable(headers, rows))
    return 0
  })
}

// ---------------------------------------------------------------------------------------------
// delete

async function remove(parsed: ParsedOptions, io: Io): Promise<number> {
  const { values, positionals } = parsed
  const files = (values.file as string[] | undefined) ?? []
  const ignoreNotFound = values['ignore-not-found'] === true
  const namespace = checkNamespace(values.namespace)
  let targets: { key: string; label: string }[]
  if (files.length > 0) {
    if (positionals.length > 0) throw new ConfigError('delete: give KIND NAME or -f FILE, not both')
    const { declared, errors } = parseInputs(readInputs(files), DEFAULT_VALIDATION_CONTEXT)
    if (errors.length > 0) {
      for (const error of errors) io.err(`weft: ${error}`)
      io.err('weft: delete -f: the file has errors (above); nothing deleted')
      return 1
    }
    targets = declared.map(({ key }) => {
      const parts = parseResourceKey(key)
      return { key, label: resourceLabel(kindFromArgument(parts.kind), parts.namespace, parts.name) }
    })
  } else {
    const [kindWord, nameArgument] = positionals
    if (kindWord === undefined) throw new ConfigError('delete: give KIND NAME or -f FILE (see weft delete --help)')
    const [kindPart, slashName] = kindWord.includes('/') && nameArgument === undefined ? kindWord.split('/', 2) as [string, string] : [kindWord, undefined]
    const info = kindFromArgument(kindPart)
    const name = slashName ?? nameArgument
    if (name === undefined) throw new ConfigError(`delete: NAME is required: weft delete ${kindPart} NAME`)
    checkName(name)
    targets = [{ key: keyFor(info, namespace, name), label: resourceLabel(info, namespace, name) }]
  }

  return await withBus('delete', values, async (bus) => {
    let missing = 0
    for (const target of targets) {
      const stored = await bus.getResource(target.key)
      if (stored === null) {
        if (!ignoreNotFound) {
          missing++
          io.err(`weft: ${target.label} not found`)
        }
        continue
      }
      const revision = await bus.deleteResource(target.key)
      io.out(`${resourcePath(target.key)} deleted (revision ${revision})`)
    }
    return missing > 0 ? 1 : 0
  })
}

// ---------------------------------------------------------------------------------------------
// status

/** What `weft status` makes of one node's report (the daemon's JSON, read defensively). */
export type NodeReport = {
  node: string
  revision: number | null
  lag: number | null
  ready: boolean | null
  reason: string | null
  nats: string | null
  rejected: { key: string; reason: string }[]
  warnings: { key: string; message: string }[]
  counts: Record<string, number>
  lastSeen: string
  ageSeconds: number
  stale: boolean
  /** The silence after which this node counts as stale. */
  staleAfterSeconds: number
}

const asNumber = (value: unknown): number | null => (typeof value === 'number' && Number.isFinite(value) ? value : null)
const asString = (value: unknown): string | null => (typeof value === 'string' ? value : null)

function nodeReport(entry: { node: string; status: unknown; updated: Date }, configRevision: number, now: number): NodeReport {
  const status = (typeof entry.status === 'object' && entry.status !== null ? entry.status : {}) as Record<string, unknown>
  const revision = asNumber(status.revision)
  const list = <T>(value: unknown, shape: (item: Record<string, unknown>) => T): T[] =>
    Array.isArray(value) ? value.filter((item): item is Record<string, unknown> => typeof item === 'object' && item !== null).map(shape) : []
  const counts = typeof status.counts === 'object' && status.counts !== null
    ? Object.fromEntries(Object.entries(status.counts as Record<string, unknown>).filter(([, v]) => typeof v === 'number')) as Record<string, number>
    : {}
  const age = Math.max(0, now - entry.updated.getTime())
  const interval = asNumber(status.statusIntervalMs)
  const staleAfterMs = interval !== null && interval > 0 ? STALE_AFTER_INTERVALS * interval : STALE_AFTER_MS
  return {
    node: entry.node,
    revision,
    lag: revision === null ? null : Math.max(0, configRevision - revision),
    ready: typeof status.ready === 'boolean' ? status.ready : null,
    reason: asString(status.reason),
    nats: asString(status.nats),
    rejected: list(status.rejected, (item) => ({ key: String(item.key ?? '?'), reason: String(item.reason ?? '') })),
    warnings: list(status.warnings, (item) => ({ key: String(item.key ?? '?'), message: String(item.message ?? '') })),
    counts,
    lastSeen: entry.updated.toISOString(),
    ageSeconds: Math.round(age / 100) / 10,
    stale: age > staleAfterMs,
    staleAfterSeconds: staleAfterMs / 1000,
  }
}

/** `3s`, `2m5s`, `1h4m`, `3d2h`, as kubectl shows ages. */
export function formatAge(ms: number): string {
  const s = Math.floor(Math.max(0, ms) / 1000)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}`
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60) ? `${Math.floor((s % 3600) / 60)}m` : ''}`
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600) ? `${Math.floor((s % 86400) / 3600)}h` : ''}`
}

function renderStatus(reports: NodeReport[], configRevision: number, wide: boolean): string {
  const headers = ['NODE', 'REVISION', 'LAG', 'REJECTED', 'READY', 'LAST SEEN', ...(wide ? ['NATS', 'WARNINGS', 'RESOURCES', 'REASON'] : [])]
  const rows = reports.map((r) => [
    r.node,
    r.revision === null ? '?' : String(r.revision),
    r.lag === null ? '?' : String(r.lag),
    String(r.rejected.length),
    r.ready === null ? '?' : r.ready ? 'yes' : 'no',
    `${formatAge(r.ageSeconds * 1000)} ago${r.stale ? ' (stale)' : ''}`,
    ...(wide ? [r.nats ?? '?', String(r.warnings.length), r.counts.resources === undefined ? '?' : String(r.counts.resources), r.reason ?? ''] : []),
  ])
  const lines = [`config revision ${configRevision}`, renderTable(headers, rows)]
  if (wide) {
    for (const r of reports) {
      for (const rejection of r.rejected) lines.push(`${r.node}: rejected ${rejection.key}: ${rejection.reason}`)
      for (const warning of r.warnings) lines.push(`${r.node}: warning ${warning.key}: ${warning.message}`)
    }
  }
  return lines.join('\n')
}

function positiveNumber(value: string | boolean | string[] | undefined, flag: string, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (typeof value !== 'string' || value.trim() === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    throw new ConfigError(`status: --${flag}: "${String(value)}" is not ${integer ? 'a whole number' : 'a number of seconds'}`)
  }
  return n
}

/** Statuses from the bucket, each replaced by a newer one seen live on weft.status.<node>. */
function mergeLive(entries: NodeStatusEntry[], live: Map<string, { status: unknown; updated: Date }>): { node: string; status: unknown; updated: Date }[] {
  const merged = new Map<string, { node: string; status: unknown; updated: Date }>(entries.map((entry) => [entry.node, entry]))
  for (const [node, seen] of live) {
    const stored = merged.get(node)
    if (!stored || seen.updated.getTime() > stored.updated.getTime()) merged.set(node, { node, ...seen })
  }
  return [...merged.values()].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
}

async function status(parsed: ParsedOptions, io: Io): Promise<number> {
  const { values } = parsed
  const format = outputFormat('status', values.output, ['json', 'wide'] as const)
  const waitValue = values['wait-revision']
  if (waitValue !== undefined && waitValue !== 'current') positiveNumber(waitValue, 'wait-revision', 0, true)
  if (waitValue === undefined && (values.timeout !== undefined || values.nodes !== undefined)) {
    throw new ConfigError('status: --timeout and --nodes go with --wait-revision N')
  }
  const timeoutMs = positiveNumber(values.timeout, 'timeout', 30, false) * 1000
  const minimumNodes = positiveNumber(values.nodes, 'nodes', 1, true)

  return await withBus('status', values, async (bus) => {
    let configRevision = await bus.configRevision()
    let entries = mergeLive(await bus.readStatuses(), new Map())
    if (waitValue !== undefined) {
      const target = waitValue === 'current' ? configRevision : Number(waitValue)
      // Live statuses wake the wait at once; the bucket is re-read as well (and is the truth for
      // nodes that reported before we subscribed).
      const live = new Map<string, { status: unknown; updated: Date }>()
      let wake: (() => void) | undefined
      const subscription = bus.subscribeStatuses((node, reported) => {
        live.set(node, { status: reported, updated: new Date() })
        wake?.()
      })
      const deadline = Date.now() + timeoutMs
      try {
        for (;;) {
          entries = mergeLive(await bus.readStatuses(), live)
          const behind = entries.filter((entry) => (asNumber((entry.status as { revision?: unknown } | null)?.revision) ?? -1) < target)
          if (entries.length >= minimumNodes && behind.length === 0) break
          if (Date.now() >= deadline) {
            configRevision = await bus.configRevision()
            const now = Date.now()
            const names = behind.map((entry) => {
              const report = nodeReport(entry, configRevision, now)
              return `${entry.node} at ${report.revision ?? '?'}${report.stale ? ' (stale)' : ''}`
            })
            const fewNodes = entries.length < minimumNodes ? `${entries.length} of ${minimumNodes} nodes reported` : ''
            io.err(`weft: timed out after ${timeoutMs / 1000}s waiting for revision ${target}: ${[names.length > 0 ? `behind: ${names.join(', ')}` : '', fewNodes].filter(Boolean).join('; ') || 'no node has reported'}`)
            return 1
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, Math.min(250, Math.max(0, deadline - Date.now())))
            wake = () => {
              clearTimeout(timer)
              resolve()
            }
          })
          wake = undefined
        }
      } finally {
        subscription.stop()
      }
      configRevision = await bus.configRevision()
    }

    const now = Date.now()
    const reports = entries.map((entry) => nodeReport(entry, configRevision, now))
    if (format === 'json') {
      io.out(JSON.stringify({ revision: configRevision, staleAfterSeconds: STALE_AFTER_MS / 1000, nodes: reports }, null, 2))
      return 0
    }
    if (reports.length === 0) {
      io.out(`config revision ${configRevision}`)
      io.err('weft: no node has reported status yet (nodes publish on weft.status.<node>)')
      return 0
    }
    io.out(renderStatus(reports, configRevision, format === 'wide'))
    return 0
  })
}
