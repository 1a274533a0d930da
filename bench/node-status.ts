// What the benchmark reads from the node daemons (and sidecars): their admin endpoints, and the
// statuses they publish on NATS.
import { request } from 'node:http'
import { BusError } from '../src/bus/index.ts'
import type { NodeStatus } from '../src/config/agent.ts'
import type { Lab } from '../src/lab/index.ts'

/** GET http://host:port/path; the body of a 200, else an error naming the URL. */
export function getText(host: string, port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: 'GET', timeout: 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET http://${host}:${port}${path}: ${res.statusCode}`))))
    })
    req.on('timeout', () => req.destroy(new Error(`GET http://${host}:${port}${path}: timed out`)))
    req.on('error', reject)
    req.end()
  })
}

/**
 * Reads the statuses on the lab's NATS until `problems` finds none (it may also throw to stop at
 * once); after `timeoutMs`, throws with `what` and the last problems. A failed read (NATS busy)
 * is one more problem, looked at again.
 */
export async function waitForStatuses(lab: Lab, what: string, problems: (statuses: ReadonlyMap<string, NodeStatus>) => string[], timeoutMs: number, intervalMs = 100): Promise<void> {
  const bus = await lab.connect('operator')
  try {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      let found: string[]
      try {
        found = problems(new Map((await bus.readStatuses()).map((e) => [e.node, e.status as NodeStatus])))
      } catch (error) {
        if (!(error instanceof BusError)) throw error
        found = [`reading the statuses: ${error.message}`]
      }
      if (found.length === 0) return
      if (Date.now() > deadline) throw new Error(`${what} after ${timeoutMs / 1000} s: ${found.join('; ')}`)
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  } finally {
    await bus.close()
  }
}
