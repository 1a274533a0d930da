// The programs the benchmark runs in the lab besides weft: nginx as the 1 KB HTTP server in the
// server pods, a TCP echo server, and nginx and haproxy as node-level HTTP proxies (the hop a team
// might run instead of a mesh). Each gets its config, pid and log files in the run's temp dir (never
// the system ones), listens on lab addresses only, and is stopped by stopProcess (the lab's down
// kills anything left in its namespaces too).
import { spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Lab } from '../src/lab/index.ts'

/** The response body of GET /1k (Istio's published figures use 1 KB payloads). */
export const BODY_BYTES = 1024
export const HTTP_PORT = 8080
export const ECHO_PORT = 9000

/** Ports of the node-level proxies, on the client node's bridge address. */
export const PROXY_PORTS = { nginx: { 'same-node': 18080, 'cross-node': 18081 }, haproxy: { 'same-node': 18090, 'cross-node': 18091 } } as const

const KEEPALIVE = 'keepalive_requests 100000000; keepalive_timeout 300s;'

function nginxCommon(dir: string): string {
  return [
    'worker_processes 1;', 'daemon off;', 'user root root;', `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log warn;`,
    'events { worker_connections 4096; }',
  ].join('\n')
}
function nginxTempPaths(dir: string): string {
  return ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `${k}_temp_path ${dir}/${k};`).join(' ')
}

export function nginxServerConfig(dir: string, ip: string): string {
  return `${nginxCommon(dir)}
http {
  access_log off; ${KEEPALIVE} ${nginxTempPaths(dir)}
  server {
    listen ${ip}:${HTTP_PORT} backlog=4096;
    location / { default_type application/octet-stream; return 200 "${'x'.repeat(BODY_BYTES)}"; }
  }
}
`
}

/** One nginx worker, keep-alive upstream pools: an HTTP reverse proxy hop on the node. */
export function nginxProxyConfig(dir: string, listenIp: string, sameNodeServer: string, crossNodeServer: string): string {
  const location = (upstream: string): string =>
    `location / { proxy_pass http://${upstream}; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; }`
  return `${nginxCommon(dir)}
http {
  access_log off; ${KEEPALIVE} ${nginxTempPaths(dir)}
  upstream same_node { server ${sameNodeServer}:${HTTP_PORT}; keepalive 64; }
  upstream cross_node { server ${crossNodeServer}:${HTTP_PORT}; keepalive 64; }
  server { listen ${listenIp}:${PROXY_PORTS.nginx['same-node']} backlog=4096; ${location('same_node')} }
  server { listen ${listenIp}:${PROXY_PORTS.nginx['cross-node']} backlog=4096; ${location('cross_node')} }
}
`
}

/** One haproxy thread, HTTP mode with keep-alive both sides and connection reuse. */
export function haproxyConfig(listenIp: string, sameNodeServer: string, crossNodeServer: string): string {
  return `global
  nbthread 1
  maxconn 8192
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend same_node
  bind ${listenIp}:${PROXY_PORTS.haproxy['same-node']}
  default_backend same_node
backend same_node
  server s1 ${sameNodeServer}:${HTTP_PORT}
frontend cross_node
  bind ${listenIp}:${PROXY_PORTS.haproxy['cross-node']}
  default_backend cross_node
backend cross_node
  server s1 ${crossNodeServer}:${HTTP_PORT}
`
}

/** A TCP echo server (node:net, no delay). argv[1] ip, argv[2] port; prints `listening`. */
export const echoServerScript = `
const net = require('node:net')
net.createServer({ noDelay: true }, (socket) => { socket.on('error', () => {}); socket.pipe(socket) })
  .listen({ host: process.argv[1], port: Number(process.argv[2]), backlog: 4096 }, () => console.log('listening'))
`

export interface Started { name: string; child: ChildProcess; pid: number }

/** Starts argv in a pod or node of the lab (pinned with taskset when cpus is set) and waits until
 *  the TCP port answers (probed from the host, over the lab's host veth). */
export async function startInLab(lab: Lab, target: string, name: string, argv: string[], cpus: string | undefined, probe: { host: string; port: number }, logFile: string): Promise<Started> {
  const pinned = cpus ? ['taskset', '-c', cpus, ...argv] : argv
  const child = lab.exec(target, pinned, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()).length > 4000 && (output = output.slice(-2000)))
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()).length > 4000 && (output = output.slice(-2000)))
  child.on('exit', () => { try { writeFileSync(logFile, output) } catch { /* best effort */ } })
  const deadline = Date.now() + 10_000
  while (!(await tcpAnswers(probe.host, probe.port))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} in ${target} exited (${child.exitCode ?? child.signalCode}) before listening on ${probe.host}:${probe.port}: ${output.trim()}`)
    if (Date.now() > deadline) throw new Error(`${name} in ${target}: not listening on ${probe.host}:${probe.port} after 10 s: ${output.trim()}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { name, child, pid: child.pid as number }
}

export function tcpAnswers(host: string, port: number): Promise<boolean> {
  return import('node:net').then(({ default: net }) => new Promise<boolean>((resolve) => {
    const socket = net.connect({ host, port })
    const timer = setTimeout(() => { socket.destroy(); resolve(false) }, 500)
    socket.on('connect', () => { clearTimeout(timer); socket.destroy(); resolve(true) })
    socket.on('error', () => { clearTimeout(timer); resolve(false) })
  }))
}

/** SIGTERM, then SIGKILL after a grace period; resolves when the process has exited. */
export async function stopProcess(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

export function writeConfig(dir: string, name: string, text: string): string {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, name)
  writeFileSync(file, text)
  return file
}

/** `nginx version: nginx/1.22.1` and the like, for the report's machine section. */
export function toolVersion(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8' })
  if (result.error) return 'not installed'
  return `${result.stdout}${result.stderr}`.split('\n').find((line) => line.trim() !== '')?.trim() ?? 'unknown'
}
