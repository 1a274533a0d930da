// The demo's client: calls every target (ip:port) in turn on a new connection each time, and
// prints one JSON line per second with how many calls succeeded and failed per target, and which
// server answered them.
import http from 'node:http'

const targets = process.argv.slice(2)
const intervalMs = Number(process.env.WEFT_DEMO_INTERVAL_MS ?? 100)
interface Counts { ok: number; failed: number; servers: Record<string, number>; lastError?: string }
const counts = new Map<string, Counts>(targets.map((t) => [t, { ok: 0, failed: 0, servers: {} }]))

function call(target: string): Promise<void> {
  const entry = counts.get(target)!
  return new Promise((resolve) => {
    const req = http.get(`http://${target}/`, { agent: false, timeout: 2000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => {
        if (res.statusCode === 200) {
          entry.ok++
          try {
            const server = String((JSON.parse(body) as { server?: unknown }).server)
            entry.servers[server] = (entry.servers[server] ?? 0) + 1
          } catch { /* not the demo's server */ }
        } else {
          entry.failed++
          entry.lastError = `HTTP ${res.statusCode}${res.headers['weft-error'] ? `: ${String(res.headers['weft-error'])}` : ''}`
        }
        resolve()
      })
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', (err) => { entry.failed++; entry.lastError = err.message; resolve() })
  })
}

let stopped = false
process.on('SIGTERM', () => { stopped = true })
setInterval(() => {
  process.stdout.write(JSON.stringify(Object.fromEntries(counts)) + '\n')
}, 1000).unref()
while (!stopped) {
  await Promise.all(targets.map(call))
  await new Promise((r) => setTimeout(r, intervalMs))
}
process.exit(0)
