// Simulated nodes for the many-node convergence benchmark: each is a real ConfigAgent — its own
// NATS connection as node-<name>, the node's follow path (src/bus/follow.ts), validation, the
// snapshot build, the status on weft.status.<node> and in weft-status — with nothing behind the
// snapshot (no BPF, no listeners). Many run in one process; bench/convergence.ts starts a few.
//   .weft/bin/node bench/sim-nodes.ts INPUT.json
// INPUT: {"servers", "nodes": [{"name", "pass"}], "statusIntervalMs", "shared"?: {"user", "pass"}}:
// each agent on its own connection as node-<name>, or with `shared` all of this process's agents
// on one connection as that user (a subscription each; fewer sockets on a 2-core machine).
// Prints "ready <n>" once
// every agent follows the bucket, then "applied {count, totalMs, maxMs}" (its agents' snapshot builds so far) on SIGUSR2, and stops
// every agent on SIGTERM or when its stdin closes (the benchmark is gone).
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { connectBus } from '../src/bus/index.ts'
import { ConfigAgent } from '../src/config/agent.ts'
import { DEFAULT_VALIDATION_CONTEXT } from '../src/config/resources/index.ts'
import { createLogger } from '../src/telemetry/log.ts'

export type SimNodesInput = { servers: string; nodes: Array<{ name: string; pass: string }>; statusIntervalMs: number; shared?: { user: string; pass: string } }

/** Agents started at once: each start opens a connection and reads the bucket. */
const START_PARALLEL = 20

async function main(): Promise<void> {
  const input = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as SimNodesInput
  const log = createLogger({ sim: true }, 'error')
  const shared = input.shared ? await connectBus({ servers: input.servers, ...input.shared, name: 'weft-sim shared', requestTimeoutMs: 30_000 }) : undefined
  const agents = input.nodes.map(({ name, pass }) => new ConfigAgent({
    node: name,
    bus: { servers: input.servers, user: `node-${name}`, pass, name: `weft-sim ${name}`, waitForServer: true, connectTimeoutMs: 20_000 },
    ...(shared ? { sharedBus: shared } : {}),
    validation: DEFAULT_VALIDATION_CONTEXT,
    statusIntervalMs: input.statusIntervalMs,
    log,
    onSnapshot: () => {},
    readiness: () => ({ ready: true, reason: 'simulated' }),
  }))
  for (let i = 0; i < agents.length; i += START_PARALLEL) {
    await Promise.all(agents.slice(i, i + START_PARALLEL).map((agent) => agent.start()))
  }
  process.stdout.write(`ready ${agents.length}\n`)
  process.on('SIGUSR2', () => {
    const total = { count: 0, totalMs: 0, maxMs: 0 }
    for (const stats of agents.map((agent) => agent.applyStats())) {
      total.count += stats.count
      total.totalMs += stats.totalMs
      total.maxMs = Math.max(total.maxMs, stats.maxMs)
    }
    process.stdout.write(`applied ${JSON.stringify(total)}\n`)
  })
  // Stops on SIGTERM, or when the benchmark that started it is gone (its end of stdin closes).
  process.stdin.resume()
  await new Promise((resolve) => { process.once('SIGTERM', resolve); process.stdin.once('close', resolve) })
  await Promise.all(agents.map((agent) => agent.stop()))
  await shared?.close()
  process.exit(0)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => { console.error(`sim-nodes: ${(err as Error).message}`); process.exit(1) })
}
