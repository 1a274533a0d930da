// `weft identity [NODE] [-o json]`: each node's workload certificates and trust bundle, read from
// the node daemon's admin endpoint (GET http://<node address>:15020/debug/certs) — what
// `istioctl ztunnel-config certificates` shows. Node addresses come from the Node resources on
// NATS (`node._.<name>`, spec.address), or --address names one admin endpoint directly
// (node-admin.ts).
import { BusError } from '../bus/index.ts'
import { ConfigError } from '../config/node-config.ts'
import type { NodeIdentitiesReport } from '../identity/index.ts'
import { AdminHttpError, NODE_ADMIN_OPTIONS, fetchAdminJson, nodeTargets, type NodeTarget } from './node-admin.ts'
import { CONNECTION_OPTIONS, HELP_OPTION, commandHelp, outputFormat, parseCommandArgs, type CommandSpec } from './options.ts'
import { renderTable } from './table.ts'

export const IDENTITY_COMMAND: CommandSpec = {
  name: 'identity',
  usage: ['weft identity [NODE] [-o json] [--admin-port PORT]', 'weft identity --address HOST[:PORT] [-o json]'],
  description: [
    'The workload certificates each node holds (identity, state, serial, validity, next renewal) and',
    'the trust bundle it uses (roots, fingerprints, expiry, which signs, which is retiring), from the',
    'node daemon\'s admin endpoint /debug/certs. Nodes and their addresses come from NATS.',
  ],
  options: {
    ...CONNECTION_OPTIONS,
    output: { type: 'string', short: 'o', arg: 'json', help: 'print the nodes\' reports as JSON' },
    ...NODE_ADMIN_OPTIONS,
    ...HELP_OPTION,
  },
  examples: ['weft identity', 'weft identity node1 -o json', 'weft identity --address 198.18.0.2'],
}

type NodeResult = { node: string; address: string; certs: NodeIdentitiesReport | null; error?: string }

/** /debug/certs of one daemon; a 404 means its identities are not wired. */
async function fetchCerts(target: NodeTarget): Promise<NodeIdentitiesReport> {
  try {
    return await fetchAdminJson<NodeIdentitiesReport>(target, '/debug/certs')
  } catch (error) {
    if (error instanceof AdminHttpError && error.status === 404) throw new Error(`http://${target.host}:${target.port}/debug/certs: 404 (this daemon serves no certificates: its identities are not wired)`)
    throw error
  }
}

/** `in 11h 58m`, `3m ago`: a time relative to now, coarse. */
function relative(iso: string | null, now: number): string {
  if (iso === null) return '-'
  const ms = Date.parse(iso) - now
  const abs = Math.abs(ms)
  const text = abs < 60_000 ? `${Math.round(abs / 1000)}s` : abs < 3_600_000 ? `${Math.floor(abs / 60_000)}m` : abs < 172_800_000 ? `${Math.floor(abs / 3_600_000)}h${Math.floor((abs % 3_600_000) / 60_000)}m` : `${Math.floor(abs / 86_400_000)}d`
  return ms >= 0 ? `in ${text}` : `${text} ago`
}

function shortFingerprint(fingerprint: string | null): string {
  return fingerprint === null ? '-' : `${fingerprint.slice(0, 23)}…`
}

function render(results: NodeResult[], now: number): string {
  const certRows: string[][] = []
  const rootRows: string[][] = []
  for (const result of results) {
    if (!result.certs) {
      certRows.push([result.node, '-', `unreachable: ${result.error ?? 'no answer'}`, '-', '-', '-', '-'])
      continue
    }
    for (const entry of result.certs.identities) {
      certRows.push([
        result.node, entry.identity, entry.state + (entry.failures > 0 ? ` (${entry.failures} failed: ${entry.lastError ?? ''})` : ''),
        entry.serial ?? '-', entry.notAfter === null ? '-' : `${entry.notAfter} (${relative(entry.notAfter, now)})`, relative(entry.nextRenewal, now), shortFingerprint(entry.root),
      ])
    }
    if (result.certs.identities.length === 0) certRows.push([result.node, '(none: no pods on this node)', '-', '-', '-', '-', '-'])
    const bundle = result.certs.trustBundle
    if (!bundle) {
      rootRows.push([result.node, '-', '(no trust bundle yet)', '-', '-', '-', '-'])
      continue
    }
    for (const root of bundle.roots) {
      rootRows.push([result.node, String(bundle.version), root.subject, root.fingerprint, root.notAfter, root.signing ? 'yes' : 'no', root.retiresAt === null ? '-' : `${root.retiresAt} (${relative(root.retiresAt, now)})`])
    }
  }
  return [
    renderTable(['NODE', 'IDENTITY', 'STATE', 'SERIAL', 'NOT AFTER', 'NEXT RENEWAL', 'ROOT'], certRows),
    '',
    renderTable(['NODE', 'BUNDLE', 'ROOT', 'FINGERPRINT (SHA-256)', 'NOT AFTER', 'SIGNING', 'RETIRES'], rootRows),
  ].join('\n')
}

/** Runs `weft identity ...args`; returns the exit code (1 when a node could not be read). */
export async function runIdentityCommand(args: string[]): Promise<number> {
  try {
    const parsed = parseCommandArgs(IDENTITY_COMMAND, args, 1)
    if (parsed.values.help === true) {
      process.stdout.write(`${commandHelp(IDENTITY_COMMAND)}\n`)
      return 0
    }
    const output = outputFormat('identity', parsed.values.output, ['json'] as const)
    const nodes = await nodeTargets('identity', parsed.values, parsed.positionals[0])
    const results = await Promise.all(nodes.map(async (target): Promise<NodeResult> => {
      const address = `${target.host}:${target.port}`
      try {
        return { node: target.node, address, certs: await fetchCerts(target) }
      } catch (error) {
        return { node: target.node, address, certs: null, error: (error as Error).message }
      }
    }))
    process.stdout.write(output === 'json' ? `${JSON.stringify({ nodes: results }, null, 2)}\n` : `${render(results, Date.now())}\n`)
    return results.some((result) => result.certs === null) ? 1 : 0
  } catch (error) {
    if (error instanceof ConfigError || error instanceof BusError) {
      process.stderr.write(`weft: ${error.message.split('\n')[0]}\n`)
      return 1
    }
    throw error
  }
}
