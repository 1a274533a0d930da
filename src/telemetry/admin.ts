// The admin listener (:15020): liveness, readiness with its reason, Prometheus metrics,
// /debug/destinations: what the L7 proxy knows of each destination right now (JSON),
// /debug/certs: the node's workload certificates and trust bundle (JSON; `weft identity` reads it),
// and /debug/config[?service=ns/name]: what the node applied (JSON; `weft proxy-config` reads it).
import http from 'node:http'
import type { Registry } from 'prom-client'

export interface Readiness { ready: boolean; reason: string }

/** What an admin endpoint answers: a status and a body to send as JSON (an error: `{error}`). */
export interface AdminAnswer { status: number; body: unknown }

export class AdminServer {
  private readonly server: http.Server
  private readonly listenIp: string
  private readonly port: number

  constructor(opts: { listenIp: string; port: number; registry: Registry; readiness: () => Readiness; destinations?: () => unknown; certs?: () => unknown; config?: (query: URLSearchParams) => AdminAnswer }) {
    this.listenIp = opts.listenIp
    this.port = opts.port
    this.server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://admin')
      const path = url.pathname
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
      } else if (path === '/readyz') {
        const r = opts.readiness()
        res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${r.reason}\n`)
      } else if (path === '/metrics') {
        opts.registry.metrics().then(
          (body) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(body),
          (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics: ${err.message}\n`))
      } else if (path === '/debug/destinations' && opts.destinations) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(opts.destinations(), null, 2)}\n`)
      } else if (path === '/debug/certs' && opts.certs) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(opts.certs(), null, 2)}\n`)
      } else if (path === '/debug/config' && opts.config) {
        const answer = opts.config(url.searchParams)
        res.writeHead(answer.status, { 'content-type': 'application/json' }).end(`${JSON.stringify(answer.body, null, 2)}\n`)
      } else {
        const debug = [opts.destinations ? '/debug/destinations' : undefined, opts.certs ? '/debug/certs' : undefined, opts.config ? '/debug/config' : undefined].filter((p) => p !== undefined)
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found; try /healthz, /readyz, /metrics${debug.length > 0 ? ` or ${debug.join(', ')}` : ''}\n`)
      }
    })
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host: this.listenIp, port: this.port }, () => { this.server.off('error', reject); resolve() })
    })
  }

  close(): void { this.server.closeAllConnections(); this.server.close() }
}
