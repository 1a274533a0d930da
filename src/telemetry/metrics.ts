// Every metric the node daemon exports, declared once: name, help and labels live here only.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

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
/**
 * Requests the L7 proxy handled. reporter: `source` (the client's node proxy; `destination` when
 * the inbound side reports too). destination_workload is `unknown` when weft answered itself
 * (no endpoint, a timeout before any response); response_code is what the client got, `0` when
 * it got no response at all. protocol: `http` (HTTP/1.x) for now; `http2`, `grpc` to come.
 */
const requestLabels = ['reporter', 'source_workload', 'destination_service', 'destination_workload', 'response_code', 'protocol'] as const
/** Seconds; from 1 ms to 10 s, as Istio's and linkerd's buckets roughly are. */
const requestDurationBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

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

  readonly requests = new Counter({
    name: 'weft_requests_total', help: 'HTTP requests handled by the L7 proxy, by response code.',
    labelNames: requestLabels, registers: [this.registry],
  })
  /** From the request head arriving to the response's last byte written to the client. */
  readonly requestDuration = new Histogram({
    name: 'weft_request_duration_seconds', help: 'Time from a request arriving to its response being sent in full.',
    labelNames: requestLabels, buckets: requestDurationBuckets, registers: [this.registry],
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
