// The demo's client: calls every target (ip:port) in turn on a new connection each time, and
// prints one JSON line per second with how many calls succeeded and failed per target.
import http from 'node:http'

const targets = process.argv.slice(2)
const intervalMs = Number(process.env.WEFT_DEMO_INTERVAL_MS ?? 100)
const counts = new Map<string, { ok: number; failed: number; lastError?: string }>(targets.map((t) => [t, { ok: 0, failed: 0 }]))

function call(target: string): Promise<void> {
  const entry = counts.get(target)!
  return new Promise((resolve) => {
    const req = http.get(`http://${target}/`, { agent: false, timeout: 2000 }, (res) => {
      res.resume()
      res.on('end', () => { if (res.statusCode === 200) entry.ok++; else entry.failed++; resolve() })
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
