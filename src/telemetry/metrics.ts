// Every metric the node daemon exports, declared once: name, help and labels live here only.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'

/** outbound: a redirected pod connection leaving through this node; inbound: a tunnel stream arriving. */
export type Direction = 'outbound' | 'inbound'
/** How an outbound connection reached its destination. */
export type Path = 'direct' | 'tunnel'

export interface BpfCounterSource {
  counters(): Record<string, bigint>
}

/** destination_service is `namespace/name` when the pod dialled a service VIP, `none` otherwise. */
const connectionLabels = ['direction', 'path', 'source_workload', 'destination_workload', 'destination_service'] as const
const byteLabels = ['direction', 'source_workload', 'destination_workload', 'destination_service', 'flow'] as const

export class NodeMetrics {
  readonly registry = new Registry()
  readonly connectionsOpened = new Counter({
    name: 'weft_connections_opened_total', help: 'Connections the proxy accepted and forwarded.',
    labelNames: connectionLabels, registers: [this.registry],
  })
  readonly connectionsClosed = new Counter({
    name: 'weft_connections_closed_total', help: 'Forwarded connections that ended, by outcome.',
    labelNames: [...connectionLabels, 'outcome'], registers: [this.registry],
  })
  readonly connectionsActive = new Gauge({
    name: 'weft_connections_active', help: 'Forwarded connections open now.',
    labelNames: ['direction'], registers: [this.registry],
  })
  /** flow "sent": bytes from the source workload toward the destination; "received": the reply direction. */
  readonly bytes = new Counter({
    name: 'weft_bytes_total', help: 'Bytes forwarded, per direction of flow.',
    labelNames: byteLabels, registers: [this.registry],
  })
  readonly connectionErrors = new Counter({
    name: 'weft_connection_errors_total', help: 'Connections the proxy could not forward, by reason.',
    labelNames: ['direction', 'reason'], registers: [this.registry],
  })

  constructor(node: string, bpf: () => BpfCounterSource | undefined) {
    this.registry.setDefaultLabels({ node })
    collectDefaultMetrics({ register: this.registry, prefix: 'weft_process_' })
    // The kernel-side counters are read from the BPF per-CPU array at scrape time.
    const last = new Map<string, bigint>()
    const redirects = new Counter({
      name: 'weft_bpf_connects_total',
      help: 'Connect attempts seen by the cgroup/connect4 program, by decision (read from the BPF counters map).',
      labelNames: ['decision'], registers: [this.registry],
      collect() {
        const source = bpf()
        if (!source) return
        for (const [decision, value] of Object.entries(source.counters())) {
          const delta = value - (last.get(decision) ?? 0n)
          if (delta > 0n) redirects.inc({ decision }, Number(delta))
          last.set(decision, value)
        }
      },
    })
  }
}
