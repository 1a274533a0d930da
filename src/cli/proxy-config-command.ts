// `weft proxy-config NODE [SERVICE] [-o json]`: what one node applied — its snapshot revision,
// services with VIPs and endpoints (with the L7 proxy's live health), routes, and the
// AuthorizationPolicies and PeerAuthentication modes in force for its pods — read from the node
// daemon's admin endpoint GET /debug/config[?service=ns/name]; what `istioctl proxy-config` shows.
import { BusError } from '../bus/index.ts'
import type { AppliedConfigView } from '../config/applied-config.ts'
import { ConfigError } from '../config/node-config.ts'
import { NODE_ADMIN_OPTIONS, fetchAdminJson, nodeTargets } from './node-admin.ts'
import { CONNECTION_OPTIONS, HELP_OPTION, commandHelp, outputFormat, parseCommandArgs, type CommandSpec } from './options.ts'
import { renderTable } from './table.ts'

export const PROXY_CONFIG_COMMAND: CommandSpec = {
  name: 'proxy-config',
  usage: ['weft proxy-config NODE [NAMESPACE/SERVICE] [-o json] [--admin-port PORT]', 'weft proxy-config NODE --address HOST[:PORT] [NAMESPACE/SERVICE] [-o json]'],
  description: [
    'What one node applied, as that node sees it: the configuration revision, services with their',
    'VIPs, ports and ready endpoints (with the L7 proxy\'s live state: in flight, latency, ejected),',
    'routes, and per pod of the node its PeerAuthentication mode and the AuthorizationPolicies that',
    'apply to it. A service narrows it to that service, its routes and the node\'s pods behind it.',
    'Read from the daemon\'s admin endpoint /debug/config; the node\'s address comes from NATS.',
  ],
  options: {
    ...CONNECTION_OPTIONS,
    output: { type: 'string', short: 'o', arg: 'json', help: 'print the node\'s /debug/config answer as JSON' },
    ...NODE_ADMIN_OPTIONS,
    ...HELP_OPTION,
  },
  examples: ['weft proxy-config node1', 'weft proxy-config node1 default/reviews', 'weft proxy-config node2 default/reviews -o json'],
}

function render(view: AppliedConfigView): string {
  const serviceRows: string[][] = []
  const endpointRows: string[][] = []
  for (const service of view.services) {
    for (const port of service.ports) {
      serviceRows.push([service.service, port.address, port.name ?? '-', String(port.targetPort), port.appProtocol ?? '-', String(port.endpoints.length), service.destinationPolicy ?? '-'])
      for (const endpoint of port.endpoints) {
        endpointRows.push([service.service, port.address, endpoint.endpoint, endpoint.node ?? '-', endpoint.workload ?? '-', endpoint.health,
          endpoint.inFlight === undefined ? '-' : String(endpoint.inFlight), endpoint.latencyMs === undefined ? '-' : `${endpoint.latencyMs}ms`])
      }
    }
  }
  const routeRows = view.routes.map((route) => [route.route, route.kind, route.parents.join(', '), route.rules.map((rule) => rule.backends.join(' + ') || '-').join(' | ')])
  const workloadRows = view.workloads.map((workload) => [workload.workload, workload.ip, workload.enrolled ? 'yes' : 'no',
    workload.mtls.mode + (workload.mtls.policy ? ` (${workload.mtls.policy})` : ''), workload.authorization.allow.join(', ') || '-', workload.authorization.deny.join(', ') || '-'])
  const sections = [
    `node ${view.node}: configuration revision ${view.revision}${view.service ? `, service ${view.service}` : ''}; ${view.nodes.length} nodes, ${view.rejected.length} rejected resources`,
    '',
    renderTable(['SERVICE', 'ADDRESS', 'PORT NAME', 'TARGET', 'PROTOCOL', 'ENDPOINTS', 'DESTINATION POLICY'], serviceRows),
    '',
    renderTable(['SERVICE', 'ADDRESS', 'ENDPOINT', 'NODE', 'WORKLOAD', 'HEALTH', 'IN FLIGHT', 'LATENCY'], endpointRows),
    '',
    renderTable(['ROUTE', 'KIND', 'PARENTS', 'BACKENDS (per rule)'], routeRows),
    '',
    renderTable([`PODS ON ${view.node.toUpperCase()}`, 'IP', 'ENROLLED', 'MTLS', 'ALLOW POLICIES', 'DENY POLICIES'], workloadRows),
  ]
  for (const rejection of view.rejected) sections.push(`rejected ${rejection.key}: ${rejection.reason}`)
  return sections.join('\n')
}

/** Runs `weft proxy-config ...args`; returns the exit code. */
export async function runProxyConfigCommand(args: string[]): Promise<number> {
  try {
    const parsed = parseCommandArgs(PROXY_CONFIG_COMMAND, args, 2)
    if (parsed.values.help === true) {
      process.stdout.write(`${commandHelp(PROXY_CONFIG_COMMAND)}\n`)
      return 0
    }
    const output = outputFormat('proxy-config', parsed.values.output, ['json'] as const)
    const [node, service] = parsed.positionals
    if (node === undefined) throw new ConfigError('proxy-config: which node? (weft proxy-config NODE [NAMESPACE/SERVICE]; weft get node lists them)')
    if (service !== undefined && !/^[^/]+\/[^/]+$/.test(service)) throw new ConfigError(`proxy-config: service ${service}: expected NAMESPACE/NAME, e.g. default/${service}`)
    const [target] = await nodeTargets('proxy-config', parsed.values, node)
    const path = service === undefined ? '/debug/config' : `/debug/config?service=${encodeURIComponent(service)}`
    let view: AppliedConfigView
    try {
      view = await fetchAdminJson<AppliedConfigView>(target!, path)
    } catch (error) {
      throw new ConfigError(`proxy-config: node ${node}: ${(error as Error).message}`)
    }
    process.stdout.write(output === 'json' ? `${JSON.stringify(view, null, 2)}\n` : `${render(view)}\n`)
    return 0
  } catch (error) {
    if (error instanceof ConfigError || error instanceof BusError) {
      process.stderr.write(`weft: ${error.message.split('\n')[0]}\n`)
      return 1
    }
    throw error
  }
}
