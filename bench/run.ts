// weft's benchmark: what a hop through the mesh adds and costs, side by side with no mesh, the
// sidecar model, nginx and haproxy. Writes bench/results/<stamp>.json (+ latest.json), .md and .svg.
// See docs/benchmarks.md for the method. Needs root (it builds a lab); run it with scripts/bench.sh.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { labDown } from '../src/lab/index.ts'
import { randomRunId } from '../src/lab/lab.ts'
import { PROFILES, runBench, type BenchOptions } from './harness.ts'
import { renderMarkdown, renderSvg, type BenchReport, type WorkloadId } from './report.ts'

const DEFAULT_OUT = fileURLToPath(new URL('./results/', import.meta.url))

const HELP = `usage: scripts/bench.sh [--quick] [options]

Measures, in a lab on this machine, what a hop adds (latency p50/p90/p99/p99.9 over direct, from an
open-loop fixed-rate load free of coordinated omission), the maximum throughput (closed loop, wrk),
what the proxy costs (CPU seconds per 1,000 requests, RSS) and the density view (proxy memory with
1, 10 and 50 pods: one weft node proxy against a proxy per pod). Configurations run interleaved.

  --quick                   smoke run, about a minute
  --rate N                  open-loop requests per second (default 1000)
  --connections N           open-loop connections (default 4)
  --rounds N                interleaved rounds (default 3, quick 1)
  --slice-seconds S         measured seconds per configuration per round (default 5, quick 1.5)
  --warmup-seconds S        unmeasured seconds before each slice (default 0.5)
  --closed-seconds S        closed-loop seconds per configuration per round (default 3, quick 1)
  --closed-connections N    closed-loop connections (default 16)
  --workloads LIST          http,echo (default both)
  --density LIST            pod counts for the density view, 'none' to skip (default 1,10,50; quick 1,10)
  --access-log DEST         the lab's node daemons' --access-log (stdout, off or a path; default: the
                            daemon's default, stdout): what the weft L7 row measures with
  --access-log-sample RATE  the lab's node daemons' --access-log-sample (default: the daemon's, 1)
  --lab-wait-seconds S      wait this long for another lab to go down (default 600)
  --out DIR                 where results go (default bench/results)
  --help                    this text

Progress goes to stderr; the Markdown table to stdout at the end. Exit code 0 also when some
configuration had errors: they are flagged in the report, never dropped; 1 when the run failed.`

function number(value: string | undefined, flag: string, fallback: number, min: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isFinite(n) || n < min) throw new Error(`--${flag}: "${value}" is not a number >= ${min}`)
  return n
}

export function parseBenchArgs(argv: string[], onProgress: (line: string) => void): { help: true } | { help: false; options: BenchOptions; out: string } {
  const { values } = parseArgs({
    args: argv, strict: true, allowPositionals: false,
    options: {
      quick: { type: 'boolean' }, rate: { type: 'string' }, connections: { type: 'string' }, rounds: { type: 'string' },
      'slice-seconds': { type: 'string' }, 'warmup-seconds': { type: 'string' }, 'closed-seconds': { type: 'string' },
      'closed-connections': { type: 'string' }, workloads: { type: 'string' }, density: { type: 'string' },
      'lab-wait-seconds': { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' },
      'access-log': { type: 'string' }, 'access-log-sample': { type: 'string' },
    },
  })
  if (values.help) return { help: true }
  const base = PROFILES[values.quick ? 'quick' : 'default']
  const tuned = ['rate', 'connections', 'rounds', 'slice-seconds', 'warmup-seconds', 'closed-seconds', 'closed-connections', 'workloads', 'density', 'access-log', 'access-log-sample'].some((k) => (values as Record<string, unknown>)[k] !== undefined)
  const workloads = values.workloads === undefined ? base.workloads : values.workloads.split(',').map((w) => {
    if (w !== 'http' && w !== 'echo') throw new Error(`--workloads: "${w}" is not http or echo`)
    return w as WorkloadId
  })
  const densityPods = values.density === undefined ? base.densityPods : values.density === 'none' ? [] : values.density.split(',').map((p) => {
    const n = Number(p)
    if (!Number.isInteger(n) || n < 1 || n > 120) throw new Error(`--density: "${p}" is not a pod count from 1 to 120`)
    return n
  })
  const nodeFlags: string[] = []
  if (values['access-log'] !== undefined) {
    if (values['access-log'] === '') throw new Error('--access-log: give stdout, off or a file path')
    nodeFlags.push('--access-log', values['access-log'])
  }
  if (values['access-log-sample'] !== undefined) {
    const rate = number(values['access-log-sample'], 'access-log-sample', 1, 0)
    if (rate > 1) throw new Error(`--access-log-sample: "${values['access-log-sample']}" is not a fraction from 0 to 1`)
    nodeFlags.push('--access-log-sample', String(rate))
  }
  return {
    help: false,
    out: values.out ?? DEFAULT_OUT,
    options: {
      profile: tuned ? 'custom' : values.quick ? 'quick' : 'default',
      rate: number(values.rate, 'rate', base.rate, 1),
      connections: Math.round(number(values.connections, 'connections', base.connections, 1)),
      rounds: Math.round(number(values.rounds, 'rounds', base.rounds, 1)),
      sliceSeconds: number(values['slice-seconds'], 'slice-seconds', base.sliceSeconds, 0.1),
      warmupSeconds: number(values['warmup-seconds'], 'warmup-seconds', base.warmupSeconds, 0),
      closedLoopSeconds: Math.max(1, Math.round(number(values['closed-seconds'], 'closed-seconds', base.closedLoopSeconds, 1))),
      closedLoopConnections: Math.round(number(values['closed-connections'], 'closed-connections', base.closedLoopConnections, 1)),
      workloads,
      densityPods,
      labWaitSeconds: number(values['lab-wait-seconds'], 'lab-wait-seconds', 600, 0),
      nodeFlags,
      onProgress,
    },
  }
}

/** Writes <stamp>.json, .md, .svg and latest.{json,md,svg}; returns the paths. */
export function writeReport(report: BenchReport, out: string): { json: string; markdown: string; svg: string } {
  mkdirSync(out, { recursive: true })
  const stamp = report.startedAt.replace(/[:.]/g, '-')
  const json = JSON.stringify(report, null, 2) + '\n'
  const markdown = renderMarkdown(report)
  const svg = renderSvg(report)
  for (const name of [stamp, 'latest']) {
    writeFileSync(join(out, `${name}.json`), json)
    writeFileSync(join(out, `${name}.md`), markdown)
    writeFileSync(join(out, `${name}.svg`), svg)
  }
  return { json: join(out, 'latest.json'), markdown: join(out, 'latest.md'), svg: join(out, 'latest.svg') }
}

async function main(): Promise<number> {
  const progress = (line: string): void => { process.stderr.write(`bench: ${line}\n`) }
  let parsed
  try {
    parsed = parseBenchArgs(process.argv.slice(2), progress)
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message} (see --help)\n`)
    return 2
  }
  if (parsed.help) { process.stdout.write(HELP + '\n'); return 0 }
  if (process.getuid?.() !== 0) { process.stderr.write('bench: needs root (it builds a lab of network namespaces and cgroups); run: sudo bash scripts/bench.sh\n'); return 1 }
  // `b` + 5 characters: recognisable as a benchmark's labs in `weft lab ls`.
  const runIds = { main: `b${randomRunId().slice(1)}`, density: `b${randomRunId().slice(1)}` }
  // Ctrl-C: take down this run's labs (which kills everything started in them), then exit.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      progress(`${signal}: taking down labs ${runIds.main} and ${runIds.density}`)
      for (const runId of [runIds.main, runIds.density]) {
        try { labDown(runId) } catch (error) { progress((error as Error).message) }
      }
      process.exit(130)
    })
  }
  const report = await runBench({ ...parsed.options, runIds })
  const files = writeReport(report, parsed.out)
  process.stdout.write(renderMarkdown(report) + '\n')
  progress(`wrote ${files.json}, ${files.markdown}, ${files.svg}`)
  if (report.flags.length > 0) progress(`${report.flags.length} flag(s) in the report: ${report.flags.join(' | ')}`)
  return 0
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then((code) => { process.exitCode = code }, (error: unknown) => {
    process.stderr.write(`bench: failed: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  })
}
