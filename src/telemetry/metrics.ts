// Every metric the node daemon exports, declared once: name, help and labels live here only.
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { EventLoopDelayHistogram } from './event-loop-delay.ts'
import { RequestSeries } from './request-series.ts'

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
 * The labels of every per-request metric (requests, duration, request and response bytes), in
 * the order they are declared. reporter: `source` (the client's node proxy; `destination` when
 * the inbound side reports too). destination_service: `namespace/name`, or the dialled
 * `VIP:port` when no service has it. destination_workload: `namespace/name` of the endpoint's
 * workload, `unknown` when weft answered itself (no endpoint, a timeout before any response).
 * response_code: the HTTP status the client got, `0` when it got no response at all (gRPC: the
 * HTTP status, 200 for almost every call). grpc_status: the grpc-status the client got, as a
 * number (`0` OK, `14` UNAVAILABLE...), from the trailers or a trailers-only response; `none`
 * when it got none — every non-gRPC request, and a call that ended without one.
 * protocol: `http` (HTTP/1.x), `http2` (HTTP/2 that is not gRPC), `grpc`.
 */
const requestLabels = ['reporter', 'source_workload', 'destination_service', 'destination_workload', 'response_code', 'grpc_status', 'protocol'] as const
export type RequestLabelName = typeof requestLabels[number]
export type RequestProtocol = 'http' | 'http2' | 'grpc'
/** One request's label values, as the pipeline builds them (once per request, for all four metrics). */
export type RequestLabels = Readonly<Record<RequestLabelName, string>> & {
  readonly reporter: 'source' | 'destination'
  readonly protocol: RequestProtocol
}
/** grpc_status of a request that got no grpc-status (every non-gRPC request). */
export const NO_GRPC_STATUS = 'none'
/** What `recordRequest` adds for one finished request. */
export interface RequestSample {
  /** From the request head arriving to the response's last byte written to the client. */
  readonly durationS: number
  /** Body bytes received from the client (headers and framing not counted). */
  readonly requestBytes: number
  /** Body bytes sent to the client (headers and framing not counted). */
  readonly responseBytes: number
}
/** Seconds; from 1 ms to 10 s, as Istio's and linkerd's buckets roughly are. */
const requestDurationBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * Why a try was retried: what the failed try got.
 * - `connect-failure`: no connection to the endpoint (the request never left);
 * - `reset`: the connection or stream was reset after the request went out;
 * - `per-try-timeout`: the per-try timeout fired;
 * - `retriable-status`: an HTTP status the policy retries (5xx, gateway-error or a listed code);
 * - `retriable-grpc-status`: a grpc-status the policy retries (e.g. 14 UNAVAILABLE).
 */
export type RetryReason = 'connect-failure' | 'reset' | 'per-try-timeout' | 'retriable-status' | 'retriable-grpc-status'
/** The outlier detector's rule that ejected an endpoint (the DestinationPolicy field). */
export type EjectionReason = 'consecutive5xx' | 'consecutiveGatewayErrors'
/** The DestinationPolicy `circuitBreaker` field whose limit was hit. */
export type BreakerLimitName = 'maxConnections' | 'maxPendingRequests' | 'maxRequests' | 'maxRetries'
/** Event-loop delay and GC pauses, in seconds: 1 ms to 2.5 s. A request in flight waits as long as the loop is held. */
const runtimeBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
/** How often the event-loop sampler's timer is due (Node's monitorEventLoopDelay default). */
export const EVENT_LOOP_SAMPLE_MS = 10
/**
 * prom-client's default metrics weft drops: its event-loop gauges (nodejs_eventloop_lag_*) report
 * the 10 ms sampling interval as delay (an idle loop reads p50 10 ms) and, as gauges reset at each
 * scrape, cannot be aggregated over time; its GC histogram observes only the first entry of each
 * PerformanceObserver batch (14 of 19 collections counted in one measurement). weft's own
 * weft_event_loop_delay_seconds and weft_gc_duration_seconds replace them. (prom-client still runs
 * its sampler and observer: its sampler is slowed to one tick a second, PROM_CLIENT_LAG_PRECISION_MS.)
 */
const DROPPED_DEFAULT_METRICS = ['lag_seconds', 'lag_min_seconds', 'lag_max_seconds', 'lag_mean_seconds', 'lag_stddev_seconds', 'lag_p50_seconds', 'lag_p90_seconds', 'lag_p99_seconds']
  .map((suffix) => `weft_process_nodejs_eventloop_${suffix}`).concat('weft_process_nodejs_gc_duration_seconds')
/** The resolution of prom-client's own event-loop sampler, whose series are dropped: one wakeup a second instead of a hundred. */
const PROM_CLIENT_LAG_PRECISION_MS = 1000
/** The `kind` label of a GC, from its PerformanceEntry (perf_hooks.constants.NODE_PERFORMANCE_GC_*). */
export type GcKind = 'minor' | 'major' | 'incremental' | 'weakcb' | 'other'

/** The protocol of a downstream connection the L7 proxy serves (gRPC rides on http2 connections). */
export type L7ConnectionProtocol = 'http' | 'http2'

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
  /**
   * Same-node opaque connections on the L4 fast path (on unless `--no-l4-fast-path`), by where their bytes
   * went: `kernel` (the sockets were joined) or `user_space` (a side ended, or bytes kept coming
   * faster than the join could settle).
   */
  readonly fastPathConnections = new Counter({
    name: 'weft_l4_fast_path_connections_total', help: 'Same-node opaque connections offered to the L4 fast path, by whether the kernel joined them (kernel) or they stayed in the proxy (user_space).',
    labelNames: ['result'], registers: [this.registry],
  })
  /** flow as in weft_bytes_total; these bytes are in weft_bytes_total too. */
  readonly fastPathBytes = new Counter({
    name: 'weft_l4_fast_path_bytes_total', help: 'Bytes of L4 fast-path connections the kernel forwarded without the proxy copying them (also counted in weft_bytes_total).',
    labelNames: ['flow'], registers: [this.registry],
  })
  readonly connectionErrors = new Counter({
    name: 'weft_connection_errors_total', help: 'Connections the proxy could not forward, by reason.',
    labelNames: ['direction', 'reason'], registers: [this.registry],
  })
  /**
   * Connections (layer `connection`: the L4 decision when a tunnel stream or same-node connection
   * is accepted; layer `revoked`: an open connection a new configuration's policies closed) and
   * HTTP requests (layer `request`) an AuthorizationPolicy refused, at the
   * destination's node; policy: `namespace/name` of the policy that decided (`none`: no ALLOW
   * policy matched).
   */
  readonly authorizationDenied = new Counter({
    name: 'weft_authorization_denied_total', help: 'Connections and requests refused by an AuthorizationPolicy at the destination\'s node (layer: connection, request, or revoked for an open connection a new policy closed), by the policy that decided.',
    labelNames: ['source_workload', 'destination_workload', 'policy', 'layer'], registers: [this.registry],
  })
  /** Tunnel (mTLS) connections refused at this node's inbound listener, by reason. */
  readonly tunnelRefused = new Counter({
    name: 'weft_tunnel_refused_total', help: 'Mutual-TLS tunnel connections refused by this node (no client certificate, another trust domain, an identity the connecting node does not host).',
    labelNames: ['reason'], registers: [this.registry],
  })

  /**
   * Per request (labels: requestLabels above): weft_requests_total, weft_request_duration_seconds,
   * weft_request_bytes_total, weft_response_bytes_total. Kept in one record per label set that
   * recordRequest() updates at once, read out in prom-client's shape at scrape time (see
   * request-series.ts for why).
   */
  private readonly requestSeries = new RequestSeries<RequestLabelName, RequestLabels>(requestLabels, requestDurationBuckets)

  // Resilience: what retries, outlier detection and circuit breaking did. destination_service as above.
  /** One per retry sent (not per request); reason: RetryReason. */
  readonly retries = new Counter({
    name: 'weft_retries_total', help: 'Retries the L7 proxy sent, by what the failed try got (connect-failure, reset, per-try-timeout, retriable-status, retriable-grpc-status).',
    labelNames: ['destination_service', 'reason'], registers: [this.registry],
  })
  readonly retryBudgetExhausted = new Counter({
    name: 'weft_retry_budget_exhausted_total', help: 'Retries the policy allowed but the destination\'s retry budget refused (the failed try\'s answer went to the client).',
    labelNames: ['destination_service'], registers: [this.registry],
  })
  /** endpoint: `ip:port`; reason: EjectionReason. */
  readonly outlierEjections = new Counter({
    name: 'weft_outlier_ejections_total', help: 'Endpoints taken out of balancing by outlier detection, by the rule that ejected them (consecutive5xx, consecutiveGatewayErrors).',
    labelNames: ['destination_service', 'endpoint', 'reason'], registers: [this.registry],
  })
  /** limit: BreakerLimitName. */
  readonly circuitBreakerTrips = new Counter({
    name: 'weft_circuit_breaker_trips_total', help: 'Connections, requests or retries refused because a circuit breaker limit was reached, by limit (maxConnections, maxPendingRequests, maxRequests, maxRetries).',
    labelNames: ['destination_service', 'limit'], registers: [this.registry],
  })

  // Downstream connections the L7 proxy serves (a subset of the outbound connections above).
  readonly l7ConnectionsActive = new Gauge({
    name: 'weft_l7_connections_active', help: 'Client connections the L7 proxy is serving now, by protocol (http: HTTP/1.x; http2: HTTP/2, gRPC included).',
    labelNames: ['protocol'], registers: [this.registry],
  })
  readonly l7Connections = new Counter({
    name: 'weft_l7_connections_total', help: 'Client connections the L7 proxy took over, by protocol (http: HTTP/1.x; http2: HTTP/2, gRPC included).',
    labelNames: ['protocol'], registers: [this.registry],
  })

  // The process's own stalls (issue 10's tail latency): sampled once sampleRuntime() is called.
  /**
   * How late the native sampler's timer (due every EVENT_LOOP_SAMPLE_MS) ran, one sample per
   * tick: synchronous work, GC pauses and blocking calls all show here; a stall of S seconds is one
   * sample of about S. Read out at scrape time (event-loop-delay.ts).
   */
  readonly eventLoopDelay = new EventLoopDelayHistogram(this.registry, {
    name: 'weft_event_loop_delay_seconds', help: `How late the node daemon's event loop ran a timer due every ${EVENT_LOOP_SAMPLE_MS} ms (perf_hooks.monitorEventLoopDelay), one sample per tick; requests in flight wait as long.`,
    buckets: runtimeBuckets, resolutionMs: EVENT_LOOP_SAMPLE_MS,
  })
  /** One per collection V8 reports (every PerformanceObserver 'gc' entry): its time on the main thread. */
  readonly gcDuration = new Histogram({
    name: 'weft_gc_duration_seconds', help: 'Garbage collections of the node daemon and the time each held the main thread, by kind (minor: scavenge; major: mark-compact; incremental: a marking step; weakcb: weak callbacks).',
    labelNames: ['kind'], buckets: runtimeBuckets, registers: [this.registry],
  })

  /**
   * Starts sampling the event-loop delay and GC pauses into the two histograms above (a native
   * timer and a PerformanceObserver, neither keeping the process alive). The daemon calls it
   * once; returns the stop.
   */
  sampleRuntime(): () => void {
    const stopDelay = this.eventLoopDelay.start()
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) this.gcDuration.observe({ kind: gcKind(entry) }, entry.duration / 1000)
    })
    observer.observe({ entryTypes: ['gc'] })
    return () => { stopDelay(); observer.disconnect() }
  }

  /** Counts one finished request in the four per-request metrics (one label object for all). */
  recordRequest(labels: RequestLabels, sample: RequestSample): void {
    this.requestSeries.record(labels, sample.durationS, sample.requestBytes, sample.responseBytes)
  }

  /** How many label sets the per-request metrics hold (each is one series of each of the four). */
  get requestSeriesCount(): number { return this.requestSeries.size }

  /** A downstream connection handed to the L7 proxy; call the returned function once when it closes. */
  l7ConnectionOpened(protocol: L7ConnectionProtocol): () => void {
    this.l7Connections.inc({ protocol })
    this.l7ConnectionsActive.inc({ protocol })
    let closed = false
    return () => {
      if (closed) return
      closed = true
      this.l7ConnectionsActive.dec({ protocol })
    }
  }

  constructor(node: string, bpf: () => BpfCounterSource | undefined) {
    this.registry.setDefaultLabels({ node })
    const requests = this.requestSeries
    requests.counter(this.registry, { name: 'weft_requests_total', help: 'Requests the L7 proxy handled (HTTP/1.x, HTTP/2, gRPC), by what the client got.' }, 'requests')
    /** From the request head arriving to the response's last byte written to the client. */
    requests.histogram(this.registry, { name: 'weft_request_duration_seconds', help: 'Time from a request arriving to its response being sent in full.' })
    requests.counter(this.registry, { name: 'weft_request_bytes_total', help: 'Request body bytes received from clients by the L7 proxy (headers and framing not counted).' }, 'requestBytes')
    requests.counter(this.registry, { name: 'weft_response_bytes_total', help: 'Response body bytes sent to clients by the L7 proxy (headers and framing not counted).' }, 'responseBytes')
    collectDefaultMetrics({ register: this.registry, prefix: 'weft_process_', eventLoopMonitoringPrecision: PROM_CLIENT_LAG_PRECISION_MS })
    for (const name of DROPPED_DEFAULT_METRICS) this.registry.removeSingleMetric(name)
    // The kernel-side counters are read from the BPF per-CPU array at scrape time.
    const last = new Map<string, bigint>()
    const redirects = new Counter({
      name: 'weft_bpf_connects_total',
      help: 'Decisions of the interception programs, by kind: connects redirected, bypassed or refused (native IPv6 from an enrolled pod: refusedIpv6) by cgroup/connect4 and connect6, peers restored, connections to STRICT pods dropped (strictDropped); read from the BPF counters map.',
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

function gcKind(entry: PerformanceEntry): GcKind {
  switch ((entry as PerformanceEntry & { readonly detail?: { readonly kind?: number } | null }).detail?.kind) {
    case perfConstants.NODE_PERFORMANCE_GC_MINOR: return 'minor'
    case perfConstants.NODE_PERFORMANCE_GC_MAJOR: return 'major'
    case perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL: return 'incremental'
    case perfConstants.NODE_PERFORMANCE_GC_WEAKCB: return 'weakcb'
    default: return 'other'
  }
}
