// `weft top`: golden signals per service and per workload — requests/s, success rate, p50/p99
// latency — from two scrapes of every node's /metrics a few seconds apart (golden-signals.ts);
// refreshed in the terminal until Ctrl-C, or once (--once, -o json) for scripts.
import { setTimeout as sleep } from 'node:timers/promises'

import { BusError } from '../bus/index.ts'
import { ConfigError } from '../config/node-config.ts'
import { goldenSignals, type GoldenSignals, type GoldenSignalsReport, type NodeScrape } from '../telemetry/golden-signals.ts'
import { parsePrometheusText } from '../telemetry/prometheus-text.ts'
import { NODE_ADMIN_OPTIONS, fetchAdmin, nodeTargets, type NodeTarget } from './node-admin.ts'
import { CONNECTION_OPTIONS, HELP_OPTION, commandHelp, outputFormat, parseCommandArgs, type CommandSpec } from './options.ts'
import { renderTable } from './table.ts'

const DEFAULT_INTERVAL_SECONDS = 2

export const TOP_COMMAND: CommandSpec = {
  name: 'top',
  usage: ['weft top [NODE] [--interval SECONDS] [--once | -o json]'],
  description: [
    'Requests per second, success rate (responses that are not 5xx, and gRPC OK) and p50/p99 latency',
    'per destination service and per destination workload, from the difference between two scrapes',
    'of every node\'s /metrics (weft_requests_total, weft_request_duration_seconds; requests as the',
    'calling side\'s proxy counted them). Refreshes every interval until Ctrl-C. NODE: that node\'s',
    'proxy only. Nodes and their addresses come from NATS.',
  ],
  options: {
    ...CONNECTION_OPTIONS,
    interval: { type: 'string', arg: 'SECONDS', help: `time between scrapes (default ${DEFAULT_INTERVAL_SECONDS})` },
    once: { type: 'boolean', help: 'print one sample (two scrapes an interval apart) and exit' },
    output: { type: 'string', short: 'o', arg: 'json', help: 'print one sample as JSON and exit' },
    ...NODE_ADMIN_OPTIONS,
    ...HELP_OPTION,
  },
  examples: ['weft top', 'weft top node1 --interval 5', 'weft top --once', 'weft top -o json --interval 3'],
}

type ScrapeRound = { scrapes: NodeScrape[]; unreachable: { node: string; error: string }[]; at: number }

async function scrapeAll(targets: readonly NodeTarget[]): Promise<ScrapeRound> {
  const results = await Promise.allSettled(targets.map(async (target) => ({ node: target.node, samples: parsePrometheusText(await fetchAdmin(target, '/metrics')) })))
  const round: ScrapeRound = { scrapes: [], unreachable: [], at: performance.now() }
  results.forEach((result, i) => {
    if (result.status === 'fulfilled') round.scrapes.push(result.value)
    else round.unreachable.push({ node: targets[i]!.node, error: (result.reason as Error).message })
  })
  if (round.scrapes.length === 0) {
    throw new ConfigError(`top: no node answered on /metrics (${round.unreachable.map((u) => `${u.node}: ${u.error}`).join('; ')}); are the node daemons running?`)
  }
  return round
}

function interval(value: string | boolean | string[] | undefined): number {
  if (value === undefined) return DEFAULT_INTERVAL_SECONDS
  const seconds = Number(value)
  if (typeof value !== 'string' || !Number.isFinite(seconds) || seconds < 0.1 || seconds > 3600) throw new ConfigError(`top: --interval ${String(value)}: expected seconds between 0.1 and 3600`)
  return seconds
}

const percent = (rate: number | null): string => (rate === null ? '-' : `${(rate * 100).toFixed(2)}%`)
const millis = (seconds: number | null): string => (seconds === null ? '-' : `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)}ms`)

function rows(signals: readonly GoldenSignals[]): string[][] {
  return signals.map((s) => [s.name, s.requestsPerSecond.toFixed(1), percent(s.successRate), millis(s.p50), millis(s.p99), String(s.requests)])
}

function render(report: GoldenSignalsReport, nodes: string[], unreachable: ScrapeRound['unreachable']): string {
  const lines = [`weft top: ${nodes.length} node${nodes.length === 1 ? '' : 's'} (${nodes.join(', ')}), last ${report.intervalSeconds.toFixed(1)} s`]
  for (const u of unreachable) lines.push(`  ${u.node} did not answer: ${u.error}`)
  lines.push('', report.services.length === 0 ? 'no requests in this interval' : renderTable(['SERVICE', 'RPS', 'SUCCESS', 'P50', 'P99', 'REQUESTS'], rows(report.services)))
  if (report.workloads.length > 0) lines.push('', renderTable(['WORKLOAD', 'RPS', 'SUCCESS', 'P50', 'P99', 'REQUESTS'], rows(report.workloads)))
  return lines.join('\n')
}

/** The sample between two rounds, over the nodes that answered both. */
function sample(before: ScrapeRound, after: ScrapeRound): { report: GoldenSignalsReport; nodes: string[] } {
  const answeredBefore = new Set(before.scrapes.map((s) => s.node))
  const scrapes = after.scrapes.filter((s) => answeredBefore.has(s.node))
  return { report: goldenSignals(before.scrapes, scrapes, (after.at - before.at) / 1000), nodes: scrapes.map((s) => s.node) }
}

/** Runs `weft top ...args`; returns the exit code. */
export async function runTopCommand(args: string[]): Promise<number> {
  try {
    const parsed = parseCommandArgs(TOP_COMMAND, args, 1)
    if (parsed.values.help === true) {
      process.stdout.write(`${commandHelp(TOP_COMMAND)}\n`)
      return 0
    }
    const output = outputFormat('top', parsed.values.output, ['json'] as const)
    const seconds = interval(parsed.values.interval)
    const targets = await nodeTargets('top', parsed.values, parsed.positionals[0])
    let previous = await scrapeAll(targets)
    const live = output === undefined && parsed.values.once !== true
    // Ctrl-C ends a live view; nothing is left to clean up.
    if (live) process.once('SIGINT', () => process.exit(0))
    for (;;) {
      await sleep(seconds * 1000)
      const current = await scrapeAll(targets)
      const { report, nodes } = sample(previous, current)
      if (output === 'json') {
        process.stdout.write(`${JSON.stringify({ nodes, unreachable: current.unreachable, ...report }, null, 2)}\n`)
        return 0
      }
      const text = render(report, nodes, current.unreachable)
      // Live: redraw in place (cursor home, clear) on a terminal; a pipe gets one block per sample.
      process.stdout.write(live && process.stdout.isTTY ? `\x1b[H\x1b[2J${text}\n` : `${text}\n${live ? '\n' : ''}`)
      if (!live) return 0
      previous = current
    }
  } catch (error) {
    if (error instanceof ConfigError || error instanceof BusError) {
      process.stderr.write(`weft: ${error.message.split('\n')[0]}\n`)
      return 1
    }
    throw error
  }
}
